"""Checksums for segments, frames and state files.

CRC-32C (Castagnoli) where the `crc32c` wheel exists (hardware accelerated: ~15 GB/s, SSE4.2 / ARMv8), zlib's
CRC-32 otherwise (armv7 has no wheel). Which one a segment uses is recorded in its header flags, so a data dir
written on one machine stays readable on another that lacks the wheel. Small state files always use zlib.crc32.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

BytesLike = bytes | bytearray | memoryview
Checksum = Callable[[BytesLike], int]

_crc32c: Callable[..., int] | None
try:  # pragma: no cover - depends on the platform's wheels
    from crc32c import crc32c as _crc32c

    HAVE_CRC32C = True
except ImportError:  # pragma: no cover
    _crc32c = None
    HAVE_CRC32C = False


def crc32(data: BytesLike) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def crc32c(data: BytesLike) -> int:
    if _crc32c is None:
        raise RuntimeError("the crc32c package is not installed; this segment needs CRC-32C (pip install crc32c)")
    return int(_crc32c(data))


Update = Callable[[BytesLike, int], int]


def crc32_update(data: BytesLike, crc: int) -> int:
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def crc32c_update(data: BytesLike, crc: int) -> int:
    if _crc32c is None:
        raise RuntimeError("the crc32c package is not installed; this segment needs CRC-32C (pip install crc32c)")
    return int(_crc32c(data, crc))


def updater(fn: Checksum) -> Update:
    """The incremental form of a checksum function: checksum(a + b) == update(b, update(a, 0)). The C functions
    themselves where they have that form (one call per piece of a frame body: no Python frame in between)."""
    if fn is crc32c:
        return _crc32c if _crc32c is not None else crc32c_update
    if fn is crc32:
        return zlib.crc32  # unsigned since Python 3
    raise ValueError(f"no incremental form of {fn!r}")


def for_flag(use_crc32c: bool) -> Checksum:
    """The checksum function a segment's header flag names."""
    return crc32c if use_crc32c else crc32


def preferred() -> tuple[bool, Checksum]:
    """(flag, function) for new segments: CRC-32C when available."""
    return (True, crc32c) if HAVE_CRC32C else (False, crc32)
