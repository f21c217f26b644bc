"""The manifest: which Parquet files make up the cold tier, and how far each partition is tiered.

`tier/manifest` is one enveloped JSON document (store.durable: magic, length, CRC), always written by durable
replace, so a reader finds the old version or the new one, never a mix:

    {"version": 1,
     "topics": {"<topic>": {"decoder": {"kind": "json", "csv_columns": [], "csv_delimiter": ","},
                            "partitions": {"<p>": {"log_id": hex, "tiered_upto": N, "skipped": M}}}},
     "files": [{"path": "<topic>/date=.../part-<p>-<first>.parquet", "topic", "partition", "first_offset",
                "last_offset", "rows", "min_ts", "max_ts", "bytes", "crc32", "created_ms"}, ...]}

`tiered_upto` is the next offset to tier: every offset below it is in a listed file, or was expired by cold
retention, or was gone from the hot log before it could be tiered (`skipped` counts those). A file is part of the
tier iff it is listed: the manifest write is the commit point of tiering, compaction and cold retention.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from .. import durable
from ..errors import CorruptStateError
from ..fs import FileSystem
from . import layout

VERSION = 1


class DecoderSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a topic's payloads become typed columns (edge.decoders names): json, csv, modbus or raw."""

    kind: str = "raw"
    csv_columns: tuple[str, ...] = ()
    csv_delimiter: str = ","


Decode = Callable[[bytes], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class TopicDecoder:
    """A topic's decoder: what it is (`spec`, stored in the manifest so readers know it) and the callable that runs
    it (injected by the gateway from edge.decoders: store/ never imports edge/)."""

    spec: DecoderSpec
    decode: Decode


class PartitionEntry(msgspec.Struct, frozen=True):
    log_id: str = ""
    tiered_upto: int = 0
    skipped: int = 0


class TierFile(msgspec.Struct, frozen=True):
    path: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: int
    min_ts: int
    max_ts: int
    bytes: int
    crc32: int
    created_ms: int


class TopicEntry(msgspec.Struct, frozen=True):
    decoder: DecoderSpec = DecoderSpec()
    partitions: dict[str, PartitionEntry] = {}


class Manifest(msgspec.Struct, frozen=True):
    """An immutable snapshot. Changes make a new one (`with_*`); `save` commits it."""

    version: int = VERSION
    topics: dict[str, TopicEntry] = {}
    files: tuple[TierFile, ...] = ()

    # -- reading ---------------------------------------------------------------------------------------------------

    def partition(self, topic: str, partition: int) -> PartitionEntry | None:
        t = self.topics.get(topic)
        return t.partitions.get(str(partition)) if t is not None else None

    def tiered_upto(self, topic: str, partition: int) -> int:
        entry = self.partition(topic, partition)
        return entry.tiered_upto if entry is not None else 0

    def decoder(self, topic: str) -> DecoderSpec | None:
        t = self.topics.get(topic)
        return t.decoder if t is not None else None

    def files_of(self, topic: str, partition: int | None = None) -> list[TierFile]:
        """The topic's files in (partition, first offset) order."""
        out = [f for f in self.files if f.topic == topic and (partition is None or f.partition == partition)]
        return sorted(out, key=lambda f: (f.partition, f.first_offset))

    def paths(self) -> set[str]:
        return {f.path for f in self.files}

    def total_bytes(self, topic: str | None = None) -> int:
        return sum(f.bytes for f in self.files if topic is None or f.topic == topic)

    # -- changing (each returns a new snapshot) --------------------------------------------------------------------

    def with_topic(self, topic: str, decoder: DecoderSpec) -> Manifest:
        old = self.topics.get(topic)
        if old is not None and old.decoder == decoder:
            return self
        entry = TopicEntry(decoder, old.partitions if old is not None else {})
        return msgspec.structs.replace(self, topics={**self.topics, topic: entry})

    def with_partition(self, topic: str, partition: int, entry: PartitionEntry) -> Manifest:
        t = self.topics.get(topic) or TopicEntry()
        t = TopicEntry(t.decoder, {**t.partitions, str(partition): entry})
        return msgspec.structs.replace(self, topics={**self.topics, topic: t})

    def with_segment(self, topic: str, partition: int, log_id: str, new_files: list[TierFile], next_offset: int,
                     skipped: int = 0) -> Manifest:
        """A tiered segment: its files and the partition's new `tiered_upto`, in one step (the commit)."""
        old = self.partition(topic, partition) or PartitionEntry(log_id)
        entry = PartitionEntry(log_id, max(old.tiered_upto, next_offset), old.skipped + skipped)
        m = self.with_partition(topic, partition, entry)
        return msgspec.structs.replace(m, files=(*m.files, *new_files))

    def without_files(self, paths: set[str], add: tuple[TierFile, ...] = ()) -> Manifest:
        """Drop files (cold retention) or swap them for their compaction (`add`)."""
        kept = tuple(f for f in self.files if f.path not in paths)
        return msgspec.structs.replace(self, files=(*kept, *add))

    # -- disk --------------------------------------------------------------------------------------------------------

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, path: str, payload: bytes) -> Manifest:
        try:
            m = msgspec.json.decode(payload, type=cls)
        except msgspec.DecodeError as exc:
            raise CorruptStateError(path, f"manifest does not decode: {exc}") from exc
        if m.version != VERSION:
            raise CorruptStateError(path, f"manifest version {m.version}; this edgestream reads {VERSION}")
        return m

    def save(self, fs: FileSystem, data_dir: str) -> None:
        durable.ensure_dir(fs, layout.tier_dir(data_dir))
        durable.write_enveloped(fs, layout.manifest_path(data_dir), self.encode())


def load(fs: FileSystem, data_dir: str) -> Manifest:
    """The committed manifest; an empty one if there is none yet. A garbled one raises CorruptStateError: the
    manifest is written by durable replace, so that means the medium failed, and guessing could duplicate rows."""
    path = layout.manifest_path(data_dir)
    try:
        payload = durable.read_enveloped(fs, path)
    except FileNotFoundError:
        return Manifest()
    return Manifest.decode(path, payload)
