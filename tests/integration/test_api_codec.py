"""gateway/api_codec.py on its own (no server): what a produce body becomes, and the JSON shape of records."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from edgestream.gateway.api_codec import TS_MAX, ApiError, parse_position, parse_records, record_json
from edgestream.store.frame import Record


def test_values_keys_headers_and_defaults() -> None:
    body = {"records": [
        {"value": {"t": 1.5, "unit": "°C"}},
        {"value": "text", "key": "k", "partition": 3, "timestamp_ms": 5, "headers": {"": "empty name is fine"}},
        {"value_b64": base64.b64encode(b"\x00\xff").decode(), "key": None},
    ]}
    (p0, r0), (p1, r1), (p2, r2) = parse_records(body, 1000, default_key=b"dk", default_partition=1)
    assert (p0, r0.key, r0.value, r0.timestamp_ms) == (1, b"dk", '{"t":1.5,"unit":"°C"}'.encode(), 1000)
    assert (p1, r1.key, r1.value, r1.timestamp_ms, r1.headers) == (3, b"k", b"text", 5, (("", b"empty name is fine"),))
    assert (p2, r2.key, r2.value) == (1, None, b"\x00\xff"), "an explicit null key is no key, not the default"


@pytest.mark.parametrize(("body", "needle"), [
    ({"records": [{"value": 1, "timestamp_ms": TS_MAX + 1}]}, "timestamp_ms"),
    ({"records": [{"value": 1, "timestamp_ms": True}]}, "timestamp_ms"),
    ({"records": [{"value": 1, "partition": 1.5}]}, "partition"),
    ({"records": [{"value": None}]}, "must not be null"),
    ({"records": [{"key_b64": "AA==", "key": "k", "value": 1}]}, "not both"),
    ({"records": [{"value": "x", "headers": {"\ud800": "v"}}]}, "unpaired surrogate"),
    ({"records": [{"value": 1}] * 10_001}, "1 to 10000"),
    ({"records": {}}, "expected"),
])
def test_refusals_name_the_field(body: Any, needle: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_records(body, 0)
    assert info.value.status == 400 and needle in str(info.value)


def test_positions_are_checked_strictly() -> None:
    assert parse_position({"topic": "t", "partition": 0, "offset": 7}, 0) == ("t", 0, 7)
    for bad in ({"topic": "t", "partition": 0}, {"topic": "..", "partition": 0, "offset": 1},
                {"topic": "t", "partition": -1, "offset": 1}, {"topic": "t", "partition": 0, "offset": 1, "x": 1}):
        with pytest.raises(ApiError):
            parse_position(bad, 0)


def test_record_json_is_text_where_it_can_be() -> None:
    r = Record(topic="t", partition=2, offset=10, epoch=1, timestamp_ms=99, key=b"\xff", value=b'{"a":1}',
               headers=(("unit", b"C"), ("raw", b"\x80")))
    assert record_json(r) == {"partition": 2, "offset": 10, "epoch": 1, "timestamp_ms": 99, "key": None,
                              "key_b64": "/w==", "value": '{"a":1}', "headers": {"unit": "C", "raw": None,
                                                                                 "raw_b64": "gA=="}}
