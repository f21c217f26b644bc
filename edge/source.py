"""What every source hands to the gateway, and the interface the gateway offers back.

A source (MQTT client, MQTT listener, serial line, Modbus poller) turns bytes from the outside into `Reading`s
and calls `Sink.submit`. The awaitable it gets back resolves only once the record is durable under its topic's
durability mode; only then does the source acknowledge the sender (PUBACK, serial reply). This is the one place
where ingestion and the log meet, and the only thing `edge/` knows of the log.

Backpressure is the same mechanism: a source keeps at most a bounded window of unresolved submissions and stops
reading when the window is full, so memory stays bounded at any input rate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Reading:
    """One message from a source, before routing.

    `fields` feed the route's key template and partition rule: MQTT sources set "topic" (and the levels are
    derived from it), "client_id"; serial sources set "port"; Modbus sets "port" and "unit". `headers` are
    stored with the record as they are.
    """

    source: str
    payload: bytes
    timestamp_ms: int
    fields: Mapping[str, str] = field(default_factory=dict)
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Bytes that could not even be delimited or were too large; stored in the dead-letter topic with a reason."""

    source: str
    payload: bytes
    reason: str  # bounded vocabulary: "garbage", "overlong", "checksum", "too_large", "malformed_packet", ...
    timestamp_ms: int
    detail: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)


class Sink(Protocol):
    """Where sources deliver. Implemented by the gateway's router; `edge.testing.FakeSink` for unit tests."""

    def submit(self, reading: Reading) -> Awaitable[None]:
        """Store one reading. Resolves when durable; raises `RecordRejectedError` (counted and dropped: ack
        the sender anyway) or `SinkClosedError` (shutting down: do not ack)."""
        ...

    def dead_letter(self, letter: DeadLetter) -> Awaitable[None]:
        """Store bytes that could not be framed, with the reason. Resolves when durable."""
        ...


class Source(Protocol):
    """A running source. `run` returns only when `stop` was called (or raises on a fatal configuration error)."""

    name: str

    async def run(self) -> None: ...

    async def stop(self) -> None: ...

    def statistics(self) -> object:
        """A frozen dataclass of counters (received, errors by reason, reconnects, ...)."""
        ...
