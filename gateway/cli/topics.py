"""`edgestream topics create|list|describe|delete`."""

from __future__ import annotations

from typing import Any

import click

from ...store import TopicConfig
from ...store.config import ON_FULL
from .common import data_dir, echo_json, fail, human_bytes, open_log, print_table


@click.group(epilog="Example: edgestream topics create sensors --partitions 4 --codec zstd --durability fsync")
def topics() -> None:
    """Create, list, describe and delete topics."""


@topics.command(
    epilog="Examples:\n\n  edgestream topics create sensors --partitions 4\n\n"
    "  edgestream topics create alarms --durability interval:50 --retention-bytes 1073741824 --on-full drop_oldest"
)
@click.argument("name")
@click.option("--partitions", "-p", type=int, default=1, show_default=True, help="Partitions (order is per partition).")
@click.option("--codec", type=click.Choice(["zstd", "lz4", "none"]), default="zstd", show_default=True,
              help="Frame compression (lz4 for weak CPUs).")
@click.option("--compression-level", type=int, default=1, show_default=True, help="zstd level 1-19.")
@click.option("--durability", default="fsync", show_default=True,
              help="fsync | interval:<ms> | os: when a record is acknowledged (see README, 'guarantees').")
@click.option("--segment-bytes", type=int, default=TopicConfig().segment_bytes, show_default=True)
@click.option("--segment-ms", type=int, default=TopicConfig().segment_ms, show_default=True)
@click.option("--retention-bytes", type=int, default=None, help="Per partition; default: no size limit.")
@click.option("--retention-ms", type=int, default=TopicConfig().retention_ms, show_default=True,
              help="By a segment's newest record; 0 disables time retention.")
@click.option("--on-full", type=click.Choice(ON_FULL), default="block", show_default=True,
              help="What happens when the disk or the topic's cap is full.")
@click.option("--max-record-bytes", type=int, default=TopicConfig().max_record_bytes, show_default=True)
@click.option("--linger-ms", type=float, default=TopicConfig().linger_ms, show_default=True,
              help="How long an append may wait for others to share its fsync.")
@click.option("--if-not-exists", is_flag=True, help="Succeed quietly if the topic exists.")
@click.pass_context
def create(ctx: click.Context, name: str, partitions: int, codec: str, compression_level: int, durability: str,
           segment_bytes: int, segment_ms: int, retention_bytes: int | None, retention_ms: int, on_full: str,
           max_record_bytes: int, linger_ms: float, if_not_exists: bool) -> None:
    """Create topic NAME."""
    cfg = TopicConfig(
        partitions=partitions, codec=codec, compression_level=compression_level, durability=durability,
        segment_bytes=segment_bytes, segment_ms=segment_ms, retention_bytes=retention_bytes,
        retention_ms=retention_ms or None, on_full=on_full, max_record_bytes=max_record_bytes, linger_ms=linger_ms,
    )
    with open_log(ctx, create=True) as log:
        if if_not_exists and name in log.topic_names():
            click.echo(f"topic {name} exists")
            return
        log.create_topic(name, cfg)
    click.echo(f"created topic {name}: {partitions} partition(s), codec {codec}, durability {durability}, "
               f"on_full {on_full}")


@topics.command(name="list", epilog="Example: edgestream --data-dir /var/lib/edgestream topics list --json")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List topics with their size (works while the gateway runs)."""
    with open_log(ctx, readonly=True) as log:
        stats = {t.topic: t for t in log.statistics().topics}
        rows: list[dict[str, Any]] = []
        for t in log.topics():
            s = stats[t.name]
            rows.append({"topic": t.name, "partitions": len(t.partitions), "records": s.records,
                         "bytes": s.size_bytes, "durability": t.config.durability, "codec": t.config.codec})
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no topics in {data_dir(ctx)}; create one with `edgestream topics create NAME`")
        return
    print_table([[r["topic"], str(r["partitions"]), f"{r['records']:,}", human_bytes(r["bytes"]), r["durability"],
                  r["codec"]] for r in rows], ["TOPIC", "PARTITIONS", "RECORDS", "SIZE", "DURABILITY", "CODEC"])


@topics.command(epilog="Example: edgestream topics describe sensors")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def describe(ctx: click.Context, name: str, as_json: bool) -> None:
    """Settings and partitions of topic NAME (works while the gateway runs)."""
    import msgspec

    with open_log(ctx, readonly=True) as log:
        t = log.topic(name)
        parts: list[dict[str, Any]] = []
        for p in t.partitions:
            s = p.statistics()
            parts.append({"partition": p.index, "log_start": s.log_start, "end_offset": s.high_watermark,
                          "epoch": s.epoch, "segments": s.segments, "bytes": s.size_bytes,
                          "log_id": p.log_id.hex(), "gap_records": s.gap_records})
        config = msgspec.to_builtins(t.config)
    if as_json:
        echo_json({"topic": name, "config": config, "partitions": parts})
        return
    click.echo(f"topic {name}")
    for k, v in config.items():
        click.echo(f"  {k}: {v}")
    print_table([[str(p["partition"]), str(p["log_start"]), str(p["end_offset"]), str(p["epoch"]),
                  str(p["segments"]), human_bytes(p["bytes"]), p["log_id"]] for p in parts],
                ["PARTITION", "START", "END", "EPOCH", "SEGMENTS", "SIZE", "LOG ID"])


@topics.command(epilog="Example: edgestream topics delete scratch --yes")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete topic NAME and all its records."""
    with open_log(ctx) as log:
        t = log.topic(name)
        total = t.statistics().records
        if not yes and not click.confirm(f"delete topic {name} and its {total} records?"):
            fail("not deleted")
        log.delete_topic(name)
    click.echo(f"deleted topic {name} ({total} records)")
