"""DataDirLock: one process per data dir (`<data_dir>/.lock`, fcntl.flock).

The lock is released by the kernel when the process dies, so a kill -9 never leaves a stale lock behind. The
holder's pid is written into the file only to name it in the error message.
"""

from __future__ import annotations

import fcntl
import os

from .errors import DataDirLockedError


class DataDirLock:
    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DataDirLockedError(os.path.dirname(self.path), f"pid {holder}" if holder else "") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None
