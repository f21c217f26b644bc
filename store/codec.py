"""Frame body compression. Codec ids are Kafka's (attributes bits 0-2): 0 none, 3 lz4, 4 zstd.

The whole body of a frame is compressed once: per-record compression of ~100-byte sensor JSON makes it larger
(measured 0.96x), per-batch zstd level 1 gives ~8x at ~500 MB/s (research/limits.md 2c). cramjam is the one
codec library with wheels on x86_64, aarch64 and armv7. lz4 uses the block format with the raw length taken from
the frame header, so nothing is stored twice.
"""

from __future__ import annotations

import cramjam

from .errors import InvalidConfigError

NONE = 0
LZ4 = 3
ZSTD = 4

NAMES = {"none": NONE, "lz4": LZ4, "zstd": ZSTD}
IDS = {v: k for k, v in NAMES.items()}

# Bodies smaller than this are stored plain whatever the topic's codec: compressing a 100-byte frame costs more
# CPU than the bytes it saves, and the frame header records what was done.
MIN_COMPRESS_BYTES = 512


def codec_id(name: str) -> int:
    try:
        return NAMES[name]
    except KeyError:
        raise InvalidConfigError("codec", name, "none, lz4 or zstd") from None


def compress(codec: int, body: bytes, level: int) -> tuple[int, bytes]:
    """Returns (codec actually used, stored bytes). Falls back to none when compression does not help."""
    if codec == NONE or len(body) < MIN_COMPRESS_BYTES:
        return NONE, body
    if codec == ZSTD:
        out = bytes(cramjam.zstd.compress(body, level=level))
    elif codec == LZ4:
        out = bytes(cramjam.lz4.compress_block(body, store_size=False))
    else:
        raise InvalidConfigError("codec", codec, "0 (none), 3 (lz4) or 4 (zstd)")
    if len(out) >= len(body):
        return NONE, body
    return codec, out


class DecompressError(ValueError):
    """The stored body does not decompress to the length the header promises."""


def decompress(codec: int, stored: bytes | memoryview, raw_len: int) -> bytes:
    if codec == NONE:
        return bytes(stored)
    try:
        if codec == ZSTD:
            out = bytes(cramjam.zstd.decompress(stored, output_len=raw_len))
        elif codec == LZ4:
            out = bytes(cramjam.lz4.decompress_block(stored, output_len=raw_len))
        else:
            raise DecompressError(f"unknown codec id {codec}")
    except DecompressError:
        raise
    except Exception as exc:  # cramjam raises its own DecompressionError / ValueError
        raise DecompressError(f"{IDS.get(codec, codec)}: {exc}") from exc
    if len(out) != raw_len:
        raise DecompressError(f"decompressed to {len(out)} bytes, header says {raw_len}")
    return out
