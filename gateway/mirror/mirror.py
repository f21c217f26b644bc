"""The upstream mirror as the gateway sees it: `start_mirror(gateway)` validates `[mirror]`, opens every target's
cursor against the recovered log (clamping what must be clamped) and starts one thread per target;
`reload_mirror(gateway, mirror)` applies a changed `[mirror]` at SIGHUP, target by target (reload.py says how).

The object it returns is what the rest of the gateway calls:
- `await stop()`: each target waits up to `stop_flush_s` for in-flight confirmations, persists its acked prefix and
  closes its producer;
- `await reload(settings, dead_letters)`: the same stop for targets that go away or must restart, new threads for
  new ones, settings read at every turn applied in place; the object stays, so the HTTP routes bound to it at start
  keep answering for what runs now;
- `collect_metrics()` for /metrics, `status()` for /v1/status and `GET /v1/mirror/status`, `status_fragment()` for
  systemd's STATUS= line, `register_routes(app)` and `openapi_paths()` for the HTTP API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.core import Metric

from ...store import Log
from ...store.errors import StoreError
from ..errors import GatewayError
from . import api, metrics
from .errors import MirrorUnavailableError, TargetStillStoppingError
from .producer import UpstreamProducer
from .reload import KEEP, LIVE, RESTART, START, STOP, MirrorReload, TargetChange, plan
from .settings import MirrorSettings, TargetSettings, parse
from .stats import TargetStatus
from .target import TargetMirror

if TYPE_CHECKING:
    from ..service import Gateway

log = logging.getLogger("edgestream.mirror")

_RETUNE_TIMEOUT_S = 30.0  # a live change waits for the thread's next turn (at most ~1 s unless it is stuck)

MakeTarget = Callable[[TargetSettings, MirrorSettings, Mapping[str, str]], TargetMirror]


class Mirror:
    def __init__(self, settings: MirrorSettings, targets: list[TargetMirror], *,
                 make_target: MakeTarget | None = None, dead_letters: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.targets = targets
        self.dead_letters = dict(dead_letters or {})
        self._make_target = make_target
        # Reloads applied per target, by reload action (restart, live): survives the target's restarts.
        self.reloads: dict[str, dict[str, int]] = {}
        # Threads a reload asked to stop that had not stopped in time: no new thread for that cursor until they do.
        self._lingering: dict[str, TargetMirror] = {}

    @classmethod
    def create(cls, settings: MirrorSettings, log_: Log, *, gateway_id: str,
               dead_letters: Mapping[str, str] | None = None,
               producer_factory: Callable[[TargetSettings], UpstreamProducer] | None = None) -> Mirror:
        """Targets for the enabled entries of `settings` (not opened, not started)."""

        def make(t: TargetSettings, mirror: MirrorSettings, dls: Mapping[str, str]) -> TargetMirror:
            factory = None
            if producer_factory is not None:
                factory = partial(producer_factory, t)
            return TargetMirror(t, mirror, log_, gateway_id=gateway_id, dead_letters=dls, producer_factory=factory)

        targets = []
        for t in settings.targets:
            if not t.enabled:
                log.info("mirror %s: disabled in the config", t.name)
                continue
            targets.append(make(t, settings, dead_letters or {}))
        return cls(settings, targets, make_target=make, dead_letters=dead_letters)

    def open_and_start(self) -> None:
        """Open every target's cursor (step 6 of the commit protocol) and start its thread."""
        for t in self.targets:
            t.open()
        for t in self.targets:
            t.start()

    async def stop(self) -> None:
        if await _stop_targets(self.targets, self.settings.stop_flush_s):
            log.error("mirror: a target thread did not stop in time; its cursor was persisted up to its last "
                      "persist (a restart re-sends from there)")

    async def reload(self, settings: MirrorSettings | None, dead_letters: Mapping[str, str]) -> MirrorReload:
        """A config reload: apply `settings` (None: the section is gone) target by target (reload.plan). A target
        that fails is reported in the result and the others are applied all the same; nothing here raises for
        one target."""
        running = {t.name: t for t in self.targets}
        changes = plan({n: t.settings for n, t in running.items()}, self.settings, settings,
                       dead_letters_changed=dict(dead_letters) != self.dead_letters)
        leaving = [running[c.name] for c in changes if c.action in (STOP, RESTART)]
        stuck = await _stop_targets(leaving, self.settings.stop_flush_s)
        for t in stuck:
            self._lingering[t.name] = t
            log.error("mirror %s: the thread did not stop within %.0f s; its cursor holds its last persist", t.name,
                      self.settings.stop_flush_s + 10)
        mirror = settings or self.settings
        wanted = {t.name: t for t in mirror.targets}
        targets: list[TargetMirror] = []
        done: list[TargetChange] = []
        errors: list[str] = []
        for change in changes:
            name, old = change.name, running.get(change.name)
            if change.action == STOP:
                done.append(change)
                continue
            if change.action == KEEP:
                assert old is not None
                targets.append(old)
                continue
            if change.action == LIVE:
                assert old is not None
                targets.append(old)
                retune = partial(old.retune, wanted[name], mirror, dead_letters)
                try:
                    await asyncio.wait_for(asyncio.wrap_future(old.call(retune)), _RETUNE_TIMEOUT_S)
                except Exception as exc:  # the target keeps running with its old settings; say so
                    errors.append(f"mirror {name}: the new settings were not applied ({exc!r}); it runs with the "
                                  "old ones")
                    continue
            else:
                paused = old is not None and old.paused == "operator"
                try:
                    target = await self._start_target(wanted[name], mirror, dead_letters, operator_paused=paused)
                except Exception as exc:  # reported (the gateway logs `errors`) and counted; the others still apply
                    if not isinstance(exc, GatewayError | StoreError | OSError):
                        log.exception("mirror %s: could not start", name)
                    errors.append(f"mirror {name} is NOT running: {exc}. Its records wait in the log; fix the "
                                  "cause and reload again")
                    continue
                targets.append(target)
            if change.action != START:
                counts = self.reloads.setdefault(name, {})
                counts[change.action] = counts.get(change.action, 0) + 1
            done.append(change)
        self.settings, self.dead_letters, self.targets = mirror, dict(dead_letters), targets
        return MirrorReload(tuple(done), tuple(errors))

    async def _start_target(self, settings: TargetSettings, mirror: MirrorSettings, dead_letters: Mapping[str, str],
                            *, operator_paused: bool) -> TargetMirror:
        lingering = self._lingering.get(settings.name)
        if lingering is not None and lingering.alive:
            raise TargetStillStoppingError(settings.name)
        self._lingering.pop(settings.name, None)
        assert self._make_target is not None
        target = self._make_target(settings, mirror, dead_letters)
        await asyncio.to_thread(target.open)
        if operator_paused:  # an operator's pause is a decision a reload must not undo; an authorization pause is
            target.pause("operator")  # not carried over: fixed credentials are what the reload is likely about
        target.start()
        _log_started(target)
        return target

    # -- what the gateway reads ----------------------------------------------------------------------------------

    def statuses(self) -> list[TargetStatus]:
        return [t.status() for t in self.targets]

    def status(self) -> dict[str, Any]:
        targets = []
        for st in self.statuses():
            doc = st.to_json()
            counts = self.reloads.get(st.name, {})
            doc["reloads"] = {"restart": counts.get(RESTART, 0), "live": counts.get(LIVE, 0)}
            targets.append(doc)
        return {"targets": targets}

    def collect_metrics(self) -> Iterator[Metric]:
        yield from metrics.collect(self.statuses(), self.reloads)

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
        api.register(app, lambda: self)

    def openapi_paths(self) -> dict[str, Any]:
        return api.openapi_paths()


def _client_check() -> None:
    try:
        import confluent_kafka  # noqa: F401  (fail at start with a clear message, not in the mirror thread)
    except ImportError as exc:
        raise MirrorUnavailableError(str(exc)) from None


def _log_started(t: TargetMirror) -> None:
    log.info("mirror %s: %d partitions to %s%s", t.name, len(t.parts), t.settings.bootstrap,
             f", capped at {t.settings.bandwidth_bytes_per_s:,} bytes/s" if t.settings.bandwidth_bytes_per_s else "")


async def _stop_targets(targets: list[TargetMirror], flush_s: float) -> list[TargetMirror]:
    """Stop the way SIGTERM does, all at once: each waits up to `flush_s` for in-flight confirmations, persists its
    acked prefix and closes its producer. Returns the threads that had not ended `flush_s + 10` s later."""
    for t in targets:
        t.request_stop(flush_s)

    def join_all() -> list[TargetMirror]:
        return [t for t in targets if not t.join(flush_s + 10)]

    return await asyncio.to_thread(join_all) if targets else []


async def start_mirror(gw: Gateway) -> Mirror:
    """Validate `[mirror]`, open the targets' cursors and start mirroring (called by Gateway._start_extensions,
    after recovery and before the sources start)."""
    cfg = gw.config
    settings = parse(cfg.mirror, cfg.topics, path=cfg.path)
    _client_check()
    assert gw.log is not None
    mirror = Mirror.create(settings, gw.log, gateway_id=gw.gateway_id,
                           dead_letters={t.name: t.dead_letter_topic for t in cfg.topics})
    await asyncio.to_thread(mirror.open_and_start)
    for t in mirror.targets:
        _log_started(t)
    return mirror


async def reload_mirror(gw: Gateway, mirror: Mirror | None) -> tuple[Mirror | None, MirrorReload]:
    """SIGHUP: apply `gw.config.mirror` to `mirror` (the running one, or the one an earlier reload stopped: the
    HTTP routes were bound to it at start) or, if there is none, to a new one. Returns the mirror the gateway runs
    now (None once the section is gone) and what was done.

    The new section is checked before anything stops: a section that cannot be used leaves every target as it
    runs. Past that point each target is applied on its own (Mirror.reload)."""
    cfg = gw.config
    dead_letters = {t.name: t.dead_letter_topic for t in cfg.topics}
    settings: MirrorSettings | None = None
    if cfg.mirror:
        try:
            settings = parse(cfg.mirror, cfg.topics, path=cfg.path)
            _client_check()
        except GatewayError as exc:
            running = mirror if mirror is not None and mirror.targets else None
            return running, MirrorReload(errors=(f"[mirror] not applied; the running targets keep their settings: "
                                                 f"{exc}",))
    if mirror is None:
        if settings is None:
            return None, MirrorReload()
        assert gw.log is not None
        mirror = Mirror.create(MirrorSettings(targets=()), gw.log, gateway_id=gw.gateway_id, dead_letters=dead_letters)
    result = await mirror.reload(settings, dead_letters)
    return (mirror if settings is not None else None), result
