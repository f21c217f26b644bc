"""The cold tier inside the gateway: the `[tier]` config section, the background tierer thread, its metrics, and
the HTTP routes `POST /query` (read-only SQL over hot + cold) and `GET /tier/status`.

    [tier]
    enabled = true                  # an empty [tier] table turns nothing on
    topics = ["telemetry"]          # default: every topic
    interval_s = 30                 # how often to look for newly sealed segments
    cpu_share = 0.5                 # the tierer paces itself to at most this much of one core
    row_group_rows = 131072
    compression_level = 3           # zstd, all columns but the raw payload
    value_compression_level = 1     # zstd, the raw payload column (most of the bytes)
    retention_ms = 7776000000       # cold retention by age (newest record of a file); default: keep
    retention_bytes = 10737418240   # cold retention by size, per topic; default: no limit
    compact = true                  # merge a closed day's small files
    compact_small_bytes = 4194304
    query_memory_limit = "256MB"    # DuckDB's limit for `POST /query` and `edgestream query`
    query_threads = 2
    query_timeout_s = 30            # POST /query only
    query_max_rows = 10000          # POST /query only: larger results are cut (`truncated: true`)
    [tier.topic_retention.telemetry]
    retention_ms = 31536000000

This module imports without pyarrow/duckdb (config checks and `edgestream tier status` use it everywhere); the
tier itself is imported when it starts. The service starts it only when the extra is installed.

SIGHUP (`reload_tierer`): a `[tier]` section that appeared starts the tierer, one that is gone (or `enabled = false`)
stops it, one that changed (or a topic's decoder that changed) restarts it; an unchanged one is left alone. A stop
lets the running pass end at its next check (a half-built file is removed, the next pass builds it again), so
nothing is tiered twice or skipped: the manifest says what is done.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from ..edge.decoders import decoder_for
from ..store.errors import StoreError
from ..store.tier.manifest import DecoderSpec, TopicDecoder
from .config import GatewayConfig
from .errors import ConfigFileError, GatewayError

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client.core import Metric

    from ..store import Log
    from ..store.tier.query import QuerySettings
    from ..store.tier.tierer import Tierer, TierSettings
    from .service import Gateway

log = logging.getLogger("edgestream.gateway.tier")


class RetentionSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    retention_ms: int | None = None
    retention_bytes: int | None = None


class TierConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True
    topics: list[str] | None = None
    interval_s: float = 30.0
    cpu_share: float = 0.5
    row_group_rows: int = 131_072
    compression_level: int = 3
    value_compression_level: int = 1
    retention_ms: int | None = None
    retention_bytes: int | None = None
    topic_retention: dict[str, RetentionSpec] = {}
    compact: bool = True
    compact_small_bytes: int = 4 << 20
    query_memory_limit: str = "256MB"
    query_threads: int = 2
    query_timeout_s: float = 30.0
    query_max_rows: int = 10_000

    def __post_init__(self) -> None:
        checks = [
            ("interval_s", 0.1 <= self.interval_s <= 86_400, "0.1 to 86400 seconds"),
            ("cpu_share", 0.01 <= self.cpu_share <= 1.0, "0.01 to 1.0"),
            ("row_group_rows", 1024 <= self.row_group_rows <= 4_194_304, "1024 to 4194304"),
            ("compression_level", 1 <= self.compression_level <= 22, "1 to 22"),
            ("value_compression_level", 1 <= self.value_compression_level <= 22, "1 to 22"),
            ("query_threads", 1 <= self.query_threads <= 64, "1 to 64"),
            ("query_max_rows", 1 <= self.query_max_rows <= 10_000_000, "1 to 10000000"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise ValueError(f"tier.{key}: {getattr(self, key)!r} is not allowed; expected {allowed}")


def parse_config(config: GatewayConfig) -> TierConfig:
    try:
        return msgspec.convert(config.tier, TierConfig)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigFileError(config.path, [("tier", str(exc))]) from None


def make_decoder(spec: DecoderSpec) -> TopicDecoder:
    """edge.decoders for a manifest's DecoderSpec (the store cannot import edge/)."""
    return TopicDecoder(spec, decoder_for(spec.kind, csv_columns=spec.csv_columns, csv_delimiter=spec.csv_delimiter))


def decoder_specs(config: GatewayConfig) -> tuple[tuple[str, str, tuple[str, ...], str], ...]:
    """What the tierer's decoders are made from, comparable: a reload restarts the tierer when it changes."""
    return tuple((t.name, t.decoder, tuple(t.csv_columns), t.csv_delimiter) for t in config.topics)


def decoders(config: GatewayConfig | None) -> dict[str, TopicDecoder]:
    """Each configured topic's decoder; their dead-letter topics stay raw."""
    if config is None:
        return {}
    return {t.name: make_decoder(DecoderSpec(t.decoder, tuple(t.csv_columns), t.csv_delimiter)) for t in config.topics}


def tier_settings(cfg: TierConfig, *, threads: bool = False) -> TierSettings:
    from ..store.tier.coldplan import ColdRetention
    from ..store.tier.parquet import ParquetOptions
    from ..store.tier.tierer import TierSettings

    return TierSettings(
        topics=tuple(cfg.topics) if cfg.topics is not None else None,
        parquet=ParquetOptions(cfg.row_group_rows, cfg.compression_level, cfg.value_compression_level),
        retention=ColdRetention(cfg.retention_ms, cfg.retention_bytes),
        topic_retention={k: ColdRetention(v.retention_ms, v.retention_bytes) for k, v in cfg.topic_retention.items()},
        compact=cfg.compact,
        compact_small_bytes=cfg.compact_small_bytes,
        cpu_share=cfg.cpu_share,
        threads=threads,
    )


def query_settings(cfg: TierConfig, **overrides: Any) -> QuerySettings:
    from ..store.tier.query import QuerySettings

    return QuerySettings(memory_limit=overrides.get("memory_limit") or cfg.query_memory_limit,
                         threads=overrides.get("threads") or cfg.query_threads,
                         hot=overrides.get("hot", True))


# -- rendering query results ---------------------------------------------------------------------------------------


def json_value(v: Any) -> Any:
    """A query result value as JSON: bytes as UTF-8 text (or {"base64": ...}), times as ISO 8601 (UTC)."""
    if isinstance(v, bytes | bytearray | memoryview):
        data = bytes(v)
        try:
            return data.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(data).decode()}
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        spec = "milliseconds" if v.microsecond % 1000 == 0 else "microseconds"
        return v.astimezone(dt.UTC).isoformat(timespec=spec).replace("+00:00", "Z")
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_value(x) for x in v]
    if isinstance(v, float) and v != v:
        return None
    return v


# -- the service ---------------------------------------------------------------------------------------------------


class TierStillRunningError(GatewayError):
    """The previous tierer thread has not ended (a pass that does not reach a stop check): no second one may run."""

    retriable = True


class TierService:
    """The tierer on its own thread, plus what the gateway's API and /metrics read from it. A config reload stops
    and starts the thread (`restart`); the object stays, so the HTTP routes bound to it at start keep answering."""

    def __init__(self, gw: Gateway, cfg: TierConfig) -> None:
        self.gw = gw
        self.cfg = cfg
        self.decoders = decoders(gw.config)
        self.decoder_specs = decoder_specs(gw.config)
        self.tierer: Tierer | None = None  # None while stopped
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._query_gate = asyncio.Semaphore(1)  # one DuckDB query at a time: memory on a Pi
        self.queries: dict[str, int] = {"ok": 0, "refused": 0, "failed": 0}

    @property
    def running(self) -> bool:
        return self.tierer is not None

    async def start(self) -> TierService:
        from ..store.tier.tierer import Tierer

        assert self.gw.log is not None
        if self._thread is not None and self._thread.is_alive():
            raise TierStillRunningError("the previous tiering thread has not stopped yet (a long pass); reload "
                                        "again later, or restart the service")
        tierer = Tierer(self.gw.log, self.decoders, tier_settings(self.cfg), sleep=self._pause)
        await asyncio.to_thread(tierer.open)
        self.tierer = tierer
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name="edgestream-tier", daemon=True)
        self._thread.start()
        log.info("tier: tiering %s every %.0f s into %s", ", ".join(self.cfg.topics or ["every topic"]),
                 self.cfg.interval_s, tierer.root)
        return self

    def _pause(self, seconds: float) -> None:
        if self.tierer is not None:
            self.tierer.stopping.wait(seconds)

    def _run(self) -> None:
        _lower_thread_priority()
        tierer = self.tierer
        assert tierer is not None
        while not tierer.stopping.is_set():
            try:
                tierer.run_once()
            except Exception as exc:  # a failed pass is counted, logged and retried at the next interval
                tierer.record_error(exc)
                log.exception("tier: pass failed (retrying in %.0f s): %s", self.cfg.interval_s, exc)
            self._wake.wait(self.cfg.interval_s)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        tierer = self.tierer
        if tierer is None:
            return
        tierer.stopping.set()
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
            if self._thread.is_alive():
                log.error("tier: the tiering thread did not stop within 30 s; its files are checked at the next start")
        tierer.close()
        self.tierer = None

    async def restart(self, cfg: TierConfig) -> TierService:
        """A config reload: stop the thread (the pass ends at its next stop check), start one with `cfg` and the
        topics' decoders as the gateway's config has them now."""
        await self.stop()
        self.cfg = cfg
        self.decoders = decoders(self.gw.config)
        self.decoder_specs = decoder_specs(self.gw.config)
        return await self.start()

    # -- status and metrics -----------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        if self.tierer is None:  # stopped by a reload; these routes stay bound to this object
            return {"enabled": False}
        st = self.tierer.statistics()
        return {
            "enabled": True,
            "files": st.files,
            "bytes": st.tier_bytes,
            "topics": {t: {"bytes": b} for t, b in st.topic_bytes},
            "segments_tiered": st.segments_tiered,
            "rows_tiered": st.rows_tiered,
            "decode_errors": st.decode_errors,
            "skipped_offsets": st.skipped_offsets,
            "compactions": st.compactions,
            "retention_deleted_files": st.retention_deleted_files,
            "passes": st.passes,
            "errors": st.errors,
            "last_error": st.last_error,
            "last_pass": st.last_pass_ms / 1000 if st.last_pass_ms else None,
            "conflicts": list(st.conflicts),
            "backlog": [{"topic": b.topic, "partition": b.partition, "tiered_upto": b.tiered_upto,
                         "high_watermark": b.high_watermark, "segments": b.segments, "bytes": b.bytes,
                         "records": b.records} for b in st.backlog],
        }

    def status_fragment(self) -> str:
        if self.tierer is None:
            return "tier stopped"
        st = self.tierer.statistics()
        return f"tier {st.files} files, backlog {sum(b.segments for b in st.backlog)} segments"

    def collect_metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self.tierer is None:
            return
        st = self.tierer.statistics()
        counters = [
            ("segments", "Sealed segments written to the cold tier.", st.segments_tiered),
            ("written_bytes", "Parquet bytes written by tiering.", st.bytes_written),
            ("payload_bytes", "Raw payload bytes of the rows tiered.", st.payload_bytes_read),
            ("decode_errors", "Rows tiered whose payload the topic's decoder refused (kept raw).", st.decode_errors),
            ("skipped_offsets", "Offsets gone from the hot log before they could be tiered.", st.skipped_offsets),
            ("retention_deleted_files", "Tier files deleted by cold retention.", st.retention_deleted_files),
            ("retention_deleted_bytes", "Tier bytes deleted by cold retention.", st.retention_deleted_bytes),
            ("compactions", "Merges of a day's small tier files.", st.compactions),
            ("passes", "Tiering passes.", st.passes),
            ("errors", "Tiering passes that failed (see the log).", st.errors),
            ("busy_seconds", "Wall time spent in tiering passes.", st.busy_seconds),
        ]
        for name, doc, value in counters:
            yield CounterMetricFamily(f"edgestream_tier_{name}_total", doc, value=value)
        rows = CounterMetricFamily("edgestream_tier_rows_total", "Rows written to the cold tier.", labels=["topic"])
        for topic, n in st.topic_rows:
            rows.add_metric([topic], n)
        yield rows
        size = GaugeMetricFamily("edgestream_tier_bytes", "Size of the cold tier.", labels=["topic"])
        for topic, n in st.topic_bytes:
            size.add_metric([topic], n)
        yield size
        yield GaugeMetricFamily("edgestream_tier_files", "Parquet files in the cold tier.", value=st.files)
        yield GaugeMetricFamily("edgestream_tier_last_pass_timestamp_seconds", "When the last tiering pass ended.",
                                value=st.last_pass_ms / 1000)
        yield GaugeMetricFamily("edgestream_tier_conflicts", "Partitions not tiered because the tier holds an "
                                "earlier incarnation of them.", value=len(st.conflicts))
        families = {
            "segments": GaugeMetricFamily("edgestream_tier_backlog_segments", "Sealed segments not tiered yet.",
                                          labels=["topic", "partition"]),
            "bytes": GaugeMetricFamily("edgestream_tier_backlog_bytes", "Bytes of sealed segments not tiered yet.",
                                       labels=["topic", "partition"]),
            "records": GaugeMetricFamily("edgestream_tier_backlog_records", "Records of sealed segments not tiered "
                                         "yet.", labels=["topic", "partition"]),
        }
        for b in st.backlog:
            for attr, fam in families.items():
                fam.add_metric([b.topic, str(b.partition)], getattr(b, attr))
        yield from families.values()
        q = CounterMetricFamily("edgestream_queries_total", "SQL queries through the HTTP API by result.",
                                labels=["result"])
        for result, n in self.queries.items():
            q.add_metric([result], n)
        yield q

    # -- HTTP --------------------------------------------------------------------------------------------------------

    def register_routes(self, app: web.Application) -> None:
        for prefix in ("", "/v1"):
            app.router.add_post(f"{prefix}/query", self._query)
            app.router.add_get(f"{prefix}/tier/status", self._status, allow_head=False)

    def openapi_paths(self) -> dict[str, Any]:
        return {
            "/query": {"post": {
                "summary": "Run one read-only SQL statement over the topics (hot log + cold tier, DuckDB).",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["sql"],
                    "properties": {"sql": {"type": "string"}, "max_rows": {"type": "integer"}}}}}},
                "responses": {"200": {"description": "columns, rows, truncated"},
                              "400": {"description": "query refused (not read-only) or failed"}}}},
            "/tier/status": {"get": {"summary": "Cold tier: files, size, backlog, errors.",
                                     "responses": {"200": {"description": "tier status"}}}},
        }

    async def _status(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response(await asyncio.to_thread(self.status))

    async def _query(self, request: web.Request) -> web.Response:
        from aiohttp import web

        from ..store.tier.errors import QueryFailedError, QueryRefusedError
        from .api import error

        try:
            body = await request.json()
        except ValueError:
            return error(400, "bad_request", 'send JSON: {"sql": "SELECT ..."}')
        sql = body.get("sql") if isinstance(body, dict) else None
        if not isinstance(sql, str) or not sql.strip():
            return error(400, "bad_request", 'send JSON: {"sql": "SELECT ..."}')
        max_rows = body.get("max_rows", self.cfg.query_max_rows)
        if not isinstance(max_rows, int) or not 1 <= max_rows <= self.cfg.query_max_rows:
            return error(400, "bad_request", f"max_rows must be 1..{self.cfg.query_max_rows}")
        async with self._query_gate:
            try:
                result = await asyncio.to_thread(self._run_query, sql, max_rows)
            except QueryRefusedError as exc:
                self.queries["refused"] += 1
                return error(400, "query_refused", str(exc))
            except QueryFailedError as exc:
                self.queries["failed"] += 1
                return error(400, "query_failed", str(exc), kind=exc.kind)
        self.queries["ok"] += 1
        return web.json_response(result)

    def _run_query(self, sql: str, max_rows: int) -> dict[str, Any]:
        from ..store.tier.query import QuerySession, run_query

        gw_log: Log | None = self.gw.log
        assert gw_log is not None
        settings = query_settings(self.cfg)

        def open_session() -> QuerySession:
            return QuerySession(gw_log, decoders=self.decoders, decoder_factory=make_decoder,
                                settings=settings).open()

        t0 = time.monotonic()
        session, schema, batches = run_query(open_session, sql, timeout=self.cfg.query_timeout_s)
        rows: list[list[Any]] = []
        truncated = False
        try:
            for batch in batches:
                cols = batch.to_pydict()
                for i in range(batch.num_rows):
                    if len(rows) >= max_rows:
                        truncated = True
                        break
                    rows.append([json_value(cols[name][i]) for name in schema.names])
                if truncated:
                    break
        finally:
            session.close()
        return {"columns": [{"name": f.name, "type": str(f.type)} for f in schema], "rows": rows,
                "row_count": len(rows), "truncated": truncated, "seconds": round(time.monotonic() - t0, 4)}


def _lower_thread_priority() -> None:
    """Nice only this thread (Linux: setpriority on the thread id); `os.nice` would slow the whole gateway."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def register_late_routes(app: web.Application, current: Callable[[], TierService | None]) -> None:
    """The tier's routes on a gateway that started without `[tier]`: a reload may add it after the HTTP server
    started (aiohttp's routes are fixed by then). 404 `no_tier` until then, the service's own handlers after."""
    from .api import error

    def handler(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def delegate(request: web.Request) -> web.StreamResponse:
            service = current()
            if service is None:
                return error(404, "no_tier", "no [tier] section is configured: add one and reload (SIGHUP)")
            method: Callable[[web.Request], Awaitable[web.StreamResponse]] = getattr(service, name)
            return await method(request)
        return delegate

    for prefix in ("", "/v1"):
        app.router.add_post(f"{prefix}/query", handler("_query"))
        app.router.add_get(f"{prefix}/tier/status", handler("_status"), allow_head=False)


async def start_tierer(gw: Gateway) -> TierService | None:
    cfg = parse_config(gw.config)
    if not cfg.enabled:
        log.info("tier: [tier] enabled = false; not tiering")
        return None
    return await TierService(gw, cfg).start()


async def reload_tierer(gw: Gateway, service: TierService | None) -> tuple[TierService | None, str, str]:
    """SIGHUP: apply `gw.config.tier` to `service` (the running one, or the one an earlier reload stopped: the
    HTTP routes were bound to it at start) or to a new one. Returns the service that tiers now (None: none), what
    was done for the log line ("" when there is no tier either way) and what failed ("" when nothing did).

    The new section is checked before anything stops: one that cannot be used leaves the running tierer as it is."""
    running = service if service is not None and service.running else None
    cfg: TierConfig | None = None
    if gw.config.tier and gw.tier_available:
        try:
            cfg = parse_config(gw.config)
        except ConfigFileError as exc:
            keeps = "the running tierer keeps its settings" if running else "not tiering"
            return running, "", f"[tier] not applied ({keeps}): {exc}"
        if not cfg.enabled:
            cfg = None
    if cfg is None:
        if running is None:
            return None, "", ""
        await running.stop()
        log.info("tier: stopped by a config reload")
        return None, "tier stopped", ""
    if running is not None and running.cfg == cfg and running.decoder_specs == decoder_specs(gw.config):
        return running, "tier unchanged", ""
    if running is not None:
        fields = [f for f in TierConfig.__struct_fields__ if getattr(running.cfg, f) != getattr(cfg, f)]
        if running.decoder_specs != decoder_specs(gw.config):
            fields.append("decoders")
        what = f"tier restarted ({', '.join(fields)})"
    else:
        what = "tier started"
    svc = service or TierService(gw, cfg)
    try:
        await svc.restart(cfg)
    except Exception as exc:  # reported and counted by the gateway; ingestion and the mirror go on
        expected = isinstance(exc, GatewayError | StoreError | OSError)
        log.error("tier: could not start: %s", exc, exc_info=not expected)
        return None, "", f"tier is NOT running: {exc}"
    return svc, what, ""
