"""`edgestream mirror status|pause|resume|reset`: the upstream mirror of a running gateway, through its HTTP API.

`reset` also works on a stopped gateway, directly on the cursor files: `edgestream mirror reset --data-dir D ...`
(it takes the data dir's lock, so it refuses while the gateway runs).
"""

from __future__ import annotations

import click

from .common import api_options, api_request, echo_json, fail, print_table

_STATUS_EXAMPLE = """Examples:

\b
  edgestream mirror status
  edgestream mirror status --json --api http://10.0.0.5:8080 --token "$TOKEN"
"""


@click.group(epilog="Example: edgestream mirror status")
def mirror() -> None:
    """Upstream mirror (Kafka): lag, pause/resume, cursor reset."""


@mirror.command(epilog=_STATUS_EXAMPLE)
@click.option("--json", "as_json", is_flag=True, help="The API's JSON document instead of the table.")
@api_options
def status(as_json: bool, api: str, token: str) -> None:
    """Per partition: lag in records, bytes and time, drain rate, ETA, and each target's state and errors."""
    from ..mirror.view import HEADERS, lag_lines, rows

    doc = api_request(api, "/v1/mirror/status", token=token)
    if as_json:
        echo_json(doc)
        return
    if not doc.get("targets"):
        click.echo("no mirror targets (is there a [mirror] section with enabled targets?)")
        return
    print_table(rows(doc), HEADERS)
    click.echo("")
    for line in lag_lines(doc):
        click.echo(line)
    for t in doc["targets"]:
        errs = t.get("delivery_errors") or {}
        if errs:
            click.echo(f"  {t['name']} delivery errors: " + ", ".join(f"{k}={v}" for k, v in sorted(errs.items())))
        if t.get("producer_recreations"):
            click.echo(f"  {t['name']} producer recreations: {t['producer_recreations']}")


def _target_body(target: str | None) -> dict[str, str]:
    return {"target": target} if target else {}


@mirror.command(epilog="Examples:\n\n  edgestream mirror pause\n\n  edgestream mirror pause --target central")
@click.option("--target", help="Only this target (default: all).")
@api_options
def pause(target: str | None, api: str, token: str) -> None:
    """Stop sending to Kafka. Ingestion goes on; the log keeps everything until `resume`."""
    doc = api_request(api, "/v1/mirror/pause", token=token, method="POST", body=_target_body(target))
    for t in doc["targets"]:
        note = f" (was already paused: {t['was_paused']})" if t.get("was_paused") else ""
        click.echo(f"paused mirror target {t['target']}{note}")


@mirror.command(epilog="Examples:\n\n  edgestream mirror resume\n\n  edgestream mirror resume --target central")
@click.option("--target", help="Only this target (default: all).")
@api_options
def resume(target: str | None, api: str, token: str) -> None:
    """Send again (also ends a pause after an authorization failure, once the ACLs are fixed)."""
    doc = api_request(api, "/v1/mirror/resume", token=token, method="POST", body=_target_body(target))
    for t in doc["targets"]:
        was = f" (was paused: {t['was_paused']})" if t.get("was_paused") else " (was not paused)"
        click.echo(f"resumed mirror target {t['target']}{was}")


_RESET_EXAMPLE = """Examples:

\b
  edgestream mirror reset --topic telemetry --to-time 2026-11-27T08:00:00Z
  edgestream mirror reset --topic telemetry --partition 2 --to-offset 0 --target central
  systemctl stop edgestream
  edgestream mirror reset --data-dir /var/lib/edgestream --topic telemetry --to-offset 0
"""


@mirror.command(epilog=_RESET_EXAMPLE)
@click.option("--topic", required=True, help="Edge topic whose mirror cursor moves.")
@click.option("--partition", type=click.IntRange(min=0), help="Only this partition (default: all of the topic).")
@click.option("--to-offset", type=click.IntRange(min=0), help="Next offset to mirror.")
@click.option("--to-time", help="First record at or after this time (ISO 8601, naive = UTC, or epoch ms).")
@click.option("--target", help="Only this target (default: every target that mirrors the topic).")
@click.option("--data-dir", "offline_dir", type=click.Path(file_okay=False),
              help="Reset the cursor files of a STOPPED gateway in this data dir, instead of through the API.")
@api_options
@click.pass_context
def reset(ctx: click.Context, topic: str, partition: int | None, to_offset: int | None, to_time: str | None,
          target: str | None, offline_dir: str | None, api: str, token: str) -> None:
    """Move the mirror cursor: backwards re-sends (the centre drops the copies), forwards skips records for good.

    The new position is persisted before this returns; the old and new offsets are printed."""
    if (to_offset is None) == (to_time is None):
        raise click.UsageError("give exactly one of --to-offset and --to-time")
    body: dict[str, object] = {"topic": topic}
    if partition is not None:
        body["partition"] = partition
    if to_offset is not None:
        body["to_offset"] = to_offset
    if to_time is not None:
        body["to_time"] = to_time
    if target:
        body["target"] = target
    root = ctx.find_root()
    if offline_dir is None and root.get_parameter_source("data_dir") not in (click.core.ParameterSource.DEFAULT,
                                                                             None):
        offline_dir = root.obj["data_dir"]
    if offline_dir is not None:
        from ..mirror.errors import ResetError
        from ..mirror.reset import ResetRequest, reset_offline

        try:
            changes = reset_offline(offline_dir, ResetRequest.from_json(body))
        except ResetError as exc:
            fail(str(exc))
    else:
        changes = api_request(api, "/v1/mirror/reset", token=token, method="POST", body=body)["changes"]
    for c in changes:
        old = "none" if c["from"] is None else str(c["from"])
        direction = "" if c["from"] is None or c["from"] == c["to"] else (
            " (re-sends)" if c["to"] < c["from"] else " (skips)")
        click.echo(f"mirror target {c['target']}: {c['topic']}/{c['partition']} cursor {old} -> {c['to']}{direction}")
