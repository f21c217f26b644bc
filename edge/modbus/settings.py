"""Typed settings of a Modbus RTU poller: the line, the schedule, and each unit's register map.

Example (TOML, a source in the gateway config; name, type, topic, partition and key are the route's):

    [[sources]]
    name = "press4"
    type = "modbus"
    topic = "modbus"
    key = "{port}:{unit}"
    port = "/dev/ttyUSB1"
    baudrate = 19200
    parity = "E"
    poll_interval_s = 1.0
    timeout_s = 0.3

    [[sources.units]]
    unit = 1
    registers = [
      { name = "temperature", function = "input", address = 0, type = "float32" },
      { name = "parts", function = "holding", address = 0, type = "uint32" },
      { name = "oil_temp", function = "holding", address = 3, type = "int16", scale = 0.1 },
      { name = "running", function = "coils", address = 0 },
    ]

`count` is the number of values (a float32 takes 2 registers, so count = 3 reads 6). Byte order is the order
of the two bytes inside each register (Modbus sends big); word order says whether the first register holds the
most significant word ("big", ABCD) or the least ("little", CDAB, common on Schneider and some meters).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ..errors import ConfigError

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64", "bool"]
Function = Literal["holding", "input", "coils", "discrete"]

WORDS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4, "float64": 4}
BIT_FUNCTIONS = ("coils", "discrete")
# The protocol's own limits per request (Modbus Application Protocol v1.1b3, 6.1-6.4).
MAX_REGISTERS = 125
MAX_BITS = 2000


class RegisterBlock(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    address: int
    function: Function = "holding"
    count: int = 1
    type: RegisterType | None = None  # default: uint16 for registers, bool for coils and discrete inputs
    scale: float = 1.0
    offset: float = 0.0
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a register block needs a name")
        bits = self.function in BIT_FUNCTIONS
        if self.type is None:
            self.type = "bool" if bits else "uint16"
        if bits and self.type != "bool":
            raise ValueError(f"block {self.name!r}: {self.function} are bits; type must be 'bool'")
        if not bits and self.type == "bool":
            raise ValueError(f"block {self.name!r}: registers hold numbers; type 'bool' is for coils/discrete")
        if self.count < 1:
            raise ValueError(f"block {self.name!r}: count must be >= 1")
        if not 0 <= self.address <= 0xFFFF:
            raise ValueError(f"block {self.name!r}: address must be 0..65535 (the protocol address, not 40001)")
        limit = MAX_BITS if bits else MAX_REGISTERS
        if self.size > limit:
            raise ValueError(
                f"block {self.name!r}: {self.size} {'bits' if bits else 'registers'} in one "
                f"request; the protocol allows {limit}: split it into several blocks"
            )
        if self.address + self.size > 0x10000:
            raise ValueError(f"block {self.name!r}: runs past address 65535")
        if bits and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"block {self.name!r}: scale and offset do not apply to bits")

    @property
    def size(self) -> int:
        """How many registers (or bits) one read of this block asks for."""
        return self.count * WORDS.get(self.type or "bool", 1)


class UnitSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    unit: int
    registers: list[RegisterBlock]

    def __post_init__(self) -> None:
        if not 1 <= self.unit <= 247:
            raise ValueError(f"unit {self.unit}: Modbus RTU unit ids are 1..247")
        if not self.registers:
            raise ValueError(f"unit {self.unit}: needs at least one entry in registers")
        names = [b.name for b in self.registers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"unit {self.unit}: block names must be unique, repeated: {', '.join(dupes)}")


class ModbusSourceSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One RS-485 line with its units. Each poll reads every unit's blocks in order; a unit that fails a block
    is skipped for the rest of that poll, so a silent unit costs the line at most `timeout_s * (1 + retries)`."""

    port: str
    units: list[UnitSettings]
    baudrate: int = 19200
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "E"  # the Modbus serial line spec's default is 8E1
    stopbits: Literal[1, 2] = 1
    poll_interval_s: float = 1.0
    timeout_s: float = 0.5  # per request attempt
    retries: int = 0
    window: int = 64  # readings waiting for durability before polling pauses

    def __post_init__(self) -> None:
        if not self.port:
            raise ValueError("port must name a device, e.g. '/dev/ttyUSB0'")
        if self.baudrate <= 0:
            raise ValueError(f"baudrate must be positive, got {self.baudrate}")
        if self.poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be > 0 seconds")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0 seconds")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if not self.units:
            raise ValueError("units must list at least one unit")
        ids = [u.unit for u in self.units]
        if len(set(ids)) != len(ids):
            raise ValueError("each unit id may appear once")


def load_modbus_settings(obj: Any, *, where: str = "modbus source") -> ModbusSourceSettings:
    """Settings from a decoded mapping (TOML/JSON), with an error that names the key and what is allowed."""
    try:
        return msgspec.convert(obj, ModbusSourceSettings)
    except msgspec.ValidationError as exc:
        text = str(exc)
        start = text.find("`$.")
        end = text.find("`", start + 1)
        key = text[start + 3 : end] if start >= 0 and end > start else ""
        raise ConfigError(f"{where}: {text}", key=key) from None
