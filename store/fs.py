"""The store's only door to the file system.

Every byte the log writes or reads goes through `FileSystem` / `FileHandle`. `OsFileSystem` is the real one;
`store.simfs.SimFileSystem` keeps files in memory and can simulate a power cut (keep only what was fdatasync'ed,
plus a torn prefix of the rest, and only the directory entries that were fsync'ed) or a full disk. Recovery and
durability tests run the same store code over both.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Protocol

BytesLike = bytes | bytearray | memoryview
_IOV_MAX = 1024


class FileHandle(Protocol):
    def write(self, data: BytesLike) -> None:
        """Append all of `data` at the end, or raise OSError (a partial write may have happened)."""

    def writev(self, buffers: Sequence[BytesLike]) -> None:
        """Append all of `buffers` in order (one gathered write where the OS has it), or raise OSError."""

    def pread(self, size: int, offset: int) -> bytes: ...

    def sync(self) -> None:
        """fdatasync: data and the size are durable when this returns."""

    def truncate(self, size: int) -> None: ...

    def size(self) -> int: ...

    def close(self) -> None: ...


class FileSystem(Protocol):
    def open_append(self, path: str) -> FileHandle:
        """Open for appending and reading, creating the file if missing."""

    def open_read(self, path: str) -> FileHandle: ...

    def open_new(self, path: str) -> FileHandle:
        """Create or truncate a file for writing (temp files of durable replace)."""

    def read_bytes(self, path: str) -> bytes: ...

    def replace(self, src: str, dst: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def sync_dir(self, path: str) -> None:
        """fsync a directory: entries created, renamed or removed in it are durable when this returns."""

    def listdir(self, path: str) -> list[str]: ...

    def exists(self, path: str) -> bool: ...

    def isdir(self, path: str) -> bool: ...

    def makedirs(self, path: str) -> None: ...

    def rmdir(self, path: str) -> None: ...

    def file_size(self, path: str) -> int: ...

    def free_bytes(self, path: str) -> int:
        """Bytes an unprivileged writer can still use on the file system holding `path`."""


class OsFile:
    __slots__ = ("_fd", "path")

    def __init__(self, path: str, flags: int) -> None:
        self.path = path
        self._fd = os.open(path, flags | os.O_CLOEXEC, 0o644)

    def write(self, data: BytesLike) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            if n <= 0:  # pragma: no cover - os.write raises instead on every platform we run on
                raise OSError(errno.EIO, "short write", self.path)
            view = view[n:]

    def writev(self, buffers: Sequence[BytesLike]) -> None:
        # IOV_MAX is 1024 on Linux; a short write (signal, nearly full disk) finishes through write().
        for i in range(0, len(buffers), _IOV_MAX):
            chunk = buffers[i : i + _IOV_MAX]
            n = os.writev(self._fd, chunk)
            total = sum(map(len, chunk))
            if n < total:
                self.write(memoryview(b"".join(chunk))[n:])

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class OsFileSystem:
    def open_append(self, path: str) -> OsFile:
        return OsFile(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)

    def open_read(self, path: str) -> OsFile:
        return OsFile(path, os.O_RDONLY)

    def open_new(self, path: str) -> OsFile:
        return OsFile(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def file_size(self, path: str) -> int:
        return os.stat(path).st_size

    def free_bytes(self, path: str) -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize
