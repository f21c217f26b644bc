"""Appends as the writer holds them, and how their futures are resolved.

An `Append` is one `append_batch` call: its records, their measured `BatchInfo`, and the future its producer
waits on (a `concurrent.futures.Future` for `Log`, an asyncio future for `AsyncLog`). `deliver` resolves many at
once: thread futures directly, asyncio futures with one `call_soon_threadsafe` per event loop (DESIGN: no thread
calls into a loop except through that one door).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .frame import BatchInfo, RecordIn

AnyFuture = concurrent.futures.Future[int] | asyncio.Future[int]


ErrorMapper = Callable[[BaseException], BaseException]


class Append:
    __slots__ = ("enqueued", "future", "info", "loop", "nbytes", "on_error", "records")

    def __init__(
        self,
        records: list[RecordIn],
        info: BatchInfo,
        future: AnyFuture,
        loop: asyncio.AbstractEventLoop | None,
        enqueued: float,
        on_error: ErrorMapper | None = None,
    ) -> None:
        self.records = records
        self.info = info
        self.nbytes = info.nbytes
        self.future = future
        self.loop = loop
        self.enqueued = enqueued
        # Asyncio callers may turn a store error into their own (run on their loop) instead of chaining a second
        # future and callback per record: the gateway's router does, once per MQTT message.
        self.on_error = on_error


@dataclass(slots=True)
class Queue:
    appends: deque[Append]
    nbytes: int = 0
    records: int = 0


Result = tuple[Append, int | BaseException]


def deliver(results: list[Result]) -> None:
    """Resolve futures: (append, base offset) acknowledges, (append, exception) fails."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Result]] = {}
    for a, res in results:
        if a.loop is None:
            fut = a.future
            assert isinstance(fut, concurrent.futures.Future)
            if fut.done():
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)
        else:
            by_loop.setdefault(a.loop, []).append((a, res))
    for loop, items in by_loop.items():
        call_threadsafe(loop, _resolve_async, items)


def call_threadsafe(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], arg: object) -> None:
    try:
        loop.call_soon_threadsafe(fn, arg)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def set_none(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _resolve_async(items: list[Result]) -> None:
    for a, res in items:
        fut = a.future
        if fut.done():
            continue
        if isinstance(res, BaseException):
            fut.set_exception(a.on_error(res) if a.on_error is not None else res)
        else:
            fut.set_result(res)
