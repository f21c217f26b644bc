"""Offline verification of a data dir (`edgestream check`): reads everything, changes nothing.

For each partition: the state file, every segment header, every frame (magic, header CRC, body CRC, decompression,
record parsing), offsets contiguous within and across segments, the `.idx` against the frames, and the cursor files.
Findings are plain sentences an operator can act on; `store.log.Log.open` (what `check --repair` runs) fixes what
recovery can fix: truncating a torn tail, quarantining a corrupt sealed segment, rebuilding indexes and state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import durable, files
from .errors import CorruptSegmentError, CorruptStateError
from .frame import FRAME_HEADER_SIZE, FrameError, check_body, decode_body, parse_header
from .fs import FileSystem
from .index import OffsetIndex
from .segment import SEGMENT_HEADER_SIZE, Segment
from .state import PartitionState
from .topic import Topic


@dataclass
class PartitionCheck:
    topic: str
    partition: int
    segments: int = 0
    records: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What `repair` acts on: sealed segments with bad frames, a bad tail, indexes that disagree.
    corrupt_sealed: list[str] = field(default_factory=list)
    bad_tail: bool = False
    bad_indexes: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    data_dir: str
    partitions: list[PartitionCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # not tied to a partition (cursors, stray dirs)

    @property
    def ok(self) -> bool:
        return not self.problems and all(not p.problems for p in self.partitions)

    def lines(self) -> list[str]:
        out = []
        for p in self.partitions:
            head = f"{p.topic}/{p.partition}: {p.segments} segments, {p.records} records, {p.bytes} bytes"
            out.append(head + (" - OK" if not p.problems else f" - {len(p.problems)} problem(s)"))
            out.extend(f"  problem: {x}" for x in p.problems)
            out.extend(f"  note: {x}" for x in p.notes)
        out.extend(f"problem: {x}" for x in self.problems)
        return out


def check_data_dir(fs: FileSystem, data_dir: str) -> CheckReport:
    report = CheckReport(data_dir)
    tdir = files.topics_dir(data_dir)
    if not fs.isdir(tdir):
        report.problems.append(f"{tdir} does not exist: not an edgestream data dir (or nothing was written yet)")
        return report
    for name in sorted(fs.listdir(tdir)):
        try:
            config = Topic.read_config(fs, data_dir, name)
        except FileNotFoundError:
            report.problems.append(f"topic dir {name} has no config: an interrupted create or delete; "
                                   "start the gateway or run `check --repair` to remove it")
            continue
        except CorruptStateError as exc:
            report.problems.append(f"topic {name}: {exc}")
            continue
        for i in range(config.partitions):
            report.partitions.append(_check_partition(fs, files.partition_dir(data_dir, name, i), name, i))
    cdir = files.cursors_dir(data_dir)
    if fs.isdir(cdir):
        for name in sorted(fs.listdir(cdir)):
            if name.endswith(durable.TMP_SUFFIX):
                continue
            try:
                durable.read_enveloped(fs, os.path.join(cdir, name))
            except (CorruptStateError, OSError) as exc:
                report.problems.append(f"cursor {name}: {exc}; it will read as absent (the consumer restarts "
                                       "from the log start: duplicates, no gaps)")
    return report


def _check_partition(fs: FileSystem, directory: str, topic: str, index: int) -> PartitionCheck:
    pc = PartitionCheck(topic, index)
    if not fs.isdir(directory):
        pc.problems.append(f"partition directory {directory} is missing")
        return pc
    state: PartitionState | None = None
    try:
        state = PartitionState.read(fs, os.path.join(directory, files.STATE))
        if not state.clean:
            pc.notes.append("the last stop was not clean (or the gateway is running): the tail is checked below")
    except FileNotFoundError:
        pc.problems.append("state file missing: recovery will rebuild it (and raise the epoch)")
    except CorruptStateError as exc:
        pc.problems.append(f"{exc}: recovery will rebuild it (and raise the epoch)")
    names = fs.listdir(directory)
    quarantined = [n for n in names if n.endswith(files.QUARANTINE_SUFFIX)]
    if quarantined:
        pc.notes.append(f"quarantined segments kept for inspection: {', '.join(sorted(quarantined))}")
    bases = sorted(b for b in (files.parse_segment_name(n) for n in names) if b is not None)
    expect: int | None = None
    for n, base in enumerate(bases):
        last = n == len(bases) - 1
        path = os.path.join(directory, files.segment_name(base))
        try:
            seg = Segment.open(fs, directory, base)
        except (CorruptSegmentError, OSError) as exc:
            pc.problems.append(f"{exc}")
            expect = None
            continue
        pc.segments += 1
        pc.bytes += seg.size
        if state and seg.header.log_id != state.log_id:
            pc.problems.append(f"{path}: log id {seg.header.log_id.hex()} differs from the state's")
        if expect is not None and base != expect:
            pc.problems.append(f"{path}: starts at offset {base} but the previous segment ended at {expect} "
                               f"({'records missing' if base > expect else 'offsets overlap'})")
        handle = seg.handle()
        size = handle.size()
        pos = SEGMENT_HEADER_SIZE
        nxt = base
        frame_starts: dict[int, int] = {}
        while pos < size:
            try:
                h = parse_header(handle.pread(FRAME_HEADER_SIZE, pos), seg.checksum)
                if pos + h.frame_len > size:
                    raise FrameError("beyond_end", f"{h.frame_len}-byte frame runs past the end")
                if h.base_offset != nxt:
                    raise FrameError("offset_gap", f"frame starts at {h.base_offset}, expected {nxt}")
                body = handle.pread(h.frame_len - FRAME_HEADER_SIZE, pos + FRAME_HEADER_SIZE)
                check_body(h, body, seg.checksum)
                decode_body(h, body)
            except FrameError as exc:
                where = "tail of the active segment (a torn write: recovery truncates it)" if last else \
                    "sealed segment (recovery quarantines it)"
                if last:
                    pc.bad_tail = True
                else:
                    pc.corrupt_sealed.append(path)
                pc.problems.append(f"{path} byte {pos}: {exc} - {size - pos} bytes after it unreadable; {where}")
                break
            frame_starts[h.base_offset] = pos
            pc.records += h.record_count
            nxt = h.next_offset
            pos += h.frame_len
        expect = nxt
        seg.close()
        idx_path = os.path.join(directory, files.index_name(base))
        if fs.exists(idx_path):
            try:
                idx, summary = OffsetIndex.read(fs, idx_path)
                bad = [r for r, p in zip(idx.rel_offsets, idx.positions, strict=True)
                       if frame_starts.get(base + r) != p]
                if bad:
                    pc.bad_indexes.append(idx_path)
                    pc.problems.append(f"{idx_path}: {len(bad)} entries do not point at frame starts; "
                                       "recovery rebuilds it")
                elif summary.covered_bytes != size and not last:
                    pc.problems.append(f"{idx_path}: covers {summary.covered_bytes} bytes, segment has {size}")
            except CorruptStateError as exc:
                pc.bad_indexes.append(idx_path)
                pc.problems.append(f"{exc}; recovery rebuilds it")
        elif not last:
            pc.notes.append(f"{idx_path} missing: rebuilt at next start")
    if not bases:
        pc.problems.append("no segments")
    return pc


def prepare_repair(fs: FileSystem, report: CheckReport) -> list[str]:
    """Set up what recovery then finishes (`check --repair`): quarantine corrupt sealed segments (renamed, never
    deleted), drop indexes that disagree with their segment, and mark a partition with a bad tail as stopped
    uncleanly so recovery scans and truncates it. Returns what was done, in plain words."""
    done: list[str] = []
    for pc in report.partitions:
        for path in pc.corrupt_sealed:
            fs.replace(path, path + files.QUARANTINE_SUFFIX)
            idx = path[: -len(files.LOG_SUFFIX)] + files.INDEX_SUFFIX
            if fs.exists(idx):
                fs.remove(idx)
            fs.sync_dir(os.path.dirname(path))
            done.append(f"quarantined {path}")
        for idx in pc.bad_indexes:
            if fs.exists(idx):
                fs.remove(idx)
                done.append(f"removed {idx} (rebuilt from its segment)")
        if pc.bad_tail or pc.corrupt_sealed:
            directory = os.path.dirname(pc.corrupt_sealed[0]) if pc.corrupt_sealed else None
            state_dir = directory or _partition_dir_of(report.data_dir, pc)
            path = os.path.join(state_dir, files.STATE)
            try:
                st = PartitionState.read(fs, path)
                st.with_(clean=False).write(fs, path)
            except (FileNotFoundError, CorruptStateError):
                pass  # recovery rebuilds a missing or garbled state and treats the stop as unclean anyway
    return done


def _partition_dir_of(data_dir: str, pc: PartitionCheck) -> str:
    return files.partition_dir(data_dir, pc.topic, pc.partition)
