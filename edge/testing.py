"""Fakes of edge's own interfaces, for unit tests of sources (the contract tests run the real gateway)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from .errors import RecordRejectedError, SinkClosedError
from .source import DeadLetter, Reading


class FakeSink:
    """Records what sources submit. By default every submission resolves at once ("durable").

    `hold()` makes new submissions wait until `release()`, to test that sources do not ack early and stop
    reading when their window is full. `reject_next(reason)` makes the next submission fail.
    """

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.dead_letters: list[DeadLetter] = []
        self._held: list[asyncio.Future[None]] = []
        self._holding = False
        self._reject: list[str] = []
        self.closed = False

    def submit(self, reading: Reading) -> Awaitable[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.closed:
            fut.set_exception(SinkClosedError("sink closed"))
        elif self._reject:
            fut.set_exception(RecordRejectedError(self._reject.pop(0)))
        else:
            self.readings.append(reading)
            if self._holding:
                self._held.append(fut)
            else:
                fut.set_result(None)
        return fut

    def dead_letter(self, letter: DeadLetter) -> Awaitable[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.dead_letters.append(letter)
        fut.set_result(None)
        return fut

    @property
    def pending(self) -> int:
        return sum(1 for f in self._held if not f.done())

    def hold(self) -> None:
        self._holding = True

    def release(self) -> None:
        self._holding = False
        held, self._held = self._held, []
        for fut in held:
            if not fut.done():
                fut.set_result(None)

    def reject_next(self, reason: str) -> None:
        self._reject.append(reason)

    def close(self) -> None:
        self.closed = True
        held, self._held = self._held, []
        for fut in held:
            if not fut.done():
                fut.set_exception(SinkClosedError("sink closed"))
