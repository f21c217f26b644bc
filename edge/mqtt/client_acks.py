"""PUBACK order for one connection: acknowledge only a prefix of settled messages, in the order received.

MQTT 3.1.1 section 4.6 (and 5.0 section 4.6) requires a client to send PUBACKs in the order the PUBLISH
packets arrived. Records become durable out of that order (different partitions commit separately), so each
received QoS 1 message takes a ticket; `settle(ticket, ack)` records the outcome; `ready()` pops the longest
prefix of settled tickets that may be acknowledged. A ticket settled with `ack=False` (the sink is closing:
the message must come back after a restart) blocks the queue for good: acknowledging anything after it would
break the order, and the broker redelivers all of them on the next session.

Pure: no I/O, no clock; the source calls `ready()` and hands the result to the session.
"""

from __future__ import annotations

from collections import deque

_PENDING, _ACK, _NEVER = 0, 1, 2


class AckQueue:
    __slots__ = ("_base", "_entries", "_pending")

    def __init__(self) -> None:
        self._entries: deque[list[int]] = deque()  # [mid, qos, state] in receive order
        self._base = 0  # ticket of _entries[0]
        self._pending = 0

    def __len__(self) -> int:
        """Messages received and not yet handed out by `ready()` (settled or not)."""
        return len(self._entries)

    @property
    def pending(self) -> int:
        """Messages whose outcome is not known yet."""
        return self._pending

    @property
    def blocked(self) -> bool:
        """The oldest message must never be acknowledged on this connection."""
        return bool(self._entries) and self._entries[0][2] == _NEVER

    def receive(self, mid: int, qos: int) -> int:
        """Register a received message; returns its ticket."""
        self._entries.append([mid, qos, _PENDING])
        self._pending += 1
        return self._base + len(self._entries) - 1

    def settle(self, ticket: int, ack: bool) -> None:
        """Record the outcome of `ticket`: True once durable (or rejected for good), False: never ack it."""
        index = ticket - self._base
        if not 0 <= index < len(self._entries):
            raise ValueError(f"ticket {ticket} is not in the queue (base {self._base}, "
                             f"{len(self._entries)} held)")
        entry = self._entries[index]
        if entry[2] != _PENDING:
            raise ValueError(f"ticket {ticket} settled twice")
        entry[2] = _ACK if ack else _NEVER
        self._pending -= 1

    def ready(self) -> list[tuple[int, int]]:
        """Pop and return (mid, qos) of the settled prefix that may be acknowledged now, oldest first."""
        out: list[tuple[int, int]] = []
        entries = self._entries
        while entries and entries[0][2] == _ACK:
            mid, qos, _ = entries.popleft()
            out.append((mid, qos))
        self._base += len(out)
        return out
