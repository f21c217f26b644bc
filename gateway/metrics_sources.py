"""Metric families from the sources' `statistics()` dataclasses, by field, without a list per source type.

Each source type (MQTT client, MQTT listener, serial, Modbus, simulated) has its own statistics dataclass. Rather
than a hand-written mapping per type that goes stale when a field is added, the fields are read by kind:

    bool                        gauge    edgestream_source_<field>{source,type}            0 or 1
    int/float in GAUGE_FIELDS   gauge    edgestream_source_<field>{source,type}
    other int/float             counter  edgestream_source_<field>_total{source,type}
    Mapping[str|int, number]    counter  edgestream_source_<field>_total{source,type,reason}
    tuple of per-unit records   per unit edgestream_source_unit_<field>...{source,type,unit}  (Modbus units)
    str                         skipped (ports, last error texts: unbounded, belong in the log)

A field that is a number in one source type and a mapping in another (`rejected`, `malformed`) becomes one family
with a `reason` label, empty for the plain numbers (Prometheus treats an empty label as absent).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# Fields that go up and down: everything else numeric is a counter.
GAUGE_FIELDS = frozenset({"in_flight", "connections_current", "sessions_stored", "subscribers", "window"})
# Fields holding a wall-clock time in milliseconds: exported in seconds as `<name without _ms>_timestamp_seconds`.
TIMESTAMP_MS_FIELDS = frozenset({"last_reading_ms"})
# Label name for a mapping field whose keys are not reasons.
MAPPING_LABEL = {"publishes_received": "qos"}
# Tuple fields of per-device records and the field naming the device.
NESTED = {"units": "unit"}
# One name for one meaning across source types.
RENAME = {"inflight": "in_flight"}


class _Families:
    """Samples gathered by family name; the families are built at the end, once every label set is known."""

    def __init__(self) -> None:
        self.kind: dict[str, str] = {}
        self.doc: dict[str, str] = {}
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {}

    def add(self, kind: str, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        if self.kind.setdefault(name, kind) != kind:
            return  # a field that is a counter in one type and a gauge in another: the first one seen wins
        self.doc.setdefault(name, doc)
        self.samples.setdefault(name, []).append((labels, value))

    def build(self) -> Iterator[Metric]:
        for name, samples in self.samples.items():
            names: list[str] = []
            for labels, _ in samples:  # a label that is empty everywhere (plain-number fields) is left out
                names.extend(k for k, v in labels.items() if k not in names and (v or k in ("source", "type")))
            fam: CounterMetricFamily | GaugeMetricFamily
            if self.kind[name] == "counter":
                fam = CounterMetricFamily(name, self.doc[name], labels=names)
            else:
                fam = GaugeMetricFamily(name, self.doc[name], labels=names)
            for labels, value in samples:
                fam.add_metric([labels.get(k, "") for k in names], value)
            yield fam


def source_families(table: Mapping[str, tuple[str, Any, bool]],
                    restarts: Mapping[str, int] | None = None) -> Iterator[Metric]:
    """Families for `Gateway.source_table()`: {name: (type, source, running)}."""
    up = GaugeMetricFamily("edgestream_source_up", "1 while the source's task runs.", labels=["source", "type"])
    restarted = CounterMetricFamily("edgestream_source_restarts", "Times a crashed source was restarted.",
                                    labels=["source", "type"])
    fams = _Families()
    for name, (typ, source, running) in sorted(table.items()):
        up.add_metric([name, typ], 1.0 if running else 0.0)
        restarted.add_metric([name, typ], (restarts or {}).get(name, 0))
        try:
            stats = source.statistics()
        except Exception:  # a statistics() bug must not break the scrape of everything else
            continue
        if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
            _add_fields(fams, "edgestream_source_", stats, {"source": name, "type": typ})
    yield up
    yield restarted
    yield from fams.build()


def _add_fields(fams: _Families, prefix: str, stats: Any, base: dict[str, str], skip: str = "") -> None:
    for f in dataclasses.fields(stats):
        if f.name == skip:
            continue
        value = getattr(stats, f.name)
        name = RENAME.get(f.name, f.name)
        doc = f"Source statistic {name}."
        if isinstance(value, bool):
            fams.add("gauge", prefix + name, doc, base, 1.0 if value else 0.0)
        elif isinstance(value, int | float):
            if f.name in TIMESTAMP_MS_FIELDS:
                if value > 0:
                    fams.add("gauge", prefix + name[:-3] + "_timestamp_seconds", doc, base, value / 1000)
            elif name in GAUGE_FIELDS:
                fams.add("gauge", prefix + name, doc, base, float(value))
            else:
                fams.add("counter", prefix + name, doc, {**base, "reason": ""}, float(value))
        elif isinstance(value, Mapping):
            label = MAPPING_LABEL.get(f.name, "reason")
            for k, n in sorted(value.items(), key=lambda kv: str(kv[0])):
                if isinstance(n, int | float) and not isinstance(n, bool):
                    fams.add("counter", prefix + name, doc + f" By {label}.", {**base, label: str(k)}, float(n))
        elif f.name in NESTED and isinstance(value, tuple):
            key = NESTED[f.name]
            for item in value:
                if dataclasses.is_dataclass(item) and hasattr(item, key):
                    sub = {**base, key: str(getattr(item, key))}
                    _add_fields(fams, f"{prefix}{key}_", item, sub, skip=key)  # the id is a label, not a counter
