"""`edgestream check [--repair]`: verify a data dir offline and say in plain words what was found."""

from __future__ import annotations

import dataclasses

import click

from ...store import Log
from ...store.check import check_data_dir, prepare_repair
from ...store.fs import OsFileSystem
from ...store.lock import DataDirLock
from .common import data_dir, echo_json, fail


@click.command(epilog="Examples:\n\n  systemctl stop edgestream && edgestream check\n\n  edgestream check --repair")
@click.option("--repair", is_flag=True, help="Run recovery: truncate torn tails, quarantine corrupt sealed "
              "segments, rebuild indexes and state. Then check again.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.pass_context
def check(ctx: click.Context, repair: bool, as_json: bool) -> None:
    """Verify CRCs, offsets and indexes of every partition (the gateway must be stopped).

    Exits 0 when everything is intact, 1 when problems were found (after --repair: that could not be repaired)."""
    root = data_dir(ctx)
    lock = DataDirLock(root)
    try:
        lock.acquire()  # offline only: a running gateway is writing the tail we would judge
    except FileNotFoundError:
        fail(f"data dir {root} does not exist")
    try:
        report = check_data_dir(OsFileSystem(), root)
        repaired: list[str] = []
        if repair and not report.ok:
            repaired = prepare_repair(OsFileSystem(), report)
            lock.release()
            with Log.open(root, create=False, scrub_interval_ms=0) as log:
                repaired += [r.describe() for r in log.recovery_reports() if not r.clean or r.quarantined]
            lock.acquire()
            report = check_data_dir(OsFileSystem(), root)
    finally:
        lock.release()
    if as_json:
        echo_json({"ok": report.ok, "repaired": repaired, **dataclasses.asdict(report)})
    else:
        for line in repaired:
            click.echo(f"repaired: {line}")
        for line in report.lines():
            click.echo(line)
        total = sum(p.records for p in report.partitions)
        click.echo(f"{'OK' if report.ok else 'PROBLEMS FOUND'}: {len(report.partitions)} partitions, {total} records"
                   + ("" if report.ok or repair else "; `edgestream check --repair` fixes what recovery can"))
    if not report.ok:
        raise SystemExit(1)
