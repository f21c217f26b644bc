"""Serial source settings: defaults, every framing buildable, and errors that name the key."""

from __future__ import annotations

import pytest

from edgestream.edge.errors import ConfigError
from edgestream.edge.serial.framing import FixedSizeFraming, Frame, LengthPrefixFraming, LineFraming
from edgestream.edge.serial.settings import SerialSourceSettings, load_serial_settings
from edgestream.edge.serial.stuffing import CobsFraming, SlipFraming


def test_defaults_are_a_plain_newline_line() -> None:
    s = load_serial_settings({"port": "/dev/ttyUSB0"})
    assert (s.baudrate, s.bytesize, s.parity, s.stopbits) == (9600, 8, "N", 1)
    framing = s.build_framing()
    assert isinstance(framing, LineFraming) and framing.delimiter == b"\n"


@pytest.mark.parametrize(
    ("framing", "checksum", "kind"),
    [
        (
            {"type": "line", "terminator": "\r\n", "start": "$"},
            {"algorithm": "xor", "encoding": "hex", "skip": 1},
            LineFraming,
        ),
        (
            {"type": "length", "length_bytes": 4, "byteorder": "little", "sync": "aa55"},
            {"algorithm": "crc32"},
            LengthPrefixFraming,
        ),
        ({"type": "fixed", "size": 10, "sync": "7e"}, {"algorithm": "crc16-modbus"}, FixedSizeFraming),
        ({"type": "cobs"}, {"algorithm": "crc16-ccitt"}, CobsFraming),
        ({"type": "slip"}, None, SlipFraming),
    ],
)
def test_each_framing_builds_and_round_trips(framing: dict, checksum: dict | None, kind: type) -> None:
    s = load_serial_settings({"port": "/dev/ttyS0", "framing": framing, "checksum": checksum})
    built = s.build_framing()
    assert isinstance(built, kind)
    payload = b"$0123456789"[: 10 if kind is FixedSizeFraming else None]
    assert built.feed(built.encode(payload)) + built.flush() == [Frame(payload)]


def test_reply_template_renders_sequence_and_port() -> None:
    s = load_serial_settings({"port": "/dev/ttyS1", "reply": "ACK {seq} {port}\r\n", "nak": "\u0015"})
    assert s.render(s.reply or "", seq=7) == b"ACK 7 /dev/ttyS1\r\n"
    assert s.render(s.nak or "", seq=0) == b"\x15"


@pytest.mark.parametrize(
    ("obj", "key", "words"),
    [
        ({"port": "/dev/x", "framing": {"type": "xmodem"}}, "framing.type", "line, length, fixed, cobs, slip"),
        ({"port": "/dev/x", "checksum": {"algorithm": "crc8"}}, "checksum.algorithm", "crc16-modbus"),
        ({"port": "/dev/x", "baud": 9600}, "", "unknown field `baud`"),
        ({"port": "/dev/x", "parity": "X"}, "parity", "parity"),
        ({"port": "/dev/x", "stopbits": 3}, "", "stopbits must be 1, 1.5 or 2"),
        ({"port": "/dev/x", "reply": "ACK {id}"}, "", "{seq}, {port}"),
        ({"port": "/dev/x", "checksum": {"algorithm": "crc32"}}, "", "encoding = 'hex'"),
        (
            {"port": "/dev/x", "framing": {"type": "cobs"}, "checksum": {"algorithm": "xor", "encoding": "hex"}},
            "",
            "encoding = 'binary'",
        ),
        ({"port": "/dev/x", "framing": {"type": "length", "sync": "zz"}}, "", "hex digits"),
        ({"port": "/dev/x", "framing": {"type": "fixed", "size": 0}}, "", "framing.size"),
        ({"port": "/dev/x", "window": 0}, "", "window"),
        ({"port": "/dev/x", "reply": "\u20ac"}, "", "single bytes"),
        ({"baudrate": 9600}, "", "port"),
    ],
)
def test_invalid_settings_name_the_key(obj: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_serial_settings(obj, where="sources.line3")
    assert words in str(info.value)
    assert str(info.value).startswith("sources.line3: ")
    if key:
        assert info.value.key == key


def test_struct_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        SerialSourceSettings("/dev/x")  # type: ignore[misc]


def docstring_example(module: object) -> dict:
    """The TOML example in a settings module's docstring, parsed, as the gateway's config loader would see it."""
    import textwrap
    import tomllib

    doc = module.__doc__ or ""
    block = doc.split("Example (TOML", 1)[1].split("\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    [source] = tomllib.loads(textwrap.dedent("\n".join(lines)))["sources"]
    return {k: v for k, v in source.items() if k not in ("name", "type", "topic", "partition", "key")}


def test_the_documented_example_loads() -> None:
    from edgestream.edge.serial import settings as module

    s = load_serial_settings(docstring_example(module))
    framing = s.build_framing()
    assert framing.encode(b"$GPGGA,1") == b"$GPGGA,1*4B\r\n"
    assert s.render(s.reply or "", seq=3) == b"ACK 3\n"
