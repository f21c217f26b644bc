"""`edgestream tier run|status`: the Parquet cold tier from the command line.

`tier run` tiers every sealed segment not tiered yet (then cold retention and compaction) and exits; with
`--watch` it keeps doing so. It works beside a running gateway that does not tier itself (it then reads the log
read-only); a gateway with [tier] configured already tiers in the background, and the tier lock says so.
`tier status` needs neither pyarrow nor duckdb: it reads the manifest and the hot log's segment list.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import signal
import time
from typing import Any

import click

from ...store import Log
from ...store import tier as tierpkg
from ...store.errors import DataDirLockedError
from ...store.fs import OsFileSystem
from ...store.tier import layout
from ...store.tier import manifest as mf
from ...store.tier.stats import backlog
from .. import config as gwconfig
from .. import tiering
from .common import data_dir, echo_json, human_bytes, iso_ms, open_log, print_table


def config_option(f: Any) -> Any:
    return click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, exists=True),
                        envvar="EDGESTREAM_CONFIG",
                        help="The gateway's config: topics' decoders and [tier] settings (env EDGESTREAM_CONFIG).")(f)


def load_config(ctx: click.Context, config_path: str | None) -> tuple[gwconfig.GatewayConfig | None,
                                                                       tiering.TierConfig]:
    """The gateway config (data dir from it unless --data-dir was given) and its [tier] section."""
    if not config_path:
        return None, tiering.TierConfig()
    cfg = gwconfig.load(config_path)
    root = ctx.find_root()
    if root.get_parameter_source("data_dir") in (click.core.ParameterSource.DEFAULT, None):
        root.obj["data_dir"] = cfg.gateway.data_dir
    return cfg, tiering.parse_config(cfg)


def open_log_shared(ctx: click.Context) -> Log:
    """The log with its lock if nobody holds it, else read-only (a running gateway has it)."""
    try:
        return open_log(ctx)
    except DataDirLockedError:
        return open_log(ctx, readonly=True)


@click.group(epilog="Example: edgestream tier status -c /etc/edgestream/gateway.toml")
def tier() -> None:
    """Parquet cold tier: run and status."""


@tier.command(epilog="Examples:\n\n  edgestream tier run -c /etc/edgestream/gateway.toml\n\n"
              "  edgestream --data-dir /var/lib/edgestream tier run --watch --interval 60")
@config_option
@click.option("--watch", is_flag=True, help="Keep tiering every --interval seconds (Ctrl-C to stop).")
@click.option("--interval", type=float, default=None, help="Seconds between passes with --watch "
              "(default: [tier] interval_s).")
@click.option("--cpu-share", type=click.FloatRange(0.01, 1.0), default=1.0, show_default=True,
              help="Pace tiering to this share of one core.")
@click.pass_context
def run(ctx: click.Context, config_path: str | None, watch: bool, interval: float | None, cpu_share: float) -> None:
    """Tier sealed segments now (then cold retention and compaction).

    Builds the next chunk of rows on a second thread while it writes the current one; --cpu-share paces the
    whole run. Refused while the gateway's own tierer holds the data dir."""
    tierpkg.require()
    from ...store.tier.tierer import Tierer

    cfg, tcfg = load_config(ctx, config_path)
    settings = dataclasses.replace(tiering.tier_settings(tcfg, threads=True), cpu_share=cpu_share)
    log = open_log_shared(ctx)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True
        tierer.stopping.set()

    tierer = Tierer(log, decoders_for(log, cfg), settings)
    try:
        tierer.open()
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while True:
            t0 = time.monotonic()
            before = tierer.statistics()
            tierer.run_once()
            st = tierer.statistics()
            took = time.monotonic() - t0
            rows = st.rows_tiered - before.rows_tiered
            click.echo(f"tiered {st.segments_tiered - before.segments_tiered} segments, {rows:,} rows in "
                       f"{took:.1f} s ({rows / took if took else 0:,.0f} rows/s); tier: {st.files} files, "
                       f"{human_bytes(st.tier_bytes)}"
                       + (f"; {st.compactions} compactions" if st.compactions else "")
                       + (f"; expired {st.retention_deleted_files} files" if st.retention_deleted_files else ""))
            for conflict in st.conflicts:
                click.echo(f"edgestream: warning: {conflict}", err=True)
            if not watch or stop:
                break
            tierer.stopping.wait(interval if interval is not None else tcfg.interval_s)
            if stop:
                break
            if log.readonly:
                log.close()
                log = open_log(ctx, readonly=True)  # pick up segments sealed since
                tierer.log = log
    finally:
        tierer.close()
        log.close()


def decoders_for(log: Log, cfg: gwconfig.GatewayConfig | None) -> dict[str, tierpkg.TopicDecoder]:
    """The config's decoders; for topics it does not name, what the manifest recorded when they were tiered."""
    out = tiering.decoders(cfg)
    m = mf.load(log.fs, log.data_dir)
    for topic in log.topic_names():
        spec = m.decoder(topic)
        if topic not in out and spec is not None:
            out[topic] = tiering.make_decoder(spec)
    return out


def _tierer_holder(root: str) -> str | None:
    """'pid N' if a tierer holds the tier lock now, '' if one holds it without saying, None if none does."""
    path = os.path.join(root, layout.LOCK)
    if not os.path.exists(path):
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return f"pid {pid}" if pid else ""
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@tier.command(epilog="Examples:\n\n  edgestream tier status -c /etc/edgestream/gateway.toml\n\n"
              "  edgestream --data-dir /var/lib/edgestream tier status --json")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, config_path: str | None, as_json: bool) -> None:
    """What is tiered, what waits, and whether a tierer runs. Works without the tier extra."""
    _cfg, tcfg = load_config(ctx, config_path)
    ddir = data_dir(ctx)
    gone = tierpkg.missing()
    manifest = mf.load(OsFileSystem(), os.path.abspath(ddir)) if os.path.isdir(ddir) else mf.Manifest()
    holder = _tierer_holder(layout.tier_dir(os.path.abspath(ddir)))
    log = open_log(ctx, readonly=True)
    try:
        topics = [t for t in log.topic_names() if tcfg.topics is None or t in tcfg.topics]
        waiting = backlog(log, manifest, topics)
    finally:
        log.close()
    doc: dict[str, Any] = {
        "available": not gone,
        "missing": gone or None,
        "tierer": {"running": holder is not None, "holder": holder or None},
        "files": len(manifest.files),
        "bytes": manifest.total_bytes(),
        "topics": {},
    }
    for topic in sorted(set(manifest.topics) | set(topics)):
        spec = manifest.decoder(topic)
        parts = []
        for b in [b for b in waiting if b.topic == topic]:
            files = manifest.files_of(topic, b.partition)
            parts.append({"partition": b.partition, "files": len(files), "bytes": sum(f.bytes for f in files),
                          "rows": sum(f.rows for f in files),
                          "oldest": iso_ms(min(f.min_ts for f in files)) if files else None,
                          "newest": iso_ms(max(f.max_ts for f in files)) if files else None,
                          "tiered_upto": b.tiered_upto, "high_watermark": b.high_watermark,
                          "backlog_segments": b.segments, "backlog_bytes": b.bytes})
        doc["topics"][topic] = {"decoder": spec.kind if spec else None,
                                "bytes": manifest.total_bytes(topic), "partitions": parts}
    if as_json:
        echo_json(doc)
        return
    if gone:
        click.echo(f"tier: NOT INSTALLED ({gone} missing: pip install 'edgestream[tier]'); records stay in the hot "
                   "log, nothing is tiered or deleted for tiering")
    else:
        click.echo("tier: available (pyarrow, duckdb)")
    click.echo("tierer: " + (f"running ({holder})" if holder else "running" if holder == "" else "not running"))
    click.echo(f"cold tier: {len(manifest.files)} files, {human_bytes(manifest.total_bytes())}")
    rows = [[topic, str(p["partition"]), t["decoder"] or "-", str(p["files"]), human_bytes(p["bytes"]),
             f"{p['rows']:,}", str(p["tiered_upto"]), str(p["high_watermark"]), str(p["backlog_segments"]),
             p["oldest"] or "-", p["newest"] or "-"]
            for topic, t in doc["topics"].items() for p in t["partitions"]]
    if rows:
        print_table(rows, ["TOPIC", "PART", "DECODER", "FILES", "SIZE", "ROWS", "TIERED_UPTO", "HIGH_WATERMARK",
                           "BACKLOG", "OLDEST", "NEWEST"])
