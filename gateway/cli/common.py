"""What every subcommand shares: one clear line on stderr and an exit code instead of a traceback; opening the log."""

from __future__ import annotations

import datetime as dt
import errno
import json
import sys
from typing import Any, NoReturn

import click

from ...edge.errors import EdgeError
from ...store import Log, LogConfig
from ...store.errors import StoreError
from ..errors import GatewayError

# Exit codes: 0 ok, 1 operational error (the message says what to do), 2 usage error (click's own).
EXIT_ERROR = 1


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    click.echo(f"edgestream: error: {message}", err=True)
    raise SystemExit(code)


def run_cli(group: click.Group, argv: list[str]) -> Any:
    """Run the click group; map our errors (and a few OS ones) to a single line on stderr, never a traceback."""
    try:
        return group.main(args=argv, prog_name="edgestream", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("edgestream: aborted", err=True)
        raise SystemExit(130) from None
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except (StoreError, EdgeError, GatewayError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        # `edgestream consume ... | head`: the reader went away; that is not an error.
        try:
            sys.stdout = None  # type: ignore[assignment]
        finally:
            raise SystemExit(0) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            fail(f"disk full: {exc.filename or ''} ({exc.strerror}); free space or lower retention")
        if exc.errno in (errno.EACCES, errno.EPERM):
            fail(f"permission denied: {exc.filename or exc}; run as the edgestream user or pass --data-dir")
        fail(f"{exc.strerror or exc}: {exc.filename or ''}")


def data_dir(ctx: click.Context) -> str:
    return str(ctx.find_root().obj["data_dir"])


def open_log(ctx: click.Context, *, readonly: bool = False, create: bool = False, **config: Any) -> Log:
    """Open the data dir: read-only for inspection (works beside a running gateway), else with the lock."""
    return Log.open(data_dir(ctx), LogConfig(**config), readonly=readonly, create=create)


def parse_time_ms(text: str) -> int:
    """ISO 8601 (naive means UTC) or milliseconds since the epoch."""
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not ISO 8601 (e.g. 2026-11-27T08:00:00Z) nor epoch milliseconds")
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)


def iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def echo_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))
