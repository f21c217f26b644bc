"""Log: a data dir of topics, the group-commit writer, cursors, the lock. The store's front door.

Two faces over one core, no twin implementations:
- `Log` is synchronous and thread-safe: `append` returns a `concurrent.futures.Future` of the offset that resolves
  once the record is acknowledged under its topic's durability mode; reads are plain calls. The CLI and tools use it.
- `AsyncLog` (store.aio) wraps a `Log` for an asyncio program: `await alog.append(...)`.

Opening takes the data dir's lock (one process per data dir), removes interrupted topic creations and deletions,
recovers every partition (store.recovery) and starts the writer thread. `close()` flushes, marks every partition
clean and releases the lock. `Log.open(..., readonly=True)` takes no lock and changes nothing on disk: for
inspecting a data dir that a running gateway holds.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Sequence

from . import checksum, durable, files
from .config import LogConfig, TopicConfig
from .cursors import CursorStore
from .errors import (
    InvalidConfigError,
    LogClosedError,
    RecordTooLargeError,
    StoreError,
    TopicExistsError,
    TopicNotFoundError,
)
from .frame import BatchInfo, RecordIn, batch_info
from .fs import FileSystem, OsFileSystem
from .lock import DataDirLock
from .partition import Partition
from .readonly import open_readonly_partition
from .reads import FrameSlice
from .recompress import Recompressor
from .record import Record
from .recovery import RecoveryReport
from .stats import LogStatistics
from .topic import Topic, partition_for_key
from .writer import GroupCommitWriter

WallClock = Callable[[], int]
MonoClock = Callable[[], float]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Log:
    def __init__(
        self,
        data_dir: str,
        config: LogConfig,
        fs: FileSystem,
        *,
        wall_ms: WallClock,
        monotonic: MonoClock,
        readonly: bool,
        lock: DataDirLock | None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        self.fs = fs
        self.wall_ms = wall_ms
        self.monotonic = monotonic
        self.readonly = readonly
        self._lock = lock
        self._topics: dict[str, Topic] = {}
        self._topics_lock = threading.RLock()
        self.cursors = CursorStore(fs, data_dir)
        self.use_crc32c, _ = checksum.preferred()
        self.writer: GroupCommitWriter | None = None
        self.recompressor: Recompressor | None = None
        self._closed = False
        self._new_data = threading.Condition()

    # -- opening and closing ------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: str,
        config: LogConfig | None = None,
        *,
        fs: FileSystem | None = None,
        wall_ms: WallClock | None = None,
        monotonic: MonoClock | None = None,
        readonly: bool = False,
        create: bool = True,
        maintenance_ms: int = 1000,
        scrub_interval_ms: int = 60_000,
    ) -> Log:
        fs = fs or OsFileSystem()
        data_dir = os.path.abspath(data_dir)
        if not fs.isdir(data_dir):
            if readonly or not create:
                raise StoreError(f"data dir {data_dir} does not exist; create it or pass --data-dir")
            durable.ensure_dir(fs, data_dir)
        lock = None
        if not readonly:
            lock = DataDirLock(data_dir)
            if isinstance(fs, OsFileSystem):
                lock.acquire()
            else:
                lock = None  # simulated file systems live in one process: nothing to lock against
        log = cls(
            data_dir,
            config or LogConfig(),
            fs,
            wall_ms=wall_ms or _wall_ms,
            monotonic=monotonic or time.monotonic,
            readonly=readonly,
            lock=lock,
        )
        try:
            log._load(maintenance_ms, scrub_interval_ms)
        except BaseException:
            log._release()
            raise
        return log

    def _load(self, maintenance_ms: int, scrub_interval_ms: int) -> None:
        fs = self.fs
        tdir = files.topics_dir(self.data_dir)
        if not self.readonly:
            durable.ensure_dir(fs, tdir)
            durable.ensure_dir(fs, files.cursors_dir(self.data_dir))
        self.cursors.load_all() if not self.readonly else self._load_cursors_readonly()
        names = sorted(fs.listdir(tdir)) if fs.isdir(tdir) else []
        for name in names:
            if not files.valid_name(name):
                continue
            if not fs.exists(Topic.config_path(self.data_dir, name)):
                if not self.readonly:
                    _rmtree(fs, files.topic_dir(self.data_dir, name))  # interrupted creation or deletion
                continue
            if self.readonly:
                config = Topic.read_config(fs, self.data_dir, name)
                parts: list[Partition] = [
                    open_readonly_partition(fs, files.partition_dir(self.data_dir, name, i), name, i, config,
                                            self.config)
                    for i in range(config.partitions)
                ]
                self._topics[name] = Topic(name, files.topic_dir(self.data_dir, name), config, parts)
            else:
                topic = Topic.open(fs, self.data_dir, name, self.config, now_ms=self.wall_ms(),
                                   use_crc32c=self.use_crc32c)
                self._topics[name] = topic
        if not self.readonly:
            self.writer = GroupCommitWriter(
                self.data_dir,
                self.config,
                wall_ms=self.wall_ms,
                monotonic=self.monotonic,
                free_bytes=lambda: fs.free_bytes(self.data_dir),
                maintenance_ms=maintenance_ms,
                scrub_interval_ms=scrub_interval_ms,
            )
            for topic in self._topics.values():
                self._attach(topic)
            writer = self.writer
            self.recompressor = Recompressor(
                self._partitions,
                lambda fn: writer.call(fn),
                cpu_share=self.config.recompress_cpu_share,
                interval_s=self.config.recompress_interval_ms / 1000,
            )
            if self.config.recompress:
                self.recompressor.start()

    def _partitions(self) -> list[Partition]:
        with self._topics_lock:
            return [p for t in self._topics.values() for p in t.partitions]

    def _load_cursors_readonly(self) -> None:
        if self.fs.isdir(self.cursors.directory):
            for name in self.fs.listdir(self.cursors.directory):
                if files.valid_name(name):
                    self.cursors.get(name)

    def _attach(self, topic: Topic) -> None:
        assert self.writer is not None
        for p in topic.partitions:
            p.protect_from = _protector(self.cursors, topic.name, p.index)
            p.add_listener(self._on_new_data)
            self.writer.register(p)

    def _on_new_data(self, partition: Partition) -> None:
        with self._new_data:
            self._new_data.notify_all()

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, mark every partition clean (state written last), release the lock."""
        if self._closed:
            return
        self._closed = True
        if self.recompressor is not None:
            self.recompressor.close(timeout)
        if self.writer is not None:
            self.writer.flush(timeout)
            self.writer.close(timeout)
        for topic in self._topics.values():
            for p in topic.partitions:
                if not self.readonly:
                    p._w_close(clean=True)
                else:
                    for seg in p.segments:
                        seg.close()
        self._release()

    def abandon(self) -> None:
        """Stop without marking anything clean (tests: the next open recovers as after a crash)."""
        self._closed = True
        if self.recompressor is not None:
            self.recompressor.close(5)
        if self.writer is not None:
            self.writer.close(5)
        for topic in self._topics.values():
            for p in topic.partitions:
                for seg in p.segments:
                    seg.close()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError("the log is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise StoreError("this log was opened read-only")

    # -- topics ---------------------------------------------------------------------------------------------------

    def create_topic(self, name: str, config: TopicConfig | None = None, *, exist_ok: bool = False) -> Topic:
        self._check_writable()
        if not files.valid_name(name):
            raise InvalidConfigError("topic name", name, "letters, digits, '.', '_' and '-', 1-200 characters")
        with self._topics_lock:
            if name in self._topics:
                if exist_ok:
                    return self._topics[name]
                raise TopicExistsError(name)
            topic = Topic.create(self.fs, self.data_dir, name, config or TopicConfig(), self.config,
                                 now_ms=self.wall_ms(), use_crc32c=self.use_crc32c)
            self._topics[name] = topic
            self._attach(topic)
            return topic

    def delete_topic(self, name: str) -> None:
        self._check_writable()
        assert self.recompressor is not None
        with self.recompressor.busy, self._topics_lock:  # no temp file appears in a directory being removed
            topic = self.topic(name)
            assert self.writer is not None
            for p in topic.partitions:
                self.writer.unregister(p)
                for seg in p.segments:
                    seg.close()
            del self._topics[name]
            self.fs.remove(Topic.config_path(self.data_dir, name))
            self.fs.sync_dir(topic.directory)
            _rmtree(self.fs, topic.directory)
            self.fs.sync_dir(files.topics_dir(self.data_dir))
            self.cursors.drop_topic(name)

    def topic(self, name: str) -> Topic:
        try:
            return self._topics[name]
        except KeyError:
            raise TopicNotFoundError(name) from None

    def topics(self) -> list[Topic]:
        with self._topics_lock:
            return [self._topics[n] for n in sorted(self._topics)]

    def topic_names(self) -> list[str]:
        return sorted(self._topics)

    def partition(self, topic: str, partition: int) -> Partition:
        return self.topic(topic).partition(partition)

    def partition_for(self, topic: str, key: bytes | None, partition: int | None = None) -> int:
        """An explicit partition, else by key hash, else 0."""
        t = self.topic(topic)
        if partition is not None:
            t.partition(partition)
            return partition
        if key is not None:
            return partition_for_key(key, len(t.partitions))
        return 0

    def recovery_reports(self) -> list[RecoveryReport]:
        return [p.recovery for t in self.topics() for p in t.partitions]

    # -- appending ------------------------------------------------------------------------------------------------

    def _prepare(self, topic: str, partition: int, records: Sequence[RecordIn]) -> tuple[Partition, list[RecordIn],
                                                                                           BatchInfo]:
        p = self.partition(topic, partition)
        recs = records if isinstance(records, list) else list(records)
        info = batch_info(recs)
        limit = p.config.max_record_bytes
        if info.largest > limit:
            raise RecordTooLargeError(info.largest, limit)
        return p, recs, info

    def append(
        self,
        topic: str,
        partition: int,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: tuple[tuple[str, bytes], ...] = (),
        timestamp_ms: int | None = None,
    ) -> concurrent.futures.Future[int]:
        """Queue one record. The future gives its offset once it is acknowledged (see TopicConfig.durability)."""
        ts = self.wall_ms() if timestamp_ms is None else timestamp_ms
        return self.append_batch(topic, partition, [RecordIn(ts, key, value, headers)])

    def append_batch(
        self, topic: str, partition: int, records: Sequence[RecordIn]
    ) -> concurrent.futures.Future[int]:
        """Queue records for one partition, in order. The future gives the first one's offset (the rest follow
        contiguously) once all of them are acknowledged. Waits while the writer is over max_pending_bytes."""
        self._check_writable()
        if not records:
            raise ValueError("append_batch needs at least one record")
        p, recs, info = self._prepare(topic, partition, records)
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()
        assert self.writer is not None
        timeout = self.config.block_timeout_ms / 1000 if self.config.block_timeout_ms is not None else None
        self.writer.submit(p, recs, info, fut, None, wait_for_room=True, timeout=timeout)
        return fut

    def run_maintenance(self, *, scrub: bool = False, timeout: float | None = 30.0) -> bool:
        """Run the writer's housekeeping now and wait for it: retention, rolls of segments past segment_ms, a fresh
        free-space reading (blocked topics retry at once), one scrub step if `scrub`. The writer also does this
        every `maintenance_ms`; this is for tests, tools and an operator's "apply retention now"."""
        self._check_writable()
        assert self.writer is not None
        return self.writer.run_maintenance(scrub=scrub, timeout=timeout)

    def recompress_now(self) -> int:
        """Repack every sealed segment of small frames now (store.recompress), on the calling thread and not paced;
        returns how many were replaced. The background thread does this every `recompress_interval_ms` unless
        `LogConfig.recompress` is off; this is for tests, tools and an operator's "compact now"."""
        self._check_writable()
        assert self.recompressor is not None
        return self.recompressor.run_pass()

    def raise_epoch(self, topic: str, partition: int, reason: str) -> int:
        """Raise a partition's epoch now (durable before it returns) and return the new one; counted with the
        epoch bumps of recovery. For a reader that learned that offsets it saw may be reused, e.g. the mirror
        finding its cursor ahead of the recovered log end."""
        self._check_writable()
        p = self.partition(topic, partition)
        assert self.writer is not None
        return self.writer.call(lambda: p._w_raise_epoch(reason))

    def flush(self, timeout: float | None = None) -> bool:
        """Write and sync everything queued so far. False if some topic is blocked on a full disk."""
        self._check_open()
        return self.writer.flush(timeout) if self.writer is not None else True

    # -- reading --------------------------------------------------------------------------------------------------

    def read(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_records: int = 1000,
        max_bytes: int = 1 << 20,
        upto: int | None = None,
    ) -> list[Record]:
        self._check_open()
        return self.partition(topic, partition).read(offset, max_records=max_records, max_bytes=max_bytes, upto=upto)

    def read_columns(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_records: int = 131_072,
        max_bytes: int = 64 << 20,
        upto: int | None = None,
    ) -> list[FrameSlice]:
        """`read` as decoded frame bodies (see `PartitionReads.read_columns`): for readers that build columns."""
        self._check_open()
        return self.partition(topic, partition).read_columns(offset, max_records=max_records, max_bytes=max_bytes,
                                                             upto=upto)

    def offset_for_time(self, topic: str, partition: int, ts_ms: int) -> int:
        return self.partition(topic, partition).offset_for_time(ts_ms)

    def wait_for(self, topic: str, partition: int, offset: int, timeout: float) -> bool:
        """Block until the partition's high watermark passes `offset` (a record there can be read) or timeout."""
        p = self.partition(topic, partition)
        if self.readonly:
            deadline = self.monotonic() + timeout
            while p.high_watermark <= offset and self.monotonic() < deadline:
                refresh = getattr(p, "refresh", None)
                if refresh is not None:
                    refresh()
                if p.high_watermark > offset:
                    break
                time.sleep(min(0.2, max(0.0, deadline - self.monotonic())))
            return p.high_watermark > offset
        with self._new_data:
            return self._new_data.wait_for(lambda: p.high_watermark > offset or self._closed, timeout) and (
                p.high_watermark > offset
            )

    # -- statistics -----------------------------------------------------------------------------------------------

    def statistics(self) -> LogStatistics:
        from .stats import WriterStatistics

        writer = self.writer.statistics() if self.writer else WriterStatistics(0, 0, 0, 0, 0, 0)
        free = self.writer.free_bytes if self.writer else self.fs.free_bytes(self.data_dir)
        return LogStatistics(
            data_dir=self.data_dir,
            topics=tuple(t.statistics() for t in self.topics()),
            writer=writer,
            disk_free_bytes=free,
            disk_low=free < self.config.min_free_bytes,
            crc="crc32c" if self.use_crc32c else "crc32",
            readonly=self.readonly,
            recompress=self.recompressor.statistics() if self.recompressor is not None else None,
        )


def _protector(cursors: CursorStore, topic: str, partition: int) -> Callable[[], int | None]:
    return lambda: cursors.protect_from(topic, partition)


def _rmtree(fs: FileSystem, path: str) -> None:
    if not fs.exists(path):
        return
    for name in fs.listdir(path):
        child = os.path.join(path, name)
        if fs.isdir(child):
            _rmtree(fs, child)
        else:
            fs.remove(child)
    fs.rmdir(path)
