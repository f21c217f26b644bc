"""The OpenAPI 3.0 document of the HTTP API, served at /openapi.json and checked by schemathesis in the tests.

Written out by hand rather than generated from the handlers: the API is small, and the document is what clients
and the tests hold the server to. Extensions (the mirror, the tier) contribute their own `paths` through
`openapi_paths()`; they may reference `#/components/schemas/Error` and `#/components/responses/*` from here.
"""

from __future__ import annotations

import copy
from typing import Any

from .api_codec import MAX_RECORDS_PER_REQUEST, TS_MAX
from .version import version

NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _obj(props: dict[str, Any], required: list[str] | None = None, *, extra: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    if not extra:
        schema["additionalProperties"] = False
    return schema


INT = {"type": "integer", "minimum": 0}
NUM = {"type": "number", "minimum": 0}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
NULL_INT = {"type": "integer", "minimum": 0, "nullable": True}
COUNTS = {"type": "object", "additionalProperties": INT}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": {"type": "string", "description": "machine-readable code, e.g. topic_not_found"},
                   "message": {"type": "string", "description": "what went wrong and what to do"}},
                  ["error", "message"]),
    "Health": _obj({"status": {"type": "string", "enum": ["ok"]}}, ["status"]),
    "Ready": _obj({"status": {"type": "string", "enum": ["ready"]},
                   "summary": {"type": "string", "description": "the STATUS= line (with the token only)"}},
                  ["status"]),
    "NotReady": _obj({"status": {"type": "string", "enum": ["starting", "stopping"]}}, ["status"]),
    "Status": _obj({
        "gateway": STR, "version": STR, "python": STR, "machine": STR, "pid": INT, "ready": BOOL,
        "started_at": NUM, "uptime_seconds": NUM, "summary": STR, "tier_available": BOOL, "reloads": INT,
        "reload_errors": INT,
        "process": _obj({"rss_bytes": INT, "cpu_seconds": NUM}),
        "watchdog": _obj({"interval_seconds": NUM, "pings": INT, "loop_lag_max_seconds": NUM}),
        "disk": {**_obj({"data_dir": STR, "free_bytes": INT, "size_bytes": INT, "min_free_bytes": INT,
                         "low": BOOL}), "nullable": True},
        "ingest": {**_obj({"records": INT, "decode_errors": INT, "dead_letters": INT, "rejected": INT,
                           "in_flight": INT}), "nullable": True},
        "recovery": {**_obj({"unclean_partitions": INT, "truncated_records": INT, "truncated_bytes": INT,
                             "epoch_bumps": INT, "quarantined_segments": INT}), "nullable": True},
        "topics": {"type": "array", "items": _obj({
            "name": STR, "partitions": INT, "records": INT, "size_bytes": INT, "end_offset": INT, "blocked": BOOL,
            "broken": BOOL, "dropped": INT, "oldest_timestamp_ms": NULL_INT}, ["name", "partitions", "records"])},
        "sources": {"type": "array", "items": _obj({
            "name": STR, "type": STR, "running": BOOL, "restarts": INT, "records_in": INT, "bytes_in": INT},
            ["name", "type", "running"])},
        "mirror": {"type": "object", "nullable": True, "description": "the mirror's own status, if configured"},
        "tier": {"type": "object", "nullable": True, "description": "the tier's own status, if configured"},
    }, ["gateway", "version", "ready", "uptime_seconds", "summary", "topics", "sources"]),
    "TopicSummary": _obj({"name": STR, "partitions": INT, "records": INT, "size_bytes": INT},
                         ["name", "partitions", "records", "size_bytes"]),
    "TopicList": _obj({"topics": {"type": "array", "items": _ref("TopicSummary")}}, ["topics"]),
    "Partition": _obj({
        "topic": STR, "partition": INT, "log_start": INT, "high_watermark": INT, "records": INT, "size_bytes": INT,
        "segments": INT, "epoch": INT, "blocked": BOOL, "broken": BOOL, "oldest_timestamp_ms": NULL_INT,
        "dropped": COUNTS, "rejected": COUNTS,
    }, ["partition", "log_start", "high_watermark", "records", "size_bytes", "segments", "epoch"]),
    "TopicDetail": _obj({"name": STR, "config": {"type": "object", "description": "the topic's stored settings"},
                         "records": INT, "size_bytes": INT,
                         "partitions": {"type": "array", "items": _ref("Partition")}},
                        ["name", "config", "partitions"]),
    "PartitionList": _obj({"topic": STR, "partitions": {"type": "array", "items": _ref("Partition")}},
                          ["topic", "partitions"]),
    "ProduceRecord": {
        **_obj({
            "value": {"description": "a string is stored as its UTF-8 bytes; any other JSON value as its JSON "
                                     "text", "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"},
                                                       {"type": "object"}, {"type": "array", "items": {}}]},
            "value_b64": {"type": "string", "format": "byte", "description": "the value's bytes, base64"},
            "key": {"type": "string", "nullable": True, "description": "routes to a partition by hash"},
            "key_b64": {"type": "string", "format": "byte"},
            "partition": {"type": "integer", "minimum": 0, "description": "explicit partition (else by key)"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "timestamp_ms": {"type": "integer", "minimum": 0, "maximum": TS_MAX,
                             "description": "ms since the epoch; default: the timestamp_ms parameter, or now"},
        }, extra=False),
        "anyOf": [{"required": ["value"]}, {"required": ["value_b64"]}],
        "not": {"anyOf": [{"required": ["value", "value_b64"]}, {"required": ["key", "key_b64"]}]},
    },
    "ProduceRequest": _obj({"records": {"type": "array", "minItems": 1, "maxItems": MAX_RECORDS_PER_REQUEST,
                                        "items": _ref("ProduceRecord")}}, ["records"]),
    "ProduceResponse": _obj({"topic": STR, "offsets": {"type": "array", "items": _obj(
        {"partition": INT, "offset": INT}, ["partition", "offset"])}}, ["topic", "offsets"]),
    "Record": _obj({
        "partition": INT, "offset": INT, "epoch": INT, "timestamp_ms": INT,
        "key": {"type": "string", "nullable": True}, "key_b64": STR,
        "value": {"type": "string", "nullable": True}, "value_b64": STR,
        "headers": {"type": "object", "additionalProperties": {"type": "string", "nullable": True},
                    "description": "text values; `<name>_b64` for values that are not UTF-8"},
    }, ["partition", "offset", "epoch", "timestamp_ms", "key", "value", "headers"]),
    "FetchResponse": _obj({"topic": STR, "partition": INT, "records": {"type": "array", "items": _ref("Record")},
                           "next_offset": INT, "log_start": INT, "high_watermark": INT},
                          ["topic", "partition", "records", "next_offset", "log_start", "high_watermark"]),
    "CursorPosition": _obj({"topic": STR, "partition": INT, "offset": INT, "epoch": INT, "log_id": STR},
                           ["topic", "partition", "offset"]),
    "Cursor": _obj({"name": STR, "required": BOOL, "offsets": {"type": "array", "items": _ref("CursorPosition")}},
                   ["name", "required", "offsets"]),
    "CursorList": _obj({"cursors": {"type": "array", "items": _ref("Cursor")}}, ["cursors"]),
    "CursorCommit": _obj({
        "offsets": {"type": "array", "items": _obj({
            "topic": {"type": "string", "pattern": NAME_PATTERN}, "partition": INT, "offset": INT},
            ["topic", "partition", "offset"], extra=False)},
        "required": {"type": "boolean", "description": "protect unread records from retention"},
    }, ["offsets"], extra=False),
    "Deleted": _obj({"deleted": STR}, ["deleted"]),
}


def _resp(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


RESPONSES = {name: _resp(text, "Error") for name, text in {
    "BadRequest": "invalid parameter or body (the message names it)",
    "Unauthorized": "missing or wrong bearer token",
    "NotFound": "no such topic, partition or cursor",
    "TooLarge": "a record over the topic's max_record_bytes, or a body over 8 MiB",
    "UnsupportedMediaType": "a Content-Type other than the ones documented",
    "OutOfRange": "offset outside log_start..high_watermark (both are in the body)",
    "Unavailable": "starting, stopping, disk full or log broken; retry after Retry-After seconds",
}.items()}


def _r(name: str) -> dict[str, str]:
    return {"$ref": "#/components/responses/" + name}


def _param(name: str, where: str, schema: dict[str, Any], description: str, *, example: Any = None,
           required: bool = False) -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "in": where, "schema": schema, "description": description}
    if where == "path" or required:
        p["required"] = True
    if example is not None:
        p["example"] = example
    return p


TOPIC = _param("topic", "path", {"type": "string", "pattern": NAME_PATTERN}, "topic name", example="telemetry")
PARTITION = _param("partition", "path", {"type": "integer", "minimum": 0, "maximum": 999_999_999}, "partition",
                   example=0)
CURSOR = _param("name", "path", {"type": "string", "pattern": NAME_PATTERN}, "cursor name", example="dashboard")


def _op(summary: str, ok: dict[str, Any], errors: list[str], *, op_id: str, params: list[Any] | None = None,
        body: dict[str, Any] | None = None, open_: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "operationId": op_id, "responses": {"200": ok}}
    for e in errors:
        code = {"BadRequest": "400", "NotFound": "404", "TooLarge": "413", "UnsupportedMediaType": "415",
                "OutOfRange": "416", "Unavailable": "503"}[e]
        op["responses"][code] = _r(e)
    if not open_:
        op["responses"]["401"] = _r("Unauthorized")
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    if open_:
        op["security"] = []
    return op


def _paths() -> dict[str, Any]:
    fetch_params = [
        TOPIC, PARTITION,
        _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 2**62}, "first offset (default: "
               "log_start); give at most one of offset, timestamp_ms and cursor"),
        _param("timestamp_ms", "query", {"type": "integer", "minimum": 0, "maximum": TS_MAX},
               "start at the first record at or after this time"),
        _param("cursor", "query", {"type": "string", "pattern": NAME_PATTERN}, "start where this cursor stopped"),
        _param("max_records", "query", {"type": "integer", "minimum": 1, "maximum": 10_000}, "default 100"),
        _param("max_bytes", "query", {"type": "integer", "minimum": 1, "maximum": 16 << 20}, "default 1 MiB "
               "(at least one frame is returned)"),
        _param("wait_ms", "query", {"type": "integer", "minimum": 0, "maximum": 30_000},
               "long poll: at the high watermark, wait up to this long for a record"),
    ]
    produce_body = {"required": True, "content": {
        "application/json": {"schema": _ref("ProduceRequest")},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "text/plain": {"schema": {"type": "string"}},
    }}
    produce_params = [
        TOPIC,
        _param("key", "query", {"type": "string"}, "the key of a raw body's record; the default key of a JSON "
               "body's records"),
        _param("partition", "query", {"type": "integer", "minimum": 0, "maximum": 1 << 30},
               "explicit partition (raw body), or the default one (JSON body); else by key"),
        _param("timestamp_ms", "query", {"type": "integer", "minimum": 0, "maximum": TS_MAX},
               "record time (raw body) or the default one (JSON body); default now"),
    ]
    return {
        "/healthz": {"get": _op("Liveness: the event loop answers", _resp("alive", "Health"), [],
                                op_id="healthz", open_=True)},
        "/readyz": {"get": {**_op("Readiness: recovery done, sources running", _resp("ready", "Ready"), [],
                                  op_id="readyz", open_=True),
                            "responses": {"200": _resp("ready", "Ready"),
                                          "503": _resp("starting or stopping", "NotReady")}}},
        "/metrics": {"get": _op("Prometheus metrics (text format 0.0.4)", {
            "description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}, [],
            op_id="metrics")},
        "/openapi.json": {"get": _op("This document", {"description": "OpenAPI 3.0", "content": {
            "application/json": {"schema": {"type": "object"}}}}, [], op_id="openapi")},
        "/v1/status": {"get": _op("Health summary (`edgestream status`)", _resp("status", "Status"), [],
                                  op_id="status")},
        "/v1/topics": {"get": _op("List topics", _resp("topics", "TopicList"), ["Unavailable"], op_id="listTopics")},
        "/v1/topics/{topic}": {"get": _op("Describe a topic", _resp("topic", "TopicDetail"),
                                          ["BadRequest", "NotFound", "Unavailable"], op_id="describeTopic",
                                          params=[TOPIC])},
        "/v1/topics/{topic}/partitions": {"get": _op(
            "List a topic's partitions", _resp("partitions", "PartitionList"),
            ["BadRequest", "NotFound", "Unavailable"], op_id="listPartitions", params=[TOPIC])},
        "/v1/topics/{topic}/partitions/{partition}": {"get": _op(
            "Describe a partition", _resp("partition", "Partition"), ["BadRequest", "NotFound", "Unavailable"],
            op_id="describePartition", params=[TOPIC, PARTITION])},
        "/v1/topics/{topic}/records": {"post": _op(
            "Produce records; the reply comes once they are durable", _resp("offsets", "ProduceResponse"),
            ["BadRequest", "NotFound", "TooLarge", "UnsupportedMediaType", "Unavailable"], op_id="produce",
            params=produce_params,
            body=produce_body)},
        "/v1/topics/{topic}/partitions/{partition}/records": {"get": _op(
            "Fetch records by offset, time or cursor (long poll with wait_ms)", _resp("records", "FetchResponse"),
            ["BadRequest", "NotFound", "OutOfRange", "Unavailable"], op_id="fetch", params=fetch_params)},
        "/v1/cursors": {"get": _op("List cursors", _resp("cursors", "CursorList"), ["Unavailable"],
                                   op_id="listCursors")},
        "/v1/cursors/{name}": {
            "get": _op("Read a cursor", _resp("cursor", "Cursor"), ["BadRequest", "NotFound", "Unavailable"],
                       op_id="getCursor", params=[CURSOR]),
            "put": _op("Commit offsets to a cursor (durable before the reply)", _resp("cursor", "Cursor"),
                       ["BadRequest", "NotFound", "UnsupportedMediaType", "Unavailable"], op_id="commitCursor",
                       params=[CURSOR],
                       body={"required": True, "content": {"application/json": {"schema": _ref("CursorCommit")}}}),
            "delete": _op("Forget a cursor", _resp("deleted", "Deleted"), ["BadRequest", "NotFound", "Unavailable"],
                          op_id="deleteCursor", params=[CURSOR]),
        },
    }


def document(extra_paths: dict[str, Any] | None = None, *, token: bool = False) -> dict[str, Any]:
    """The whole document. `token`: whether this server requires the bearer token (it says so only then)."""
    paths = _paths()
    for path, item in (extra_paths or {}).items():
        paths.setdefault(path, {}).update(copy.deepcopy(item))
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "edgestream gateway API", "version": version(),
                 "description": "Health, metrics, topics, produce, fetch and cursors of one edgestream gateway. "
                                "Errors are JSON: {\"error\": code, \"message\": text}."},
        "paths": paths,
        "components": {"schemas": copy.deepcopy(SCHEMAS), "responses": copy.deepcopy(RESPONSES),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
    if token:
        doc["security"] = [{"bearer": []}]
    else:
        for item in paths.values():  # no token configured: nothing answers 401, so nothing should say it may
            for op in item.values():
                if isinstance(op, dict):
                    op.get("responses", {}).pop("401", None)
                    op.pop("security", None)
    return doc
