"""Topic: a named set of partitions sharing one TopicConfig (`topics/<topic>/config`).

Creation writes the partition directories first and the config last: a topic directory without a config is an
interrupted creation (or deletion) and is removed at start-up. Deletion removes the config first, for the same
reason.
"""

from __future__ import annotations

import os
import zlib

from . import durable, files
from .config import LogConfig, TopicConfig
from .errors import CorruptStateError, PartitionNotFoundError
from .fs import FileSystem
from .partition import Partition
from .stats import TopicStatistics


def partition_for_key(key: bytes, partitions: int) -> int:
    """Stable across processes and machines (Python's hash() is salted per process)."""
    return zlib.crc32(key) % partitions


class Topic:
    def __init__(self, name: str, directory: str, config: TopicConfig, partitions: list[Partition]) -> None:
        self.name = name
        self.directory = directory
        self.config = config
        self.partitions = partitions

    def partition(self, index: int) -> Partition:
        if not 0 <= index < len(self.partitions):
            raise PartitionNotFoundError(self.name, index, len(self.partitions))
        return self.partitions[index]

    def statistics(self) -> TopicStatistics:
        return TopicStatistics(self.name, tuple(p.statistics() for p in self.partitions))

    @staticmethod
    def config_path(data_dir: str, name: str) -> str:
        return os.path.join(files.topic_dir(data_dir, name), files.TOPIC_CONFIG)

    @classmethod
    def read_config(cls, fs: FileSystem, data_dir: str, name: str) -> TopicConfig:
        path = cls.config_path(data_dir, name)
        payload = durable.read_enveloped(fs, path)
        try:
            return TopicConfig.decode(payload)
        except Exception as exc:  # msgspec.DecodeError or our InvalidConfigError from __post_init__
            raise CorruptStateError(path, f"topic config does not decode: {exc}") from exc

    @classmethod
    def create(
        cls,
        fs: FileSystem,
        data_dir: str,
        name: str,
        config: TopicConfig,
        log_config: LogConfig,
        *,
        now_ms: int,
        use_crc32c: bool,
    ) -> Topic:
        tdir = files.topic_dir(data_dir, name)
        fs.makedirs(tdir)
        partitions = []
        for i in range(config.partitions):
            pdir = files.partition_dir(data_dir, name, i)
            fs.makedirs(pdir)
            partitions.append(
                Partition.open(fs, pdir, name, i, config, log_config, now_ms=now_ms, use_crc32c=use_crc32c)
            )
        fs.sync_dir(tdir)
        fs.sync_dir(files.topics_dir(data_dir))
        durable.write_enveloped(fs, cls.config_path(data_dir, name), config.encode())
        return cls(name, tdir, config, partitions)

    @classmethod
    def open(
        cls,
        fs: FileSystem,
        data_dir: str,
        name: str,
        log_config: LogConfig,
        *,
        now_ms: int,
        use_crc32c: bool,
    ) -> Topic:
        config = cls.read_config(fs, data_dir, name)
        partitions = [
            Partition.open(
                fs,
                files.partition_dir(data_dir, name, i),
                name,
                i,
                config,
                log_config,
                now_ms=now_ms,
                use_crc32c=use_crc32c,
            )
            for i in range(config.partitions)
        ]
        return cls(name, files.topic_dir(data_dir, name), config, partitions)
