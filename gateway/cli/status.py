"""`edgestream status`: a one-screen health summary of a running gateway, from its HTTP API (GET /v1/status).

Two samples `--sample` seconds apart give the rates (records/s in, per source). Exit codes, for scripts and
monitoring checks: 0 healthy, 1 the gateway cannot be reached or refused, 3 running but degraded (not ready, a
source down, disk below min_free_bytes, a topic blocked or broken). The problems are listed at the end.
"""

from __future__ import annotations

import time
from typing import Any

import click

from .common import api_options, api_request, echo_json, human_bytes, iso_ms, print_table

EXIT_DEGRADED = 3


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {s}s" if minutes else f"{s}s"


def problems(doc: dict[str, Any]) -> list[str]:
    """What makes the gateway degraded, one line each (empty when healthy)."""
    out = []
    if not doc.get("ready"):
        out.append("not ready (starting or stopping)")
    for s in doc.get("sources", []):
        if not s.get("running"):
            out.append(f"source {s['name']} is not running (see the gateway's log)")
    disk = doc.get("disk") or {}
    if disk.get("low"):
        out.append(f"disk free {human_bytes(disk.get('free_bytes', 0))} is below min_free_bytes "
                   f"{human_bytes(disk.get('min_free_bytes', 0))}: on_full policies apply")
    for t in doc.get("topics", []):
        if t.get("broken"):
            out.append(f"topic {t['name']}: a partition stopped writing after an I/O error; restart the gateway")
        if t.get("blocked"):
            out.append(f"topic {t['name']}: appends blocked for room (disk full, on_full=block)")
    return out


def _rate(after: dict[str, Any], before: dict[str, Any] | None, key: str, dt: float) -> float | None:
    if before is None or dt <= 0:
        return None
    return max(0.0, float(after.get(key, 0) - before.get(key, 0)) / dt)


def _fmt_rate(r: float | None) -> str:
    return "-" if r is None else f"{r:,.1f}/s"


def _extension(name: str, doc: Any) -> None:
    """The mirror's or tier's own status, shown generically: scalars on one line, lists of objects as tables."""
    if doc is None:
        click.echo(f"{name:<9}not configured")
        return
    if not isinstance(doc, dict):
        click.echo(f"{name:<9}{doc}")
        return
    scalars = [f"{k} {v}" for k, v in doc.items() if isinstance(v, str | int | float | bool) or v is None]
    click.echo(f"{name:<9}" + ("  ".join(scalars) if scalars else ""))
    for k, v in doc.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            headers = list(dict.fromkeys(h for x in v for h in x if not isinstance(x[h], dict | list)))
            rows = [[_cell(x.get(h)) for h in headers] for x in v[:12]]
            click.echo(f"  {k}:")
            print_table([["  " + r[0], *r[1:]] for r in rows], ["  " + headers[0], *headers[1:]])
            if len(v) > 12:
                click.echo(f"  ... {len(v) - 12} more")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "-" if v is None else str(v)


def render(doc: dict[str, Any], before: dict[str, Any] | None, dt: float) -> None:
    state = "READY" if doc.get("ready") else "NOT READY"
    click.echo(f"gateway  {doc['gateway']}  edgestream {doc['version']} (Python {doc.get('python', '?')}, "
               f"{doc.get('machine', '?')})  pid {doc.get('pid', '?')}  up {_duration(doc['uptime_seconds'])}  "
               f"{state}")
    click.echo(f"summary  {doc['summary']}")
    disk = doc.get("disk")
    if disk:
        click.echo(f"disk     {disk['data_dir']}: {human_bytes(disk['free_bytes'])} free of "
                   f"{human_bytes(disk['size_bytes'])} (min free {human_bytes(disk['min_free_bytes'])})"
                   f"{'  LOW' if disk.get('low') else ''}")
    proc = doc.get("process", {})
    wd = doc.get("watchdog", {})
    watchdog = (f"watchdog ping every {wd['interval_seconds']:g} s" if wd.get("interval_seconds")
                else "no systemd watchdog")
    click.echo(f"process  RSS {human_bytes(proc.get('rss_bytes', 0))}, CPU {proc.get('cpu_seconds', 0):.1f} s, "
               f"{watchdog}, max loop lag {wd.get('loop_lag_max_seconds', 0):.3f} s")
    ingest = doc.get("ingest")
    if ingest:
        rate = _rate(ingest, (before or {}).get("ingest"), "records", dt)
        click.echo(f"ingest   {ingest['records']:,} records ({_fmt_rate(rate)}), {ingest['decode_errors']:,} "
                   f"decode errors, {ingest['dead_letters']:,} dead letters, {ingest['rejected']:,} rejected")
    rec = doc.get("recovery")
    if rec:
        if not rec["unclean_partitions"]:
            click.echo("recovery clean start")
        else:
            click.echo(f"recovery unclean stop before this start: {rec['unclean_partitions']} partition(s), "
                       f"{rec['truncated_records']:,} records truncated, {rec['epoch_bumps']} epoch bump(s), "
                       f"{rec['quarantined_segments']} segment(s) quarantined")
    prev_sources = {s["name"]: s for s in (before or {}).get("sources", [])}
    if doc.get("sources"):
        click.echo("")
        rows = [[s["name"], s["type"], "running" if s["running"] else "DOWN", str(s.get("restarts", 0)),
                 f"{s.get('records_in', 0):,}", _fmt_rate(_rate(s, prev_sources.get(s["name"]), "records_in", dt))]
                for s in doc["sources"]]
        print_table(rows, ["SOURCE", "TYPE", "STATE", "RESTARTS", "RECORDS", "RATE"])
    if doc.get("topics"):
        click.echo("")
        rows = []
        for t in doc["topics"]:
            flags = [f for f, on in (("BROKEN", t.get("broken")), ("BLOCKED", t.get("blocked"))) if on]
            if t.get("dropped"):
                flags.append(f"{t['dropped']:,} dropped")
            oldest = iso_ms(t["oldest_timestamp_ms"])[:19] if t.get("oldest_timestamp_ms") else "-"
            rows.append([t["name"], str(t["partitions"]), f"{t['records']:,}", human_bytes(t.get("size_bytes", 0)),
                         oldest, " ".join(flags)])
        print_table(rows, ["TOPIC", "PARTITIONS", "RECORDS", "SIZE", "OLDEST (UTC)", "FLAGS"])
    click.echo("")
    _extension("mirror", doc.get("mirror"))
    _extension("tier", doc.get("tier"))
    issues = problems(doc)
    if issues:
        click.echo("")
        for p in issues:
            click.echo(f"PROBLEM  {p}")


@click.command(epilog="Examples:\n\n  edgestream status\n\n  edgestream status --api http://10.0.0.7:8080 --token "
                      "\"$(cat /etc/edgestream/token)\"\n\n  edgestream status --json | jq .topics")
@api_options
@click.option("--sample", type=click.FloatRange(0, 60), default=1.0, show_default=True,
              help="Seconds between two samples for the rates; 0 for one sample and no rates.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's status document as JSON.")
def status(api: str, token: str, sample: float, as_json: bool) -> None:
    """One-screen health summary of a running gateway (exit 3 when degraded)."""
    before = None
    if sample > 0 and not as_json:
        before = api_request(api, "/v1/status", token=token)
        t0 = time.monotonic()
        time.sleep(sample)  # the rates need two samples of the counters
        dt = time.monotonic() - t0
    else:
        dt = 0.0
    doc = api_request(api, "/v1/status", token=token)
    if as_json:
        echo_json(doc)
    else:
        render(doc, before, dt)
    if problems(doc):
        raise SystemExit(EXIT_DEGRADED)
