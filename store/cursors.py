"""Named cursors: a consumer's (or the mirror's, or the tierer's) committed position per partition.

One file per cursor, `cursors/<name>`, written by durable replace in the enveloped format (store.durable), JSON:

    {"required": bool, "offsets": {"<topic>/<partition>": {"offset": N, "log_id": hex, "epoch": E}}}

`offset` is the next offset to read: everything below it was processed. A cursor marked `required` protects what
it has not read from retention (unless the topic's on_full is drop_oldest). `log_id` and `epoch` let a reader tell
that the partition it points into was recreated or rewound.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import msgspec

from . import durable, files
from .errors import CorruptStateError, InvalidConfigError
from .fs import FileSystem


class CursorPosition(msgspec.Struct, frozen=True):
    offset: int
    log_id: str = ""
    epoch: int = 0


class _CursorFile(msgspec.Struct):
    required: bool = False
    offsets: dict[str, CursorPosition] = {}


@dataclass(frozen=True, slots=True)
class Cursor:
    name: str
    required: bool
    offsets: dict[tuple[str, int], CursorPosition]

    def get(self, topic: str, partition: int) -> CursorPosition | None:
        return self.offsets.get((topic, partition))


class CursorStore:
    def __init__(self, fs: FileSystem, data_dir: str) -> None:
        self.fs = fs
        self.directory = files.cursors_dir(data_dir)
        self._lock = threading.Lock()
        self._cache: dict[str, Cursor] = {}
        self.corrupt: list[str] = []

    def load_all(self) -> None:
        if not self.fs.isdir(self.directory):
            return
        for name in self.fs.listdir(self.directory):
            if name.endswith(durable.TMP_SUFFIX):
                self.fs.remove(os.path.join(self.directory, name))
                continue
            if files.valid_name(name):
                self._load(name)

    def _path(self, name: str) -> str:
        if not files.valid_name(name):
            raise InvalidConfigError("cursor name", name, "letters, digits, '.', '_' and '-' (1-200 chars)")
        return os.path.join(self.directory, name)

    def _load(self, name: str) -> Cursor | None:
        try:
            raw = durable.read_enveloped(self.fs, self._path(name))
            data = msgspec.json.decode(raw, type=_CursorFile)
        except FileNotFoundError:
            return None
        except (CorruptStateError, msgspec.DecodeError) as exc:
            # A garbled cursor reads as absent: the consumer starts over (duplicates, never gaps).
            self.corrupt.append(f"{name}: {exc}")
            return None
        offsets = {}
        for key, pos in data.offsets.items():
            topic, _, part = key.rpartition("/")
            offsets[(topic, int(part))] = pos
        cur = Cursor(name, data.required, offsets)
        self._cache[name] = cur
        return cur

    def get(self, name: str) -> Cursor | None:
        with self._lock:
            return self._cache.get(name) or self._load(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._cache)

    def all(self) -> list[Cursor]:
        with self._lock:
            return list(self._cache.values())

    def commit(
        self,
        name: str,
        positions: dict[tuple[str, int], CursorPosition],
        *,
        required: bool | None = None,
    ) -> Cursor:
        """Merge `positions` into the cursor and persist it (durable replace) before returning."""
        path = self._path(name)
        with self._lock:
            old = self._cache.get(name) or self._load(name)
            offsets = dict(old.offsets) if old else {}
            offsets.update(positions)
            req = required if required is not None else (old.required if old else False)
            data = _CursorFile(req, {f"{t}/{p}": pos for (t, p), pos in sorted(offsets.items())})
            durable.ensure_dir(self.fs, self.directory)
            durable.write_enveloped(self.fs, path, msgspec.json.encode(data))
            cur = Cursor(name, req, offsets)
            self._cache[name] = cur
            return cur

    def delete(self, name: str) -> bool:
        path = self._path(name)
        with self._lock:
            self._cache.pop(name, None)
            try:
                self.fs.remove(path)
            except FileNotFoundError:
                return False
            self.fs.sync_dir(self.directory)
            return True

    def protect_from(self, topic: str, partition: int) -> int | None:
        """The lowest offset a required cursor has not read in this partition (None: nothing protected).

        A required cursor that has never committed this partition protects all of it (offset 0)."""
        lowest: int | None = None
        for cur in self._cache.values():
            if not cur.required:
                continue
            pos = cur.offsets.get((topic, partition))
            off = pos.offset if pos else 0
            lowest = off if lowest is None else min(lowest, off)
        return lowest

    def drop_topic(self, topic: str) -> None:
        for cur in self.all():
            if any(t == topic for t, _ in cur.offsets):
                remaining = {k: v for k, v in cur.offsets.items() if k[0] != topic}
                with self._lock:
                    data = _CursorFile(cur.required, {f"{t}/{p}": pos for (t, p), pos in sorted(remaining.items())})
                    durable.write_enveloped(self.fs, self._path(cur.name), msgspec.json.encode(data))
                    self._cache[cur.name] = Cursor(cur.name, cur.required, remaining)
