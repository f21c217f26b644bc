"""The HTTP API (aiohttp, in the gateway's event loop): /healthz, /readyz, /metrics.

A bearer token is required on any listener that is not loopback (the config refuses to start otherwise).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import make_registry

if TYPE_CHECKING:
    from .service import Gateway

GATEWAY_KEY: web.AppKey[Any] = web.AppKey("gateway", object)


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    token = request.app["token"]
    if token and request.path not in ("/healthz",):
        got = request.headers.get("Authorization", "")
        if not got.startswith("Bearer ") or not hmac.compare_digest(got[7:].encode(), token.encode()):
            return error(401, "unauthorized", "send 'Authorization: Bearer <token>' (http.token in the config)")
    resp: web.StreamResponse = await handler(request)
    return resp


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gw: Gateway = request.app[GATEWAY_KEY]
    if not gw.ready:
        return web.json_response({"status": "starting" if not gw._stopping else "stopping"}, status=503)
    return web.json_response({"status": "ready", "summary": gw.status_line()})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app["registry"])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(gw: Gateway) -> web.Application:
    app = web.Application(middlewares=[_auth], client_max_size=8 << 20)
    app[GATEWAY_KEY] = gw
    app["registry"] = make_registry(gw)
    app["token"] = gw.config.http.bearer_token()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    # Extensions (mirror, tier) add their own routes: each owns its handlers.
    for ext in (gw.mirror, gw.tierer):
        if ext is not None and hasattr(ext, "register_routes"):
            ext.register_routes(app)
    return app


async def start_http(gw: Gateway) -> tuple[web.AppRunner, int]:
    app = make_app(gw)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, gw.config.http.host, gw.config.http.port, reuse_address=True)
    await site.start()
    server = site._server
    port = gw.config.http.port
    if server is not None and getattr(server, "sockets", None):
        port = int(server.sockets[0].getsockname()[1])
    return runner, port
