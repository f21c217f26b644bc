"""The upstream mirror as the gateway sees it: `start_mirror(gateway)` validates `[mirror]`, opens every target's
cursor against the recovered log (clamping what must be clamped) and starts one thread per target.

The object it returns is what the rest of the gateway calls:
- `await stop()`: each target waits up to `stop_flush_s` for in-flight confirmations, persists its acked prefix and
  closes its producer;
- `collect_metrics()` for /metrics, `status()` for /v1/status and `GET /v1/mirror/status`, `status_fragment()` for
  systemd's STATUS= line, `register_routes(app)` and `openapi_paths()` for the HTTP API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.core import Metric

from ...store import Log
from . import api, metrics
from .errors import MirrorUnavailableError
from .producer import UpstreamProducer
from .settings import MirrorSettings, TargetSettings, parse
from .stats import TargetStatus
from .target import TargetMirror

if TYPE_CHECKING:
    from ..service import Gateway

log = logging.getLogger("edgestream.mirror")


class Mirror:
    def __init__(self, settings: MirrorSettings, targets: list[TargetMirror]) -> None:
        self.settings = settings
        self.targets = targets

    @classmethod
    def create(cls, settings: MirrorSettings, log_: Log, *, gateway_id: str,
               dead_letters: dict[str, str] | None = None,
               producer_factory: Callable[[TargetSettings], UpstreamProducer] | None = None) -> Mirror:
        """Targets for the enabled entries of `settings` (not opened, not started)."""
        targets = []
        for t in settings.targets:
            if not t.enabled:
                log.info("mirror %s: disabled in the config", t.name)
                continue
            factory = None
            if producer_factory is not None:
                factory = (lambda ts: lambda: producer_factory(ts))(t)
            targets.append(TargetMirror(t, settings, log_, gateway_id=gateway_id, dead_letters=dead_letters,
                                        producer_factory=factory))
        return cls(settings, targets)

    def open_and_start(self) -> None:
        """Open every target's cursor (step 6 of the commit protocol) and start its thread."""
        for t in self.targets:
            t.open()
        for t in self.targets:
            t.start()

    async def stop(self) -> None:
        flush = self.settings.stop_flush_s
        for t in self.targets:
            t.request_stop(flush)

        def join_all() -> bool:
            return all(t.join(flush + 10) for t in self.targets)

        if not await asyncio.to_thread(join_all):
            log.error("mirror: a target thread did not stop in time; its cursor was persisted up to its last "
                      "persist (a restart re-sends from there)")

    # -- what the gateway reads ----------------------------------------------------------------------------------

    def statuses(self) -> list[TargetStatus]:
        return [t.status() for t in self.targets]

    def status(self) -> dict[str, Any]:
        return {"targets": [s.to_json() for s in self.statuses()]}

    def collect_metrics(self) -> Iterator[Metric]:
        yield from metrics.collect(self.statuses())

    def status_fragment(self) -> str:
        parts = []
        for s in self.statuses():
            name = f"mirror {s.name}" if len(self.targets) > 1 else "mirror"
            if s.state == "paused":
                parts.append(f"{name} PAUSED ({s.paused_reason})")
            elif s.lag_records == 0:
                parts.append(f"{name} caught up")
            else:
                parts.append(f"{name} lag {s.lag_seconds:.0f} s ({s.lag_records:,} records)")
        return ", ".join(parts) or "mirror: no targets"

    def register_routes(self, app: web.Application) -> None:
        api.register(app, self)

    def openapi_paths(self) -> dict[str, Any]:
        return api.openapi_paths()


async def start_mirror(gw: Gateway) -> Mirror:
    """Validate `[mirror]`, open the targets' cursors and start mirroring (called by Gateway._start_extensions,
    after recovery and before the sources start)."""
    cfg = gw.config
    settings = parse(cfg.mirror, cfg.topics, path=cfg.path)
    try:
        import confluent_kafka  # noqa: F401  (fail at start with a clear message, not in the mirror thread)
    except ImportError as exc:
        raise MirrorUnavailableError(str(exc)) from None
    assert gw.log is not None
    mirror = Mirror.create(settings, gw.log, gateway_id=gw.gateway_id,
                           dead_letters={t.name: t.dead_letter_topic for t in cfg.topics})
    await asyncio.to_thread(mirror.open_and_start)
    for t in mirror.targets:
        log.info("mirror %s: %d partitions to %s%s", t.name, len(t.parts), t.settings.bootstrap,
                 f", capped at {t.settings.bandwidth_bytes_per_s:,} bytes/s" if t.settings.bandwidth_bytes_per_s
                 else "")
    return mirror
