"""Recompression of sealed segments (store.recompress): the copy holds the same records in far fewer bytes, readers
in this process and in a read-only view never see a difference, and a segment that went away meanwhile is left
alone."""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from edgestream.store import Log, LogConfig, OffsetOutOfRangeError, RecordIn, TopicConfig
from edgestream.store.checksum import for_flag
from edgestream.store.codec import ZSTD
from edgestream.store.frame import FrameHeader, body_columns, build_frame, decode_body
from edgestream.store.recompress import FramePacker, Recompressor, worth_repacking
from edgestream.store.segment import SEGMENT_HEADER_SIZE, Segment, SegmentReplacedError

TS = 1_700_000_000_000
TOPIC = "t"


def _config(**kw: Any) -> LogConfig:
    return LogConfig(min_free_bytes=0, recompress=False, **kw)


def _topic(**kw: Any) -> TopicConfig:
    base: dict[str, Any] = {"segment_bytes": 32 * 1024, "frame_bytes": 64 * 1024, "linger_ms": 0.0,
                            "retention_ms": None, "durability": "os", "index_interval_bytes": 1024}
    base.update(kw)
    return TopicConfig(**base)


def _reading(rng: random.Random, i: int) -> bytes:
    return json.dumps({"sensor": f"s-{i % 17:03d}", "site": "plant-7", "temperature_c": round(rng.gauss(21, 2), 2),
                       "humidity": round(rng.uniform(30, 60), 1), "seq": i}).encode()


def _write_small_frames(log: Log, n_appends: int, *, seed: int = 1, start: int = 0) -> None:
    """Appends of 2-3 records, each waited for: one tiny frame per append, as at a low rate. Some records carry
    keys and headers; timestamps go back and forth a little."""
    rng = random.Random(seed)
    i = start
    for _ in range(n_appends):
        batch = []
        for _ in range(rng.randint(2, 3)):
            key = b"k%d" % (i % 5) if i % 3 == 0 else None
            headers = (("src", b"mqtt"), ("q", bytes([i % 256]))) if i % 7 == 0 else ()
            batch.append(RecordIn(TS + i * 100 + rng.randint(-50, 50), key, _reading(rng, i), headers))
            i += 1
        log.append_batch(TOPIC, 0, batch).result(10)


def _all(log: Log) -> list[tuple[object, ...]]:
    p = log.partition(TOPIC, 0)
    out: list[tuple[object, ...]] = []
    offset = p.log_start
    while True:
        got = log.read(TOPIC, 0, offset, max_records=700)
        if not got:
            return out
        out.extend(tuple(r) for r in got)
        offset = got[-1].offset + 1


def _all_columns(log: Log) -> list[tuple[object, ...]]:
    """Every record rebuilt from `read_columns` slices: (offset, epoch, ts, key, value, headers blob)."""
    p = log.partition(TOPIC, 0)
    out: list[tuple[object, ...]] = []
    offset = p.log_start
    while True:
        slices = log.read_columns(TOPIC, 0, offset, max_records=900)
        if not slices:
            return out
        for s in slices:
            b = s.body
            h = b.header
            pos = b.data_start
            for i in range(b.header.record_count):
                klen, vlen, hlen = b.klens[i], b.vlens[i], b.hlens[i]
                key = b.raw[pos : pos + klen] if klen >= 0 else None
                pos += max(klen, 0)
                value = b.raw[pos : pos + vlen]
                pos += vlen
                hdrs = b.raw[pos : pos + hlen]
                pos += hlen
                if s.first <= i < s.end:
                    out.append((h.base_offset + i, h.epoch, h.first_ts + b.ts_deltas[i], key, value, hdrs))
        offset = slices[-1].next_offset


def _frame_count(log: Log) -> int:
    return sum(1 for s in log.partition(TOPIC, 0).segments for _ in s.walk(SEGMENT_HEADER_SIZE, s.size))


def _disk_bytes(path: str) -> int:
    d = os.path.join(path, "topics", TOPIC, "0")
    return sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d) if n.endswith(".log"))


def _names(path: str) -> list[str]:
    return sorted(os.listdir(os.path.join(path, "topics", TOPIC, "0")))


@pytest.fixture
def log(tmp_path: Any) -> Any:
    lg = Log.open(str(tmp_path), _config())
    lg.create_topic(TOPIC, _topic())
    yield lg
    lg.close()


def test_tiny_frames_recompress_to_far_fewer_bytes_and_read_back_identical(log: Log, tmp_path: Any) -> None:
    _write_small_frames(log, 600)
    log.raise_epoch(TOPIC, 0, "test: records of a second epoch")
    _write_small_frames(log, 300, seed=2, start=10_000)
    before, cols_before = _all(log), _all_columns(log)
    frames_before, bytes_before = _frame_count(log), _disk_bytes(str(tmp_path))
    sealed = len(log.partition(TOPIC, 0).segments) - 1
    assert sealed >= 3

    assert log.recompress_now() == sealed
    assert _all(log) == before
    assert _all_columns(log) == cols_before
    assert {r[3] for r in before} == {0, 1}, "both epochs are there, each record with its own"
    assert _frame_count(log) < frames_before / 20
    assert _disk_bytes(str(tmp_path)) < bytes_before * 0.5
    assert not [n for n in _names(str(tmp_path)) if n.endswith(".tmp")]
    stats = log.statistics().topics[0].partitions[0]
    assert stats.recompressed_segments == sealed and stats.recompress_failures == 0
    assert stats.recompress_bytes_after < stats.recompress_bytes_before * 0.5
    rs = log.statistics().recompress
    assert rs is not None and rs.segments == sealed and rs.raw_bytes > 0 and rs.cpu_seconds > 0
    for seg in log.partition(TOPIC, 0).segments[:-1]:
        epochs = {h.epoch for _, h, _ in seg.walk(SEGMENT_HEADER_SIZE, seg.size)}
        assert len(epochs) == 1
    # offset lookups by time and from the middle of a frame still land on the same records
    mid = before[len(before) // 2]
    assert log.read(TOPIC, 0, int(mid[2]), max_records=3) == [type(log.read(TOPIC, 0, 0, max_records=1)[0])(*r)
                                                             for r in before[len(before) // 2 : len(before) // 2 + 3]]
    ts = int(mid[4])
    assert log.offset_for_time(TOPIC, 0, ts) == min(r[2] for r in before if int(r[4]) >= ts)  # type: ignore[type-var]


def test_recompressed_segments_survive_a_restart_and_are_not_redone(tmp_path: Any) -> None:
    path = str(tmp_path)
    with Log.open(path, _config()) as lg:
        lg.create_topic(TOPIC, _topic())
        _write_small_frames(lg, 400)
        before = _all(lg)
        n = lg.recompress_now()
        assert n >= 2
        assert lg.recompress_now() == 0, "a repacked segment is not repacked again"
    with Log.open(path, _config()) as lg:
        assert _all(lg) == before
        assert lg.recompress_now() == 0
        assert all(s.header.repacked for s in lg.partition(TOPIC, 0).segments[:-1])
        assert lg.recovery_reports()[0].indexes_rebuilt == 0, "the copies' indexes were written"


def test_segments_of_full_frames_are_left_alone(tmp_path: Any) -> None:
    with Log.open(str(tmp_path), _config()) as lg:
        lg.create_topic(TOPIC, _topic(frame_bytes=4096))
        rng = random.Random(3)
        recs = [RecordIn(TS + i, None, _reading(rng, i)) for i in range(3000)]
        for i in range(0, len(recs), 300):
            lg.append_batch(TOPIC, 0, recs[i : i + 300]).result(10)
        names = _names(str(tmp_path))
        assert lg.recompress_now() == 0
        assert _names(str(tmp_path)) == names
        assert lg.statistics().topics[0].partitions[0].recompressed_segments == 0


def test_codec_none_and_switched_off_topics_are_not_touched(tmp_path: Any) -> None:
    with Log.open(str(tmp_path), _config()) as lg:
        lg.create_topic(TOPIC, _topic(codec="none"))
        lg.create_topic("off", _topic(recompress=False))
        _write_small_frames(lg, 300)
        rng = random.Random(1)
        for i in range(300):
            lg.append_batch("off", 0, [RecordIn(TS + i, None, _reading(rng, i))] * 2).result(10)
        assert len(lg.partition("off", 0).segments) > 1
        assert lg.recompress_now() == 0


@pytest.mark.parametrize("what", ["retention", "quarantine"])
def test_segment_gone_while_recompressing_is_left_alone_and_temp_removed(log: Log, tmp_path: Any,
                                                                          what: str) -> None:
    _write_small_frames(log, 300)
    p = log.partition(TOPIC, 0)
    victim = p.segments[0]
    assert log.writer is not None
    writer = log.writer

    def remove_first_then(fn: Callable[[], Any]) -> Any:
        # Between the copy being written and the swap: the temp file exists now.
        assert any(n.endswith(".log.tmp") for n in _names(str(tmp_path)))
        if what == "retention":
            writer.call(lambda: _delete_first(p))
        else:
            writer.call(lambda: p._w_quarantine(victim, "test"))
        return writer.call(fn)

    rc = Recompressor(lambda: [p], remove_first_then, cpu_share=1.0, interval_s=60)
    assert rc.recompress(p, victim) is False
    assert not [n for n in _names(str(tmp_path)) if n.endswith(".tmp")]
    assert all(s is not victim for s in p.segments)
    assert rc.statistics().skipped == 1 and rc.statistics().segments == 0
    if what == "quarantine":
        assert any(n.endswith(".quarantined") for n in _names(str(tmp_path)))
    else:
        assert not os.path.exists(victim.path)
    # the others are still repacked
    assert log.recompress_now() == len(p.segments) - 1


def _delete_first(p: Any) -> None:
    seg = p.segments[0]
    with p._lock:
        p.segments = p.segments[1:]
    p._w_write_state(log_start=p.segments[0].base_offset)
    seg.delete()


def test_reader_holding_the_old_segment_list_reads_on(log: Log) -> None:
    """A reader's snapshot taken before the swap: segments with an open handle keep reading the old file;
    never-opened ones find the copy's header and the read is retried on a fresh snapshot."""
    _write_small_frames(log, 500)
    before = _all(log)
    p = log.partition(TOPIC, 0)
    old = list(p.segments)
    old[1].handle()  # one open before the swap, the others not
    assert log.recompress_now() == len(old) - 1
    frozen_hw = p.high_watermark
    with p._lock:
        swapped = p.segments
        p.segments = old  # a reader that took its snapshot before the swap
    try:
        got = log.read(TOPIC, 0, old[1].base_offset, max_records=100_000, max_bytes=1 << 30)
        assert [tuple(r) for r in got] == [r for r in before if int(r[2]) >= old[1].base_offset]  # type: ignore
    finally:
        with p._lock:
            if p.segments is old:
                p.segments = swapped
    assert p.high_watermark == frozen_hw
    got = log.read(TOPIC, 0, 0, max_records=100_000, max_bytes=1 << 30)
    assert [tuple(r) for r in got] == before


def test_readonly_log_sees_identical_records_across_a_replace(tmp_path: Any) -> None:
    path = str(tmp_path)
    with Log.open(path, _config()) as lg:
        lg.create_topic(TOPIC, _topic())
        _write_small_frames(lg, 400)
        before = _all(lg)
        ro = Log.open(path, readonly=True)
        try:
            assert _all(ro) == before
            lg.recompress_now()
            assert _all(ro) == before, "before a refresh"
            ro_p = ro.partition(TOPIC, 0)
            ro_p.refresh()  # type: ignore[attr-defined]
            assert all(s.header.repacked for s in ro_p.segments[:-1]), "refresh reopened the copies"
            assert _all(ro) == before
            _write_small_frames(lg, 200, seed=5, start=50_000)
            lg.recompress_now()
            ro_p.refresh()  # type: ignore[attr-defined]
            assert _all(ro) == _all(lg)
        finally:
            ro.close()


def test_readonly_opened_before_and_never_refreshed_reopens_on_read(tmp_path: Any) -> None:
    path = str(tmp_path)
    with Log.open(path, _config()) as lg:
        lg.create_topic(TOPIC, _topic())
        _write_small_frames(lg, 400)
        before = _all(lg)
        ro = Log.open(path, readonly=True)  # sealed segments opened through their .idx: no handle yet
        try:
            lg.recompress_now()
            assert _all(ro) == before
            assert all(s.header.repacked for s in ro.partition(TOPIC, 0).segments[:-1])
        finally:
            ro.close()


def test_concurrent_readers_appends_retention_and_recompression(tmp_path: Any) -> None:
    path = str(tmp_path)
    lg = Log.open(path, _config())
    lg.create_topic(TOPIC, _topic(retention_bytes=48 * 1024))
    _write_small_frames(lg, 200)
    ro = Log.open(path, readonly=True)
    truth: dict[int, tuple[object, ...]] = {}
    errors: list[BaseException] = []
    reads = {False: 0, True: 0}
    stop = threading.Event()

    def check(rows: list[tuple[object, ...]]) -> None:
        for r in rows:
            want = truth.get(int(r[2]))  # type: ignore[call-overload]
            if want is not None and want != r:
                raise AssertionError(f"offset {r[2]} read back different")

    def reader(target: Log, refresh: bool) -> None:
        try:
            # A pause between passes: a reader spinning flat out in this process starves the writer thread of the
            # GIL (appends then take seconds, with or without recompression).
            while not stop.wait(0.002):
                p = target.partition(TOPIC, 0)
                if refresh:
                    p.refresh()  # type: ignore[attr-defined]
                offset = p.log_start
                while True:
                    try:
                        got = target.read(TOPIC, 0, offset, max_records=500)
                    except OffsetOutOfRangeError:  # retention moved the start: begin again from the new one
                        break
                    if not got:
                        break
                    check([tuple(r) for r in got])
                    reads[refresh] += len(got)
                    offset = got[-1].offset + 1
        except BaseException as exc:
            errors.append(exc)

    for r in _all(lg):
        truth[int(r[2])] = r  # type: ignore[call-overload]
    threads = [threading.Thread(target=reader, args=(lg, False)), threading.Thread(target=reader, args=(ro, True))]
    for t in threads:
        t.start()
    try:
        for round_no in range(10):
            _write_small_frames(lg, 80, seed=10 + round_no, start=(round_no + 1) * 100_000)
            p = lg.partition(TOPIC, 0)
            for r in lg.read(TOPIC, 0, max(p.log_start, p.high_watermark - 400), max_records=10_000):
                truth.setdefault(r.offset, tuple(r))
            lg.recompress_now()
            lg.run_maintenance()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    try:
        assert not errors, errors
        assert reads[False] > 1000 and reads[True] > 1000
        assert lg.statistics().topics[0].partitions[0].retention_deleted_segments > 0
        assert lg.statistics().topics[0].partitions[0].recompressed_segments > 0
        got = _all(lg)
        assert [int(r[2]) for r in got] == list(range(lg.partition(TOPIC, 0).log_start,  # type: ignore[call-overload]
                                                       lg.partition(TOPIC, 0).high_watermark))
        check(got)
    finally:
        ro.close()
        lg.close()


# -- the packer alone -------------------------------------------------------------------------------------------------


def _frame(records: list[RecordIn], base: int, epoch: int) -> tuple[FrameHeader, bytes]:
    _head, stored, h = build_frame(records, base_offset=base, epoch=epoch, codec=ZSTD, level=1,
                                  checksum=for_flag(True))
    return h, b"".join(stored)


def test_packer_keeps_epochs_apart_and_records_identical() -> None:
    rng = random.Random(7)
    frames = []
    offset = 0
    for i in range(40):
        epoch = 3 if i < 25 else 4
        recs = [RecordIn(TS + offset * 10 - (5 if j == 1 else 0), b"k" if j == 0 else None, _reading(rng, offset),
                         (("h", b"v"),) if j == 2 else ()) for j in range(rng.randint(1, 3))]
        frames.append(_frame(recs, offset, epoch))
        offset += len(recs)
    packer = FramePacker(64 * 1024, ZSTD, 1, for_flag(True))
    packed = []
    for h, stored in frames:
        packed += packer.add(body_columns(h, stored), stored)
    packed += packer.finish()
    assert [(p.header.epoch, p.header.base_offset) for p in packed] == [(3, 0), (4, frames[25][0].base_offset)]
    want = [r for h, s in frames for r in decode_body(h, s)]
    got = [r for p in packed for r in decode_body(p.header, p.stored)]
    assert got == want
    assert sum(len(p.stored) for p in packed) < sum(len(s) for _, s in frames) / 2


def test_packer_respects_frame_bytes_and_timestamp_range() -> None:
    rng = random.Random(8)
    frames = []
    offset = 0
    for i in range(30):
        ts = TS + (2**31 if i >= 20 else 0) + i  # a jump no i32 delta from the first frame covers
        recs = [RecordIn(ts, None, _reading(rng, offset)) for _ in range(2)]
        frames.append(_frame(recs, offset, 1))
        offset += 2
    packer = FramePacker(1024, ZSTD, 1, for_flag(True))
    packed = []
    for h, stored in frames:
        packed += packer.add(body_columns(h, stored), stored)
    packed += packer.finish()
    assert all(p.header.raw_len <= 1024 for p in packed)
    assert len(packed) > 3
    assert not any(p.header.base_offset < 40 < p.header.next_offset for p in packed), "the jump starts a frame"
    assert [r for p in packed for r in decode_body(p.header, p.stored)] == [
        r for h, s in frames for r in decode_body(h, s)]


def test_rule() -> None:
    assert worth_repacking(frames=100, raw_bytes=100 * 300, frame_bytes=256 * 1024)
    assert not worth_repacking(frames=1, raw_bytes=300, frame_bytes=256 * 1024)
    assert not worth_repacking(frames=10, raw_bytes=10 * 200 * 1024, frame_bytes=256 * 1024)


def test_segment_replaced_error_is_a_retriable_file_not_found(log: Log) -> None:
    _write_small_frames(log, 200)
    p = log.partition(TOPIC, 0)
    fresh = Segment.open(p.fs, p.directory, p.segments[0].base_offset)
    fresh.sealed = True
    assert fresh.load_index()
    log.recompress_now()
    with pytest.raises(SegmentReplacedError) as info:
        fresh.handle()
    assert isinstance(info.value, FileNotFoundError) and info.value.retriable


def test_check_and_scrub_accept_recompressed_segments(tmp_path: Any) -> None:
    from edgestream.store.check import check_data_dir
    from edgestream.store.fs import OsFileSystem

    path = str(tmp_path)
    with Log.open(path, _config(), scrub_interval_ms=0) as lg:
        lg.create_topic(TOPIC, _topic())
        _write_small_frames(lg, 400)
        before = _all(lg)
        n = lg.recompress_now()
        assert n >= 2
        for _ in range(n + 1):
            lg.run_maintenance(scrub=True)
        stats = lg.statistics().topics[0].partitions[0]
        assert stats.scrubbed_segments >= n and stats.quarantined_segments == 0
    report = check_data_dir(OsFileSystem(), path)
    assert report.ok, report.lines()
    assert report.partitions[0].records == len(before)
