"""The gateway's TOML config: one typed schema, validated at load, every error reported with file, key and the
allowed values (`edgestream config check FILE`).

    [gateway]            id, data_dir, shutdown_timeout_s
    [log]                store.LogConfig: min_free_bytes, max_pending_bytes, ...
    [http]               listen address of the HTTP API and /metrics, bearer token
    [[topics]]           store.TopicConfig + name, decoder, csv_columns, dead_letter
    [[sources]]          name, type (mqtt_client | mqtt_listener | serial | modbus | simulated), the route
                         (topic, partition, key) and the type's own settings, flat in the same table
    [mirror] [tier]      see their sections in the README

Each section is validated on its own, so one run reports the errors of every section (msgspec stops at the first
error inside one structure).
"""

from __future__ import annotations

import importlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..store import LogConfig, TopicConfig
from ..store.errors import InvalidConfigError
from ..store.files import valid_name
from .errors import ConfigFileError

# type -> (module, settings class) of the source implementations in edgestream.edge
SOURCE_TYPES: dict[str, tuple[str, str]] = {
    "mqtt_client": ("edgestream.edge.mqtt.client_settings", "MqttClientSettings"),
    "mqtt_listener": ("edgestream.edge.mqtt.listener_settings", "MqttListenerSettings"),
    "serial": ("edgestream.edge.serial.settings", "SerialSourceSettings"),
    "modbus": ("edgestream.edge.modbus.settings", "ModbusSourceSettings"),
    "simulated": ("edgestream.edge.simulate.source", "SimulatedSourceSettings"),
}
DECODERS = ("json", "csv", "raw", "modbus")
ROUTE_KEYS = ("name", "type", "topic", "partition", "key", "enabled")
_PARTITION_RULE = re.compile(r"^(key_hash|source|fixed:\d+)$")


class GatewaySection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    id: str = ""  # identity in mirrored records' headers; default: the host name
    data_dir: str = "/var/lib/edgestream"
    shutdown_timeout_s: float = 20.0  # SIGTERM: stop reading, flush, ack, mark clean within this
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise InvalidConfigError("log_level", self.log_level, "debug, info, warning, error")
        if not 1 <= self.shutdown_timeout_s <= 600:
            raise InvalidConfigError("shutdown_timeout_s", self.shutdown_timeout_s, "1 to 600 seconds")

    @property
    def gateway_id(self) -> str:
        return self.id or os.uname().nodename


class HttpSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    listen: str = "127.0.0.1:8080"  # host:port; port 0 picks a free one (tests)
    token: str = ""  # bearer token; required when `listen` is not loopback
    token_file: str = ""  # or read it from this file (keeps it out of the config)
    enabled: bool = True

    def __post_init__(self) -> None:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise InvalidConfigError("listen", self.listen, "host:port, e.g. 127.0.0.1:8080 or 0.0.0.0:8080")

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    def bearer_token(self) -> str:
        if self.token_file:
            with open(self.token_file) as f:
                return f.read().strip()
        return self.token


@dataclass(frozen=True)
class TopicSpec:
    name: str
    config: TopicConfig
    decoder: str = "raw"
    csv_columns: tuple[str, ...] = ()
    csv_delimiter: str = ","
    dead_letter: str = ""  # dead-letter topic; default "<name>.dlq"

    @property
    def dead_letter_topic(self) -> str:
        return self.dead_letter or f"{self.name}.dlq"


@dataclass(frozen=True)
class SourceSpec:
    name: str
    type: str
    topic: str
    partition: str  # key_hash | source | fixed:N
    key: str  # template, e.g. "{topic_levels[1]}" or "{port}:{unit}"; "" = no key
    settings: Any  # the type's msgspec settings struct
    enabled: bool = True


@dataclass(frozen=True)
class GatewayConfig:
    path: str
    gateway: GatewaySection
    log: LogConfig
    http: HttpSection
    topics: tuple[TopicSpec, ...]
    sources: tuple[SourceSpec, ...]
    mirror: dict[str, Any] = field(default_factory=dict)  # validated by gateway.mirror
    tier: dict[str, Any] = field(default_factory=dict)  # validated by gateway.tiering

    def topic(self, name: str) -> TopicSpec | None:
        return next((t for t in self.topics if t.name == name), None)


def load(path: str, *, overrides: dict[str, Any] | None = None) -> GatewayConfig:
    """Read and validate a config file. Raises ConfigFileError listing every problem found."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigFileError(path, [("", "file not found")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(path, [("", f"not valid TOML: {exc}")]) from None
    if overrides:
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            raw.setdefault(section, {})[key] = value
    return parse(path, raw)


def parse(path: str, raw: dict[str, Any]) -> GatewayConfig:
    problems: list[tuple[str, str]] = []
    known = {"gateway", "log", "http", "topics", "sources", "mirror", "tier"}
    for key in raw:
        if key not in known:
            problems.append((key, f"unknown section; allowed: {', '.join(sorted(known))}"))
    gateway = _section(raw, "gateway", GatewaySection, problems) or GatewaySection()
    log_cfg = _section(raw, "log", LogConfig, problems) or LogConfig()
    http = _section(raw, "http", HttpSection, problems) or HttpSection()
    if http.enabled and not http.loopback and not (http.token or http.token_file):
        problems.append(("http.token", f"required when listening on {http.host} (not loopback): set token or "
                                       "token_file"))
    topics = _topics(raw.get("topics", []), problems)
    topic_names = {t.name for t in topics}
    sources = _sources(raw.get("sources", []), topic_names, problems)
    mirror = raw.get("mirror", {})
    tier = raw.get("tier", {})
    for name, value in (("mirror", mirror), ("tier", tier)):
        if not isinstance(value, dict):
            problems.append((name, "must be a table"))
    if isinstance(mirror, dict) and mirror:
        from .mirror.settings import config_problems  # the mirror owns its section's schema

        problems.extend(config_problems(mirror, topics))
    if problems:
        raise ConfigFileError(path, problems)
    if not os.path.isabs(gateway.data_dir):
        # Relative paths in a config file are relative to the file, not to wherever the service was started.
        base = os.path.dirname(os.path.abspath(path))
        gateway = msgspec.structs.replace(gateway, data_dir=os.path.normpath(os.path.join(base, gateway.data_dir)))
    return GatewayConfig(path, gateway, log_cfg, http, tuple(topics), tuple(sources), mirror, tier)


def _section(raw: dict[str, Any], name: str, typ: type[Any], problems: list[tuple[str, str]]) -> Any:
    value = raw.get(name, {})
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        problems.append(_msgspec_problem(name, exc))
    except InvalidConfigError as exc:
        problems.append((f"{name}.{exc.key}", f"{exc.value!r} is not allowed; expected {exc.allowed}"))
    return None


def _msgspec_problem(prefix: str, exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec says "Expected `int`, got `str` - at `$.port`": turn the JSON path into a config key path."""
    text = str(exc)
    msg, _, where = text.partition(" - at `")
    where = where.rstrip("`")
    key = prefix + where[1:].replace("$", "") if where.startswith("$") else prefix
    if "Object contains unknown field" in msg:
        field_name = msg.split("`")[1] if "`" in msg else "?"
        return (f"{key}.{field_name}" if not where else key, f"unknown key {field_name!r}")
    return (key, msg)


def _topics(items: Any, problems: list[tuple[str, str]]) -> list[TopicSpec]:
    out: list[TopicSpec] = []
    if not isinstance(items, list):
        problems.append(("topics", "must be an array of tables: [[topics]]"))
        return out
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"topics[{i}]"
        if not isinstance(item, dict):
            problems.append((where, "must be a table"))
            continue
        item = dict(item)
        name = item.pop("name", None)
        if not isinstance(name, str) or not valid_name(name):
            problems.append((f"{where}.name", "required: letters, digits, '.', '_', '-' (1-200 characters)"))
            continue
        where = f"topics[{i}] ({name})"
        if name in seen:
            problems.append((where, "defined twice"))
        seen.add(name)
        decoder = item.pop("decoder", "raw")
        if decoder not in DECODERS:
            problems.append((f"{where}.decoder", f"{decoder!r} is not allowed; expected one of {', '.join(DECODERS)}"))
        csv_columns = item.pop("csv_columns", [])
        csv_delimiter = item.pop("csv_delimiter", ",")
        dead_letter = item.pop("dead_letter", "")
        if decoder == "csv" and not csv_columns:
            problems.append((f"{where}.csv_columns", "required with decoder = \"csv\": the column names"))
        try:
            cfg = msgspec.convert(item, TopicConfig)
        except msgspec.ValidationError as exc:
            problems.append(_msgspec_problem(where, exc))
            continue
        except InvalidConfigError as exc:
            problems.append((f"{where}.{exc.key}", f"{exc.value!r} is not allowed; expected {exc.allowed}"))
            continue
        out.append(TopicSpec(name, cfg, decoder, tuple(csv_columns), csv_delimiter, dead_letter))
    return out


def settings_type(type_name: str) -> type[Any]:
    module, cls = SOURCE_TYPES[type_name]
    t: type[Any] = getattr(importlib.import_module(module), cls)
    return t


def _sources(items: Any, topics: set[str], problems: list[tuple[str, str]]) -> list[SourceSpec]:
    out: list[SourceSpec] = []
    if not isinstance(items, list):
        problems.append(("sources", "must be an array of tables: [[sources]]"))
        return out
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"sources[{i}]"
        if not isinstance(item, dict):
            problems.append((where, "must be a table"))
            continue
        name = item.get("name")
        if not isinstance(name, str) or not valid_name(name):
            problems.append((f"{where}.name", "required: letters, digits, '.', '_', '-' (1-200 characters)"))
            continue
        where = f"sources[{i}] ({name})"
        if name in seen:
            problems.append((where, "defined twice"))
        seen.add(name)
        typ = item.get("type")
        if typ not in SOURCE_TYPES:
            problems.append((f"{where}.type", f"{typ!r} is not allowed; expected one of {', '.join(SOURCE_TYPES)}"))
            continue
        topic = item.get("topic")
        if not isinstance(topic, str) or topic not in topics:
            problems.append((f"{where}.topic", f"{topic!r} is not a topic defined in [[topics]] "
                                               f"({', '.join(sorted(topics)) or 'none defined'})"))
        partition = item.get("partition", "key_hash")
        if not isinstance(partition, str) or not _PARTITION_RULE.match(partition):
            problems.append((f"{where}.partition", f"{partition!r} is not allowed; expected key_hash, source or "
                                                   "fixed:<n>"))
        key = item.get("key", "")
        if not isinstance(key, str):
            problems.append((f"{where}.key", "must be a string template, e.g. \"{topic_levels[1]}\""))
            key = ""
        enabled = item.get("enabled", True)
        rest = {k: v for k, v in item.items() if k not in ROUTE_KEYS}
        try:
            settings = msgspec.convert(rest, settings_type(typ))
        except ImportError as exc:
            problems.append((f"{where}.type", f"{typ} sources need an extra that is not installed: {exc}"))
            continue
        except msgspec.ValidationError as exc:
            problems.append(_msgspec_problem(where, exc))
            continue
        except (ValueError, InvalidConfigError) as exc:
            problems.append((where, str(exc)))
            continue
        except Exception as exc:  # an edge ConfigError from a settings __post_init__
            key_name = getattr(exc, "key", "")
            problems.append((f"{where}.{key_name}" if key_name else where, str(exc)))
            continue
        out.append(SourceSpec(name, typ, str(topic), str(partition), key, settings, bool(enabled)))
    return out
