"""The mirror over HTTP (mounted by gateway.api through `Mirror.register_routes`):

    GET  /v1/mirror/status      every target: state, lag per partition, errors (`edgestream mirror status`)
    POST /v1/mirror/pause       {"target": "central"} or {} for all: stop sending; ingestion goes on
    POST /v1/mirror/resume      {"target": "central"} or {} for all
    POST /v1/mirror/reset       {"topic": "t", "partition": 0, "to_offset": 0 | "to_time": "2026-11-27T08:00:00Z",
                                 "target": "central"}: move cursors, persisted before the answer

The same routes answer under /mirror/... too. Errors are `{"error": code, "message": ...}` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ...store.errors import StoreError
from .errors import ResetError
from .reset import ResetRequest

if TYPE_CHECKING:
    from .mirror import Mirror

PREFIXES = ("/v1/mirror", "/mirror")
_COMMAND_TIMEOUT_S = 30.0


def register(app: web.Application, current: Callable[[], Mirror | None]) -> None:
    """The routes, answering for `current()`: the gateway's mirror, which a config reload may add after the HTTP
    server started (aiohttp's routes are fixed by then); 404 `no_mirror` while there is none."""
    from ..api import error  # the API module imports extensions lazily too: no cycle at import time

    def mirror_now() -> Mirror:
        mirror = current()
        if mirror is None:
            raise ResetError("no [mirror] section is configured: add one and reload (SIGHUP)", code="no_mirror")
        return mirror

    async def body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ResetError(f"the body is not JSON: {exc}", code="bad_request") from None

    def targets_of(doc: Any) -> list[Any]:
        name = doc.get("target") if isinstance(doc, dict) else None
        mirror = mirror_now()
        if name is None:
            return list(mirror.targets)
        found = [t for t in mirror.targets if t.name == name]
        if not found:
            raise ResetError(f"no mirror target {name!r}; targets: {', '.join(t.name for t in mirror.targets)}",
                             code="unknown_target")
        return found

    async def run(targets: list[Any], make: Any) -> list[Any]:
        futures = [asyncio.wrap_future(t.call(make(t))) for t in targets]
        return list(await asyncio.wait_for(asyncio.gather(*futures), _COMMAND_TIMEOUT_S))

    def failure(exc: Exception) -> web.Response:
        if isinstance(exc, ResetError):
            status = {"unknown_target": 404, "not_mirrored": 404, "no_mirror": 404,
                      "offset_out_of_range": 416}.get(exc.code, 400)
            return error(status, exc.code, str(exc))
        if isinstance(exc, TimeoutError):
            return error(503, "mirror_busy", "the mirror thread did not answer within 30 s; see the gateway's log")
        return error(400 if isinstance(exc, StoreError) else 500, "mirror_error", str(exc))

    async def status(request: web.Request) -> web.Response:
        try:
            return web.json_response(mirror_now().status())
        except ResetError as exc:
            return failure(exc)

    def switch(action: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        """POST pause / resume: the target's method of that name, on its own thread, for the targets asked."""
        async def handler(request: web.Request) -> web.Response:
            try:
                targets = targets_of(await body(request))
                done = await run(targets, lambda t: getattr(t, action))
            except (ResetError, StoreError, TimeoutError) as exc:
                return failure(exc)
            return web.json_response({"targets": done})
        return handler

    pause, resume = switch("pause"), switch("resume")

    async def reset(request: web.Request) -> web.Response:
        try:
            req = ResetRequest.from_json(await body(request))
            targets = targets_of({"target": req.target})
            targets = [t for t in targets if any(m.topic == req.topic for m in t.settings.topics)]
            if not targets:
                raise ResetError(f"no mirror target mirrors topic {req.topic!r}", code="not_mirrored")
            results = await run(targets, lambda t: (lambda: t.reset(req)))
        except (ResetError, StoreError, TimeoutError) as exc:
            return failure(exc)
        return web.json_response({"changes": [c for r in results for c in r]})

    for prefix in PREFIXES:
        app.router.add_get(f"{prefix}/status", status, allow_head=False)
        app.router.add_post(f"{prefix}/pause", pause)
        app.router.add_post(f"{prefix}/resume", resume)
        app.router.add_post(f"{prefix}/reset", reset)


def openapi_paths() -> dict[str, Any]:
    target_body = {"content": {"application/json": {"schema": {
        "type": "object", "properties": {"target": {"type": "string", "description": "all targets if absent"}}}}}}
    ok = {"200": {"description": "what changed", "content": {"application/json": {"schema": {"type": "object"}}}}}
    return {
        "/v1/mirror/status": {"get": {"summary": "Mirror targets: state, lag per partition (records, bytes, "
                                                 "seconds), drain rate, ETA, errors", "responses": ok}},
        "/v1/mirror/pause": {"post": {"summary": "Stop sending to a target (or all); ingestion goes on",
                                      "requestBody": target_body, "responses": ok}},
        "/v1/mirror/resume": {"post": {"summary": "Send again", "requestBody": target_body, "responses": ok}},
        "/v1/mirror/reset": {"post": {
            "summary": "Move mirror cursors to an offset or a time (persisted before the answer)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["topic"], "properties": {
                    "topic": {"type": "string"}, "partition": {"type": "integer", "minimum": 0},
                    "to_offset": {"type": "integer", "minimum": 0},
                    "to_time": {"type": "string", "description": "ISO 8601, or epoch milliseconds"},
                    "target": {"type": "string"}}}}}},
            "responses": {**ok, "400": {"description": "bad request"}, "404": {"description": "unknown target or "
                                                                                           "topic not mirrored"},
                          "416": {"description": "offset outside the log"}}}},
    }
