"""Typed settings of a serial source, validated at load, and the framing they describe.

Byte strings in settings (terminator, start marker, reply templates) are text where each character stands for
one byte (latin-1), so TOML escapes such as "\\r\\n" or "\\u0006" give the exact bytes; `sync` is hex
("aa55").

Example (TOML, a source in the gateway config; name, type, topic, partition and key are the route's):

    [[sources]]
    name = "line3-gps"
    type = "serial"
    topic = "serial"
    port = "/dev/ttyUSB0"
    baudrate = 115200
    reply = "ACK {seq}\\n"
    framing = { type = "line", terminator = "\\r\\n" }
    checksum = { algorithm = "xor", encoding = "hex", separator = "*", skip = 1 }
"""

from __future__ import annotations

import string
from typing import Any, Literal

import msgspec

from ..errors import ConfigError
from .checksum import ALGORITHMS, Checksum
from .framing import FixedSizeFraming, Framing, LengthPrefixFraming, LineFraming
from .stuffing import CobsFraming, SlipFraming

REPLY_FIELDS = ("seq", "port")
FRAMING_TYPES = ("line", "length", "fixed", "cobs", "slip")


def to_bytes(text: str, key: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{key}: characters above \\u00ff cannot be sent as single bytes") from None


class ChecksumSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    algorithm: Literal["crc16-modbus", "crc16-ccitt", "crc32", "xor", "lrc", "sum8"]
    encoding: Literal["binary", "hex"] = "binary"
    byteorder: Literal["big", "little"] | None = None  # default: little for crc16-modbus, big otherwise
    separator: str = "*"
    skip: int = 0

    def __post_init__(self) -> None:
        if self.skip < 0:
            raise ValueError("checksum.skip must be >= 0")
        if self.encoding == "hex" and not self.separator:
            raise ValueError("checksum.separator must not be empty with encoding = 'hex'")

    def build(self) -> Checksum:
        return Checksum(
            self.algorithm,
            self.encoding,
            self.byteorder,
            to_bytes(self.separator, "checksum.separator"),
            self.skip,
        )


class LineFramingSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag="line", tag_field="type"):
    terminator: str = "\n"
    start: str = ""  # optional start-of-frame marker, e.g. "$" for NMEA

    def __post_init__(self) -> None:
        if not self.terminator:
            raise ValueError("framing.terminator must not be empty (e.g. '\\n' or '\\r\\n')")


class LengthFramingSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag="length", tag_field="type"):
    length_bytes: Literal[1, 2, 4] = 2
    byteorder: Literal["big", "little"] = "big"
    length_includes_checksum: bool = False
    sync: str = ""  # hex, e.g. "aa55"


class FixedFramingSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag="fixed", tag_field="type"):
    size: int
    sync: str = ""

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("framing.size must be >= 1")


class CobsFramingSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag="cobs", tag_field="type"):
    pass


class SlipFramingSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag="slip", tag_field="type"):
    pass


FramingSettings = (
    LineFramingSettings | LengthFramingSettings | FixedFramingSettings | CobsFramingSettings | SlipFramingSettings
)


def framing_kind(framing: FramingSettings) -> str:
    return str(type(framing).__struct_config__.tag)


def _sync_bytes(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"framing.sync must be hex digits such as 'aa55', got {text!r}") from None


def _check_template(template: str, key: str) -> None:
    for _, field, spec, conv in string.Formatter().parse(template):
        if field is None:
            continue
        if field not in REPLY_FIELDS or spec or conv:
            raise ValueError(
                f"{key}: unknown template field {{{field}}}; allowed: "
                + ", ".join("{" + f + "}" for f in REPLY_FIELDS)
                + " (write {{ for a literal brace)"
            )
    to_bytes(template, key)


class SerialSourceSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One serial line. `window` is how many frames may wait for durability before the source stops reading;
    `reply` is sent for each frame once it is durable (`{seq}` counts frames from 1, `{port}` is the port);
    `nak` is sent for each frame that could not be framed, once its dead letter is durable (`{seq}` there is
    the last good frame's). Replies leave in stream order."""

    port: str
    baudrate: int = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: float = 1  # 1, 1.5 or 2
    rtscts: bool = False
    xonxoff: bool = False
    framing: FramingSettings = msgspec.field(default_factory=LineFramingSettings)
    checksum: ChecksumSettings | None = None
    reply: str | None = None
    nak: str | None = None
    max_frame_bytes: int = 4096
    window: int = 256
    backoff_min_s: float = 0.5  # seconds; doubles per failed attempt, jittered, up to backoff_max_s
    backoff_max_s: float = 30.0
    drain_timeout_s: float = 5.0  # on stop: how long to wait for in-flight frames to become durable

    def __post_init__(self) -> None:
        if not self.port:
            raise ValueError("port must name a device, e.g. '/dev/ttyUSB0'")
        if self.baudrate <= 0:
            raise ValueError(f"baudrate must be positive, got {self.baudrate}")
        if self.stopbits not in (1, 1.5, 2):
            raise ValueError(f"stopbits must be 1, 1.5 or 2, got {self.stopbits}")
        if not 1 <= self.max_frame_bytes <= 1 << 24:
            raise ValueError("max_frame_bytes must be between 1 and 16 MiB")
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        if self.drain_timeout_s < 0:
            raise ValueError("drain_timeout_s must be >= 0")
        for key in ("reply", "nak"):
            template = getattr(self, key)
            if template is not None:
                _check_template(template, key)
        ck = self.checksum
        kind = framing_kind(self.framing)
        if ck is not None:
            if kind == "line" and ck.encoding != "hex":
                raise ValueError(
                    "line framing takes checksum.encoding = 'hex' (a binary checksum could contain the terminator)"
                )
            if kind != "line" and ck.encoding != "binary":
                raise ValueError(f"{kind} framing takes checksum.encoding = 'binary'")
        if isinstance(self.framing, LineFramingSettings):
            to_bytes(self.framing.terminator, "framing.terminator")
            to_bytes(self.framing.start, "framing.start")
        if isinstance(self.framing, LengthFramingSettings | FixedFramingSettings):
            _sync_bytes(self.framing.sync)

    def build_framing(self) -> Framing:
        ck = self.checksum.build() if self.checksum is not None else None
        f = self.framing
        if isinstance(f, LineFramingSettings):
            return LineFraming(
                to_bytes(f.terminator, "framing.terminator"),
                max_frame_bytes=self.max_frame_bytes,
                checksum=ck,
                start=to_bytes(f.start, "framing.start"),
            )
        if isinstance(f, LengthFramingSettings):
            return LengthPrefixFraming(
                length_bytes=f.length_bytes,
                byteorder=f.byteorder,
                max_frame_bytes=self.max_frame_bytes,
                sync=_sync_bytes(f.sync),
                checksum=ck,
                length_includes_checksum=f.length_includes_checksum,
            )
        if isinstance(f, FixedFramingSettings):
            return FixedSizeFraming(f.size, sync=_sync_bytes(f.sync), checksum=ck)
        if isinstance(f, CobsFramingSettings):
            return CobsFraming(max_frame_bytes=self.max_frame_bytes, checksum=ck)
        return SlipFraming(max_frame_bytes=self.max_frame_bytes, checksum=ck)

    def render(self, template: str, *, seq: int) -> bytes:
        return template.format(seq=seq, port=self.port).encode("latin-1")


def load_serial_settings(obj: Any, *, where: str = "serial source") -> SerialSourceSettings:
    """Settings from a decoded mapping (TOML/JSON), with an error that names the key and what is allowed."""
    try:
        return msgspec.convert(obj, SerialSourceSettings)
    except msgspec.ValidationError as exc:
        text = str(exc)
        hint = ""
        if "$.checksum.algorithm" in text:
            hint = "checksum.algorithm is one of " + ", ".join(ALGORITHMS)
        elif "$.framing" in text:
            hint = "framing.type is one of " + ", ".join(FRAMING_TYPES)
        raise ConfigError(f"{where}: {text}", key=_key_of(text), hint=hint) from None


def _key_of(message: str) -> str:
    """`$.framing.type` in msgspec's message -> "framing.type"."""
    start = message.find("`$.")
    end = message.find("`", start + 1)
    return message[start + 3 : end] if start >= 0 and end > start else ""
