"""SimFileSystem: an in-memory `store.fs.FileSystem` that can lose power, fill up and fail an fsync.

What a power cut keeps (the rules a real journaling file system gives at best, and the store relies on):
- a file's content up to its last fdatasync, plus a torn part of what was written after it: a prefix of the
  unsynced bytes (the usual case) or, now and then, the right length of zeros (the size reached the journal, the
  data blocks did not, as ext4 with data=writeback or XFS can leave it);
- the directory entries (creations, renames, removals) made durable by an fsync of their directory. Of the ones
  made since a directory's last fsync, a seeded random prefix survives, each one whole and in order, as a journal
  commits them.
Every choice comes from one `random.Random(seed)`, so a failing case replays from its seed.

Faults besides the power cut: `capacity` (a write that does not fit writes what fits, then raises ENOSPC),
`fail_next_sync` (the next matching fdatasync raises EIO and makes nothing durable) and `cut_after(n)` (the n-th
next mutating call cuts the power instead of running). After a cut every handle of the old "boot" raises EIO, like
a process that died with the machine; the file system itself holds the state a restart would find. A `Log`
opened on `fs.mount()` dies with its boot in the same way: every call it makes after the cut raises EIO, so a
writer thread still running cannot touch what the next boot finds.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .fs import BytesLike


@dataclass(eq=False)
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    durable_len: int = 0  # bytes [0, durable_len) of the durable content...
    diverged_at: int = 0  # ...equal data[:diverged_at] + old_tail (a truncation since the sync saved old_tail)
    old_tail: bytes = b""
    nlink: int = 0

    def durable_content(self) -> bytes:
        if self.diverged_at >= self.durable_len:
            return bytes(self.data[: self.durable_len])
        return bytes(self.data[: self.diverged_at]) + self.old_tail

    def mark_synced(self) -> None:
        self.durable_len = len(self.data)
        self.diverged_at = len(self.data)
        self.old_tail = b""

    def cut_to(self, at: int) -> None:
        """Shrink to `at` bytes, remembering the durable bytes this destroys."""
        if at < self.diverged_at:
            if at < self.durable_len:
                self.old_tail = self.durable_content()[at:]
            self.diverged_at = at
        del self.data[at:]


@dataclass(eq=False)
class _Dir:
    live: dict[str, _Inode | _Dir] = field(default_factory=dict)
    durable: dict[str, _Inode | _Dir] = field(default_factory=dict)
    journal: list[tuple[str, str, _Inode | _Dir | None]] = field(default_factory=list)  # (op, name, node)


class SimFile:
    def __init__(self, fs: SimFileSystem, path: str, inode: _Inode, writable: bool) -> None:
        self._fs = fs
        self.path = path
        self._inode = inode
        self._writable = writable
        self._boot = fs.boot
        self._closed = False

    def _check(self) -> None:
        if self._boot != self._fs.boot:
            raise OSError(errno.EIO, "simulated power cut: this handle died with the machine", self.path)
        if self._closed:
            raise ValueError("I/O on a closed file")

    def write(self, data: BytesLike) -> None:
        fs = self._fs
        with fs.lock:
            self._check()
            fs._tick("write", self.path)
            if not self._writable:
                raise OSError(errno.EBADF, "not open for writing", self.path)
            n = len(data)
            room = fs._room()
            ino = self._inode
            if n > room:
                ino.data += bytes(data[:room])
                fs.used += room
                raise OSError(errno.ENOSPC, "No space left on device (simulated)", self.path)
            ino.data += data
            fs.used += n
            fs.written += n

    def writev(self, buffers: Sequence[BytesLike]) -> None:
        self.write(b"".join(buffers))

    def pread(self, size: int, offset: int) -> bytes:
        with self._fs.lock:
            self._check()
            return bytes(self._inode.data[offset : offset + size])

    def sync(self) -> None:
        fs = self._fs
        with fs.lock:
            self._check()
            fs._tick("sync", self.path)
            hook = fs._sync_fault
            if hook is not None and hook(self.path):
                fs._sync_fault = None
                raise OSError(errno.EIO, "Input/output error (simulated fsync failure)", self.path)
            self._inode.mark_synced()
            fs.syncs += 1

    def truncate(self, size: int) -> None:
        fs = self._fs
        with fs.lock:
            self._check()
            fs._tick("truncate", self.path)
            ino = self._inode
            if size < len(ino.data):
                fs.used -= len(ino.data) - size
                ino.cut_to(size)
            elif size > len(ino.data):
                grow = size - len(ino.data)
                if grow > fs._room():
                    raise OSError(errno.ENOSPC, "No space left on device (simulated)", self.path)
                ino.data += bytes(grow)
                fs.used += grow

    def size(self) -> int:
        with self._fs.lock:
            self._check()
            return len(self._inode.data)

    def close(self) -> None:
        self._closed = True


class SimFileSystem:
    """See the module docstring. Thread-safe: one lock around every call (the store's writer and readers)."""

    def __init__(self, seed: int = 0, *, capacity: int | None = None, zero_tail_rate: float = 0.2) -> None:
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        self.capacity = capacity
        self.zero_tail_rate = zero_tail_rate
        self.root = _Dir()
        self.boot = 0
        self.used = 0
        self.written = 0
        self.syncs = 0
        self.ops = 0  # mutating calls so far: pick cut points with cut_after()
        self.cuts = 0
        self.cut_log: list[str] = []  # where scheduled cuts hit: "<op> <path>"
        self._cut_at: int | None = None
        self._sync_fault: Callable[[str], bool] | None = None

    # -- fault controls ------------------------------------------------------------------------------------------

    def cut_after(self, n: int | None) -> None:
        """The n-th mutating call from now cuts the power instead of running (None: no scheduled cut)."""
        with self.lock:
            self._cut_at = None if n is None else self.ops + max(1, n)

    def fail_next_sync(self, match: Callable[[str], bool] = lambda path: True) -> None:
        """The next fdatasync of a file whose path matches raises EIO and makes nothing durable."""
        with self.lock:
            self._sync_fault = match

    def power_cut(self) -> None:
        """Keep what a restart would find (module docstring); every open handle dies."""
        with self.lock:
            self._cut_at = None
            memo: dict[int, _Inode] = {}
            self.root = self._survivors(self.root, memo)
            self.used = sum(len(ino.data) for ino in memo.values())
            self.boot += 1
            self.cuts += 1

    def mount(self) -> SimMount:
        """The view one boot has: give this to `Log.open`; it dies at the next power cut."""
        return SimMount(self)

    @property
    def free(self) -> int:
        with self.lock:
            return self._room()

    # -- internals ----------------------------------------------------------------------------------------------

    def _room(self) -> int:
        return max(0, self.capacity - self.used) if self.capacity is not None else 1 << 40

    def _tick(self, op: str, path: str) -> None:
        self.ops += 1
        if self._cut_at is not None and self.ops >= self._cut_at:
            self.cut_log.append(f"{op} {path}")
            self.power_cut()
            raise OSError(errno.EIO, f"simulated power cut during {op}", path)

    def _survivors(self, d: _Dir, memo: dict[int, _Inode]) -> _Dir:
        entries = dict(d.durable)
        keep = self.rng.randint(0, len(d.journal)) if d.journal else 0
        for op, name, node in d.journal[:keep]:
            if op == "remove":
                entries.pop(name, None)
            else:
                assert node is not None
                entries[name] = node
        out = _Dir()
        for name, node in entries.items():
            if isinstance(node, _Dir):
                out.live[name] = self._survivors(node, memo)
            else:
                ino = memo.get(id(node))
                if ino is None:
                    ino = memo[id(node)] = self._torn(node)
                ino.nlink += 1
                out.live[name] = ino
        out.durable = dict(out.live)
        return out

    def _torn(self, ino: _Inode) -> _Inode:
        base = ino.durable_content()
        if ino.diverged_at >= ino.durable_len:
            rest = len(ino.data) - ino.durable_len
            k = self.rng.randint(0, rest) if rest > 0 else 0
            if k and self.rng.random() < self.zero_tail_rate:
                base += bytes(k)
            else:
                base += bytes(ino.data[ino.durable_len : ino.durable_len + k])
        elif self.rng.random() < 0.5:  # truncated since the last sync: the truncation may have reached the disk
            k = self.rng.randint(0, len(ino.data) - ino.diverged_at)
            base = bytes(ino.data[: ino.diverged_at + k])
        new = _Inode(bytearray(base))
        new.mark_synced()
        return new

    def _walk(self, path: str, *, create_dirs: bool = False) -> _Dir:
        d = self.root
        for part in _parts(path):
            node = d.live.get(part)
            if node is None:
                if not create_dirs:
                    raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
                self._tick("mkdir", path)
                node = _Dir()
                self._link(d, part, node)
            if not isinstance(node, _Dir):
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
            d = node
        return d

    def _parent(self, path: str) -> tuple[_Dir, str]:
        head, name = os.path.split(os.path.normpath(path))
        if not name:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        return self._walk(head), name

    def _link(self, d: _Dir, name: str, node: _Inode | _Dir) -> None:
        old = d.live.get(name)
        if isinstance(old, _Inode):
            self._unlink_inode(old)
        d.live[name] = node
        if isinstance(node, _Inode):
            node.nlink += 1
        d.journal.append(("link", name, node))

    def _unlink_inode(self, ino: _Inode) -> None:
        ino.nlink -= 1
        if ino.nlink == 0:
            self.used -= len(ino.data)

    def _file(self, path: str) -> _Inode:
        d, name = self._parent(path)
        node = d.live.get(name)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if isinstance(node, _Dir):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        return node

    # -- FileSystem ---------------------------------------------------------------------------------------------

    def open_append(self, path: str) -> SimFile:
        with self.lock:
            d, name = self._parent(path)
            node = d.live.get(name)
            if node is None:
                self._tick("create", path)
                node = _Inode()
                self._link(d, name, node)
            if isinstance(node, _Dir):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
            return SimFile(self, path, node, True)

    def open_read(self, path: str) -> SimFile:
        with self.lock:
            return SimFile(self, path, self._file(path), False)

    def open_new(self, path: str) -> SimFile:
        with self.lock:
            d, name = self._parent(path)
            node = d.live.get(name)
            self._tick("create", path)
            if node is None:
                node = _Inode()
                self._link(d, name, node)
            elif isinstance(node, _Dir):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
            else:
                self.used -= len(node.data)
                node.cut_to(0)
            return SimFile(self, path, node, True)

    def read_bytes(self, path: str) -> bytes:
        with self.lock:
            return bytes(self._file(path).data)

    def replace(self, src: str, dst: str) -> None:
        with self.lock:
            sd, sname = self._parent(src)
            dd, dname = self._parent(dst)
            node = sd.live.get(sname)
            if node is None:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", src)
            self._tick("rename", dst)
            del sd.live[sname]
            sd.journal.append(("remove", sname, None))
            if isinstance(node, _Inode):
                node.nlink -= 1  # _link counts it again
            self._link(dd, dname, node)

    def remove(self, path: str) -> None:
        with self.lock:
            d, name = self._parent(path)
            node = d.live.get(name)
            if node is None:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
            if isinstance(node, _Dir):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
            self._tick("remove", path)
            del d.live[name]
            self._unlink_inode(node)
            d.journal.append(("remove", name, None))

    def sync_dir(self, path: str) -> None:
        with self.lock:
            d = self._walk(path)
            self._tick("sync_dir", path)
            d.durable = dict(d.live)
            d.journal.clear()
            self.syncs += 1

    def listdir(self, path: str) -> list[str]:
        with self.lock:
            return list(self._walk(path).live)

    def exists(self, path: str) -> bool:
        with self.lock:
            try:
                d, name = self._parent(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return os.path.normpath(path) == "/"
            return name in d.live

    def isdir(self, path: str) -> bool:
        with self.lock:
            try:
                self._walk(path)
            except (FileNotFoundError, NotADirectoryError):
                return False
            return True

    def makedirs(self, path: str) -> None:
        with self.lock:
            self._walk(path, create_dirs=True)

    def rmdir(self, path: str) -> None:
        with self.lock:
            d, name = self._parent(path)
            node = d.live.get(name)
            if not isinstance(node, _Dir):
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
            if node.live:
                raise OSError(errno.ENOTEMPTY, "Directory not empty", path)
            self._tick("rmdir", path)
            del d.live[name]
            d.journal.append(("remove", name, None))

    def file_size(self, path: str) -> int:
        with self.lock:
            return len(self._file(path).data)

    def free_bytes(self, path: str) -> int:
        return self.free

    # -- for tests -----------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, bytes]:
        """Every file's current content by path (directories implied): build variants with `from_snapshot`."""
        with self.lock:
            out: dict[str, bytes] = {}

            def walk(d: _Dir, prefix: str) -> None:
                for name, node in d.live.items():
                    if isinstance(node, _Dir):
                        walk(node, f"{prefix}/{name}")
                    else:
                        out[f"{prefix}/{name}"] = bytes(node.data)

            walk(self.root, "")
            return out

    @classmethod
    def from_snapshot(cls, files: dict[str, bytes], seed: int = 0, **kw: object) -> SimFileSystem:
        """A file system holding exactly `files`, everything durable."""
        fs = cls(seed, **kw)  # type: ignore[arg-type]
        for path, data in files.items():
            fs.makedirs(os.path.dirname(path))
            fs.write_file(path, data)
        with fs.lock:
            _make_durable(fs.root)
        return fs

    def corrupt(self, path: str, position: int, xor: int = 0x01) -> None:
        """Flip bits of one byte in place, durably (bit rot, or a bad block)."""
        with self.lock:
            ino = self._file(path)
            ino.data[position] ^= xor
            ino.mark_synced()

    def write_file(self, path: str, data: bytes) -> None:
        """Set a file's content durably, directory entry included (test setup: garbled state files)."""
        with self.lock:
            d, name = self._parent(path)
            node = d.live.get(name)
            if not isinstance(node, _Inode):
                node = _Inode()
                self._link(d, name, node)
            self.used += len(data) - len(node.data)
            node.data = bytearray(data)
            node.mark_synced()
            d.durable = dict(d.live)
            d.journal.clear()


class SimMount:
    """The file system as one boot of the machine sees it: after a power cut every call raises EIO."""

    def __init__(self, fs: SimFileSystem) -> None:
        self.fs = fs
        self.boot = fs.boot

    def _alive(self) -> SimFileSystem:
        if self.boot != self.fs.boot:
            raise OSError(errno.EIO, "simulated power cut: this process died with the machine")
        return self.fs

    def open_append(self, path: str) -> SimFile:
        with self.fs.lock:
            return self._alive().open_append(path)

    def open_read(self, path: str) -> SimFile:
        with self.fs.lock:
            return self._alive().open_read(path)

    def open_new(self, path: str) -> SimFile:
        with self.fs.lock:
            return self._alive().open_new(path)

    def read_bytes(self, path: str) -> bytes:
        with self.fs.lock:
            return self._alive().read_bytes(path)

    def replace(self, src: str, dst: str) -> None:
        with self.fs.lock:
            self._alive().replace(src, dst)

    def remove(self, path: str) -> None:
        with self.fs.lock:
            self._alive().remove(path)

    def sync_dir(self, path: str) -> None:
        with self.fs.lock:
            self._alive().sync_dir(path)

    def listdir(self, path: str) -> list[str]:
        with self.fs.lock:
            return self._alive().listdir(path)

    def exists(self, path: str) -> bool:
        with self.fs.lock:
            return self._alive().exists(path)

    def isdir(self, path: str) -> bool:
        with self.fs.lock:
            return self._alive().isdir(path)

    def makedirs(self, path: str) -> None:
        with self.fs.lock:
            self._alive().makedirs(path)

    def rmdir(self, path: str) -> None:
        with self.fs.lock:
            self._alive().rmdir(path)

    def file_size(self, path: str) -> int:
        with self.fs.lock:
            return self._alive().file_size(path)

    def free_bytes(self, path: str) -> int:
        with self.fs.lock:
            return self._alive().free_bytes(path)


def _make_durable(d: _Dir) -> None:
    d.durable = dict(d.live)
    d.journal.clear()
    for node in d.live.values():
        if isinstance(node, _Dir):
            _make_durable(node)


def _parts(path: str) -> list[str]:
    return [p for p in os.path.normpath(path).split("/") if p and p != "."]
