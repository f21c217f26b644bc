"""Modbus poller settings: register map validation with errors that say what to change."""

from __future__ import annotations

import pytest

from edgestream.edge.errors import ConfigError
from edgestream.edge.modbus.settings import load_modbus_settings

UNIT = {"unit": 1, "registers": [{"name": "t", "address": 0, "type": "float32"}]}


def test_defaults_follow_the_modbus_serial_line_spec() -> None:
    s = load_modbus_settings({"port": "/dev/ttyUSB1", "units": [UNIT]})
    assert (s.baudrate, s.bytesize, s.parity, s.stopbits) == (19200, 8, "E", 1)
    block = s.units[0].registers[0]
    assert (block.function, block.count, block.size, block.word_order) == ("holding", 1, 2, "big")


def test_bit_blocks_default_to_bool() -> None:
    s = load_modbus_settings(
        {
            "port": "/dev/x",
            "units": [{"unit": 2, "registers": [{"name": "run", "address": 0, "function": "coils", "count": 16}]}],
        }
    )
    block = s.units[0].registers[0]
    assert (block.type, block.size) == ("bool", 16)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"units": []}, "at least one unit"),
        ({"units": [{"unit": 0, "registers": UNIT["registers"]}]}, "1..247"),
        ({"units": [UNIT, UNIT]}, "once"),
        ({"units": [{"unit": 1, "registers": []}]}, "at least one entry in registers"),
        (
            {"units": [{"unit": 1, "registers": [{"name": "a", "address": 0}, {"name": "a", "address": 1}]}]},
            "repeated: a",
        ),
        ({"units": [{"unit": 1, "registers": [{"name": "a", "address": 400001}]}]}, "not 40001"),
        (
            {"units": [{"unit": 1, "registers": [{"name": "a", "address": 0, "type": "float32", "count": 63}]}]},
            "split it",
        ),
        (
            {"units": [{"unit": 1, "registers": [{"name": "a", "address": 0, "function": "coils", "type": "int16"}]}]},
            "type must be 'bool'",
        ),
        ({"units": [{"unit": 1, "registers": [{"name": "a", "address": 0, "type": "bool"}]}]}, "coils/discrete"),
        ({"units": [{"unit": 1, "registers": [{"name": "a", "address": 0, "type": "float16"}]}]}, "float16"),
        ({"units": [{"unit": 1, "registers": [{"name": "a", "address": 0, "word_order": "middle"}]}]}, "word_order"),
        ({"poll_interval_s": 0}, "poll_interval_s"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"parity": "Q"}, "parity"),
        ({"slave": 3}, "unknown field `slave`"),
    ],
)
def test_invalid_settings_are_explained(change: dict, words: str) -> None:
    obj = {"port": "/dev/ttyUSB1", "units": [UNIT], **change}
    with pytest.raises(ConfigError, match=r"^sources\.press4: ") as info:
        load_modbus_settings(obj, where="sources.press4")
    assert words in str(info.value)


def test_the_documented_example_loads() -> None:
    from edgestream.edge.modbus import settings as module

    from .test_serial_settings import docstring_example

    s = load_modbus_settings(docstring_example(module))
    assert [b.name for b in s.units[0].registers] == ["temperature", "parts", "oil_temp", "running"]
    assert (s.parity, s.poll_interval_s, s.timeout_s) == ("E", 1.0, 0.3)
