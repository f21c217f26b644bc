"""Damaged data dirs: a last frame cut at every byte, bits flipped in headers and bodies of active and sealed
segments, index and state files deleted or garbled. Recovery never crashes; it truncates a torn tail, quarantines
a damaged sealed segment (renamed, never deleted), reports what it dropped, keeps offsets contiguous and raises
the epoch whenever it may hand out an offset again."""

from __future__ import annotations

import random

import pytest

from edgestream.store import Log, LogConfig, Record, RecordIn
from edgestream.store.frame import batch_info
from edgestream.store.partition import Partition
from edgestream.store.segment import SEGMENT_HEADER_SIZE, Segment
from edgestream.store.simfs import SimFileSystem
from tests.fault.store_support import DATA, FakeClock, open_sim, read_all, small_topic

pytestmark = pytest.mark.fault

PDIR = f"{DATA}/topics/t/0"


def _build(codec: str, *, clean: bool) -> tuple[dict[str, bytes], list[Record]]:
    """A partition of four or more segments, one frame per append, keys and headers on some records."""
    fs = SimFileSystem(7)
    clock = FakeClock()
    log = open_sim(fs, clock)
    log.create_topic("t", small_topic(codec=codec, segment_bytes=4096))
    for i in range(90):
        batch = [RecordIn(clock.wall_ms() + j, b"k%d" % i if j == 0 else None, b"value %d/%d " % (i, j) * (1 + i % 7),
                          (("src", b"sensor-%d" % i),) if j == 1 else ()) for j in range(3)]
        log.append_batch("t", 0, batch).result(5)
        clock.advance(3)
    records = read_all(log, "t", 0)
    assert log.partition("t", 0).statistics().segments >= 4
    if clean:
        log.close()
    else:
        log.abandon()
    return fs.snapshot(), records


def _frames(files: dict[str, bytes]) -> list[tuple[str, list[tuple[int, int, int, int]]]]:
    """Per segment path (in offset order): (position, length, base offset, record count) of every frame."""
    fs = SimFileSystem.from_snapshot(files)
    out = []
    for name in sorted(n for n in fs.listdir(PDIR) if n.endswith(".log")):
        seg = Segment.open(fs, PDIR, int(name[:20]))
        frames = [(pos, h.frame_len, h.base_offset, h.record_count)
                  for pos, h, _ in seg.walk(SEGMENT_HEADER_SIZE, seg.size)]
        out.append((f"{PDIR}/{name}", frames))
    return out


def _open_partition(fs: SimFileSystem) -> Partition:
    return Partition.open(fs, PDIR, "t", 0, small_topic(), LogConfig(), now_ms=1, use_crc32c=True)


def _read(p: Partition) -> list[Record]:
    return p.read(p.log_start, max_records=1_000_000, max_bytes=1 << 40)


@pytest.mark.parametrize("codec", ["none", "zstd"])
@pytest.mark.parametrize("clean", [True, False])
def test_last_frame_cut_at_every_byte(codec: str, clean: bool) -> None:
    files, records = _build(codec, clean=clean)
    path, frames = _frames(files)[-1]
    pos, length, base, count = frames[-1]
    old_epoch = records[-1].epoch
    for cut in range(pos, pos + length):
        variant = dict(files)
        variant[path] = files[path][:cut]
        fs = SimFileSystem.from_snapshot(variant)
        p = _open_partition(fs)
        report = p.recovery
        assert report.truncated_bytes == cut - pos
        assert report.truncated_records == (count if cut - pos >= 48 else 0)
        got = _read(p)
        assert got == records[: len(records) - count]
        assert p.end_offset == base
        if cut > pos:
            assert report.epoch_bumped and p.epoch == old_epoch + 1
        # the next record takes the lost offset, under the new epoch: a new identity
        rec = RecordIn(5, None, b"after")
        p._w_write([([rec], batch_info([rec]))], now_ms=1)
        p._w_sync(0.0)
        p._w_publish(p.end_offset)
        new = p.read(base, max_records=10)
        assert [(r.offset, r.value) for r in new] == [(base, b"after")]
        if cut > pos:
            assert new[0].epoch > old_epoch


def _expected_after_flip(frames: list[tuple[str, list[tuple[int, int, int, int]]]], si: int, pos: int,
                         records: list[Record]) -> tuple[set[int], int]:
    """Offsets that must be gone after a flip at byte `pos` of segment `si`, and the truncated bytes reported."""
    _, seg_frames = frames[si]
    first = seg_frames[0][2]
    end = seg_frames[-1][2] + seg_frames[-1][3]
    last = si == len(frames) - 1
    if not last or pos < SEGMENT_HEADER_SIZE:
        size = seg_frames[-1][0] + seg_frames[-1][1]
        return set(range(first, end)), (size if last else 0)
    for fpos, flen, fbase, _ in seg_frames:
        if fpos <= pos < fpos + flen:
            size = seg_frames[-1][0] + seg_frames[-1][1]
            return set(range(fbase, end)), size - fpos
    raise AssertionError("position outside every frame")


@pytest.mark.parametrize("state", ["clean", "unclean", "deleted"])
@pytest.mark.parametrize("seed", range(25))
def test_bit_flips_truncate_the_tail_or_quarantine_a_sealed_segment(state: str, seed: int) -> None:
    rng = random.Random(seed)
    files, records = _build(rng.choice(["none", "zstd"]), clean=state == "clean")
    frames = _frames(files)
    si = rng.randrange(len(frames))
    path, seg_frames = frames[si]
    where = rng.random()
    if where < 0.15:
        pos = rng.randrange(SEGMENT_HEADER_SIZE)
    else:
        fpos, flen, _, _ = rng.choice(seg_frames)
        pos = fpos + (rng.randrange(48) if where < 0.5 else rng.randrange(48, flen))
    variant = dict(files)
    data = bytearray(files[path])
    data[pos] ^= 1 << rng.randrange(8)
    variant[path] = bytes(data)
    if state == "deleted":
        del variant[f"{PDIR}/state"]
    fs = SimFileSystem.from_snapshot(variant)
    clock = FakeClock()
    log = open_sim(fs, clock, scrub_interval_ms=0)
    p = log.partition("t", 0)
    for _ in range(len(frames)):  # scrub every sealed segment once
        log.run_maintenance(scrub=True)
    gone, truncated = _expected_after_flip(frames, si, pos, records)
    got = read_all(log, "t", 0)
    assert [r.offset for r in got] == [r.offset for r in records if r.offset not in gone]
    assert got == [r for r in records if r.offset not in gone]
    st = p.statistics()
    assert p.recovery.truncated_bytes == truncated
    last = si == len(frames) - 1
    if not last or pos < SEGMENT_HEADER_SIZE:
        assert st.quarantined_segments == 1
        assert fs.exists(path + ".quarantined") and not fs.exists(path), "quarantined means renamed, not deleted"
    else:
        assert st.quarantined_segments == 0
    if truncated or state == "deleted":
        assert p.recovery.epoch_bumped
    # the log goes on: the next offset is right after what survived, under the current epoch
    nxt = log.append("t", 0, b"next").result(5)
    assert nxt == (min(gone) if last else records[-1].offset + 1)
    assert log.read("t", 0, nxt)[0].value == b"next"
    if truncated or state == "deleted":
        assert log.read("t", 0, nxt)[0].epoch > records[-1].epoch
    log.close()


@pytest.mark.parametrize("damage", ["delete_index", "garble_index", "delete_state", "garble_state", "both"])
def test_index_and_state_files_are_rebuilt(damage: str) -> None:
    files, records = _build("zstd", clean=True)
    frames = _frames(files)
    variant = dict(files)
    idx = frames[1][0].replace(".log", ".idx")
    if damage in ("delete_index", "both"):
        del variant[idx]
    if damage == "garble_index":
        variant[idx] = variant[idx][:20] + b"\xff" + variant[idx][21:]
    if damage in ("delete_state", "both"):
        del variant[f"{PDIR}/state"]
    if damage == "garble_state":
        variant[f"{PDIR}/state"] = b"ESF1garbage"
    fs = SimFileSystem.from_snapshot(variant)
    log: Log = open_sim(fs, FakeClock())
    p = log.partition("t", 0)
    assert read_all(log, "t", 0) == records
    report = p.recovery
    if "index" in damage or damage == "both":
        assert report.indexes_rebuilt >= 1 or "state" in damage or damage == "both"
        assert fs.exists(idx), "a rebuilt index is written back"
    if "state" in damage or damage == "both":
        assert report.state_rebuilt and report.epoch_bumped and not report.clean
        assert p.epoch == records[-1].epoch + 1
        assert p.log_id == Segment.open(fs, PDIR, 0).header.log_id
    else:
        assert report.clean and not report.epoch_bumped and p.epoch == records[-1].epoch
    assert log.offset_for_time("t", 0, records[100].timestamp_ms) == records[100].offset
    log.close()
