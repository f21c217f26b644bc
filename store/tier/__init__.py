"""edgestream.store.tier: the Parquet cold tier, SQL over hot + cold (DuckDB), and replay.

Needs the optional extra `edgestream[tier]` (pyarrow, duckdb; no armv7 wheels). Only the manifest, the layout,
the plans and the errors import without it, so status tools work everywhere: import the other modules
(`tierer`, `query`, `replay`) only after `available()` says yes.
"""

from __future__ import annotations

import importlib.util

from .errors import (
    QueryFailedError,
    QueryRefusedError,
    ReplayError,
    TierBusyError,
    TierConflictError,
    TierError,
    TierUnavailableError,
)
from .manifest import DecoderSpec, Manifest, TierFile, TopicDecoder


def missing() -> str:
    """'' when pyarrow and duckdb are importable, else the names of those that are not."""
    return " and ".join(n for n in ("pyarrow", "duckdb") if importlib.util.find_spec(n) is None)


def available() -> bool:
    return not missing()


def require() -> None:
    """Raise TierUnavailableError (one clear line for the operator) unless the extra is installed."""
    gone = missing()
    if gone:
        raise TierUnavailableError(gone)
    try:
        import duckdb  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise TierUnavailableError(exc.name or "pyarrow and duckdb") from None


__all__ = [
    "DecoderSpec",
    "Manifest",
    "QueryFailedError",
    "QueryRefusedError",
    "ReplayError",
    "TierBusyError",
    "TierConflictError",
    "TierError",
    "TierFile",
    "TierUnavailableError",
    "TopicDecoder",
    "available",
    "missing",
    "require",
]
