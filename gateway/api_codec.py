"""JSON shapes of the HTTP API's records, partitions and cursors, and the checks of what clients send.

Pure functions over parsed JSON and store objects (no aiohttp, no I/O), so they are tested on their own and shared
by the handlers in gateway.api_log. Every refusal is an ApiError naming the field and what is allowed; gateway.api
turns it into `{"error": code, "message": ...}` with its status.

Bytes that are UTF-8 travel as text; others as base64 in a `<name>_b64` field (the shape of
`edgestream consume --format jsonl`). JSON can spell strings that have no UTF-8 form (unpaired surrogates such as
"\\ud800"): those are refused with a 400 instead of failing deep in the store.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from ..store import RecordIn
from ..store.files import valid_name
from ..store.record import Record
from .errors import GatewayError

MAX_RECORDS_PER_REQUEST = 10_000
TS_MAX = 2**62 - 1  # record timestamps, ms since the epoch (stored as int64)


class ApiError(GatewayError):
    """A request the API refuses: becomes `{"error": code, "message": ...}` with `status` (gateway.api)."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.extra = extra


def _text_or_b64(data: bytes | None, name: str, obj: dict[str, Any]) -> None:
    if data is None:
        obj[name] = None
        return
    try:
        obj[name] = data.decode()
    except UnicodeDecodeError:
        obj[name] = None
        obj[name + "_b64"] = base64.b64encode(data).decode()


def record_json(r: Record) -> dict[str, Any]:
    obj: dict[str, Any] = {"partition": r.partition, "offset": r.offset, "epoch": r.epoch,
                           "timestamp_ms": r.timestamp_ms}
    _text_or_b64(r.key, "key", obj)
    _text_or_b64(r.value, "value", obj)
    headers: dict[str, Any] = {}
    for name, val in r.headers:
        _text_or_b64(val, name, headers)
    obj["headers"] = headers
    return obj


def partition_json(p: Any) -> dict[str, Any]:
    return {"partition": p.partition, "log_start": p.log_start, "high_watermark": p.high_watermark,
            "records": p.records, "size_bytes": p.size_bytes, "segments": p.segments, "epoch": p.epoch,
            "blocked": p.blocked, "broken": p.broken, "oldest_timestamp_ms": p.oldest_timestamp_ms,
            "dropped": dict(p.dropped), "rejected": dict(p.rejected)}


def cursor_json(cur: Any) -> dict[str, Any]:
    return {"name": cur.name, "required": cur.required,
            "offsets": [{"topic": t, "partition": p, "offset": pos.offset, "epoch": pos.epoch, "log_id": pos.log_id}
                        for (t, p), pos in sorted(cur.offsets.items())]}


def parse_position(item: Any, i: int) -> tuple[str, int, int]:
    if not isinstance(item, dict) or set(item) - {"topic", "partition", "offset"}:
        raise ApiError(400, "invalid_body", f"offsets[{i}] must be an object of topic, partition and offset")
    topic, partition, offset = item.get("topic"), item.get("partition"), item.get("offset")
    if not isinstance(topic, str) or not valid_name(topic):
        raise ApiError(400, "invalid_body", f"offsets[{i}].topic must be a topic name")
    for key, value in (("partition", partition), ("offset", offset)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ApiError(400, "invalid_body", f"offsets[{i}].{key} must be a non-negative integer")
    assert isinstance(partition, int) and isinstance(offset, int)
    return topic, partition, offset


def _bytes_field(item: dict[str, Any], name: str, where: str, required: bool) -> bytes | None:
    """`name` as text (strings as UTF-8, other JSON values encoded), or `name_b64` as base64; not both."""
    has_text, has_b64 = name in item, f"{name}_b64" in item
    if has_text and has_b64:
        raise ApiError(400, "invalid_body", f"{where}: give {name} or {name}_b64, not both")
    if has_b64:
        raw = item[f"{name}_b64"]
        if not isinstance(raw, str):
            raise ApiError(400, "invalid_body", f"{where}.{name}_b64 must be a base64 string")
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "invalid_body", f"{where}.{name}_b64 is not valid base64") from None
    if not has_text:
        if required:
            raise ApiError(400, "invalid_body", f"{where}: {name} (or {name}_b64) is required")
        return None
    value = item[name]
    if value is None:
        if required:
            raise ApiError(400, "invalid_body", f"{where}.{name} must not be null")
        return None
    if isinstance(value, str):
        return utf8(value, f"{where}.{name}")
    if name == "key":
        raise ApiError(400, "invalid_body", f"{where}.key must be a string or null")
    return utf8(json.dumps(value, separators=(",", ":"), ensure_ascii=False), f"{where}.{name}")


def utf8(text: str, where: str) -> bytes:
    """Text as UTF-8. JSON can carry lone surrogates (\\ud800) that have no UTF-8 form: a 400, not a 500."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_body", f"{where}: text with an unpaired surrogate has no UTF-8 form") from None


def parse_records(body: Any, now_ms: int, default_key: bytes | None = None,
                        default_partition: int | None = None) -> list[tuple[int | None, RecordIn]]:
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise ApiError(400, "invalid_body", 'expected {"records": [{"value": ...}, ...]}')
    records: Sequence[Any] = body["records"]
    if not 1 <= len(records) <= MAX_RECORDS_PER_REQUEST:
        raise ApiError(400, "invalid_body", f"records must hold 1 to {MAX_RECORDS_PER_REQUEST} items")
    allowed = {"value", "value_b64", "key", "key_b64", "partition", "headers", "timestamp_ms"}
    out: list[tuple[int | None, RecordIn]] = []
    for i, item in enumerate(records):
        where = f"records[{i}]"
        if not isinstance(item, dict):
            raise ApiError(400, "invalid_body", f"{where} must be an object")
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise ApiError(400, "invalid_body", f"{where}: unknown field(s) {', '.join(unknown)}; allowed: "
                           f"{', '.join(sorted(allowed))}")
        value = _bytes_field(item, "value", where, required=True)
        key = _bytes_field(item, "key", where, required=False)
        if "key" not in item and "key_b64" not in item:
            key = default_key
        partition = default_partition
        if "partition" in item:
            partition = item["partition"]
            if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
                raise ApiError(400, "invalid_body", f"{where}.partition must be a non-negative integer")
        ts = item.get("timestamp_ms", now_ms)
        if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= TS_MAX:
            raise ApiError(400, "invalid_body", f"{where}.timestamp_ms must be milliseconds since the epoch")
        headers = item.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ApiError(400, "invalid_body", f"{where}.headers must map names to strings")
        pairs = []
        for name, text in headers.items():
            utf8(name, f"{where}.headers")  # the store encodes header names: refuse what it could not
            pairs.append((name, utf8(text, f"{where}.headers.{name}")))
        assert value is not None
        out.append((partition, RecordIn(ts, key, value, tuple(pairs))))
    return out
