"""Syncer: the thread that fdatasyncs what the writer wrote for `fsync` topics, then acknowledges it.

The writer hands over each round it wrote, as (append, base offset) pairs per partition, and goes straight on to
encode and write the next round while this thread waits on the disk: encoding overlaps the fdatasync of the
round before (fdatasync releases the GIL). Per wake-up, the syncer
  1. takes every round handed over so far, by partition;
  2. per partition, one fdatasync covering everything written up to now (`Partition._w_sync`), so several rounds
     share one sync when the disk is the slower side;
  3. moves the high watermark to the end of the appends it covered and resolves their futures at once, or, if
     the fdatasync failed, fails them with LogBrokenError (the partition is broken: nothing is acknowledged after
     a failed fsync, and nothing is synced again).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import LogBrokenError, StoreError

if TYPE_CHECKING:
    from .appends import Append
    from .partition import Partition

log = logging.getLogger("edgestream.store.syncer")

Done = list[tuple["Append", int]]
# Called on the syncer thread with the partition, the appends it finished, and the error they failed with (None:
# acknowledged).
Finished = Callable[["Partition", Done, BaseException | None], None]


class Syncer:
    def __init__(self, finished: Finished, monotonic: Callable[[], float],
                 crashed: Callable[[BaseException], None]) -> None:
        self._finished = finished
        self._on_crash = crashed
        self._mono = monotonic
        self._cond = threading.Condition()
        self._jobs: dict[Partition, Done] = {}
        self._closing = False
        self.crashed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="edgestream-syncer", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[tuple[Partition, Done]]) -> None:
        """Hand over written rounds (writer thread). After a crash they fail at once."""
        with self._cond:
            if self.crashed is None:
                for p, done in jobs:
                    self._jobs.setdefault(p, []).extend(done)
                self._cond.notify()
                return
        err = LogBrokenError(f"the log syncer stopped: {self.crashed!r}; restart edgestream")
        for p, done in jobs:
            self._finished(p, done, err)

    def close(self, timeout: float | None = 30.0) -> None:
        """Sync and acknowledge what was handed over, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        jobs: dict[Partition, Done] = {}
        try:
            while True:
                with self._cond:
                    while not self._jobs and not self._closing:
                        self._cond.wait()
                    if not self._jobs:
                        return
                    jobs, self._jobs = self._jobs, {}
                for p, done in list(jobs.items()):
                    self._sync(p, done)
                    del jobs[p]
        except BaseException as exc:  # never die silently: fail everything handed over, loudly
            log.exception("log syncer crashed; failing the appends it held")
            with self._cond:
                self.crashed = exc
                jobs.update(self._jobs)
                self._jobs = {}
            err = LogBrokenError(f"the log syncer crashed: {exc!r}; restart edgestream")
            for p, done in jobs.items():
                self._finished(p, done, err)
            self._on_crash(exc)

    def _sync(self, p: Partition, done: Done) -> None:
        try:
            p._w_sync(self._mono())
        except (OSError, StoreError) as exc:
            err = LogBrokenError(f"fdatasync of {p.topic}/{p.index} failed: {exc}; restart edgestream")
            self._finished(p, done, err)
            return
        p._w_publish(max(base + len(a.records) for a, base in done))
        self._finished(p, done, None)
