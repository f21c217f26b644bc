"""GroupCommitWriter: the one thread that writes every partition of a log (with its syncer, store.syncer).

Appends queue per partition; producers get a future. Many appends share one write() and one fdatasync, which
is how the log acknowledges only durable records and still runs near the disk's speed (one fsync per record
caps out near 2,300 records/s on the build machine; 1,000 records per fsync reach ~0.9 M/s: research/limits.md).

The commit cycle (`_cycle`), per round:
  1. Wait until some partition is ready: its pending bytes reach `frame_bytes`, or its oldest append has waited
     `linger_ms`, or a flush or close was asked for. Take every ready queue (up to `_ROUND_BYTES` of each).
  2. For each partition, check room (store.room): free disk above `min_free_bytes`, the partition under its cap
     (retention_bytes + one segment). Without room apply `on_full`: `block` puts the appends back (the producers
     keep waiting, so sources stop reading; appends older than `block_timeout_ms` fail with DiskFullError; the
     partition retries every `disk_check_interval_ms`, at least 50 ms apart, or right after housekeeping), so a
     blocked writer sleeps instead of spinning; `reject_new` fails them with DiskFullError; `drop_oldest` deletes
     the oldest sealed segments, counting their unread records, and writes. Appends count against
     `max_pending_bytes` until they are resolved, so a blocked round cannot let producers queue without bound.
  3. Encode frames and write them, one gathered write (writev) per segment touched (store.partition._w_write). A
     failed write is cut back off the file; ENOSPC is treated as "no room", any other I/O error breaks the
     partition.
  4. `fsync` topics: the round goes to the syncer thread, which does one fdatasync per partition covering it
     (and whatever was written since), then moves the high watermark and resolves every append's future at
     once, while this thread encodes the next round. `interval`/`os` topics resolve right after the write;
     `interval` ones are synced here when their interval has passed.
  5. Housekeeping at most every `maintenance_ms`: retention, rolling idle segments past `segment_ms`, scrubbing
     one sealed segment, refreshing the free-space reading.
Futures of asyncio callers are resolved with one `call_soon_threadsafe` per event loop per round.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from .appends import AnyFuture, Append, ErrorMapper, Queue, Result, call_threadsafe, deliver, set_none
from .config import LogConfig
from .errors import DiskFullError, LogBrokenError, LogClosedError, StoreError
from .frame import BatchInfo, RecordIn
from .partition import Partition
from .room import DiskRoom
from .stats import WriterStatistics
from .syncer import Syncer

T = TypeVar("T")

log = logging.getLogger("edgestream.store.writer")

# At most this much of one partition's queue per round (measured: 4 MiB rounds let encoding overlap the fdatasync
# of the round before; one huge round leaves the disk idle while it is encoded, and the CPU idle while it syncs).
_ROUND_BYTES = 4 << 20


class GroupCommitWriter:
    def __init__(
        self,
        data_dir: str,
        config: LogConfig,
        *,
        wall_ms: Callable[[], int],
        monotonic: Callable[[], float],
        free_bytes: Callable[[], int],
        maintenance_ms: int = 1000,
        scrub_interval_ms: int = 60_000,
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        self._wall_ms = wall_ms
        self._mono = monotonic
        self._maintenance_s = maintenance_ms / 1000
        self._scrub_interval_s = scrub_interval_ms / 1000 if scrub_interval_ms > 0 else None
        self._cond = threading.Condition()
        self._queues: dict[Partition, Queue] = {}
        self._partitions: list[Partition] = []
        self._pending_bytes = 0
        self._pending_records = 0
        self._in_flight = 0  # appends taken from the queues and not yet resolved
        self._closing = False
        self._flush_waiters = 0
        self._room_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._disk = DiskRoom(data_dir, config, free_bytes, monotonic)
        self._last_maintenance = self._mono()
        self._last_scrub = self._mono()
        self._cycles = 0
        self._commits = 0
        self._committed_records = 0
        self._waiting_appenders = 0
        self._crashed: BaseException | None = None
        self._stopped = False
        self._taken: list[tuple[Partition, list[Append]]] = []  # in flight: failed too if the writer crashes
        self._maintenance_asked = 0
        self._maintenance_done = 0
        self._scrub_asked = False
        self._jobs: list[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = []
        self._syncer = Syncer(self._synced, monotonic, self._syncer_crashed)
        self._thread = threading.Thread(target=self._run, name="edgestream-writer", daemon=True)
        self._thread.start()

    # -- producer side (any thread) -------------------------------------------------------------------------------

    def register(self, partition: Partition) -> None:
        with self._cond:
            self._partitions = [*self._partitions, partition]

    def unregister(self, partition: Partition) -> None:
        with self._cond:
            self._partitions = [p for p in self._partitions if p is not partition]
            q = self._queues.pop(partition, None)
        if q:
            deliver([(a, LogClosedError(f"{partition.topic} was deleted")) for a in q.appends])

    def has_room(self) -> bool:
        return self._pending_bytes < self.config.max_pending_bytes

    def submit(
        self,
        partition: Partition,
        records: list[RecordIn],
        info: BatchInfo,
        future: AnyFuture,
        loop: asyncio.AbstractEventLoop | None,
        *,
        wait_for_room: bool,
        timeout: float | None = None,
        on_error: ErrorMapper | None = None,
    ) -> None:
        """Queue an append. Synchronous callers (`wait_for_room`) wait while the writer is over
        `max_pending_bytes`; asynchronous callers wait before calling (`wait_room_async`)."""
        nbytes = info.nbytes
        with self._cond:
            if self._crashed is not None:
                raise LogBrokenError(f"the log writer stopped: {self._crashed}")
            if self._closing:
                raise LogClosedError("the log is closing")
            if wait_for_room and self._pending_bytes >= self.config.max_pending_bytes:
                self._waiting_appenders += 1
                try:
                    ok = self._cond.wait_for(
                        lambda: self._pending_bytes < self.config.max_pending_bytes or self._closing, timeout
                    )
                finally:
                    self._waiting_appenders -= 1
                if self._closing:
                    raise LogClosedError("the log is closing")
                if not ok:
                    raise DiskFullError(self.data_dir, self._disk.free, nbytes, policy="block")
            q = self._queues.get(partition)
            if q is None:
                q = self._queues[partition] = Queue(deque())
            q.appends.append(Append(records, info, future, loop, self._mono(), on_error))
            q.nbytes += nbytes
            q.records += len(records)
            self._pending_bytes += nbytes
            self._pending_records += len(records)
            # Wake the writer only when it may have something to do now: the first append of a queue starts the
            # linger clock, and a full frame is ready at once. Everything in between rides along.
            if len(q.appends) == 1 or q.nbytes >= partition.config.frame_bytes or partition.config.linger_ms == 0:
                self._cond.notify_all()

    def wait_room_async(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None] | None:
        """None if there is room now; else a future that resolves (on `loop`) once there is."""
        with self._cond:
            if self._pending_bytes < self.config.max_pending_bytes or self._closing:
                return None
            fut: asyncio.Future[None] = loop.create_future()
            self._room_waiters.append((loop, fut))
            return fut

    def flush(self, timeout: float | None = None) -> bool:
        """Write and sync everything queued now, ignoring linger. False if it did not finish in time, or if some
        partition is blocked on a full disk (its appends stay queued: they move when room appears)."""
        with self._cond:
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                done = self._cond.wait_for(
                    lambda: (self._in_flight == 0 and all(p.blocked for p in self._queues))
                    or self._crashed is not None,
                    timeout,
                )
                return done and not self._queues and self._crashed is None
            finally:
                self._flush_waiters -= 1

    def run_maintenance(self, *, scrub: bool = False, timeout: float | None = 30.0) -> bool:
        """Run housekeeping (retention, time rolls, free-space refresh; a scrub step if asked) on the writer thread
        now, and wait for it. For tests and operator commands; the writer also runs it every `maintenance_ms`."""
        with self._cond:
            self._maintenance_asked += 1
            self._scrub_asked = self._scrub_asked or scrub
            target = self._maintenance_asked
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: self._maintenance_done >= target or self._crashed is not None or self._stopped, timeout
            ) and self._maintenance_done >= target

    def call(self, fn: Callable[[], T], timeout: float | None = 30.0) -> T:
        """Run `fn` on the writer thread between rounds (it owns partition state) and return its result."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:
            if self._crashed is not None or self._closing:
                raise LogClosedError("the log writer is not running")
            self._jobs.append((fn, fut))
            self._cond.notify_all()
        return fut.result(timeout)

    def _run_jobs(self) -> None:
        with self._cond:
            jobs, self._jobs = self._jobs, []
        for fn, fut in jobs:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # the caller gets the error; the writer carries on
                fut.set_exception(exc)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what can be written, fail the rest with LogClosedError, stop the thread."""
        with self._cond:
            self._closing = True
            waiters, self._room_waiters = self._room_waiters, []
            self._cond.notify_all()
        for loop, fut in waiters:  # they find the log closing and raise LogClosedError
            call_threadsafe(loop, set_none, fut)
        self._thread.join(timeout)
        self._syncer.close(timeout)

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            cycles=self._cycles,
            pending_records=self._pending_records,
            pending_bytes=self._pending_bytes,
            commits=self._commits,
            records_per_commit_sum=self._committed_records,
            waiting_appenders=self._waiting_appenders + len(self._room_waiters),
        )

    @property
    def free_bytes(self) -> int:
        return self._disk.free

    # -- the writer thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._cycle():
                pass
        except BaseException as exc:  # the writer must never die silently: fail everything, loudly
            log.exception("log writer crashed; failing all pending appends")
            with self._cond:
                self._crashed = exc
                queues, self._queues = self._queues, {}
                taken, self._taken = self._taken, []
                self._cond.notify_all()
            err = LogBrokenError(f"the log writer crashed: {exc!r}; restart edgestream")
            deliver([(a, err) for q in queues.values() for a in q.appends])
            deliver([(a, err) for _, appends in taken for a in appends])
        finally:
            with self._cond:
                self._stopped = True
                self._cond.notify_all()

    def _ready(self, now: float) -> tuple[list[Partition], float | None]:
        """Partitions to write now, and how long to wait otherwise (None: until notified)."""
        urgent = self._closing or self._flush_waiters > 0
        ready: list[Partition] = []
        wait: float | None = None
        for p, q in self._queues.items():
            if not q.appends:
                continue
            if p.blocked and not self._closing:
                due = self._disk.retry_at.get(p, 0.0) - now
                if due > 0:
                    wait = due if wait is None else min(wait, due)
                    continue
                ready.append(p)
                continue
            age = now - q.appends[0].enqueued
            linger = p.config.linger_ms / 1000
            if urgent or q.nbytes >= p.config.frame_bytes or age >= linger:
                ready.append(p)
            else:
                wait = linger - age if wait is None else min(wait, linger - age)
        return ready, wait

    def _cycle(self) -> bool:
        with self._cond:
            while True:
                now = self._mono()
                ready, wait = self._ready(now)
                maintenance = self._maintenance_asked > self._maintenance_done
                if ready or maintenance or self._jobs:
                    break
                if self._closing:
                    if all(not q.appends for q in self._queues.values()):
                        self._queues.clear()
                        self._cond.notify_all()
                        return False
                    break
                if not self._queues:
                    self._cond.notify_all()  # flush() waiters: nothing queued, nothing in flight
                maint_due = self._last_maintenance + self._maintenance_s - now
                sync_due = self._interval_sync_due(now)
                if maint_due <= 0 or sync_due <= 0:
                    break
                wait = min(maint_due, sync_due) if wait is None else min(wait, maint_due, sync_due)
                self._cond.notify_all()  # flush() waiters may be satisfied (everything left is blocked)
                self._cond.wait(max(wait, 0.0005))
            taken: list[tuple[Partition, list[Append]]] = []
            for p in ready:
                appends = self._take_locked(p)
                taken.append((p, appends))
                self._in_flight += len(appends)
            closing = self._closing
            self._taken = taken
            asked = self._maintenance_asked
            scrub_asked, self._scrub_asked = self._scrub_asked, False
            self._cond.notify_all()
        self._cycles += 1
        if taken:
            self._commit(taken, closing)
        self._taken = []
        self._housekeeping(force=asked > self._maintenance_done, scrub=scrub_asked)
        if self._jobs:
            self._run_jobs()
        if asked > self._maintenance_done:
            with self._cond:
                self._maintenance_done = asked
                self._cond.notify_all()
        return True

    def _take_locked(self, p: Partition) -> list[Append]:
        """The appends of one round for `p`: all that is queued, or about `_ROUND_BYTES` of it. Bounded rounds keep
        the pipeline moving: the syncer syncs one round while the writer encodes the next."""
        q = self._queues[p]
        if q.nbytes <= _ROUND_BYTES:
            del self._queues[p]
            return list(q.appends)
        out: list[Append] = []
        nbytes = 0
        while q.appends and nbytes < _ROUND_BYTES:
            a = q.appends.popleft()
            out.append(a)
            nbytes += a.nbytes
            q.records -= len(a.records)
        q.nbytes -= nbytes
        if not q.appends:
            del self._queues[p]
        return out

    def _wake_room_waiters_locked(self) -> list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        if self._pending_bytes < self.config.max_pending_bytes and self._room_waiters:
            waiters, self._room_waiters = self._room_waiters, []
            return waiters
        return []

    def _commit(self, taken: list[tuple[Partition, list[Append]]], closing: bool) -> None:
        """Steps 2-4 of the commit cycle (module docstring) for the appends taken this round."""
        now_ms = self._wall_ms()
        results: list[Result] = []
        to_sync: list[tuple[Partition, list[tuple[Append, int]]]] = []
        requeue: list[tuple[Partition, list[Append]]] = []
        for p, appends in taken:
            try:
                done = self._write_partition(p, appends, closing, now_ms, results, requeue)
            except OSError as exc:  # retention or a roll failed outside the write itself
                self._disk.refresh(force=True)
                p.broken = p.broken or exc
                err = LogBrokenError(f"{p.topic}/{p.index} failed: {exc}; restart edgestream")
                results.extend((a, err) for a in appends)
                continue
            if done is None:
                continue
            self._commits += 1
            self._committed_records += sum(len(a.records) for a, _ in done)
            if p.durability.acks_after_sync:
                to_sync.append((p, done))
            else:
                p._w_publish(p.end_offset)
                results.extend(done)
                if p.durability.kind == "interval" and _sync_due(p, self._mono()) <= 0:
                    self._sync_quietly(p)
        if results:
            deliver(results)
        if to_sync:
            self._syncer.submit(to_sync)  # step 4 runs on the syncer thread while this one goes on
        handed = {id(a) for _, done in to_sync for a, _ in done}
        with self._cond:
            # Taken appends count as pending until they are resolved (the syncer settles the ones it was handed):
            # a blocked round that is put back must not let producers queue another max_pending_bytes behind it.
            for _, appends in taken:
                settled = [a for a in appends if id(a) not in handed]
                self._in_flight -= len(settled)
                self._pending_bytes -= sum(a.nbytes for a in settled)
                self._pending_records -= sum(len(a.records) for a in settled)
            for p, appends in requeue:
                q = self._queues.get(p)
                if q is None:
                    q = self._queues[p] = Queue(deque())
                q.appends.extendleft(reversed(appends))
                n = sum(a.nbytes for a in appends)
                q.nbytes += n
                q.records += sum(len(a.records) for a in appends)
                self._pending_bytes += n
                self._pending_records += sum(len(a.records) for a in appends)
            room_waiters = self._wake_room_waiters_locked()
            self._cond.notify_all()
        for loop, fut in room_waiters:
            call_threadsafe(loop, set_none, fut)

    def _write_partition(
        self,
        p: Partition,
        appends: list[Append],
        closing: bool,
        now_ms: int,
        results: list[Result],
        requeue: list[tuple[Partition, list[Append]]],
    ) -> list[tuple[Append, int]] | None:
        """Room check, on_full policy and the write for one partition. Returns (append, base offset) pairs written,
        or None when the appends were failed (into `results`) or put back (into `requeue`)."""
        if p.broken is not None:
            err: StoreError = LogBrokenError(f"{p.topic}/{p.index} is broken after an I/O error ({p.broken}); "
                                             "restart edgestream")
            results.extend((a, err) for a in appends)
            return None
        needed = sum(a.nbytes for a in appends) + 48 * len(appends)
        why = self._disk.check(p, needed, now_ms)
        if why is not None and p.config.on_full == "drop_oldest" and self._disk.make_room(p, needed, why, now_ms):
            why = None
        if why is None:
            try:
                bases = p._w_write([(a.records, a.info) for a in appends], now_ms)
            except OSError as exc:
                self._disk.refresh(force=True)
                if exc.errno != errno.ENOSPC or p.broken is not None:
                    p.broken = p.broken or exc
                    err = LogBrokenError(f"write to {p.topic}/{p.index} failed: {exc}; restart edgestream")
                    results.extend((a, err) for a in appends)
                    return None
                why = "disk"  # the file system ran out before our free-space reading said so
            else:
                p.blocked = False
                self._disk.retry_at.pop(p, None)
                self._disk.spent(needed)
                return list(zip(appends, bases, strict=True))
        if p.config.on_full == "block" and not closing:
            timeout = self.config.block_timeout_ms
            if timeout is not None:  # appends that waited longer than block_timeout_ms give up
                cutoff = self._mono() - timeout / 1000
                expired = [a for a in appends if a.enqueued <= cutoff]
                if expired:
                    err = DiskFullError(self.data_dir, self._disk.free, needed, policy="block")
                    p.rejected["block_timeout"] = p.rejected.get("block_timeout", 0) + sum(
                        len(a.records) for a in expired)
                    results.extend((a, err) for a in expired)
                    appends = [a for a in appends if a.enqueued > cutoff]
            if appends:
                self._disk.block(p, appends[0].enqueued)
                requeue.append((p, appends))
            return None
        if closing and p.config.on_full == "block":
            reason, err = "closing", LogClosedError("the log closed while the disk was full; nothing was written")
        else:
            reason = "full" if p.config.on_full == "reject_new" else "no_room"
            err = DiskFullError(self.data_dir, self._disk.free, needed, policy=p.config.on_full)
        p.rejected[reason] = p.rejected.get(reason, 0) + sum(len(a.records) for a in appends)
        results.extend((a, err) for a in appends)
        return None

    def _synced(self, p: Partition, done: list[tuple[Append, int]], error: BaseException | None) -> None:
        """The syncer finished a partition's rounds (syncer thread): resolve them and settle the accounting."""
        if error is None:
            deliver(list(done))
        else:
            deliver([(a, error) for a, _ in done])
        with self._cond:
            self._in_flight -= len(done)
            self._pending_bytes -= sum(a.nbytes for a, _ in done)
            self._pending_records -= sum(len(a.records) for a, _ in done)
            room_waiters = self._wake_room_waiters_locked()
            self._cond.notify_all()
        for loop, fut in room_waiters:
            call_threadsafe(loop, set_none, fut)

    def _syncer_crashed(self, exc: BaseException) -> None:
        with self._cond:
            self._crashed = self._crashed or exc
            self._cond.notify_all()

    def _sync_quietly(self, p: Partition) -> None:
        try:
            p._w_sync(self._mono())
        except (OSError, StoreError):
            log.error("fdatasync of %s/%d failed; the partition refuses further writes", p.topic, p.index)

    def _interval_sync_due(self, now: float) -> float:
        due = float("inf")
        for p in self._partitions:
            if p.durability.kind == "interval" and p.dirty and p.broken is None:
                due = min(due, _sync_due(p, now))
        return due

    def _housekeeping(self, *, force: bool = False, scrub: bool = False) -> None:
        """Step 5: interval syncs when due; every `maintenance_ms` (or when asked): retention, time-based rolls of
        idle segments, the free-space reading, and one scrub step every `scrub_interval_ms`."""
        now = self._mono()
        for p in self._partitions:
            if p.durability.kind == "interval" and p.dirty and p.broken is None and _sync_due(p, now) <= 0:
                self._sync_quietly(p)
        if not force and now - self._last_maintenance < self._maintenance_s:
            return
        self._last_maintenance = now
        self._disk.refresh(force=True)
        now_ms = self._wall_ms()
        if self._scrub_interval_s is not None and now - self._last_scrub >= self._scrub_interval_s:
            scrub = True
        if scrub:
            self._last_scrub = now
        self._disk.retry_at.clear()  # fresh free-space reading, retention done: blocked partitions try again now
        for p in self._partitions:
            if p.broken is not None:
                continue
            try:
                active = p.active
                if not active.empty and now_ms - active.header.created_ms >= p.config.segment_ms:
                    with self._cond:
                        busy = p in self._queues
                    if not busy:
                        p._w_roll(now_ms)
                if p._w_retention(now_ms) and p.blocked:
                    self._disk.retry_at.pop(p, None)  # room was made: a blocked partition may write again now
                if scrub:
                    p._w_scrub_one()
            except OSError as exc:
                log.error("housekeeping of %s/%d failed: %s", p.topic, p.index, exc)

def _sync_due(p: Partition, now: float) -> float:
    """Seconds until an `interval` partition must be synced (<= 0: now). The microsecond of slack keeps float
    rounding of clock readings from postponing a sync by a whole round."""
    return p.last_sync_mono + p.durability.interval_ms / 1000 - now - 1e-6


def monotonic() -> float:
    return time.monotonic()
