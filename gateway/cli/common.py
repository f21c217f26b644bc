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
            sys.stdout = None
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
        raise click.BadParameter(
            f"{text!r} is not ISO 8601 (e.g. 2026-11-27T08:00:00Z) nor epoch milliseconds"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace(
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


def api_options(f: Any) -> Any:
    """--api and --token for commands that talk to a running gateway's HTTP API."""
    f = click.option("--token", envvar="EDGESTREAM_TOKEN", default="", help="Bearer token (env EDGESTREAM_TOKEN).")(f)
    f = click.option("--api", envvar="EDGESTREAM_API", default="http://127.0.0.1:8080", show_default=True,
                     help="The running gateway's HTTP API (env EDGESTREAM_API).")(f)
    return f


def api_request(api: str, path: str, *, token: str = "", method: str = "GET", body: object = None,
                timeout: float = 10.0) -> Any:
    """JSON from the gateway's API, or a clear error if it is not running or refuses."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api.rstrip("/") + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("message", "")
        except ValueError:
            detail = ""
        fail(f"{api}{path}: HTTP {exc.code} {detail or exc.reason}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"cannot reach the gateway at {api} ({reason}); is `edgestream run` going? (--api / EDGESTREAM_API)")
