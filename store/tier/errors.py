"""Errors of the cold tier, the SQL layer and replay. All are StoreErrors: the CLI prints them as one line."""

from __future__ import annotations

from ..errors import StoreError


class TierError(StoreError):
    """Root of the tier's errors."""


class TierUnavailableError(TierError):
    """pyarrow or duckdb is not installed (no armv7 wheels): the gateway runs without the tier."""

    def __init__(self, missing: str) -> None:
        super().__init__(f"the Parquet tier needs {missing}, not installed here: pip install 'edgestream[tier]' "
                         "(x86_64 and aarch64 only; on armv7 the records stay in the hot log)")
        self.missing = missing


class TierBusyError(TierError):
    """Another process (the gateway's tierer, or `edgestream tier run`) is tiering this data dir."""

    retriable = True

    def __init__(self, path: str, holder: str = "") -> None:
        who = f" ({holder})" if holder else ""
        super().__init__(f"{path} is being tiered by another edgestream process{who}; the gateway tiers in the "
                         "background when [tier] is configured: check `edgestream tier status`")
        self.path = path


class TierConflictError(TierError):
    """The cold tier holds data of an earlier incarnation of a partition (the topic was deleted and recreated)."""

    def __init__(self, topic: str, partition: int, tiered_log_id: str, log_id: str) -> None:
        super().__init__(f"tier/{topic} holds partition {partition} of log {tiered_log_id[:8]}..., but the hot log "
                         f"is now {log_id[:8]}... (the topic was recreated); move tier/{topic} away to tier it again")
        self.topic = topic
        self.partition = partition


class QueryRefusedError(TierError):
    """The SQL is not a read-only query (writes, COPY, ATTACH, INSTALL, SET, several statements...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"query refused: {reason}; edgestream query runs one read-only SELECT (or EXPLAIN) over "
                         "the topic views")
        self.reason = reason


class QueryFailedError(TierError):
    """DuckDB could not run the query (syntax, unknown column, out of memory, ...). `kind` is DuckDB's class."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"query failed ({kind}): {message}")
        self.kind = kind
        self.detail = message


class ReplayError(TierError):
    """A replay cannot start or continue (bad range, destination refused, missing raw payloads)."""
