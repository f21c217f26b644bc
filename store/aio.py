"""AsyncLog: the asyncio face of a Log (same core, same writer thread; no second implementation).

`await alog.append(...)` resolves when the record is acknowledged under its topic's durability mode. The writer
resolves the futures of one event loop with a single `call_soon_threadsafe` per commit round. When the writer is
over `max_pending_bytes`, `append` waits (without blocking the loop) until it drains: backpressure that reaches
the sources. Reads run in a worker thread: a page that is not cached is an SD card read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from .errors import LogClosedError
from .frame import RecordIn
from .log import Log
from .partition import Partition
from .record import Record


class AsyncLog:
    def __init__(self, log: Log) -> None:
        self.log = log

    async def append(
        self,
        topic: str,
        partition: int,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: tuple[tuple[str, bytes], ...] = (),
        timestamp_ms: int | None = None,
    ) -> int:
        ts = self.log.wall_ms() if timestamp_ms is None else timestamp_ms
        return await self.append_batch(topic, partition, [RecordIn(ts, key, value, headers)])

    def append_batch_nowait(
        self,
        topic: str,
        partition: int,
        records: Sequence[RecordIn],
        *,
        future: asyncio.Future[Any] | None = None,
        on_error: Callable[[BaseException], BaseException] | None = None,
    ) -> asyncio.Future[Any]:
        """Queue now (no waiting for room) and return the future: lets a caller keep its own order of acks.

        `future`: resolve this one (with the base offset) instead of a new one; `on_error` turns a store error
        into what that future should raise (called on the loop). Both spare a hot caller a second future."""
        self.log._check_writable()
        p, recs, info = self.log._prepare(topic, partition, records)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = future if future is not None else loop.create_future()
        assert self.log.writer is not None
        self.log.writer.submit(p, recs, info, fut, loop, wait_for_room=False, on_error=on_error)
        return fut

    async def wait_for_room(self) -> None:
        """Return once the writer has room for more appends (immediately if it has)."""
        writer = self.log.writer
        if writer is None:
            raise LogClosedError("the log is read-only")
        while True:
            waiter = writer.wait_room_async(asyncio.get_running_loop())
            if waiter is None:
                return
            await waiter

    async def append_batch(self, topic: str, partition: int, records: Sequence[RecordIn]) -> int:
        await self.wait_for_room()
        base: int = await self.append_batch_nowait(topic, partition, records)
        return base

    async def read(
        self, topic: str, partition: int, offset: int, *, max_records: int = 1000, max_bytes: int = 1 << 20
    ) -> list[Record]:
        return await asyncio.to_thread(
            self.log.read, topic, partition, offset, max_records=max_records, max_bytes=max_bytes
        )

    async def wait_for(self, topic: str, partition: int, offset: int, timeout: float) -> bool:
        """Wait until a record at `offset` can be read (long poll). False on timeout."""
        p = self.log.partition(topic, partition)
        if p.high_watermark > offset:
            return True
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def on_data(part: Partition) -> None:
            if part.high_watermark > offset:
                try:
                    loop.call_soon_threadsafe(event.set)
                except RuntimeError:
                    pass

        p.add_listener(on_data)
        try:
            if p.high_watermark > offset:
                return True
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                return p.high_watermark > offset
            return True
        finally:
            p.remove_listener(on_data)

    async def flush(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.log.flush, timeout)

    async def close(self) -> None:
        await asyncio.to_thread(self.log.close)
