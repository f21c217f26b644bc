"""Making source objects from the config: one factory per `type`, imported only when used (extras stay optional)."""

from __future__ import annotations

import importlib
import os
from typing import Any

import msgspec

from ..edge.clock import Clock
from ..edge.source import Sink, Source
from .config import SourceSpec


def _named(settings: Any, name: str) -> Any:
    """Settings structs that carry their own `name` get the source's name from the config entry."""
    if "name" in getattr(type(settings), "__struct_fields__", ()):
        return msgspec.structs.replace(settings, name=name)
    return settings


def listener_sessions_path(data_dir: str, source_name: str) -> str:
    """Where an MQTT listener source keeps its clients' persistent sessions."""
    return os.path.join(data_dir, "listener", f"{source_name}.sessions")


def create_source(spec: SourceSpec, sink: Sink, clock: Clock, *, data_dir: str | None = None) -> Source:
    """`data_dir`: where sources keep state across restarts (the gateway's data dir; None: in memory, for tests)."""
    if spec.type == "simulated":
        from ..edge.simulate.source import SimulatedSource

        return SimulatedSource(spec.name, spec.settings, sink, clock)
    if spec.type == "mqtt_client":
        from ..edge.mqtt.client import MqttClientSource

        return MqttClientSource(spec.name, spec.settings, sink, clock=clock)
    if spec.type == "mqtt_listener":
        from ..edge.mqtt.listener import MqttListener
        from ..edge.mqtt.session_file import SessionFile

        settings = _named(spec.settings, spec.name)
        sessions = None  # in memory
        if data_dir is not None:
            sessions = SessionFile(listener_sessions_path(data_dir, spec.name), clock=clock,
                                   limits=MqttListener.session_limits(settings))
        return MqttListener(settings, sink, clock=clock, sessions=sessions)
    if spec.type == "serial":
        mod = importlib.import_module("edgestream.edge.serial.source")
        src: Source = mod.SerialSource(spec.name, spec.settings, sink, clock=clock)
        return src
    if spec.type == "modbus":
        mod = importlib.import_module("edgestream.edge.modbus.poller")
        src = mod.ModbusPoller(spec.name, spec.settings, sink, clock=clock)
        return src
    raise ValueError(f"unknown source type {spec.type!r}")
