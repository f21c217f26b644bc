"""Shared helpers of the store tests: an injected clock, a log on the simulated file system, and the checks every
crash test makes (acked records read back, offsets contiguous, identities never reused)."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

from edgestream.store import Log, LogConfig, Record, TopicConfig
from edgestream.store.simfs import SimFileSystem

DATA = "/data"


class FakeClock:
    """Wall (ms) and monotonic (s) time that move only when a test says so."""

    def __init__(self, wall_ms: int = 1_700_000_000_000) -> None:
        self._wall = wall_ms
        self._mono = 1000.0
        self._lock = threading.Lock()

    def wall_ms(self) -> int:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, ms: float) -> None:
        with self._lock:
            self._wall += int(ms)
            self._mono += ms / 1000


def small_topic(**overrides: object) -> TopicConfig:
    """Tiny segments and frames so that rolls, retention and multi-frame reads happen within a few records."""
    base: dict[str, object] = {
        "segment_bytes": 4096,
        "frame_bytes": 1024,
        "linger_ms": 0.0,
        "retention_ms": None,
        "index_interval_bytes": 256,
    }
    base.update(overrides)
    return TopicConfig(**base)  # type: ignore[arg-type]


def open_sim(fs: SimFileSystem, clock: FakeClock, config: LogConfig | None = None, **kw: object) -> Log:
    return Log.open(
        DATA,
        config or LogConfig(min_free_bytes=0, disk_check_interval_ms=0),
        fs=fs.mount(),
        wall_ms=clock.wall_ms,
        monotonic=clock.monotonic,
        **kw,  # type: ignore[arg-type]
    )


def read_all(log: Log, topic: str, partition: int) -> list[Record]:
    p = log.partition(topic, partition)
    out: list[Record] = []
    offset = p.log_start
    while True:
        got = log.read(topic, partition, offset, max_records=100_000, max_bytes=1 << 30)
        if not got:
            return out
        out.extend(got)
        offset = got[-1].offset + 1


def digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()[:16]


@dataclass
class Ledger:
    """Everything a crash test knows: what was acknowledged, and every identity ever seen with its content."""

    acked: dict[tuple[int, int], tuple[int, bytes]] = field(default_factory=dict)  # (part, off) -> (epoch, value)
    identities: dict[tuple[bytes, int, int, int], str] = field(default_factory=dict)  # (log, ep, part, off) -> sha

    def ack(self, log_id: bytes, partition: int, offset: int, epoch: int, value: bytes) -> None:
        self.acked[(partition, offset)] = (epoch, value)
        self.see(log_id, partition, offset, epoch, value)

    def see(self, log_id: bytes, partition: int, offset: int, epoch: int, value: bytes) -> None:
        key = (log_id, epoch, partition, offset)
        sha = digest(value)
        old = self.identities.setdefault(key, sha)
        assert old == sha, f"identity {key} reused for different content"


def check_after_restart(log: Log, topic: str, ledger: Ledger, *, lossless: bool = True) -> dict[int, list[Record]]:
    """Offsets contiguous from the log start, every identity consistent with the past; with `lossless`, every
    acknowledged record is there with its bytes. Returns the records per partition."""
    out: dict[int, list[Record]] = {}
    for p in log.topic(topic).partitions:
        recs = read_all(log, topic, p.index)
        offsets = [r.offset for r in recs]
        assert offsets == list(range(p.log_start, p.high_watermark)), f"partition {p.index}: offsets not contiguous"
        by_off = {r.offset: r for r in recs}
        for r in recs:
            ledger.see(p.log_id, p.index, r.offset, r.epoch, r.value)
        if lossless:
            for (part, off), (_epoch, value) in ledger.acked.items():
                if part == p.index and off >= p.log_start:
                    assert off in by_off, f"acked record {part}/{off} lost"
                    assert by_off[off].value == value, f"acked record {part}/{off} changed"
        out[p.index] = recs
    return out
