"""Payload decoders: typed fields out, DecodeError with a bounded reason for anything else."""

from __future__ import annotations

import pytest

from edgestream.edge.decoders import decoder_for, validator_for
from edgestream.edge.errors import DecodeError


def test_json_flattens_nested_objects_and_keeps_lists_as_json() -> None:
    d = decoder_for("json")
    assert d(b'{"sensor":"a","v":1.5,"meta":{"unit":"C","cal":{"k":2}},"tags":[1,2]}') == {
        "sensor": "a", "v": 1.5, "meta.unit": "C", "meta.cal.k": 2, "tags": "[1,2]"}


@pytest.mark.parametrize(("payload", "reason"), [
    (b'{"a":', "bad_json"), (b"\xff\xfe", "bad_json"), (b"[1,2]", "not_an_object"), (b"42", "not_an_object"),
    (b"", "bad_json"),
])
def test_json_errors(payload: bytes, reason: str) -> None:
    for fn in (decoder_for("json"), validator_for("json")):
        assert fn is not None
        with pytest.raises(DecodeError) as exc:
            fn(payload)
        assert exc.value.reason == reason


def test_csv_types_values_and_checks_the_column_count() -> None:
    d = decoder_for("csv", csv_columns=("sensor", "ts", "value", "status"))
    assert d(b"line1/t-0,1700000000000,41.5,ok\r\n") == {"sensor": "line1/t-0", "ts": 1700000000000,
                                                         "value": 41.5, "status": "ok"}
    with pytest.raises(DecodeError, match="3 fields, expected 4"):
        d(b"a,b,c")
    with pytest.raises(DecodeError) as exc:
        d(b"\xff,1,2,3")
    assert exc.value.reason == "bad_utf8"


def test_modbus_takes_the_values_object() -> None:
    d = decoder_for("modbus")
    assert d(b'{"unit":3,"ts":5,"values":{"temperature":21.5,"parts":7},"raw":[1,2]}') == {
        "temperature": 21.5, "parts": 7, "unit": 3, "ts": 5}
    with pytest.raises(DecodeError) as exc:
        d(b'{"unit":3}')
    assert exc.value.reason == "bad_modbus"


def test_raw_has_nothing_to_check() -> None:
    assert validator_for("raw") is None
    assert decoder_for("raw")(b"\x00\x01") == {}
    with pytest.raises(ValueError, match="unknown decoder"):
        decoder_for("xml")
