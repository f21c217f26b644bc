"""The identity every record carries upstream (mirror and replay to Kafka), so the centre can drop duplicates.

    edge.gw   gateway id (config [gateway] id)          utf-8
    edge.log  the partition's log id (16 random bytes)  hex, 32 chars
    edge.ep   the epoch the record was written in        decimal
    edge.p    edge partition                             decimal
    edge.off  offset in the edge partition               decimal
    edge.ts   edge timestamp, ms since the epoch         decimal

Per (edge.gw, edge.log, edge.p), keep the largest (edge.ep, edge.off) seen and drop anything at or below it: that
removes exactly the duplicates at-least-once delivery makes (see docs/mirror.md for the consumer and the SQL).
Values are text so that kcat, Kafka UIs and SQL engines show them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER_NAMES = ("edge.gw", "edge.log", "edge.ep", "edge.p", "edge.off", "edge.ts")


@dataclass(frozen=True, slots=True)
class Identity:
    gateway: str
    log_id: str  # hex
    epoch: int
    partition: int
    offset: int
    timestamp_ms: int

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("edge.gw", self.gateway.encode()),
            ("edge.log", self.log_id.encode()),
            ("edge.ep", str(self.epoch).encode()),
            ("edge.p", str(self.partition).encode()),
            ("edge.off", str(self.offset).encode()),
            ("edge.ts", str(self.timestamp_ms).encode()),
        ]

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes]] | None) -> Identity | None:
        """The identity in a consumed record's headers, or None if any part is missing."""
        h = {k: v for k, v in (headers or []) if k in HEADER_NAMES}
        if len(h) != len(HEADER_NAMES):
            return None
        try:
            return cls(h["edge.gw"].decode(), h["edge.log"].decode(), int(h["edge.ep"]), int(h["edge.p"]),
                       int(h["edge.off"]), int(h["edge.ts"]))
        except (ValueError, UnicodeDecodeError):
            return None

    @property
    def stream(self) -> tuple[str, str, int]:
        """What dedupe keys on: one ordered stream per edge partition."""
        return (self.gateway, self.log_id, self.partition)

    @property
    def position(self) -> tuple[int, int]:
        return (self.epoch, self.offset)


def identity_headers(gateway: str, log_id: bytes, epoch: int, partition: int, offset: int,
                     timestamp_ms: int) -> list[tuple[str, bytes]]:
    return Identity(gateway, log_id.hex(), epoch, partition, offset, timestamp_ms).headers()
