"""Payload decoders: bytes -> a flat dict of typed fields, or DecodeError.

The raw payload is always what gets stored; decoding only checks it on the way in (an undecodable payload is
still stored, and counted) and produces typed columns at tiering and query time. Pure functions, no I/O.

- json: an object; nested objects are flattened with "." (`{"a": {"b": 1}}` -> `{"a.b": 1}`), lists kept as JSON.
- csv: one line of `columns`, values typed as int, float or text.
- modbus: the JSON the Modbus poller writes; its "values" object becomes the columns.
- raw: nothing to decode (no columns).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from .errors import DecodeError

Decoder = Callable[[bytes], dict[str, Any]]
_json = msgspec.json.Decoder()
_encode = msgspec.json.Encoder()


def _flatten(obj: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            _flatten(v, key + ".", out)
        elif isinstance(v, list):
            out[key] = _encode.encode(v).decode()
        else:
            out[key] = v


def decode_json(payload: bytes) -> dict[str, Any]:
    try:
        obj = _json.decode(payload)
    except msgspec.DecodeError as exc:
        raise DecodeError("bad_json", str(exc)) from None
    if not isinstance(obj, dict):
        raise DecodeError("not_an_object", f"JSON {type(obj).__name__}, expected an object")
    if not any(isinstance(v, dict | list) for v in obj.values()):
        return obj
    out: dict[str, Any] = {}
    _flatten(obj, "", out)
    return out


def _typed(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def csv_decoder(columns: tuple[str, ...], delimiter: str = ",") -> Decoder:
    def decode_csv(payload: bytes) -> dict[str, Any]:
        try:
            text = payload.decode().rstrip("\r\n")
        except UnicodeDecodeError:
            raise DecodeError("bad_utf8", "CSV payload is not UTF-8") from None
        parts = text.split(delimiter)
        if len(parts) != len(columns):
            raise DecodeError("bad_csv", f"{len(parts)} fields, expected {len(columns)} ({', '.join(columns)})")
        return {c: _typed(p.strip()) for c, p in zip(columns, parts, strict=True)}

    return decode_csv


def decode_modbus(payload: bytes) -> dict[str, Any]:
    obj = decode_json(payload)
    values = {k[len("values."):]: v for k, v in obj.items() if k.startswith("values.")}
    if not values and "values" not in obj:
        raise DecodeError("bad_modbus", "no \"values\" object")
    for k in ("unit", "ts"):
        if k in obj:
            values.setdefault(k, obj[k])
    return values


def decode_raw(payload: bytes) -> dict[str, Any]:
    return {}


Validator = Callable[[bytes], None]


def _validate_json(payload: bytes) -> None:
    """Cheaper than decode_json on the ingest path: parse, check it is an object, no flattening."""
    try:
        obj = _json.decode(payload)
    except msgspec.DecodeError as exc:
        raise DecodeError("bad_json", str(exc)) from None
    if type(obj) is not dict:
        raise DecodeError("not_an_object", f"JSON {type(obj).__name__}, expected an object")


def validator_for(name: str, *, csv_columns: tuple[str, ...] = (), csv_delimiter: str = ",") -> Validator | None:
    """What the router runs on every payload to count undecodable ones (None: nothing to check)."""
    if name == "json":
        return _validate_json
    if name == "raw":
        return None
    decode = decoder_for(name, csv_columns=csv_columns, csv_delimiter=csv_delimiter)

    def validate(payload: bytes) -> None:
        decode(payload)

    return validate


def decoder_for(name: str, *, csv_columns: tuple[str, ...] = (), csv_delimiter: str = ",") -> Decoder:
    if name == "json":
        return decode_json
    if name == "csv":
        return csv_decoder(csv_columns, csv_delimiter)
    if name == "modbus":
        return decode_modbus
    if name == "raw":
        return decode_raw
    raise ValueError(f"unknown decoder {name!r}; expected json, csv, modbus or raw")
