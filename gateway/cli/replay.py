"""`edgestream replay TOPIC --to DEST`: send a range of history (cold tier + hot log, each offset once) to Kafka,
to another topic, or to a file; with progress on a terminal, a rate limit, and a cursor to resume.

Destinations:
  kafka:<bootstrap>          e.g. kafka:broker1:9092,broker2:9092 (topic: --kafka-topic, default TOPIC)
  kafka:<target name>        a target of the gateway config's [mirror] section (needs --config)
  topic:<name>               another topic of this data dir (created like TOPIC if missing; the gateway must
                             be stopped: appending needs the data dir's lock)
  file:<path>                .parquet, .jsonl or .csv (written as <path>.partial, renamed when complete)

Records sent to Kafka carry the same identity headers as the mirror's (edge.gw, edge.log, edge.ep, edge.p,
edge.off, edge.ts; gateway.identity), after the record's own headers, so the centre drops a replayed record it
already has exactly as it drops a mirror duplicate. A Kafka or topic replay that is interrupted continues where it
stopped when the same command is run again (cursor `replay-<hash of the arguments>`); `--restart` ignores it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import click

from ...store import Log, TopicConfig
from ...store import tier as tierpkg
from ...store.errors import DataDirLockedError
from ...store.tier.errors import ReplayError
from ..config import GatewayConfig
from ..identity import identity_headers
from .common import human_bytes, open_log, parse_time_ms
from .tier import config_option, load_config


class KafkaSink:
    """Produce to Kafka (idempotent, acks=all, explicit partition) with the identity headers. `checkpoint`
    flushes and raises if any record was not acknowledged."""

    resumable = True

    def __init__(self, log: Log, topic: str, bootstrap: str, kafka_topic: str, gateway_id: str,
                 extra: dict[str, Any] | None = None) -> None:
        try:
            from confluent_kafka import KafkaException, Producer
        except ImportError:
            raise ReplayError("replay to Kafka needs confluent-kafka: pip install 'edgestream[kafka]'") from None
        self._kafka_exception = KafkaException
        self.kafka_topic = kafka_topic
        self.gateway_id = gateway_id
        self.log_ids = {p.index: p.log_id for p in log.topic(topic).partitions}
        conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                "compression.type": "zstd", "linger.ms": 20, "message.timeout.ms": 120_000, **(extra or {})}
        self.producer = Producer(conf)
        self.errors: list[str] = []
        meta = self.producer.list_topics(kafka_topic, timeout=30)
        tmeta = meta.topics.get(kafka_topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            raise ReplayError(f"Kafka topic {kafka_topic!r} is not available at {bootstrap}: "
                              f"{tmeta.error if tmeta is not None else 'unknown topic'}; create it first")
        self.kafka_partitions = len(tmeta.partitions)

    def _report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def write(self, table: Any) -> None:
        cols = table.to_pydict()
        produce = self.producer.produce
        for i in range(table.num_rows):
            part = cols["partition"][i]
            ts = int(cols["ts"][i].timestamp() * 1000) if hasattr(cols["ts"][i], "timestamp") else cols["ts"][i]
            own = [(h["name"], h["value"]) for h in cols["headers"][i] or []]
            headers = own + identity_headers(self.gateway_id, self.log_ids[part], cols["epoch"][i], part,
                                             cols["offset"][i], ts)
            kpart = part if part < self.kafka_partitions else -1
            while True:
                try:
                    produce(self.kafka_topic, value=cols["value"][i], key=cols["key"][i], partition=kpart,
                            timestamp=ts, headers=headers, on_delivery=self._report)
                    break
                except BufferError:  # the producer's queue is full: let it deliver some
                    self.producer.poll(0.1)
        self.producer.poll(0)

    def checkpoint(self) -> None:
        left = self.producer.flush(120)
        if left:
            raise ReplayError(f"{left} records not acknowledged by Kafka within 120 s; run the replay again to "
                              "resume from the last checkpoint")
        if self.errors:
            first = self.errors[0]
            self.errors = []
            raise ReplayError(f"Kafka refused records ({first}); run the replay again to resume")

    def close(self, complete: bool) -> None:
        if complete:
            self.checkpoint()
        else:
            self.producer.flush(5)


def resolve_kafka(target: str, cfg: GatewayConfig | None) -> tuple[str, dict[str, Any]]:
    """(bootstrap servers, extra producer settings) for kafka:<bootstrap or target name>."""
    if ":" in target or "," in target:
        return target, {}
    mirror = cfg.mirror if cfg is not None else {}
    candidates: list[Any] = []
    targets = mirror.get("targets") if isinstance(mirror, dict) else None
    if isinstance(targets, dict):
        candidates = [dict(v, name=k) for k, v in targets.items() if isinstance(v, dict)]
    elif isinstance(targets, list):
        candidates = [t for t in targets if isinstance(t, dict)]
    if isinstance(mirror, dict) and mirror.get("name", "default") == target:
        candidates.append(mirror)
    for t in candidates:
        if t.get("name", "default") == target:
            bootstrap = t.get("bootstrap") or t.get("bootstrap_servers") or t.get("bootstrap.servers")
            if bootstrap:
                extra = t.get("producer", {}) if isinstance(t.get("producer"), dict) else {}
                return str(bootstrap), dict(extra)
    raise click.BadParameter(f"kafka:{target}: not host:port, and no Kafka target named {target!r} in the config's "
                             "[mirror] section (give --config, or kafka:<host:port>)", param_hint="--to")


class Progress:
    """One status line on stderr, redrawn at most 5 times a second; only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, p: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        rate = p.records / max(1e-9, now - self.t0)
        pct = f" {100 * p.records / p.total:5.1f}%" if p.total else ""
        sys.stderr.write(f"\rreplayed {p.records:,}/{p.total:,}{pct}  {rate:,.0f} rec/s  partition {p.partition} "
                         f"offset {p.offset}   ")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


@click.command(epilog="Examples:\n\n"
               "  edgestream replay telemetry --from-time 2026-11-26T00:00:00Z --to-time 2026-11-27T00:00:00Z "
               "--to kafka:broker:9092 --kafka-topic telemetry-backfill --rate 5000\n\n"
               "  edgestream replay telemetry --from-offset 0 --to-offset 100000 --partition 0 "
               "--to file:/tmp/p0.parquet\n\n"
               "  edgestream replay telemetry --from-time 2026-11-27T08:00:00Z --to topic:telemetry-copy")
@click.argument("topic")
@click.option("--to", "destination", required=True,
              help="kafka:<bootstrap|target>, topic:<name> or file:<path.parquet|.jsonl|.csv>.")
@click.option("--from-offset", type=click.IntRange(min=0), help="First offset (inclusive).")
@click.option("--to-offset", type=click.IntRange(min=0), help="End offset (exclusive).")
@click.option("--from-time", help="First timestamp (inclusive; ISO 8601, UTC if no zone, or epoch ms).")
@click.option("--to-time", help="End timestamp (exclusive).")
@click.option("--partition", "-p", "partitions", type=int, multiple=True, help="Only these partitions (repeat).")
@click.option("--rate", type=click.FloatRange(min=0.1), help="At most this many records per second.")
@click.option("--kafka-topic", help="Kafka topic to produce to (default: TOPIC).")
@click.option("--gateway-id", help="edge.gw header (default: [gateway] id from --config, else the host name).")
@click.option("--restart", is_flag=True, help="Ignore a cursor left by an interrupted run of the same replay.")
@config_option
@click.pass_context
def replay(ctx: click.Context, topic: str, destination: str, from_offset: int | None, to_offset: int | None,
           from_time: str | None, to_time: str | None, partitions: tuple[int, ...], rate: float | None,
           kafka_topic: str | None, gateway_id: str | None, restart: bool, config_path: str | None) -> None:
    """Send a range of TOPIC's history to Kafka, another topic, or a file."""
    tierpkg.require()
    from ...store.tier import manifest as mf
    from ...store.tier.replay import Replayer, ReplayRange, job_name
    from ...store.tier.sinks import TopicSink, file_sink

    kind, sep, target = destination.partition(":")
    if not sep or kind not in ("kafka", "topic", "file") or not target:
        raise click.BadParameter("expected kafka:<bootstrap|target>, topic:<name> or file:<path>", param_hint="--to")
    rng = ReplayRange(from_offset, to_offset, parse_time_ms(from_time) if from_time else None,
                      parse_time_ms(to_time) if to_time else None, tuple(partitions) or None)
    if rng.from_offset is not None and rng.to_offset is not None and rng.to_offset <= rng.from_offset:
        raise click.BadParameter("--to-offset must be above --from-offset (it is exclusive)")
    cfg, _ = load_config(ctx, config_path)
    if kind == "topic":
        if target == topic:
            raise click.BadParameter("replaying a topic into itself would never end", param_hint="--to")
        try:
            log = open_log(ctx)
        except DataDirLockedError as exc:
            raise ReplayError(f"replay to topic:{target} appends to the log, and {exc}") from None
    else:
        log = open_log(ctx, readonly=True)
    try:
        log.topic(topic)
        sink: Any
        if kind == "file":
            sink = file_sink(target)
        elif kind == "topic":
            if target not in log.topic_names():
                src = log.topic(topic).config
                log.create_topic(target, TopicConfig(partitions=src.partitions, durability=src.durability,
                                                     retention_ms=src.retention_ms))
                click.echo(f"created topic {target} ({src.partitions} partitions)", err=True)
            sink = TopicSink(log, target)
        else:
            bootstrap, extra = resolve_kafka(target, cfg)
            gid = gateway_id or (cfg.gateway.gateway_id if cfg is not None else os.uname().nodename)
            sink = KafkaSink(log, topic, bootstrap, kafka_topic or topic, gid, extra)
        job = job_name(topic, destination if kind != "kafka" else f"{destination}/{kafka_topic or topic}", rng)
        if restart and sink.resumable and log.cursors.get(job) is not None:
            log.cursors.delete(job)
        progress = Progress(sys.stderr.isatty())
        replayer = Replayer(log, mf.load(log.fs, log.data_dir), topic, rng, sink, job=job, rate=rate,
                            on_progress=progress)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        t0 = time.monotonic()
        try:
            result = replayer.run()
        except KeyboardInterrupt:
            progress.done()
            how = "run the same command again to resume" if sink.resumable else "run it again to start over"
            click.echo(f"interrupted after {replayer.progress.records:,} records; {how}", err=True)
            raise SystemExit(130) from None
        progress.done()
        took = time.monotonic() - t0
        size = f" ({human_bytes(os.path.getsize(target))})" if kind == "file" else ""
        click.echo(f"replayed {result.records:,} records of {topic} to {destination}{size} in {took:.1f} s"
                   + (" (resumed)" if result.resumed else ""), err=True)
    finally:
        log.close()
