"""TurnThread: the thread a mirror target runs in, its wake-up event and its command queue.

Why a thread per target rather than the event loop: the hot path is a Python call per record into librdkafka plus a
delivery report per record (~100,000 a second at full drain), the cursor is persisted with an fsync, and a dead WAN
makes metadata look-ups block for seconds. In its own thread a target owns its producer and cursors outright: no
locks on the hot path, no `call_soon_threadsafe` per report (`poll()` runs the delivery callbacks right in this
thread), and an fsync or a slow broker never delays an MQTT acknowledgement on the loop. The GIL is shared every
few milliseconds either way. The loop talks to a target only through `call()` (pause, resume, reset run here,
between two turns) and reads the status snapshot the target publishes.

A subclass provides `step()` (one turn; returns how long it may wait), `wait(seconds)` (sleep until then, or
until `wake` is set), `crashed(exc)` (recover from an unexpected error; returns a wait) and `finish()` (at stop).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from ...store.errors import StoreError

log = logging.getLogger("edgestream.mirror")


class TurnThread:
    def __init__(self) -> None:
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    # -- what a subclass provides -----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        raise NotImplementedError

    def step(self) -> float:
        raise NotImplementedError

    def wait(self, seconds: float) -> None:
        raise NotImplementedError

    def crashed(self, exc: BaseException) -> float:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def after_command(self) -> None:
        """Hook run after each command, before its caller gets the answer."""

    # -- the thread -----------------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"mirror-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.wait(self.step())
            except StoreError as exc:
                if self.stopping.is_set():  # the log closed under a stopping mirror
                    break
                self.wait(self.crashed(exc))
            except Exception as exc:  # a bug must not end mirroring silently: the subclass logs, counts, recovers
                self.wait(self.crashed(exc))
        try:
            self.finish()
        except Exception:
            log.exception("mirror %s: stopping failed; the cursor file holds the last persisted position", self.name)

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run `fn` in the thread between two turns; the future gets its result (or exception). Runs at once in
        the caller's thread when the target's thread is not running (before start, after stop)."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if not self.alive:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)
            return fut
        self._commands.put((fn, fut))
        self.wake.set()
        return fut

    def run_commands(self) -> None:
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                result = fn()
            except BaseException as exc:
                fut.set_exception(exc)
                continue
            self.after_command()
            fut.set_result(result)

    def request_stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True
