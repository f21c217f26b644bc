"""The log over HTTP: topics and partitions, produce, fetch (with long poll), cursors. Mounted by gateway.api.

    GET    /v1/topics                                           every topic, with totals
    GET    /v1/topics/{topic}                                   settings and partitions of one topic
    GET    /v1/topics/{topic}/partitions/{partition}            one partition's offsets, size, epoch
    POST   /v1/topics/{topic}/records                           produce: a JSON batch, or one raw body
    GET    /v1/topics/{topic}/partitions/{partition}/records    fetch by offset, time or cursor; wait_ms long-polls
    GET    /v1/cursors                                          every named cursor
    GET    /v1/cursors/{name}                                   one cursor
    PUT    /v1/cursors/{name}                                   commit offsets (durable before the reply)
    DELETE /v1/cursors/{name}                                   forget a cursor

A produce reply comes once every record is acknowledged under its topic's durability mode (after the fdatasync
with the default `fsync`), exactly like a sensor's PUBACK. Fetched records use the JSON shape of
`edgestream consume --format jsonl`: text where the bytes are UTF-8, `<name>_b64` otherwise.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..store import AsyncLog, CursorPosition, RecordIn
from ..store.files import valid_name
from ..store.frame import batch_info
from .api_codec import (
    TS_MAX,
    ApiError,
    cursor_json,
    parse_position,
    parse_records,
    partition_json,
    record_json,
    utf8,
)

if TYPE_CHECKING:
    from .api import ApiCounters
    from .service import Gateway

MAX_FETCH_RECORDS = 10_000
MAX_FETCH_BYTES = 16 << 20
MAX_WAIT_MS = 30_000  # long polls: under common proxy idle timeouts (60 s)
PRODUCE_TIMEOUT_S = 30.0  # a topic blocked on a full disk: answer 503 rather than hold the connection forever
_SHUTDOWN: web.AppKey[asyncio.Event] = web.AppKey("shutdown", asyncio.Event)
RAW_TYPES = ("application/octet-stream", "text/plain")


def _int_param(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name}={raw!r} is not an integer", parameter=name) from None
    if not low <= value <= high:
        raise ApiError(400, "invalid_parameter", f"{name}={value} is out of range {low}..{high}", parameter=name)
    return value


def _topic(request: web.Request) -> str:
    topic = request.match_info["topic"]
    if not valid_name(topic):
        raise ApiError(400, "invalid_parameter", f"{topic!r} is not a topic name (letters, digits, '.', '_', '-')",
                       parameter="topic")
    return topic


def _partition(request: web.Request) -> int:
    raw = request.match_info["partition"]
    if not raw.isdigit() or len(raw) > 9:
        raise ApiError(400, "invalid_parameter", f"partition {raw!r} is not a non-negative integer",
                       parameter="partition")
    return int(raw)


def log_status(gw: Gateway) -> dict[str, Any]:
    """The log and sources part of GET /v1/status."""
    out: dict[str, Any] = {"disk": None, "topics": [], "sources": [], "recovery": None, "ingest": None}
    table = gw.source_table()
    restarts = gw.source_restarts()
    rstats = gw.router.statistics() if gw.router is not None else None
    per_source: dict[str, list[int]] = {}
    if rstats is not None:
        for s, _, n in rstats.records_in:
            per_source.setdefault(s, [0, 0])[0] += n
        for s, _, n in rstats.bytes_in:
            per_source.setdefault(s, [0, 0])[1] += n
        out["ingest"] = {"records": sum(n for _, _, n in rstats.records_in),
                         "decode_errors": sum(n for _, _, n in rstats.decode_errors),
                         "dead_letters": sum(n for _, _, n in rstats.dead_letters),
                         "rejected": sum(n for _, _, n in rstats.rejected),
                         "in_flight": rstats.in_flight}
    for name, (typ, _source, running) in sorted(table.items()):
        recs, nbytes = per_source.get(name, [0, 0])
        out["sources"].append({"name": name, "type": typ, "running": running, "restarts": restarts.get(name, 0),
                               "records_in": recs, "bytes_in": nbytes})
    if gw.log is None:
        return out
    st = gw.log.statistics()
    from .metrics import _disk_size

    out["disk"] = {"data_dir": st.data_dir, "free_bytes": st.disk_free_bytes, "size_bytes": _disk_size(st.data_dir),
                   "min_free_bytes": gw.log.config.min_free_bytes, "low": st.disk_low}
    for t in st.topics:
        ps = t.partitions
        out["topics"].append({
            "name": t.topic, "partitions": len(ps), "records": t.records, "size_bytes": t.size_bytes,
            "end_offset": sum(p.high_watermark for p in ps), "blocked": any(p.blocked for p in ps),
            "broken": any(p.broken for p in ps),
            "dropped": sum(n for p in ps for _, n in (*p.dropped, *p.rejected)),
            "oldest_timestamp_ms": min((p.oldest_timestamp_ms for p in ps if p.oldest_timestamp_ms is not None),
                                       default=None),
        })
    reports = gw.log.recovery_reports()
    out["recovery"] = {"unclean_partitions": sum(1 for r in reports if not r.clean),
                       "truncated_records": sum(r.truncated_records for r in reports),
                       "truncated_bytes": sum(r.truncated_bytes for r in reports),
                       "epoch_bumps": sum(1 for r in reports if r.epoch_bumped),
                       "quarantined_segments": sum(len(r.quarantined) for r in reports)}
    return out


async def wake_long_polls(app: web.Application) -> None:
    event = app.get(_SHUTDOWN)
    if event is not None:
        event.set()


class LogRoutes:
    def __init__(self, gw: Gateway, counters: ApiCounters) -> None:
        self.gw = gw
        self.counters = counters

    def add_to(self, app: web.Application) -> None:
        app[_SHUTDOWN] = asyncio.Event()
        self.shutdown = app[_SHUTDOWN]
        r = app.router
        r.add_get("/v1/topics", self.list_topics, allow_head=False)
        r.add_get("/v1/topics/{topic}", self.describe_topic, allow_head=False)
        r.add_get("/v1/topics/{topic}/partitions", self.list_partitions, allow_head=False)
        r.add_get("/v1/topics/{topic}/partitions/{partition}", self.describe_partition, allow_head=False)
        r.add_post("/v1/topics/{topic}/records", self.produce)
        r.add_get("/v1/topics/{topic}/partitions/{partition}/records", self.fetch, allow_head=False)
        r.add_get("/v1/cursors", self.list_cursors, allow_head=False)
        r.add_get("/v1/cursors/{name}", self.get_cursor, allow_head=False)
        r.add_put("/v1/cursors/{name}", self.put_cursor)
        r.add_delete("/v1/cursors/{name}", self.delete_cursor)

    def _log(self) -> Any:
        if self.gw.log is None or self.gw.alog is None:
            raise ApiError(503, "not_ready", "the log is still being recovered; retry shortly (see /readyz)")
        return self.gw.log

    @property
    def _alog(self) -> AsyncLog:
        alog = self.gw.alog
        if alog is None:
            raise ApiError(503, "not_ready", "the log is still being recovered; retry shortly (see /readyz)")
        return alog

    # -- topics and partitions --------------------------------------------------------------------------------------

    async def list_topics(self, request: web.Request) -> web.Response:
        log = self._log()
        topics = []
        for t in log.statistics().topics:
            topics.append({"name": t.topic, "partitions": len(t.partitions), "records": t.records,
                           "size_bytes": t.size_bytes})
        return web.json_response({"topics": topics})

    async def describe_topic(self, request: web.Request) -> web.Response:
        log = self._log()
        topic = log.topic(_topic(request))
        cfg = topic.config
        st = topic.statistics()
        settings = {f: getattr(cfg, f) for f in cfg.__struct_fields__}
        return web.json_response({"name": st.topic, "config": settings, "records": st.records,
                                  "size_bytes": st.size_bytes,
                                  "partitions": [partition_json(p) for p in st.partitions]})

    async def list_partitions(self, request: web.Request) -> web.Response:
        log = self._log()
        st = log.topic(_topic(request)).statistics()
        return web.json_response({"topic": st.topic, "partitions": [partition_json(p) for p in st.partitions]})

    async def describe_partition(self, request: web.Request) -> web.Response:
        log = self._log()
        topic = _topic(request)
        p = log.partition(topic, _partition(request))
        return web.json_response({"topic": topic, **partition_json(p.statistics())})

    # -- produce ----------------------------------------------------------------------------------------------------

    async def produce(self, request: web.Request) -> web.Response:
        log = self._log()
        if not self.gw.ready:
            raise ApiError(503, "not_ready", "the gateway is starting or stopping; retry shortly")
        topic = _topic(request)
        n_partitions = len(log.topic(topic).partitions)
        now = log.wall_ms()
        ctype = request.headers.get("Content-Type", "") and request.content_type
        if ctype not in RAW_TYPES and ctype != "application/json":
            raise ApiError(415, "unsupported_media_type", f"Content-Type {ctype or '(none)'!r}: send application/json "
                           "(a batch of records) or application/octet-stream / text/plain (one record)")
        # Query parameters: the record of a raw body; defaults for the records of a JSON body.
        key = request.query.get("key")
        default_key = utf8(key, "key") if key is not None else None
        default_partition = _int_param(request, "partition", None, 0, 1 << 30)
        ts = _int_param(request, "timestamp_ms", now, 0, TS_MAX)
        assert ts is not None
        if ctype == "application/json":
            items = parse_records(await _json_body(request), ts, default_key, default_partition)
        else:
            items = [(default_partition, RecordIn(ts, default_key, await request.read(), ()))]
        groups: dict[int, list[RecordIn]] = {}
        where: list[tuple[int, int]] = []  # (partition, index in its group) per input record
        for partition, rec in items:
            if partition is None:
                partition = log.partition_for(topic, rec.key)
            elif partition >= n_partitions:
                raise ApiError(404, "partition_not_found", f"topic {topic!r} has partitions 0..{n_partitions - 1}; "
                               f"there is no partition {partition}", topic=topic, partition=partition)
            group = groups.setdefault(partition, [])
            where.append((partition, len(group)))
            group.append(rec)
        limit = log.topic(topic).config.max_record_bytes
        for group in groups.values():  # refuse the whole request before any of it is written
            largest = batch_info(group).largest
            if largest > limit:
                raise ApiError(413, "record_too_large", f"a record of {largest} bytes is over {topic}'s "
                               f"max_record_bytes ({limit})", limit=limit)
        alog = self._alog
        parts = list(groups)
        try:
            bases = await asyncio.wait_for(
                asyncio.gather(*(alog.append_batch(topic, p, groups[p]) for p in parts)), PRODUCE_TIMEOUT_S)
        except TimeoutError:
            raise ApiError(503, "timeout", f"the log did not acknowledge within {PRODUCE_TIMEOUT_S:.0f} s (disk "
                           "full with on_full=block?); some records may have been written: retry (duplicates are "
                           "possible, gaps are not)") from None
        base_of = dict(zip(parts, bases, strict=True))
        self.counters.produced_records(topic, len(items), sum(len(r.value) for _, r in items))
        return web.json_response({"topic": topic, "offsets": [{"partition": p, "offset": base_of[p] + i}
                                                               for p, i in where]})

    # -- fetch ------------------------------------------------------------------------------------------------------

    async def fetch(self, request: web.Request) -> web.Response:
        log = self._log()
        topic = _topic(request)
        partition = _partition(request)
        p = log.partition(topic, partition)
        max_records = _int_param(request, "max_records", 100, 1, MAX_FETCH_RECORDS) or 100
        max_bytes = _int_param(request, "max_bytes", 1 << 20, 1, MAX_FETCH_BYTES) or 1 << 20
        wait_ms = _int_param(request, "wait_ms", 0, 0, MAX_WAIT_MS) or 0
        offset = await self._start_offset(request, log, topic, partition, p)
        if offset == p.high_watermark and wait_ms:
            await self._wait(topic, partition, offset, wait_ms / 1000)
        records = await self._alog.read(topic, partition, offset, max_records=max_records, max_bytes=max_bytes)
        body = {"topic": topic, "partition": partition, "records": [record_json(r) for r in records],
                "next_offset": records[-1].offset + 1 if records else offset,
                "log_start": p.log_start, "high_watermark": p.high_watermark}
        return web.json_response(body)

    async def _start_offset(self, request: web.Request, log: Any, topic: str, partition: int, p: Any) -> int:
        given = [k for k in ("offset", "timestamp_ms", "cursor") if k in request.query]
        if len(given) > 1:
            raise ApiError(400, "invalid_parameter", f"give at most one of offset, timestamp_ms, cursor (got "
                           f"{', '.join(given)})", parameter=given[1])
        if "timestamp_ms" in given:
            ts = _int_param(request, "timestamp_ms", 0, 0, TS_MAX) or 0
            return int(await asyncio.to_thread(log.offset_for_time, topic, partition, ts))
        if "cursor" in given:
            name = request.query["cursor"]
            if not valid_name(name):
                raise ApiError(400, "invalid_parameter", f"cursor={name!r} is not a cursor name", parameter="cursor")
            cur = log.cursors.get(name)
            if cur is None:
                raise ApiError(404, "cursor_not_found", f"no cursor named {name!r}; list them at /v1/cursors",
                               cursor=name)
            pos = cur.get(topic, partition)
            return max(pos.offset, p.log_start) if pos is not None else int(p.log_start)
        offset = _int_param(request, "offset", p.log_start, 0, 1 << 62)
        assert offset is not None
        return offset

    async def _wait(self, topic: str, partition: int, offset: int, timeout: float) -> None:
        """Long poll: until a record at `offset` exists, the timeout passes, or the server shuts down."""
        waiter = asyncio.ensure_future(self._alog.wait_for(topic, partition, offset, timeout))
        stop = asyncio.ensure_future(self.shutdown.wait())
        try:
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stop):
                task.cancel()

    # -- cursors ----------------------------------------------------------------------------------------------------

    def _cursor_name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if not valid_name(name):
            raise ApiError(400, "invalid_parameter", f"{name!r} is not a cursor name (letters, digits, '.', '_', "
                           "'-', up to 200)", parameter="name")
        return name

    async def list_cursors(self, request: web.Request) -> web.Response:
        log = self._log()
        return web.json_response({"cursors": [cursor_json(c) for c in sorted(log.cursors.all(),
                                                                              key=lambda c: c.name)]})

    async def get_cursor(self, request: web.Request) -> web.Response:
        log = self._log()
        name = self._cursor_name(request)
        cur = log.cursors.get(name)
        if cur is None:
            raise ApiError(404, "cursor_not_found", f"no cursor named {name!r}", cursor=name)
        return web.json_response(cursor_json(cur))

    async def put_cursor(self, request: web.Request) -> web.Response:
        log = self._log()
        name = self._cursor_name(request)
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("offsets"), list) or set(body) - {"offsets",
                                                                                                    "required"}:
            raise ApiError(400, "invalid_body", 'expected {"offsets": [{"topic": ..., "partition": ..., '
                                                '"offset": ...}], "required": false} and nothing else')
        required = body.get("required")
        if "required" in body and not isinstance(required, bool):
            raise ApiError(400, "invalid_body", "required must be true or false")
        positions: dict[tuple[str, int], CursorPosition] = {}
        for i, item in enumerate(body["offsets"]):
            topic, partition, offset = parse_position(item, i)
            p = log.partition(topic, partition)
            if not p.log_start <= offset <= p.high_watermark:
                raise ApiError(400, "invalid_body", f"offsets[{i}]: offset {offset} is outside {topic}/{partition} "
                               f"({p.log_start}..{p.high_watermark})")
            positions[(topic, partition)] = CursorPosition(offset, p.log_id.hex(), p.epoch)
        cur = await asyncio.to_thread(log.cursors.commit, name, positions, required=required)
        return web.json_response(cursor_json(cur))

    async def delete_cursor(self, request: web.Request) -> web.Response:
        log = self._log()
        name = self._cursor_name(request)
        if not await asyncio.to_thread(log.cursors.delete, name):
            raise ApiError(404, "cursor_not_found", f"no cursor named {name!r}", cursor=name)
        return web.json_response({"deleted": name})


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def add_routes(app: web.Application, gw: Gateway, counters: ApiCounters) -> None:
    LogRoutes(gw, counters).add_to(app)
