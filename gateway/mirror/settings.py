"""The `[mirror]` section of the gateway config: one or more Kafka targets, each with its topic mappings.

    [mirror]
    persist_interval_s = 1.0        # cursor persisted at most this often ...
    persist_records = 50000         # ... or after this many acknowledged records, never ahead of the acks

    [[mirror.targets]]
    name = "central"                # cursor `mirror.central` in the data dir; metrics label target="central"
    bootstrap = "kafka-1.plant:9093,kafka-2.plant:9093"
    bandwidth_bytes_per_s = 2000000 # token bucket over key + value + header bytes; 0 = no cap
    properties = { "security.protocol" = "SASL_SSL", "sasl.mechanism" = "SCRAM-SHA-512",
                   "sasl.username" = "gw-17", "sasl.password" = "..." }   # librdkafka, passed through
    topics = [
      { topic = "alarms", priority = 10 },                                # drains first after an outage
      { topic = "telemetry", kafka_topic = "plant1.telemetry" },          # edge partition p -> Kafka partition p
      { topic = "events", partitioning = "key" },                         # Kafka's default (murmur2) partitioner
    ]

Order per edge partition is guaranteed only with `partitioning = "same"` (the default): Kafka partition p then holds
exactly edge partition p, in order. With `"key"` one edge partition spreads over several Kafka partitions: records of
one key stay in order, the partition as a whole does not (and central dedupe must key on the whole identity).

`config_problems()` is what `edgestream config check` and the gateway's config loader run; `parse()` builds the typed
settings at start-up and raises ConfigFileError with the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from ...store.files import valid_name
from ..errors import ConfigFileError

KiB = 1024
MiB = 1024 * KiB

PARTITIONING = ("same", "key")
ON_AUTHORIZATION_ERROR = ("pause", "dead_letter")
# Settings the mirror owns: changing them through `properties` would break the delivery guarantee or its bounds.
OWNED_PROPERTIES = {
    "bootstrap.servers": "use the target's `bootstrap`",
    "enable.idempotence": "always true: the guarantee depends on it",
    "acks": "always all",
    "request.required.acks": "always all",
    "transactional.id": "the mirror is at-least-once with central dedupe, not transactional",
    "message.timeout.ms": "infinite: librdkafka's own timeout skips records (a gap); use delivery_timeout_s",
    "delivery.timeout.ms": "infinite: librdkafka's own timeout skips records (a gap); use delivery_timeout_s",
    "queue.buffering.max.kbytes": "use max_in_flight_bytes",
    "queue.buffering.max.messages": "use max_in_flight_records",
    "linger.ms": "use linger_ms",
    "queue.buffering.max.ms": "use linger_ms",
    "partitioner": "use partitioning per topic",
    "enable.gapless.guarantee": "always true: a failed batch stops the producer rather than leave a gap",
}
_KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^[^\s,:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$")


class TopicMapping(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    topic: str  # the edge topic
    kafka_topic: str = ""  # default: the edge topic's name
    partitioning: str = "same"  # same: edge partition p -> Kafka partition p (ordered); key: by key (murmur2)
    priority: int = 0  # higher drains first when the bandwidth or in-flight window is short

    @property
    def destination(self) -> str:
        return self.kafka_topic or self.topic

    @property
    def ordered(self) -> bool:
        return self.partitioning == "same"


class TargetSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    name: str
    bootstrap: str
    topics: tuple[TopicMapping, ...]
    properties: dict[str, str] = {}
    enabled: bool = True
    bandwidth_bytes_per_s: int = 0  # 0 = no cap
    burst_bytes: int = 0  # 0 = a quarter second of bandwidth (at least 64 KiB)
    live_share: float = 0.25  # of the budget kept for partitions that are caught up, while others backfill
    live_age_s: float = 10.0  # a partition whose last mirrored record is younger than this is "live"
    max_in_flight_records: int = 50_000
    max_in_flight_bytes: int = 32 * MiB  # librdkafka's queue (queue.buffering.max.kbytes)
    batch_records: int = 5_000  # read from the log per partition and turn
    batch_bytes: int = 1 * MiB
    linger_ms: float = 5.0
    delivery_timeout_s: float = 120.0  # no report for this long: purge, new producer, rewind (the log has it all)
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0
    on_authorization_error: str = "pause"  # pause the target | dead_letter: treat the records as poison
    auth_retry_s: float = 300.0  # a target paused for authorization tries again this often (0: only on resume)
    topic_recheck_s: float = 30.0  # a missing Kafka topic is looked up again this often

    @property
    def cursor_name(self) -> str:
        return f"mirror.{self.name}"

    @property
    def burst(self) -> int:
        return self.burst_bytes or max(64 * KiB, self.bandwidth_bytes_per_s // 4)

    def mapping(self, topic: str) -> TopicMapping | None:
        return next((m for m in self.topics if m.topic == topic), None)


class MirrorSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    targets: tuple[TargetSettings, ...]
    persist_interval_s: float = 1.0
    persist_records: int = 50_000
    stop_flush_s: float = 5.0  # at SIGTERM, wait this long for in-flight acknowledgements before persisting


_RANGES: dict[str, tuple[float, float]] = {
    "bandwidth_bytes_per_s": (0, 10 * 1024 * MiB),
    "burst_bytes": (0, 1024 * MiB),
    "live_share": (0.0, 1.0),
    "live_age_s": (0.1, 86_400),
    "max_in_flight_records": (1, 10_000_000),
    "max_in_flight_bytes": (64 * KiB, 2048 * MiB),
    "batch_records": (1, 1_000_000),
    "batch_bytes": (1 * KiB, 256 * MiB),
    "linger_ms": (0, 10_000),
    "delivery_timeout_s": (1, 86_400),
    "backoff_initial_s": (0.01, 3600),
    "backoff_max_s": (0.01, 86_400),
    "auth_retry_s": (0, 86_400),
    "topic_recheck_s": (1, 86_400),
    "persist_interval_s": (0.01, 3600),
    "persist_records": (1, 100_000_000),
    "stop_flush_s": (0, 600),
}


def config_problems(raw: Any, topics: Iterable[Any] = ()) -> list[tuple[str, str]]:
    """Every problem in a raw `[mirror]` table as (key path, message); [] if it is fine (or absent).

    `topics` are the config's TopicSpecs: a mapping may name an edge topic or its dead-letter topic."""
    if raw in (None, {}):
        return []
    _, problems = _convert(raw, topics)
    return problems


def parse(raw: Any, topics: Iterable[Any] = (), *, path: str = "") -> MirrorSettings:
    settings, problems = _convert(raw, topics)
    if problems or settings is None:
        raise ConfigFileError(path, problems or [("mirror", "invalid")])
    return settings


def _convert(raw: Any, topics: Iterable[Any]) -> tuple[MirrorSettings | None, list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        return None, [("mirror", "must be a table")]
    known: set[str] = set()
    for t in topics:
        known.add(t.name)
        known.add(t.dead_letter_topic)
    data = dict(raw)
    targets = data.get("targets")
    if not isinstance(targets, list) or not targets:
        return None, [("mirror.targets", "required: one or more [[mirror.targets]] with name, bootstrap and topics")]
    fixed = []
    for i, t in enumerate(targets):
        if isinstance(t, dict):
            t = dict(t)
            if isinstance(t.get("topics"), list):
                t["topics"] = [{"topic": x} if isinstance(x, str) else x for x in t["topics"]]
            if isinstance(t.get("properties"), dict):
                props = {}
                for k, v in _flatten(t["properties"]).items():
                    if isinstance(v, bool):
                        props[k] = "true" if v else "false"
                    elif isinstance(v, int | float | str):
                        props[k] = str(v)
                    else:
                        problems.append((f"mirror.targets[{i}].properties.{k}", "must be a string, number or bool"))
                t["properties"] = props
        fixed.append(t)
    data["targets"] = fixed
    try:
        settings = msgspec.convert(data, MirrorSettings)
    except msgspec.ValidationError as exc:
        return None, [*problems, _msgspec_problem(exc)]
    for key in ("persist_interval_s", "persist_records", "stop_flush_s"):
        _check_range(f"mirror.{key}", key, getattr(settings, key), problems)
    names: set[str] = set()
    for i, target in enumerate(settings.targets):
        _check_target(i, target, names, known, problems)
    return (None if problems else settings), problems


def _flatten(props: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{ batch.size = 8192 }` without quotes is a nested table in TOML: read it as the dotted librdkafka name."""
    out: dict[str, Any] = {}
    for k, v in props.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_target(i: int, t: TargetSettings, names: set[str], known: set[str],
                  problems: list[tuple[str, str]]) -> None:
    where = f"mirror.targets[{i}]"
    if not valid_name(t.name) or len(t.name) > 150:
        problems.append((f"{where}.name", f"{t.name!r}: letters, digits, '.', '_' and '-' (1-150 characters)"))
    elif t.name in names:
        problems.append((f"{where}.name", f"{t.name!r} is used by two targets"))
    names.add(t.name)
    where = f"{where} ({t.name})"
    servers = [s.strip() for s in t.bootstrap.split(",") if s.strip()]
    if not servers or not all(_HOST_PORT.match(s) for s in servers):
        problems.append((f"{where}.bootstrap", f"{t.bootstrap!r}: expected host:port[,host:port...]"))
    for key in _RANGES:
        if hasattr(t, key):
            _check_range(f"{where}.{key}", key, getattr(t, key), problems)
    if t.backoff_max_s < t.backoff_initial_s:
        problems.append((f"{where}.backoff_max_s", "must be at least backoff_initial_s"))
    if t.on_authorization_error not in ON_AUTHORIZATION_ERROR:
        allowed = " or ".join(ON_AUTHORIZATION_ERROR)
        problems.append((f"{where}.on_authorization_error",
                         f"{t.on_authorization_error!r} is not allowed; expected {allowed}"))
    for key in t.properties:
        if key in OWNED_PROPERTIES:
            problems.append((f"{where}.properties.{key}", f"set by the mirror ({OWNED_PROPERTIES[key]})"))
    if not t.topics:
        problems.append((f"{where}.topics", "required: the edge topics to mirror"))
    seen: set[str] = set()
    for j, m in enumerate(t.topics):
        mwhere = f"{where}.topics[{j}]"
        if known and m.topic not in known:
            problems.append((f"{mwhere}.topic", f"{m.topic!r} is not a topic of this gateway "
                                                f"({', '.join(sorted(known)) or 'none defined'})"))
        if m.topic in seen:
            problems.append((f"{mwhere}.topic", f"{m.topic!r} is mapped twice in this target"))
        seen.add(m.topic)
        if not _KAFKA_TOPIC.match(m.destination) or m.destination in (".", ".."):
            problems.append((f"{mwhere}.kafka_topic", f"{m.destination!r} is not a valid Kafka topic name"))
        if m.partitioning not in PARTITIONING:
            problems.append((f"{mwhere}.partitioning",
                             f"{m.partitioning!r} is not allowed; expected same (ordered) or key"))
        if not -1000 <= m.priority <= 1000:
            problems.append((f"{mwhere}.priority", f"{m.priority}: expected -1000 to 1000"))


def _check_range(where: str, key: str, value: float, problems: list[tuple[str, str]]) -> None:
    low, high = _RANGES[key]
    if not low <= value <= high:
        problems.append((where, f"{value!r} is not allowed; expected {low:g} to {high:g}"))


def _msgspec_problem(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec says "Expected `int`, got `str` - at `$.targets[0].batch_records`": name the config key."""
    msg, _, where = str(exc).partition(" - at `")
    where = where.rstrip("`")
    key = "mirror" + where[1:] if where.startswith("$") else "mirror"
    if "Object contains unknown field" in msg:
        name = msg.split("`")[1] if "`" in msg else "?"
        return (f"{key}.{name}", f"unknown key {name!r}")
    if "Object missing required field" in msg:
        name = msg.split("`")[1] if "`" in msg else "?"
        return (f"{key}.{name}", "required")
    return (key, msg)


def render_mirror_section(bootstrap: str, topics: Iterable[str], *, target: str = "central",
                          bandwidth_bytes_per_s: int = 0, properties: dict[str, str] | None = None,
                          **overrides: Any) -> dict[str, Any]:
    """A `[mirror]` section (as the dict the TOML renders from) that mirrors `topics` 1:1 to `bootstrap`.

    For demos and tests: `sections["mirror"] = render_mirror_section("127.0.0.1:9092", ["telemetry"])`;
    `toml_section()` turns it into text."""
    target_cfg: dict[str, Any] = {
        "name": target,
        "bootstrap": bootstrap,
        "topics": [{"topic": t} for t in topics],
        "bandwidth_bytes_per_s": bandwidth_bytes_per_s,
    }
    if properties:
        target_cfg["properties"] = dict(properties)
    mirror_keys = {k: overrides.pop(k) for k in list(overrides) if k in MirrorSettings.__struct_fields__}
    target_cfg.update(overrides)
    return {**mirror_keys, "targets": [target_cfg]}


def toml_section(section: dict[str, Any]) -> str:
    """TOML text of a `[mirror]` section made by render_mirror_section (inline tables, no dependencies)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{value(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"cannot write {v!r} as TOML")

    lines = ["[mirror]"]
    lines += [f"{k} = {value(v)}" for k, v in section.items() if k != "targets"]
    for t in section.get("targets", []):
        lines += ["", "[[mirror.targets]]"]
        lines += [f"{k} = {value(v)}" for k, v in t.items()]
    return "\n".join(lines) + "\n"
