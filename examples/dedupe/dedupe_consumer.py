"""Central dedupe for an edgestream mirror: pass on each record once, in order, whatever the gateway re-sent.

An edgestream gateway mirrors its log to Kafka at least once: after a crash, a WAN outage or a producer error it
re-sends from its last persisted position, so a few records arrive twice. Every record carries its identity in
headers (edge.gw, edge.log, edge.ep, edge.p, edge.off, edge.ts). Per stream (edge.gw, edge.log, edge.p) the gateway
sends in increasing (edge.ep, edge.off) order, so this consumer keeps the largest (edge.ep, edge.off) seen per stream
and drops anything at or below it. State: one entry per edge partition.

    python dedupe_consumer.py --bootstrap kafka-1:9092 --topic plant1.telemetry --group dedupe-telemetry
    python dedupe_consumer.py --bootstrap kafka-1:9092 --topic plant1.telemetry --until-end > once.jsonl

Each record passed on is printed as one JSON line (gw, log, ep, p, off, ts, key, value, kafka_partition,
kafka_offset). Replace `emit()` with your sink. For a long-running consumer, keep `Deduper.high` with your output
(in the same database transaction, or rebuild it at start from the output) so a restart of *this* consumer does not
let copies through. The rule needs the gateway's default 1:1 partition mapping (partitioning = "same"); with
partitioning = "key" one stream spans several Kafka partitions: dedupe on the whole identity instead (dedupe.sql).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

IDENTITY = ("edge.gw", "edge.log", "edge.ep", "edge.p", "edge.off", "edge.ts")


class Deduper:
    """Per (edge.gw, edge.log, edge.p): the largest (edge.ep, edge.off) passed on so far."""

    def __init__(self) -> None:
        self.high: dict[tuple[str, str, int], tuple[int, int]] = {}
        self.dropped = 0

    def accept(self, headers: list[tuple[str, bytes]] | None) -> dict[str, Any] | None:
        """The record's identity if it is new, None if it is a copy (or has no identity: not from a gateway)."""
        h = {k: v for k, v in headers or [] if k in IDENTITY and v is not None}
        if len(h) != len(IDENTITY):
            return None
        ident = {"gw": h["edge.gw"].decode(), "log": h["edge.log"].decode(), "ep": int(h["edge.ep"]),
                 "p": int(h["edge.p"]), "off": int(h["edge.off"]), "ts": int(h["edge.ts"])}
        stream = (ident["gw"], ident["log"], ident["p"])
        position = (ident["ep"], ident["off"])
        if stream in self.high and position <= self.high[stream]:
            self.dropped += 1
            return None
        self.high[stream] = position
        return ident


def emit(ident: dict[str, Any], msg: Any) -> None:
    key, value = msg.key(), msg.value()
    row = {**ident, "key": key.decode(errors="replace") if key is not None else None,
           "value": value.decode(errors="replace") if value is not None else None,
           "kafka_partition": msg.partition(), "kafka_offset": msg.offset()}
    sys.stdout.write(json.dumps(row) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", default="edgestream-dedupe")
    ap.add_argument("--until-end", action="store_true", help="read from the beginning to the current end, then exit")
    args = ap.parse_args()
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    dedupe = Deduper()
    ends: dict[int, int] = {}
    if args.until_end:
        meta = consumer.list_topics(args.topic, timeout=30).topics[args.topic]
        for p in meta.partitions:
            ends[p] = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=30)[1]
        consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in ends])
    else:
        consumer.subscribe([args.topic])
    done = {p for p, end in ends.items() if end == 0}
    try:
        while not args.until_end or len(done) < len(ends):
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                raise SystemExit(f"consuming {args.topic}: {msg.error()}")
            ident = dedupe.accept(msg.headers())
            if ident is not None:
                emit(ident, msg)
            if args.until_end and msg.offset() + 1 >= ends.get(msg.partition(), 0):
                done.add(msg.partition())
    finally:
        consumer.close()
    print(f"{dedupe.dropped} duplicates dropped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
