"""Records -> Arrow: the record columns, typed columns from the decoders, undecodable payloads, and the JSON fast
path agreeing with the per-record decoder the gateway injects (edge.decoders.decode_json)."""

from __future__ import annotations

from typing import Any

import msgspec
import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgestream.edge.decoders import csv_decoder, decode_json, decode_modbus
from edgestream.store.record import Record
from edgestream.store.tier import arrowize
from edgestream.store.tier.arrowize import RECORD_COLUMNS, decode_columns, per_record, to_table, typed_array
from edgestream.store.tier.manifest import DecoderSpec, TopicDecoder

JSON = TopicDecoder(DecoderSpec("json"), decode_json)


def rec(offset: int, value: bytes, key: bytes | None = None, headers: tuple[tuple[str, bytes], ...] = ()) -> Record:
    return Record("t", 1, offset, 3, 1_700_000_000_000 + offset, key, value, headers)


def test_record_columns_keep_everything_as_stored() -> None:
    recs = [rec(5, b'{"a": 1}', b"k1", (("h", b"\x00\xff"),)), rec(6, b"\xff not json", None)]
    t = to_table(recs, JSON)
    assert t.column_names[: len(RECORD_COLUMNS)] == list(RECORD_COLUMNS)
    rows = t.to_pylist()
    assert [r["offset"] for r in rows] == [5, 6] and {r["partition"] for r in rows} == {1}
    assert [r["epoch"] for r in rows] == [3, 3]
    assert [r["value"] for r in rows] == [b'{"a": 1}', b"\xff not json"]  # raw bytes, even undecodable ones
    assert rows[0]["headers"] == [{"name": "h", "value": b"\x00\xff"}] and rows[1]["headers"] is None
    assert [r["key"] for r in rows] == [b"k1", None]
    assert [r["decode_error"] for r in rows] == [None, "bad_json"]
    assert [r["a"] for r in rows] == [1, None]  # the typed column is null where the payload did not decode
    assert t.schema.field("ts").type == pa.timestamp("ms")


def test_fields_named_like_record_columns_get_a_prefix() -> None:
    t = to_table([rec(0, b'{"ts": 17, "value": 2.5, "sensor": "s1"}')], JSON)
    assert {"payload_ts", "payload_value", "sensor"} <= set(t.column_names)
    assert t.column("value").to_pylist() == [b'{"ts": 17, "value": 2.5, "sensor": "s1"}']
    assert t.column("payload_value").to_pylist() == [2.5]


def test_raw_topics_and_other_decoders() -> None:
    assert to_table([rec(0, b"abc")], None).column_names == list(RECORD_COLUMNS)
    csv = TopicDecoder(DecoderSpec("csv", ("sensor", "v")), csv_decoder(("sensor", "v")))
    t = to_table([rec(0, b"s1,1"), rec(1, b"s2,2.5"), rec(2, b"only-one-field")], csv)
    assert t.column("v").type == pa.float64() and t.column("v").to_pylist() == [1.0, 2.5, None]
    assert t.column("decode_error").to_pylist() == [None, None, "bad_csv"]
    modbus = TopicDecoder(DecoderSpec("modbus"), decode_modbus)
    t = to_table([rec(0, b'{"unit": 3, "values": {"temp": 21.5, "rpm": 1200}}')], modbus)
    assert t.column("temp").to_pylist() == [21.5] and t.column("rpm").to_pylist() == [1200]


def test_type_lattice() -> None:
    assert typed_array([1, None, 2]).type == pa.int64()
    assert typed_array([1, 2.5]).to_pylist() == [1.0, 2.5]
    assert typed_array([True, None]).type == pa.bool_()
    assert typed_array([None, None]).type == pa.null()
    assert typed_array([1, "x", True, None]).to_pylist() == ["1", "x", "true", None]  # mixed kinds: text
    assert typed_array([2**70, 1]).to_pylist() == [str(2**70), "1"]  # beyond int64: exact, as text


def normalized(result: tuple[list[tuple[str, pa.Array]], list[str | None]]) -> tuple[dict[str, Any], list[Any]]:
    """Columns by name with their type and values; a column null in every row reads like an absent one."""
    cols, errors = result
    return ({name: (str(arr.type), arr.to_pylist()) for name, arr in cols if arr.null_count < len(arr)}, errors)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
names = st.sampled_from(["a", "b", "ts", "value", "sensor", "n"])
objects = st.dictionaries(names, st.one_of(scalars, st.dictionaries(st.sampled_from(["x", "y"]), scalars,
                                                                      max_size=2), st.lists(st.integers(), max_size=2)),
                          max_size=4)
payloads = st.one_of(objects.map(msgspec.json.encode), st.sampled_from(
    [b"", b"{", b"123", b"[1]", b"\xff\xfe", b"null", b'{"a": 1}\n{"a": 2}', b" ", b'{"a": NaN}', b'"text"',
     # payloads that look like one object each from their ends but are not: two objects, an object left open and
     # one closed twice, NaN and Infinity (Arrow reads them, the gateway's decoder does not), a stray CR
     b'{"a": 1}{"b": 2}', b'{"a": {"b": 1}', b'{"c": 2}}', b'{"a": Infinity}', b'{"a": {"x": -Infinity}}',
     b' {"a": 1}', b'{"a": 1}\r', b'{"a":\r1}', b'{"a": 1}  {}']))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads, min_size=1, max_size=30))
@example([b'{"a": 1.5}', b'{"a": 9007199254740993}'])  # an int above 2**53 in a float column (found in CI)
def test_json_fast_path_matches_the_per_record_decoder(values: list[bytes]) -> None:
    assert normalized(decode_columns(values, JSON)) == normalized(per_record(values, decode_json))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({"sensor": st.sampled_from(["s1", "s2"]), "value": st.one_of(
    st.integers(-1000, 1000), st.floats(-1e6, 1e6)), "ok": st.booleans()}), min_size=1, max_size=50))
def test_fast_path_is_taken_for_sensor_json(objs: list[dict[str, Any]]) -> None:
    values = [msgspec.json.encode(o) for o in objs]
    assert arrowize._json_lines(pa.array(values, pa.binary()), False) is not None  # no Python object per payload
    fast = decode_columns(values, TopicDecoder(DecoderSpec("json"), lambda v: (_ for _ in ()).throw(
        AssertionError("the per-record decoder was called"))))
    assert normalized(fast) == normalized(per_record(values, decode_json))
