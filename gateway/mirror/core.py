"""MirrorCursor: the commit-protocol state of one (target, topic, partition). Sans-I/O: no log, no Kafka, no clock.

Offsets of one partition, as the mirror sees them:

    log_start <= persisted <= acked <= next_send <= high watermark
    |-- mirrored and on disk --|-- delivered --|-- in flight --|-- not read yet --|

- `next_send`: the next offset to read and produce.
- `acked`: the acked prefix: every offset below it was confirmed by Kafka (or dead-lettered). Delivery reports can
  arrive out of order (they should not with an idempotent producer; we do not rely on it): a report above the
  prefix is remembered in `_done` and the prefix jumps over it once the gap below is filled.
- `persisted`: what the cursor file says. Never ahead of `acked` (step 4 of the protocol).

Every produce is bound to the cursor's `generation`; a rewind starts a new one, and reports of an older generation
(the purged records of a producer we threw away) are ignored: a late success must not advance a prefix that was
rewound, a late failure must not rewind again.

A record that failed with a "poison" error (too large, invalid) is first *suspected*: after the rewind it is sent
alone (nothing of its partition in flight around it), because Kafka rejects whole batches and its neighbours share
its error. Only if it fails alone is it poison for sure and goes to the dead-letter topic.

`reconcile()` decides where a saved cursor resumes after a restart (DESIGN 6, step 6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import DeliveryError


@dataclass(slots=True)
class Failure:
    offset: int
    error: DeliveryError
    immediate: bool = False  # refused by produce() itself: about this record alone, no batch around it


@dataclass(slots=True)
class MirrorCursor:
    topic: str
    partition: int
    log_id: str  # hex; "" if unknown (a cursor written before log ids existed)
    epoch: int  # the partition's epoch when the cursor was last saved
    acked: int
    persisted: int = -1
    next_send: int = -1
    generation: int = 0
    in_flight: int = 0
    suspect: int | None = None
    failures: list[Failure] = field(default_factory=list)
    unreported_errors: list[tuple[int, int, object]] = field(default_factory=list)  # (offset, generation, error)
    _done: set[int] = field(default_factory=set)
    # counters (only ever grow)
    reports: int = 0
    sent_records: int = 0
    acked_records: int = 0
    dead_letters: int = 0
    rewinds: int = 0
    duplicate_reports: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.persisted < 0:
            self.persisted = self.acked
        if self.next_send < 0:
            self.next_send = self.acked

    # -- feeding -------------------------------------------------------------------------------------------------

    def sendable(self, high_watermark: int) -> int:
        """How many records from `next_send` may be produced now (0 while a failure waits for its rewind)."""
        if self.failures:
            return 0
        backlog = high_watermark - self.next_send
        if backlog <= 0:
            return 0
        s = self.suspect
        if s is None or self.next_send > s + 1:
            return backlog
        if self.next_send < s:
            return min(backlog, s - self.next_send)
        if self.next_send == s:
            return 1 if self.acked == s else 0  # alone: everything before it confirmed first
        return 0  # the suspect is in flight: nothing after it until its report

    @property
    def idle(self) -> bool:
        """Nothing in flight: every produced record was reported."""
        return self.acked == self.next_send

    def sent(self, first: int, count: int) -> int:
        """`count` records from `first` were handed to the producer. Returns the generation to bind them to."""
        if first != self.next_send:
            raise ValueError(f"{self.topic}/{self.partition}: sent from {first}, expected {self.next_send}")
        self.next_send += count
        self.in_flight += count
        self.sent_records += count
        return self.generation

    def skip_to(self, offset: int, reason: str) -> int:
        """Records below `offset` are gone from the log (retention with drop_oldest, a quarantined segment): go on
        from there. Only when nothing is in flight, so the prefix moves over nothing unconfirmed. Returns how
        many were skipped."""
        if offset <= self.next_send:
            return 0
        if not self.idle:
            raise ValueError(f"{self.topic}/{self.partition}: cannot skip with {self.in_flight} records in flight")
        n = offset - self.next_send
        self.skipped[reason] = self.skipped.get(reason, 0) + n
        self.acked = self.next_send = offset
        if self.suspect is not None and self.suspect < offset:
            self.suspect = None
        return n

    # -- delivery reports ----------------------------------------------------------------------------------------

    def report(self, generation: int, offset: int, error: object, message: object) -> None:
        """The producer's delivery callback, bound to (generation, offset) per record. Success advances the prefix
        here (the hot path: one call per record); an error is kept as it came, for the shell to describe and feed
        to `failed()` (this module knows nothing of Kafka's error types)."""
        self.reports += 1
        if error is None:
            if generation == self.generation:
                self.in_flight -= 1
                if offset == self.acked and not self._done and self.suspect is None:
                    self.acked += 1
                    self.acked_records += 1
                else:
                    self._confirm(offset)
                    if self.suspect == offset:
                        self.suspect = None
        else:
            self.unreported_errors.append((offset, generation, error))

    def delivered(self, offset: int, generation: int) -> bool:
        """Kafka confirmed `offset`. Returns whether the report counted (False: an old generation's)."""
        if generation != self.generation:
            return False
        self.in_flight -= 1
        self._confirm(offset)
        if self.suspect == offset:
            self.suspect = None  # it went through alone: it was only a neighbour of a bad record
        return True

    def dead_lettered(self, offset: int) -> bool:
        """The failed record at `offset` was copied to the dead-letter topic (durably): the mirror is done with it.
        False if no failure of the current generation is pending there."""
        if not any(f.offset == offset for f in self.failures):
            return False
        self.failures = [f for f in self.failures if f.offset != offset]
        self.dead_letters += 1
        self._confirm(offset)
        if self.suspect == offset:
            self.suspect = None
        return True

    def failed(self, offset: int, generation: int, error: DeliveryError) -> bool:
        """Kafka did not confirm `offset`. Returns False for an old generation's report (ignored)."""
        if generation != self.generation:
            return False
        self.in_flight -= 1
        self.failures.append(Failure(offset, error))
        return True

    def _confirm(self, offset: int) -> None:
        if offset == self.acked:
            self.acked += 1
            self.acked_records += 1
            done = self._done
            while done and self.acked in done:
                done.remove(self.acked)
                self.acked += 1
                self.acked_records += 1
        elif offset > self.acked:
            if offset >= self.next_send or offset in self._done:
                self.duplicate_reports += 1  # never produced in this generation, or reported twice
                return
            self._done.add(offset)
        else:
            self.duplicate_reports += 1

    # -- persisting, rewinding -----------------------------------------------------------------------------------

    def persist_due(self) -> int | None:
        """The offset to persist now (the acked prefix), or None if the cursor file already says it."""
        return self.acked if self.acked != self.persisted else None

    def persisted_at(self, offset: int, epoch: int) -> None:
        if offset > self.acked:
            raise ValueError(f"{self.topic}/{self.partition}: persisting {offset} ahead of the acks ({self.acked})")
        self.persisted = offset
        self.epoch = epoch

    def suspect_poison(self) -> None:
        """Mark the lowest offset that failed with a poison error for a lone retry after the rewind."""
        poison = [f.offset for f in self.failures if f.error.kind == "poison"]
        if poison:
            low = min(poison)
            self.suspect = low if self.suspect is None else min(self.suspect, low)

    def rewind(self) -> None:
        """Step 5: forget everything in flight and go on from the persisted prefix (duplicates, never gaps)."""
        self.generation += 1
        self.in_flight = 0
        self._done.clear()
        self.failures.clear()
        self.acked = self.next_send = self.persisted
        self.rewinds += 1

    def reset(self, offset: int) -> None:
        """An operator moved the cursor: backwards re-sends, forwards skips on purpose. The caller persists it."""
        self.generation += 1
        self.in_flight = 0
        self._done.clear()
        self.failures.clear()
        self.suspect = None
        self.acked = self.next_send = self.persisted = offset


# -- start-up -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a partition's mirroring resumes, and why (action "" = as saved)."""

    offset: int
    action: str = ""  # "", new, log_recreated, ahead_of_log, deleted, rewritten
    detail: str = ""
    skipped: int = 0  # records lost to retention before they were mirrored (action "deleted")
    epoch_raise_needed: bool = False  # ahead_of_log without an epoch above the cursor's (see DESIGN 6, step 6)


def reconcile(saved_offset: int | None, saved_log_id: str, saved_epoch: int, *, log_id: str, epoch: int,
              log_start: int, end: int, epoch_at: Callable[[int], int | None]) -> Resume:
    """Step 6: check a saved cursor against the recovered partition.

    - no cursor: start at the log start (everything the log holds goes up);
    - another log id: the partition was deleted and made again: start at its log start;
    - above the recovered end (local data loss): clamp to the end. Offsets from there on were mirrored already and
      will be reused by new records; their identity stays unique only if the partition's epoch is above the one the
      cursor saw (recovery raises it after an unclean stop). If it is not, `epoch_raise_needed` says so;
    - below the log start (drop_oldest deleted unmirrored records): start at the log start, count what was lost;
    - records below the cursor that were written after it was saved (their epoch is above the cursor's: a
      recovery truncated them and new ones took the offsets while this mirror was not looking): rewind to the
      first of them. `epoch_at(offset)` reads one record's epoch (None if it is gone); epochs never decrease along
      the offsets of a partition, so a binary search finds it.
    """
    if saved_offset is None:
        return Resume(log_start, "new", f"no saved cursor: starting at the log start ({log_start})")
    if saved_log_id and saved_log_id != log_id:
        return Resume(log_start, "log_recreated",
                      f"the cursor belongs to log {saved_log_id[:8]}, the partition is now log {log_id[:8]} "
                      f"(deleted and made again): starting at its log start ({log_start})")
    if saved_offset > end:
        raised = epoch > saved_epoch
        how = (f"new records there carry epoch {epoch} > {saved_epoch}, so their identity stays unique" if raised
               else f"the partition's epoch ({epoch}) is not above the cursor's ({saved_epoch}): central dedupe may "
                    f"drop new records at offsets {end}..{saved_offset - 1} until the epoch is raised")
        return Resume(end, "ahead_of_log", f"the cursor ({saved_offset}) is above the recovered log end ({end}): "
                      f"local data loss; clamped to {end}; {how}", epoch_raise_needed=not raised)
    if saved_offset < log_start:
        lost = log_start - saved_offset
        return Resume(log_start, "deleted", f"{lost} records below the log start ({log_start}) were deleted before "
                      "they were mirrored (on_full = drop_oldest)", skipped=lost)
    if epoch > saved_epoch and saved_offset > log_start:
        last = epoch_at(saved_offset - 1)
        if last is not None and last > saved_epoch:
            lo, hi = log_start, saved_offset - 1  # the answer is in [lo, hi]: hi has a newer epoch
            while lo < hi:
                mid = (lo + hi) // 2
                e = epoch_at(mid)
                if e is not None and e > saved_epoch:
                    hi = mid
                else:
                    lo = mid + 1
            return Resume(lo, "rewritten", f"records {lo}..{saved_offset - 1} were written after the cursor was "
                          f"saved (epoch above {saved_epoch}): mirroring them from {lo}")
    return Resume(saved_offset)
