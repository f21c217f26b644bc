"""DiskRoom: whether a partition may write now, and what `on_full` does when it may not (DESIGN 4.3).

Two limits: the file system's free space must stay above `min_free_bytes` (read with statvfs at most every
`disk_check_interval_ms`, and lowered by what the writer wrote since, so a stale reading errs on the safe side),
and a partition may hold at most `retention_bytes` plus one segment (over it, retention runs first; if a required
cursor keeps it from deleting, the partition is "at its cap"). `make_room` is `drop_oldest`: it deletes the
partition's oldest sealed segments, even unread ones, which the partition counts as dropped. A blocked partition
is retried every `disk_check_interval_ms` (at least `_MIN_BLOCKED_RETRY_S` apart, so a blocked writer sleeps),
earlier when an append's `block_timeout_ms` runs out, and right after housekeeping.
Used by the writer thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .config import LogConfig
from .partition import Partition

log = logging.getLogger("edgestream.store.room")

# Each retry is a statvfs and maybe a retention pass, and a full disk does not empty in microseconds.
_MIN_BLOCKED_RETRY_S = 0.05


class DiskRoom:
    def __init__(self, data_dir: str, config: LogConfig, free_bytes: Callable[[], int],
                 monotonic: Callable[[], float]) -> None:
        self.data_dir = data_dir
        self.config = config
        self._free_bytes_fn = free_bytes
        self._mono = monotonic
        self.free = 0
        self._free_checked = 0.0
        self.retry_at: dict[Partition, float] = {}
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> int:
        now = self._mono()
        if force or now - self._free_checked >= self.config.disk_check_interval_ms / 1000:
            try:
                self.free = self._free_bytes_fn()
            except OSError as exc:  # keep the last reading; the write itself will tell if the disk is gone
                log.warning("cannot read the free space of %s: %s", self.data_dir, exc)
            self._free_checked = now
        return self.free

    def spent(self, nbytes: int) -> None:
        """The writer wrote `nbytes`: keep the cached reading honest until the next statvfs."""
        self.free -= nbytes

    def check(self, p: Partition, needed: int, now_ms: int) -> str | None:
        """None if `needed` bytes fit; else why not: "disk" (free space would fall under min_free_bytes) or "cap"
        (the partition already holds retention_bytes + one segment and retention cannot delete: a required cursor
        lags). One round may overshoot the cap by what it writes: bounded by max_pending_bytes."""
        if self.refresh() - needed < self.config.min_free_bytes:
            self.refresh(force=True)
            if self.free - needed < self.config.min_free_bytes:
                return "disk"
        cap = p.config.retention_bytes
        if cap is not None and p.size_bytes() >= cap + p.config.segment_bytes:
            p._w_retention(now_ms)
            if p.size_bytes() >= cap + p.config.segment_bytes:
                return "cap"
        return None

    def make_room(self, p: Partition, needed: int, why: str, now_ms: int) -> bool:
        """drop_oldest: delete this partition's oldest segments until `needed` fits. True if it now does."""
        for _ in range(4):
            if why == "disk":
                shortfall = self.config.min_free_bytes + needed - self.free
            else:
                assert p.config.retention_bytes is not None
                shortfall = p.size_bytes() + 1 - (p.config.retention_bytes + p.config.segment_bytes)
            if shortfall <= 0:
                return True
            if len(p.segments) == 1 and not p.active.empty:
                p._w_roll(now_ms)  # only sealed segments can go: seal the active one
            freed = p._w_retention(now_ms, free_bytes_needed=shortfall)
            self.refresh(force=True)
            new_why = self.check(p, needed, now_ms)
            if new_why is None:
                return True
            if freed == 0:
                return False
            why = new_why
        return False

    def block(self, p: Partition, oldest_enqueued: float) -> None:
        p.blocked = True
        p.counters.blocked_cycles += 1
        retry_at = self._mono() + max(self.config.disk_check_interval_ms / 1000, _MIN_BLOCKED_RETRY_S)
        if self.config.block_timeout_ms is not None:  # wake up in time to fail the oldest append
            retry_at = min(retry_at, oldest_enqueued + self.config.block_timeout_ms / 1000)
        self.retry_at[p] = retry_at
