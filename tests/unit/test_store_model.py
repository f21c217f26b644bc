"""A Hypothesis state machine drives one partition (appends, rolls, reads by offset and by time, retention by time
under a required cursor, cursor commits, clean and unclean restarts, power cuts) on the simulated file system,
and checks it against a plain list of what was acknowledged."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from edgestream.store import Log, OffsetOutOfRangeError, RecordIn
from edgestream.store.cursors import CursorPosition
from edgestream.store.simfs import SimFileSystem
from tests.fault.store_support import FakeClock, open_sim, read_all, small_topic

RETENTION_MS = 60_000
SEGMENT_MS = 20_000


class PartitionModel(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**16), codec=st.sampled_from(["none", "zstd", "lz4"]))
    def start(self, seed: int, codec: str) -> None:
        self.fs = SimFileSystem(seed)
        self.clock = FakeClock()
        self.log: Log = self._open()
        self.log.create_topic("t", small_topic(codec=codec, retention_ms=RETENTION_MS, segment_ms=SEGMENT_MS))
        self.records: list[tuple[int, bytes | None, bytes]] = []  # index = offset: (ts, key, value)
        self.log_start = 0
        self.cursor: int | None = None
        self.epoch = 0

    def _open(self) -> Log:
        return open_sim(self.fs, self.clock, maintenance_ms=3_600_000, scrub_interval_ms=0)

    @property
    def part(self):  # type: ignore[no-untyped-def]
        return self.log.partition("t", 0)

    @rule(sizes=st.lists(st.integers(0, 400), min_size=1, max_size=12), skew=st.integers(-5000, 5000),
          keyed=st.booleans(), step=st.integers(-300, 1000))
    def append(self, sizes: list[int], skew: int, keyed: bool, step: int) -> None:
        ts = self.clock.wall_ms() + skew
        n0 = len(self.records)
        batch = [RecordIn(ts + i * step, b"k%d" % (n0 + i) if keyed else None, bytes([(n0 + i) % 251]) * size)
                 for i, size in enumerate(sizes)]
        base = self.log.append_batch("t", 0, batch).result(10)
        assert base == n0
        self.records.extend((r.timestamp_ms, r.key, r.value) for r in batch)

    @rule(data=st.data(), max_records=st.integers(1, 50))
    def read(self, data: st.DataObject, max_records: int) -> None:
        end = len(self.records)
        offset = data.draw(st.integers(max(0, self.log_start - 2), end + 2))
        if offset < self.log_start or offset > end:
            try:
                self.log.read("t", 0, offset, max_records=max_records)
            except OffsetOutOfRangeError as exc:
                assert (exc.start, exc.end) == (self.log_start, end)
            else:
                raise AssertionError("a read outside the log must raise OffsetOutOfRangeError")
            return
        got = self.log.read("t", 0, offset, max_records=max_records)
        want = self.records[offset : offset + max_records]
        assert [(r.timestamp_ms, r.key, r.value) for r in got] == want
        assert [r.offset for r in got] == list(range(offset, offset + len(want)))

    @rule(delta=st.integers(-6000, 6000))
    def offset_for_time(self, delta: int) -> None:
        target = self.clock.wall_ms() + delta
        want = next((o for o in range(self.log_start, len(self.records)) if self.records[o][0] >= target),
                    len(self.records))
        assert self.log.offset_for_time("t", 0, target) == want

    @rule(ms=st.sampled_from([1_000, SEGMENT_MS, RETENTION_MS // 2, RETENTION_MS + 1]))
    def advance_time_and_housekeep(self, ms: int) -> None:
        """Time passes: idle segments roll after segment_ms, retention deletes segments past retention_ms."""
        self.clock.advance(ms)
        assert self.log.run_maintenance()
        p = self.part
        new_start = p.log_start
        assert self.log_start <= new_start <= len(self.records)
        cutoff = self.clock.wall_ms() - RETENTION_MS
        assert all(ts < cutoff for ts, _, _ in self.records[self.log_start : new_start]), "deleted too early"
        if self.cursor is not None:
            assert new_start <= self.cursor, "deleted what a required cursor had not read"
        first = p.segments[0]
        if len(p.segments) > 1:  # retention stopped for a reason: the oldest sealed segment must stay
            assert first.max_ts >= cutoff or (self.cursor is not None and self.cursor < first.next_offset)
        self.log_start = new_start

    @rule(data=st.data())
    def commit_cursor(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.log_start, len(self.records)))
        p = self.part
        self.log.cursors.commit("mirror", {("t", 0): CursorPosition(offset, p.log_id.hex(), p.epoch)}, required=True)
        self.cursor = offset

    @rule()
    def clean_restart(self) -> None:
        epoch = self.part.epoch
        self.log.close()
        self.log = self._open()
        report = self.log.recovery_reports()[0]
        assert report.clean and not report.epoch_bumped and self.part.epoch == epoch

    @rule(power_cut=st.booleans())
    def unclean_restart(self, power_cut: bool) -> None:
        epoch = self.part.epoch
        if power_cut:
            self.fs.power_cut()
        self.log.abandon()
        self.log = self._open()
        report = self.log.recovery_reports()[0]
        assert not report.clean and report.epoch_bumped and self.part.epoch == epoch + 1
        assert report.truncated_records == 0, "fsync mode: nothing acked is cut off"

    @precondition(lambda self: hasattr(self, "log"))
    @invariant()
    def matches_the_model(self) -> None:
        p = self.part
        assert p.high_watermark == len(self.records)
        assert p.log_start == self.log_start
        got = read_all(self.log, "t", 0)
        assert [(r.timestamp_ms, r.key, r.value) for r in got] == self.records[self.log_start :]

    def teardown(self) -> None:
        if hasattr(self, "log"):
            self.log.close()


PartitionModel.TestCase.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)
TestPartitionModel = PartitionModel.TestCase
