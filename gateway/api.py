"""The HTTP API (aiohttp, on the gateway's event loop): health, /metrics, status, the log, extensions.

    GET  /healthz                                       liveness: the loop answers (no token needed)
    GET  /readyz                                        200 once recovery is done, 503 while starting/stopping
    GET  /metrics                                       Prometheus text format (gateway.metrics)
    GET  /openapi.json                                  this API, OpenAPI 3.0 (gateway.openapi)
    GET  /v1/status                                     one-screen health summary (`edgestream status`)
    /v1/topics..., /v1/cursors...                       topics, partitions, produce, fetch, cursors (gateway.api_log)
    extensions                                          the mirror and the tier register their own routes
                                                        (`register_routes(app)`) and OpenAPI paths
                                                        (`openapi_paths()`)

A bearer token is required on any listener that is not loopback (the config refuses to start otherwise, and
`start_http` checks again); when a token is set it is required everywhere but /healthz and /readyz. Every error is
a JSON body `{"error": "<code>", "message": "<what to do>"}` with a 4xx status for anything the client can fix:
aiohttp's own 404/405/413 responses are rewritten into that shape too.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import platform
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..store.errors import (
    DiskFullError,
    InvalidConfigError,
    LogBrokenError,
    LogClosedError,
    OffsetOutOfRangeError,
    PartitionNotFoundError,
    RecordTooLargeError,
    StoreError,
    TopicNotFoundError,
)
from . import api_log, openapi
from .api_codec import ApiError
from .errors import GatewayError
from .metrics import make_registry, rss_bytes
from .version import version

if TYPE_CHECKING:
    from .service import Gateway

log = logging.getLogger("edgestream.gateway.api")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
MAX_BODY = 8 << 20  # a produce request: many records of up to max_record_bytes (1 MiB by default)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


class ApiCounters:
    """Requests by route pattern, method and status; records produced by topic. Read by gateway.metrics."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, str], int] = {}
        self._produced: dict[str, list[int]] = {}

    def request(self, route: str, method: str, status: int) -> None:
        k = (route, method, str(status))
        self._requests[k] = self._requests.get(k, 0) + 1

    def produced_records(self, topic: str, records: int, nbytes: int) -> None:
        entry = self._produced.setdefault(topic, [0, 0])
        entry[0] += records
        entry[1] += nbytes

    def request_counts(self) -> list[tuple[str, str, str, int]]:
        return [(*k, n) for k, n in sorted(self._requests.items())]

    def produced(self) -> list[tuple[str, int, int]]:
        return [(t, n, b) for t, (n, b) in sorted(self._produced.items())]


GATEWAY_KEY: web.AppKey[Any] = web.AppKey("gateway", object)
REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
TOKEN_KEY: web.AppKey[str] = web.AppKey("token", str)
COUNTERS_KEY: web.AppKey[ApiCounters] = web.AppKey("counters", ApiCounters)
OPENAPI_KEY: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
QUERY_KEY: web.AppKey[dict[tuple[str, str], frozenset[str]]] = web.AppKey("query_params", dict)


# -- middlewares ---------------------------------------------------------------------------------------------------

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type"}


def _store_error(exc: StoreError) -> ApiError:
    """Store errors a client can cause, as 4xx; the rest (disk full, closed, broken) as 503 with a hint."""
    if isinstance(exc, TopicNotFoundError):
        return ApiError(404, "topic_not_found", str(exc), topic=exc.topic)
    if isinstance(exc, PartitionNotFoundError):
        return ApiError(404, "partition_not_found", str(exc), topic=exc.topic, partition=exc.partition)
    if isinstance(exc, OffsetOutOfRangeError):
        return ApiError(416, "offset_out_of_range", str(exc), log_start=exc.start, high_watermark=exc.end)
    if isinstance(exc, RecordTooLargeError):
        return ApiError(413, "record_too_large", str(exc), limit=exc.limit)
    if isinstance(exc, InvalidConfigError):
        return ApiError(400, "invalid_parameter", str(exc), parameter=exc.key)
    if isinstance(exc, DiskFullError):
        return ApiError(503, "disk_full", str(exc))
    if isinstance(exc, LogClosedError | LogBrokenError):
        return ApiError(503, "log_unavailable", str(exc))
    return ApiError(500, "store_error", str(exc))


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON bodies for every error, and the request counter (by route pattern: bounded cardinality)."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        resp = await handler(request)
    except (ApiError, StoreError) as exc:
        e = exc if isinstance(exc, ApiError) else _store_error(exc)
        resp = error(e.status, e.code, str(e), **e.extra)
        if e.status == 503:
            resp.headers["Retry-After"] = "5"
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = {404: f"no such path: {request.path}; see /openapi.json",
                   405: f"{request.method} is not allowed on {request.path}; allowed: "
                        f"{', '.join(sorted(getattr(exc, 'allowed_methods', ()) or ()))}",
                   413: f"request body over {MAX_BODY} bytes; send fewer records per request"}.get(exc.status,
                                                                                                  exc.reason)
        resp = error(exc.status, code, message)
        for name in ("Allow",):
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception:
        log.exception("HTTP %s %s failed", request.method, request.path)
        resp = error(500, "internal_error", "the gateway failed to answer; the details are in its log")
    counters = request.app.get(COUNTERS_KEY)
    if counters is not None:
        counters.request(route, request.method, resp.status)
    return resp


@web.middleware
async def _known_query(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A query parameter the operation does not document is refused: `?ofset=5` must not silently read from 0."""
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else ""
    allowed = request.app[QUERY_KEY].get((path, request.method))
    if allowed is not None:
        unknown = sorted(set(request.query) - allowed)
        if unknown:
            raise ApiError(400, "invalid_parameter", f"unknown query parameter {unknown[0]!r} for {request.method} "
                           f"{path}; allowed: {', '.join(sorted(allowed)) or 'none'}", parameter=unknown[0])
    return await handler(request)


def query_params(doc: dict[str, Any]) -> dict[tuple[str, str], frozenset[str]]:
    """(path, METHOD) -> the query parameters the OpenAPI document lists for that operation."""
    out = {}
    for path, item in doc.get("paths", {}).items():
        shared = [p for p in item.get("parameters", []) if isinstance(p, dict)]
        for method, op in item.items():
            if not isinstance(op, dict) or method == "parameters":
                continue
            params = [*shared, *(p for p in op.get("parameters", []) if isinstance(p, dict))]
            out[(path, method.upper())] = frozenset(str(p.get("name")) for p in params if p.get("in") == "query")
    return out


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[TOKEN_KEY]
    if token and request.path not in OPEN_PATHS and not authorized(request):
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>' ([http] token or token_file in "
                                            "the gateway's config)")
    return await handler(request)


def authorized(request: web.Request) -> bool:
    token = request.app[TOKEN_KEY]
    if not token:
        return True
    got = request.headers.get("Authorization", "")
    return got.startswith("Bearer ") and hmac.compare_digest(got[7:].encode(), token.encode())


# -- health, metrics, status --------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gw: Gateway = request.app[GATEWAY_KEY]
    if not gw.ready:
        state = "stopping" if getattr(gw, "_stopping", False) else "starting"
        return web.json_response({"status": state}, status=503, headers={"Retry-After": "1"})
    body: dict[str, Any] = {"status": "ready"}
    if authorized(request):  # the summary tells record counts and disk space: only to those with the token
        body["summary"] = gw.status_line()
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_KEY])


async def status(request: web.Request) -> web.Response:
    gw: Gateway = request.app[GATEWAY_KEY]
    return web.json_response(status_document(gw))


def status_document(gw: Gateway) -> dict[str, Any]:
    """Everything `edgestream status` shows, from the same statistics /metrics reads."""
    doc: dict[str, Any] = {
        "gateway": gw.gateway_id,
        "version": version(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "pid": os.getpid(),
        "ready": bool(gw.ready),
        "started_at": gw.started_at,
        "uptime_seconds": max(0.0, time.time() - gw.started_at),
        "summary": gw.status_line(),
        "process": {"rss_bytes": rss_bytes(), "cpu_seconds": sum(os.times()[:2])},
        "tier_available": bool(gw.tier_available),
        "reloads": gw.reloads,
        "reload_errors": gw.reload_errors,
    }
    heartbeat = getattr(gw, "heartbeat", None)
    hb = heartbeat.statistics() if heartbeat is not None else None
    doc["watchdog"] = {"interval_seconds": hb.watchdog_interval_seconds if hb else 0.0,
                       "pings": getattr(gw.notifier, "watchdog_pings", 0),
                       "loop_lag_max_seconds": hb.max_lag_seconds if hb else 0.0}
    doc.update(api_log.log_status(gw))
    for name, ext in (("mirror", gw.mirror), ("tier", gw.tierer)):
        doc[name] = ext.status() if ext is not None and hasattr(ext, "status") else None
    return doc


# -- the application ------------------------------------------------------------------------------------------------


def make_app(gw: Gateway) -> web.Application:
    app = web.Application(middlewares=[_errors, _auth, _known_query], client_max_size=MAX_BODY)
    counters = ApiCounters()
    app[GATEWAY_KEY] = gw
    app[COUNTERS_KEY] = counters
    app[REGISTRY_KEY] = make_registry(gw, counters)
    app[TOKEN_KEY] = gw.config.http.bearer_token()
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_get("/openapi.json", openapi_json, allow_head=False)
    app.router.add_get("/v1/status", status, allow_head=False)
    api_log.add_routes(app, gw, counters)
    # Extensions (mirror, tier) add their own routes and describe them: each owns its handlers.
    extra_paths: dict[str, Any] = {}
    for ext in (gw.mirror, gw.tierer):
        if ext is None:
            continue
        if hasattr(ext, "register_routes"):
            ext.register_routes(app)
        if hasattr(ext, "openapi_paths"):
            extra_paths.update(ext.openapi_paths())
    # One a config reload may add later: its routes exist from the start and answer 404 until then (they are
    # listed in /openapi.json from the next start).
    if gw.mirror is None:
        from .mirror import api as mirror_api

        mirror_api.register(app, lambda: gw.mirror)
    if gw.tierer is None and gw.tier_available:
        from .tiering import register_late_routes

        register_late_routes(app, lambda: gw.tierer)
    app[OPENAPI_KEY] = openapi.document(extra_paths, token=bool(app[TOKEN_KEY]))
    app[QUERY_KEY] = query_params(app[OPENAPI_KEY])
    app.on_shutdown.append(api_log.wake_long_polls)
    return app


async def start_http(gw: Gateway) -> tuple[web.AppRunner, int]:
    http = gw.config.http
    if not http.loopback and not http.bearer_token():
        raise GatewayError(f"[http] listen = {http.listen} is not loopback: set [http] token or token_file")
    app = make_app(gw)
    # Long polls are woken at shutdown (on_shutdown), so a short grace period is enough.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, http.host, http.port, reuse_address=True)
    await site.start()
    sockets = getattr(site._server, "sockets", None)
    port = int(sockets[0].getsockname()[1]) if sockets else http.port
    return runner, port
