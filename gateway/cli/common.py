"""What every subcommand shares: turning errors into one clear line on stderr and an exit code."""

from __future__ import annotations

import errno
import sys
from typing import Any

import click

from ...edge.errors import EdgeError
from ...store.errors import StoreError
from ..errors import GatewayError

# Exit codes: 0 ok, 1 operational error (the message says what to do), 2 usage error (click's own).
EXIT_ERROR = 1


def fail(message: str, code: int = EXIT_ERROR) -> "NoReturn":  # noqa: F821
    click.echo(f"edgestream: error: {message}", err=True)
    raise SystemExit(code)


def run_cli(group: click.Group, argv: list[str]) -> Any:
    """Run the click group; map our errors (and a few OS ones) to a single line on stderr, never a traceback."""
    try:
        return group.main(args=argv, prog_name="edgestream", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("edgestream: aborted", err=True)
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except (StoreError, EdgeError, GatewayError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:
        # `edgestream consume ... | head`: the reader went away; that is not an error.
        sys.stderr.close()
        raise SystemExit(0) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            fail(f"disk full: {exc.filename or ''} ({exc.strerror}); free space or lower retention")
        if exc.errno in (errno.EACCES, errno.EPERM):
            fail(f"permission denied: {exc.filename or exc}; run as the edgestream user or pass --data-dir")
        fail(f"{exc.strerror or exc}: {exc.filename or ''}")
