"""Gateway: the running service (`edgestream run --config gateway.toml`).

Start-up:
  1. open the log: take the data dir's lock, recover every partition (store.recovery), start the writer;
  2. create the topics the config names that do not exist yet, and their dead-letter topics;
  3. build the router and start every source as its own task (a source that crashes is restarted with backoff);
  4. start the HTTP API and /metrics; tell systemd READY=1 and start the watchdog pings.
SIGTERM / SIGINT (`stop`), within `gateway.shutdown_timeout_s`:
  1. sources stop reading and wait for the acks of what they handed over;
  2. the router refuses new readings; the log flushes (everything acknowledged is durable);
  3. the mirror persists its cursors; the log marks every partition clean and releases the lock; exit 0.
SIGHUP (`reload`): re-read the config; sources that were removed or changed stop the same careful way, new ones
start, routes switch atomically. Nothing acknowledged is lost or duplicated by a reload: a stopping source acks
only what the log acknowledged, and what it did not ack its sender still has. Then `[mirror]` and `[tier]`: each
target or the tierer that changed is stopped the way SIGTERM stops it and started again (a mirror target re-sends
what Kafka had not confirmed: at least once), settings read at every turn (the bandwidth cap, priorities) are
applied in place, unchanged ones are left alone (mirror.reload_mirror, tiering.reload_tierer). One reload runs at a
time. A mirror target or tierer that cannot start is logged and counted in `reload_errors`; the rest still applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any

from ..edge.clock import Clock, SystemClock
from ..edge.source import Source
from ..store import AsyncLog, Log, RecordIn, TopicConfig
from ..store.errors import StoreError
from . import config as gwconfig
from .config import GatewayConfig, SourceSpec
from .errors import GatewayError
from .router import Route, Router, make_route
from .sdnotify import Notifier, watchdog_interval
from .sources import create_source

log = logging.getLogger("edgestream.gateway")

_RESTART_MIN_S = 1.0
_RESTART_MAX_S = 60.0


def tier_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None and importlib.util.find_spec("duckdb") is not None


@dataclass
class _Running:
    spec: SourceSpec
    source: Source
    task: asyncio.Task[None]
    crashes: int = 0


class Gateway:
    def __init__(self, config: GatewayConfig, *, clock: Clock | None = None, notifier: Notifier | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.notifier = notifier or Notifier()
        self.gateway_id = config.gateway.gateway_id
        self.log: Log | None = None
        self.alog: AsyncLog | None = None
        self.router: Router | None = None
        self.mirror: Any = None
        self.tierer: Any = None
        self.http: Any = None
        self.http_port: int | None = None
        self.ready = False
        self.started_at = time.time()
        self.reloads = 0
        self.reload_errors = 0
        self.tier_available = tier_available()
        self._sources: dict[str, _Running] = {}
        self._stopped = asyncio.Event()
        self._stopping = False
        self._background: set[asyncio.Task[Any]] = set()
        self._last_status = ""
        self._reload_lock = asyncio.Lock()
        # The mirror and tier objects the HTTP API bound its routes to (aiohttp's routes are fixed once it runs):
        # kept when a reload stops them, so a later reload that starts them again uses the same objects.
        self._mirror_object: Any = None
        self._tier_object: Any = None
        self.heartbeat: Any = None  # sdnotify.Heartbeat, set by the status loop

    # -- what metrics and the API read -----------------------------------------------------------------------------

    def source_table(self) -> dict[str, tuple[str, Source, bool]]:
        return {n: (r.spec.type, r.source, not r.task.done()) for n, r in self._sources.items()}

    def source_restarts(self) -> dict[str, int]:
        """How often each source crashed and was restarted by the supervisor."""
        return {n: r.crashes for n, r in self._sources.items()}

    def source_specs(self) -> dict[str, SourceSpec]:
        return {n: r.spec for n, r in self._sources.items()}

    # -- start ------------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self.notifier.status("recovering the log")
        t0 = time.monotonic()
        self.log = await asyncio.to_thread(Log.open, cfg.gateway.data_dir, cfg.log)
        for report in self.log.recovery_reports():
            if not report.clean or report.quarantined:
                log.warning("recovery: %s", report.describe())
        self.alog = AsyncLog(self.log)
        await asyncio.to_thread(self._ensure_topics)
        log.info("log open at %s in %.2f s: %d topics", cfg.gateway.data_dir, time.monotonic() - t0,
                 len(self.log.topic_names()))
        if not self.tier_available:
            log.info("the Parquet tier is not installed (pip install 'edgestream[tier]'): records stay in the "
                     "hot log; nothing is tiered or deleted for tiering")
        self.router = Router(self.alog, self._routes(cfg))
        await self._start_extensions()
        for spec in cfg.sources:
            if spec.enabled:
                self._start_source(spec)
        self.router.on_accepted = self._live_tail
        if cfg.http.enabled:
            from .api import start_http

            self.http, self.http_port = await start_http(self)
        self.ready = True
        self.notifier.ready(self.status_line())
        interval = watchdog_interval()
        self._spawn(self._status_loop(interval))
        log.info("gateway %s ready: %d sources%s", self.gateway_id, len(self._sources),
                 f", HTTP on {cfg.http.host}:{self.http_port}" if self.http_port else "")

    async def _start_extensions(self) -> None:
        """Mirror and tier, when configured (each validates its own section)."""
        if self.config.mirror:
            from .mirror import start_mirror

            self.mirror = await start_mirror(self)
        if self.config.tier and self.tier_available:
            from .tiering import start_tierer

            self.tierer = await start_tierer(self)
        self._mirror_object, self._tier_object = self.mirror, self.tierer

    def _ensure_topics(self) -> None:
        assert self.log is not None
        existing = set(self.log.topic_names())
        for spec in self.config.topics:
            if spec.name not in existing:
                self.log.create_topic(spec.name, spec.config)
                log.info("created topic %s (%d partitions, %s)", spec.name, spec.config.partitions,
                         spec.config.durability)
            elif self.log.topic(spec.name).config != spec.config:
                log.warning("topic %s exists with other settings than the config; the stored ones stay "
                            "(partitions and durability of an existing topic do not change at run time)", spec.name)
            dlq = spec.dead_letter_topic
            if dlq not in existing and dlq not in {t.name for t in self.config.topics}:
                self.log.create_topic(dlq, TopicConfig(partitions=1, durability=spec.config.durability,
                                                       max_record_bytes=max(spec.config.max_record_bytes, 4 << 20),
                                                       retention_ms=spec.config.retention_ms))

    def _routes(self, cfg: GatewayConfig) -> dict[str, Route]:
        assert self.log is not None
        routes = {}
        for spec in cfg.sources:
            topic_spec = cfg.topic(spec.topic)
            if topic_spec is None:
                raise GatewayError(f"source {spec.name}: unknown topic {spec.topic}")
            stored = self.log.topic(spec.topic).config
            # The stored partition count wins (an existing topic keeps its partitions).
            topic_spec = gwconfig.TopicSpec(topic_spec.name, stored, topic_spec.decoder, topic_spec.csv_columns,
                                            topic_spec.csv_delimiter, topic_spec.dead_letter)
            routes[spec.name] = make_route(spec, topic_spec)
        return routes

    # -- sources -----------------------------------------------------------------------------------------------------

    def _start_source(self, spec: SourceSpec, crashes: int = 0) -> None:
        assert self.router is not None
        source = create_source(spec, self.router, self.clock, data_dir=self.config.gateway.data_dir)
        task = asyncio.create_task(self._supervise(spec.name, source), name=f"source-{spec.name}")
        self._sources[spec.name] = _Running(spec, source, task, crashes)

    def _live_tail(self, route: Route, record: RecordIn) -> None:
        """Every accepted record goes to the MQTT listeners' live-tail subscribers (QoS 0, dropped for slow ones).

        The MQTT topic is the one it came in on, else `edgestream/<topic>/<source>`."""
        listeners = [r.source for r in self._sources.values() if r.spec.type == "mqtt_listener"]
        if not listeners:
            return
        mqtt_topic = next((v.decode(errors="replace") for k, v in record.headers if k == "mqtt.topic"), None)
        topic = mqtt_topic or f"edgestream/{route.topic}/{route.source}"
        for listener in listeners:
            listener.publish_local(topic, record.value)  # type: ignore[attr-defined]

    async def _supervise(self, name: str, source: Source) -> None:
        try:
            await source.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a source bug must not take the gateway down: log, count, restart
            running = self._sources.get(name)
            crashes = (running.crashes if running else 0) + 1
            log.exception("source %s crashed (%d so far): %s; restarting", name, crashes, exc)
            if self._stopping or running is None or running.source is not source:
                return
            delay = min(_RESTART_MAX_S, _RESTART_MIN_S * 2 ** min(crashes - 1, 6))
            await self.clock.sleep(delay)
            if not self._stopping and self._sources.get(name) is running:
                self._start_source(running.spec, crashes)

    async def _stop_source(self, name: str, timeout: float) -> None:
        running = self._sources.pop(name, None)
        if running is None:
            return
        try:
            await asyncio.wait_for(running.source.stop(), timeout)
        except TimeoutError:
            log.warning("source %s did not stop within %.0f s; cancelling it (unacked messages will be "
                        "redelivered by their senders)", name, timeout)
        except Exception:
            log.exception("source %s failed while stopping", name)
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running.task

    # -- reload ------------------------------------------------------------------------------------------------------

    async def reload(self, path: str | None = None) -> bool:
        """SIGHUP: apply source, route, `[mirror]` and `[tier]` changes. A config that does not load is refused and
        the old one stays; a mirror target or tierer that cannot start is logged and counted as a reload error while
        the rest of the new config applies. Returns whether everything applied."""
        async with self._reload_lock:
            if self._stopping:
                return False
            if not self.ready:  # start() is still opening the log or starting the mirror: nothing to apply to yet
                log.warning("SIGHUP while starting: ignored; send it again once the gateway is ready")
                return False
            return await self._reload(path)

    async def _reload(self, path: str | None) -> bool:
        try:
            new = gwconfig.load(path or self.config.path)
        except GatewayError as exc:
            self.reload_errors += 1
            log.error("reload refused, keeping the running config:\n%s", exc)
            return False
        assert self.router is not None and self.log is not None
        old_specs = {s.name: s for s in self.config.sources}
        new_specs = {s.name: s for s in new.sources if s.enabled}
        self.config = new
        await asyncio.to_thread(self._ensure_topics)
        changed = [n for n, s in old_specs.items() if n in self._sources and (n not in new_specs or new_specs[n] != s)]
        timeout = new.gateway.shutdown_timeout_s / 2
        await asyncio.gather(*(self._stop_source(n, timeout) for n in changed))
        self.router.replace_routes(self._routes(new))
        for name, spec in new_specs.items():
            if name not in self._sources:
                self._start_source(spec)
        applied, failed = await self._reload_extensions()
        summary = f"{len(changed)} sources restarted or removed, {len(self._sources)} running" + \
            "".join(f"; {a}" for a in applied)
        if failed:
            self.reload_errors += 1
            log.error("config reloaded with errors (%s); NOT applied:\n%s", summary, "\n".join(failed))
            return False
        self.reloads += 1
        log.info("config reloaded: %s", summary)
        return True

    async def _reload_extensions(self) -> tuple[list[str], list[str]]:
        """`[mirror]` and `[tier]`, after sources and routes: neither changes what a sender has been acknowledged.
        Returns what was done and what failed, one line each."""
        applied: list[str] = []
        failed: list[str] = []
        if self.config.mirror or self.mirror is not None:
            from .mirror import reload_mirror

            self.mirror, result = await reload_mirror(self, self.mirror or self._mirror_object)
            self._mirror_object = self.mirror or self._mirror_object
            applied.append(result.describe())
            failed.extend(result.errors)
        if self.tier_available and (self.config.tier or self.tierer is not None):
            from .tiering import reload_tierer

            self.tierer, what, error = await reload_tierer(self, self.tierer or self._tier_object)
            self._tier_object = self.tierer or self._tier_object
            applied.extend([what] if what else [])
            failed.extend([error] if error else [])
        return applied, failed

    # -- stop --------------------------------------------------------------------------------------------------------

    async def stop(self) -> None:
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self.ready = False
        budget = self.config.gateway.shutdown_timeout_s
        deadline = time.monotonic() + budget
        try:  # a reload under way finishes first: it may be between stopping a mirror target and starting it again
            await asyncio.wait_for(self._reload_lock.acquire(), budget / 2)
        except TimeoutError:
            log.warning("stopping while a config reload is still under way")
        self.notifier.stopping("stopping: acknowledging what is durable")
        log.info("stopping: sources first")
        await asyncio.gather(*(self._stop_source(n, budget * 0.5) for n in list(self._sources)))
        if self.router is not None:
            self.router.close()
        if self.log is not None:
            remaining = max(1.0, deadline - time.monotonic())
            flushed = await asyncio.to_thread(self.log.flush, remaining * 0.5)
            if not flushed:
                log.warning("flush did not finish (a topic is blocked on a full disk?); unacknowledged records "
                            "are not lost: their senders still hold them")
        for ext in (self.mirror, self.tierer):
            if ext is not None:
                try:
                    await asyncio.wait_for(ext.stop(), max(1.0, deadline - time.monotonic()))
                except Exception:
                    log.exception("stopping %s failed", type(ext).__name__)
        for task in list(self._background):
            task.cancel()
        if self.http is not None:
            await self.http.cleanup()
        if self.log is not None:
            await asyncio.to_thread(self.log.close, max(1.0, deadline - time.monotonic()))
        self.notifier.close()
        log.info("stopped cleanly")
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # -- status and watchdog -----------------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def status_line(self) -> str:
        """One line for `systemctl status` (STATUS=) and /readyz: what an operator checks first."""
        if self.log is None:
            return "starting: recovering the log"
        st = self.log.statistics()
        records = sum(p.high_watermark for t in st.topics for p in t.partitions)
        running = sum(1 for r in self._sources.values() if not r.task.done())
        parts = [f"{records:,} records", f"{running}/{len(self._sources)} sources",
                 f"disk free {st.disk_free_bytes / 2**30:.1f} GiB"]
        partitions = [p for t in st.topics for p in t.partitions]
        if any(p.broken for p in partitions):
            parts.append("BROKEN: log write failed, restart")
        if any(p.blocked for p in partitions):
            parts.append("BLOCKED: disk full")
        dropped = sum(n for p in partitions for _, n in (*p.dropped, *p.rejected))
        if dropped:
            parts.append(f"{dropped:,} dropped")
        if self.mirror is not None and hasattr(self.mirror, "status_fragment"):
            parts.append(self.mirror.status_fragment())
        return ", ".join(parts)

    async def _status_loop(self, watchdog: float | None) -> None:
        """WATCHDOG=1 from the event loop, only while the log writer is alive; STATUS= when the summary changes.

        The pings come from this task and nowhere else: if the loop stalls (a blocking call, a deadlock) they stop
        and systemd restarts the service after WatchdogSec. The heartbeat measures how late each wake-up is."""
        from .sdnotify import Heartbeat

        period = min(watchdog, 5.0) if watchdog else 5.0
        self.heartbeat = Heartbeat(period, watchdog)
        last_status = 0.0
        while not self._stopping:
            writer = self.log.writer if self.log is not None else None
            healthy = writer is not None and writer._crashed is None
            if watchdog and healthy:
                self.notifier.watchdog()
            now = time.monotonic()
            if now - last_status >= 5.0:
                line = self.status_line()
                if line != self._last_status:
                    self.notifier.status(line)
                    self._last_status = line
                last_status = now
            await asyncio.sleep(period)
            self.heartbeat.beat()


async def run_gateway(config: GatewayConfig) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads. Returns the process exit code."""
    gw = Gateway(config)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop_requested.set)
    loop.add_signal_handler(signal.SIGINT, stop_requested.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: gw._spawn(gw.reload()))
    try:
        await gw.start()
    except (StoreError, GatewayError, OSError) as exc:
        log.error("could not start: %s", exc)
        await gw.stop()
        raise
    await stop_requested.wait()
    try:
        await asyncio.wait_for(gw.stop(), config.gateway.shutdown_timeout_s + 5)
    except TimeoutError:
        log.error("shutdown took longer than %.0f s; exiting anyway (the next start recovers)",
                  config.gateway.shutdown_timeout_s)
        return 1
    return 0
