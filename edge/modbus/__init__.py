"""Modbus RTU polling: register maps (settings), the register decoder (sans-I/O) and `ModbusPoller`.

pymodbus is an optional extra (`edgestream[modbus]`); it is imported only when a poller is built without an
injected client, so the rest of the gateway runs without it."""

from .poller import ModbusPoller, ModbusPollerStatistics, UnitStatistics
from .registers import decode_block, encode_value
from .settings import ModbusSourceSettings, RegisterBlock, UnitSettings, load_modbus_settings

__all__ = [
    "ModbusPoller",
    "ModbusPollerStatistics",
    "ModbusSourceSettings",
    "RegisterBlock",
    "UnitSettings",
    "UnitStatistics",
    "decode_block",
    "encode_value",
    "load_modbus_settings",
]
