"""TargetMirror: one Kafka target: its producer, its cursors, the commit protocol (`step()`), in its own thread
(thread.TurnThread says why a thread).
"""

from __future__ import annotations

import gc
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

from ...edge.mqtt.backoff import Backoff
from ...store import CursorPosition, Log, Record
from ...store.errors import OffsetOutOfRangeError, StoreError
from ...store.partition import Partition
from .errors import (
    AUTHENTICATION,
    AUTHORIZATION,
    POISON,
    PURGED,
    DeliveryError,
    KafkaTopicError,
    KafkaUnreachableError,
    MirrorError,
)
from .flow import Candidate, TokenBucket, plan
from .partitions import MirroredPartition, dead_letter, open_partitions, snapshot
from .producer import Item, KafkaProducer, UpstreamProducer, producer_config
from .reset import ResetRequest, reset_partitions
from .settings import MirrorSettings, TargetSettings
from .stats import TargetStatus
from .thread import TurnThread

log = logging.getLogger("edgestream.mirror")

_METADATA_TIMEOUT_S = 5.0
_STATUS_INTERVAL_S = 1.0


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while a batch is built and produced. Each record makes ~6 tracked objects (its tuple, a header
    list and tuples, the bound callback), none of them in a cycle (reference counting frees them), yet the
    collector ran every ~100 records and, with tens of thousands of callbacks alive in flight, full collections
    too. Measured on the 2-core build machine, 5,000-record batches: building them costs 1.6 us per record with
    the collector on, 0.7 us with it paused. The pause lasts one batch (a few ms); collection resumes, for every
    thread, right after."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class TargetMirror(TurnThread):
    def __init__(self, settings: TargetSettings, mirror: MirrorSettings, log_: Log, *, gateway_id: str,
                 dead_letters: Mapping[str, str] | None = None,
                 producer_factory: Callable[[], UpstreamProducer] | None = None,
                 monotonic: Callable[[], float] = time.monotonic, wall_ms: Callable[[], int] = _wall_ms,
                 rng: random.Random | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.mirror = mirror
        self.log = log_
        self.gateway_id = gateway_id
        self.dead_letters = dict(dead_letters or {})
        self._factory = producer_factory or (lambda: KafkaProducer(producer_config(settings, gateway_id)))
        self.monotonic = monotonic
        self.wall_ms = wall_ms
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s, rng=rng or random.Random())
        self.bucket = TokenBucket(settings.bandwidth_bytes_per_s, settings.burst, monotonic())
        self.parts: list[MirroredPartition] = []
        self.producer: UpstreamProducer | None = None
        self.paused = ""  # reason, "" when not paused
        self.probe_at: float | None = None  # when a target paused for authorization tries again
        self.backoff_until = 0.0
        self.connected = False
        self.last_error = ""
        self.last_error_at: float | None = None
        self.errors: dict[str, int] = {}
        self.dead_lettered: dict[str, int] = {}
        self.producers_made = 0
        self.persists = 0
        self.persist_failures = 0
        self.internal_errors = 0
        self.sent_bytes = 0
        self.last_persist = monotonic()
        self._acked_seen = 0
        self._progress = (0, monotonic())  # (reports seen, when that last moved) for the stall timeout
        self._fatal: DeliveryError | None = None
        self._turn = 0
        self._stop_deadline = 0.0
        self._status: TargetStatus | None = None
        self._status_at = -1e9
        self.stopped = False

    @property
    def name(self) -> str:
        return self.settings.name

    # -- start: DESIGN 6, step 6 --------------------------------------------------------------------------------

    def open(self) -> None:
        """Check the saved cursor against the recovered log and persist it (partitions.open_partitions)."""
        self.parts = open_partitions(self.settings, self.log, self.gateway_id)
        for part in self.parts:
            part.partition.add_listener(self._on_new_data)

    def _on_new_data(self, partition: Partition) -> None:
        self.wake.set()  # runs on the log's writer thread: nothing more

    # -- the thread's hooks (thread.TurnThread) --------------------------------------------------------------------

    def request_stop(self, flush_s: float = 5.0) -> None:
        """Stop after giving in-flight records `flush_s` to be confirmed (see `finish`)."""
        self._stop_deadline = self.monotonic() + flush_s
        super().request_stop()

    def wait(self, seconds: float) -> None:
        if seconds <= 0 or self.stopping.is_set():
            return
        if self.producer is not None and self.in_flight:
            self.producer.poll(min(seconds, 0.01))  # returns at the first delivery report
        else:
            self.wake.wait(min(seconds, 1.0))
            self.wake.clear()

    def crashed(self, exc: BaseException) -> float:
        self.internal_errors += 1
        log.exception("mirror %s: internal error (%s); restarting the producer from the persisted cursor",
                      self.name, exc)
        self._note_error(f"internal error: {exc}")
        try:
            self._restart(self.monotonic(), f"internal error: {exc}")
        except Exception:
            log.exception("mirror %s: restart after an internal error failed", self.name)
        return max(0.5, self.backoff_until - self.monotonic())

    def after_command(self) -> None:
        self._status = self._build_status(self.monotonic())  # the answer and the status agree

    # -- one turn -----------------------------------------------------------------------------------------------

    def step(self) -> float:
        """One turn of the commit protocol (DESIGN 6) for every partition of this target; returns how long the
        thread may wait before the next turn.

        1. Read records above the cursor (`next_send`), only up to the partition's high watermark: acknowledged
           records, which in `fsync` mode are the durable ones (`_feed` / `_send`).
        2. Produce each one with an explicit partition (or by key), its original key, and the identity headers
           edge.gw, edge.log, edge.ep, edge.p, edge.off, edge.ts, to an idempotent producer (acks=all, zstd,
           gapless; producer.py). How much goes this turn is decided by the bandwidth cap and the priorities
           (flow.plan).
        3. `poll()` serves delivery reports; each callback has its record's offset and the cursor's generation
           bound in (`functools.partial`: the report itself carries no headers), and advances the acked prefix
           (core.MirrorCursor: out-of-order reports are held until the gap below them fills).
        4. Persist {log id, epoch, acked prefix} of every partition with one durable replace of the cursor file,
           at most every `persist_interval_s` or after `persist_records` acknowledged records, never ahead of the
           acks (`_maybe_persist`).
        5. On any error that is not plainly retriable (a failed delivery, a fatal producer, no report for
           `delivery_timeout_s`): stop feeding, persist the acked prefix, purge and close the producer, make a
           new one after a jittered backoff, and rewind every partition to its persisted prefix (`_restart`).
           A failure is "possibly delivered": duplicates are allowed, gaps are not. A record that failed with a
           poison error is retried alone and, if it fails alone, copied to the dead-letter topic
           (`_handle_failures`); an authorization failure pauses the target.
        6. At start (`open`, before the first turn), a cursor above the recovered log end is clamped and
           reported, one of another log id starts at the log start (core.reconcile).
        """
        now = self.monotonic()
        self.run_commands()
        if self.producer is not None:
            self.producer.poll(0)
            self._take_events()
            if self._fatal is not None:
                for _ in range(5):  # the reports naming the failed records follow the fatal error
                    self.producer.poll(0.02)
                self._take_events()
            self._collect_errors()
            self._handle_failures(now)
            self._check_stall(now)
        self._maybe_persist(now)
        if now - self._status_at >= _STATUS_INTERVAL_S:
            self._status = self._build_status(now)
            self._status_at = now
        if self.stopping.is_set():
            return 0.0
        if self.paused:
            if self.probe_at is None or now < self.probe_at:
                return 1.0 if self.probe_at is None else min(1.0, self.probe_at - now)
            log.info("mirror %s: trying again after the %s failure", self.name, self.paused)
            self.paused, self.probe_at = "", None
        if now < self.backoff_until:
            return self.backoff_until - now
        if self.producer is None:
            self._make_producer(now)
            if self.producer is None:
                return max(0.01, self.backoff_until - now)
        self._recheck_topics(now)
        if self.producer is None or self.paused or now < self.backoff_until:
            return 0.01  # a topic check restarted or paused the producer
        sent = self._feed(now)
        if sent:
            return 0.0
        return max(self.bucket.wait_s(now), 0.001) if not self.bucket.unlimited else 1.0

    @property
    def in_flight(self) -> int:
        return sum(p.cursor.in_flight for p in self.parts)

    # -- steps 1 and 2: feeding ---------------------------------------------------------------------------------

    def _feed(self, now: float) -> int:
        s = self.settings
        room = s.max_in_flight_records - self.in_flight
        budget = self.bucket.available(now)
        if room <= 0 or budget <= 0:
            return 0
        now_ms = self.wall_ms()
        live_ms = s.live_age_s * 1000
        candidates = []
        for i, part in enumerate(self.parts):
            hw = part.partition.high_watermark
            c = part.cursor
            part.live = hw - c.next_send <= s.batch_records or (
                part.last_ts is not None and now_ms - part.last_ts <= live_ms)
            if part.blocked:
                continue
            n = c.sendable(hw)
            if n > 0:
                candidates.append(Candidate(i, part.mapping.priority, part.live, n))
        grants = plan(candidates, budget_bytes=budget, room_records=room, batch_records=s.batch_records,
                      batch_bytes=s.batch_bytes, live_share=s.live_share, turn=self._turn)
        self._turn += 1
        total = 0
        for g in grants:
            n, nbytes, full = self._send(self.parts[g.key], g.max_records, g.max_bytes)
            total += n
            self.bucket.take(nbytes)
            if full:
                break
        return total

    def _send(self, part: MirroredPartition, max_records: int, max_bytes: float) -> tuple[int, int, bool]:
        """Read and produce up to the grant. Returns (records, bytes, whether the producer queue was full)."""
        c = part.cursor
        topic, index = c.topic, c.partition
        try:
            recs = self.log.read(topic, index, c.next_send, max_records=max_records,
                                 max_bytes=int(min(max_bytes, 1 << 30)))
        except OffsetOutOfRangeError as exc:
            if exc.start > c.next_send and c.idle:
                n = c.skip_to(exc.start, "deleted")
                log.warning("mirror %s: %s/%d: %d records were deleted (on_full = drop_oldest) before they were "
                            "mirrored; going on at %d", self.name, topic, index, n, exc.start)
            return 0, 0, False
        if not recs:
            return 0, 0, False
        if recs[0].offset != c.next_send:  # a quarantined segment left a gap
            if not c.idle:
                return 0, 0, False
            n = c.skip_to(recs[0].offset, "gap")
            log.warning("mirror %s: %s/%d: %d records lost to a quarantined segment; going on at %d", self.name,
                        topic, index, n, recs[0].offset)
        assert self.producer is not None
        with _gc_paused():
            return self._produce(part, recs, max_bytes)

    def _produce(self, part: MirroredPartition, recs: list[Record], max_bytes: float) -> tuple[int, int, bool]:
        """The hot loop: per record two formats, a header list, a bound callback, one call into librdkafka."""
        assert self.producer is not None
        c = part.cursor
        kafka_topic, kp = part.mapping.destination, part.kafka_partition
        gw_h, log_h, p_h = part.const_headers
        const_len = sum(len(k) + len(v) for k, v in part.const_headers) + 24  # + the names of ep, off and ts
        report = c.report
        gen = c.generation
        first = recs[0].offset
        ep = -1
        ep_h = ("edge.ep", b"")
        fixed = const_len
        items: list[Item] = []
        append = items.append
        nbytes = 0
        for _topic, _p, offset, epoch, ts, key, value, rec_headers in recs:
            if epoch != ep:
                ep = epoch
                ep_h = ("edge.ep", b"%d" % ep)
                fixed = const_len + len(ep_h[1])
            off_b = b"%d" % offset
            ts_b = b"%d" % ts
            size = len(value) + fixed + len(off_b) + len(ts_b) + (len(key) if key else 0)
            headers = [gw_h, log_h, ep_h, p_h, ("edge.off", off_b), ("edge.ts", ts_b)]
            if rec_headers:
                headers[:0] = rec_headers
                size += sum(len(k) + len(v) for k, v in rec_headers)
            if items and nbytes + size > max_bytes:
                break
            append((value, key, headers, ts, partial(report, gen, offset)))
            nbytes += size
        try:
            sent = self.producer.produce(kafka_topic, kp, items)
        except DeliveryError as err:  # refused at once: about this one record, nothing around it
            sent = err.index
            c.sent(first, sent + 1)
            c.failed(first + sent, gen, err)
            c.failures[-1].immediate = True
            self._count_error(err)
            self.sent_bytes += nbytes
            return sent + 1, nbytes, True
        if sent < len(items):  # the producer's queue is full: charge only what went
            nbytes = nbytes * sent // len(items)
        if sent:
            c.sent(first, sent)
            part.last_ts = recs[sent - 1].timestamp_ms
            self.sent_bytes += nbytes
        return sent, nbytes, sent < len(items)

    # -- step 3: delivery reports -------------------------------------------------------------------------------

    def _collect_errors(self) -> None:
        """Delivery reports that carried an error: describe them (the producer knows its error type), record the
        failures of the current generation, count them."""
        assert self.producer is not None
        for part in self.parts:
            c = part.cursor
            if not c.unreported_errors:
                continue
            errors, c.unreported_errors = c.unreported_errors, []
            for offset, generation, raw in errors:
                err = self.producer.describe(raw)
                if c.failed(offset, generation, err) and err.kind != PURGED:
                    self._count_error(err)

    def _count_error(self, err: DeliveryError) -> None:
        self.errors[err.reason] = self.errors.get(err.reason, 0) + 1
        self._note_error(str(err))

    def _note_error(self, text: str) -> None:
        self.last_error = text
        self.last_error_at = self.monotonic()

    def _take_events(self) -> None:
        assert self.producer is not None
        for ev in self.producer.take_events():
            if ev.kind in ("fatal", AUTHORIZATION, AUTHENTICATION):
                self._fatal = ev
            if ev.name in ("_ALL_BROKERS_DOWN", "_TRANSPORT"):
                if self.connected:  # once per outage, not once per reconnect attempt
                    log.warning("mirror %s: Kafka unreachable (%s); the log keeps everything meanwhile",
                                self.name, ev)
                self.connected = False
            else:
                log.warning("mirror %s: %s", self.name, ev)
            self._note_error(str(ev))
        acked = sum(p.cursor.acked_records for p in self.parts)
        if acked != self._acked_seen:
            self._acked_seen = acked
            self.connected = True
            self.backoff.reset()

    # -- step 4: persisting -------------------------------------------------------------------------------------

    def _maybe_persist(self, now: float) -> None:
        pending = sum(p.cursor.acked - p.cursor.persisted for p in self.parts)
        if pending and (pending >= self.mirror.persist_records or
                        now - self.last_persist >= self.mirror.persist_interval_s):
            self._persist(now)

    def _persist(self, now: float) -> bool:
        due = [(p, off) for p in self.parts if (off := p.cursor.persist_due()) is not None]
        if not due:
            return True
        positions = {(p.cursor.topic, p.cursor.partition): CursorPosition(off, p.cursor.log_id, p.partition.epoch)
                     for p, off in due}
        try:
            self.log.cursors.commit(self.settings.cursor_name, positions, required=True)
        except (OSError, StoreError) as exc:
            self.persist_failures += 1
            log.error("mirror %s: could not persist the cursor (%s); mirroring goes on, a restart would re-send "
                      "more", self.name, exc)
            return False
        for p, off in due:
            p.cursor.persisted_at(off, p.partition.epoch)
        self.persists += 1
        self.last_persist = now
        return True

    # -- step 5: failures ---------------------------------------------------------------------------------------

    def _handle_failures(self, now: float) -> None:
        failing = [p for p in self.parts if p.cursor.failures]
        if not failing and self._fatal is None:
            return
        failures = [f for p in failing for f in p.cursor.failures]
        auth = next((f.error for f in failures if f.error.kind in (AUTHORIZATION, AUTHENTICATION)), None)
        if auth is None and self._fatal is not None and self._fatal.kind in (AUTHORIZATION, AUTHENTICATION):
            auth = self._fatal
        if auth is not None and (auth.kind == AUTHENTICATION or self.settings.on_authorization_error == "pause"):
            self._restart(now, str(auth), pause=auth.kind)
            return
        broker_poison = False
        for p in failing:
            c = p.cursor
            for f in list(c.failures):
                poison = f.error.kind == POISON or f.error.kind == AUTHORIZATION
                if poison and (f.offset == c.suspect or f.immediate) and self._dead_letter(p, f.offset, f.error):
                    c.dead_lettered(f.offset)
                    broker_poison = broker_poison or not f.immediate
        if broker_poison or self._fatal is not None or any(p.cursor.failures for p in self.parts):
            for p in self.parts:
                p.cursor.suspect_poison()
            first = next((str(f.error) for f in failures if f.error.kind != PURGED), str(self._fatal or "failure"))
            self._restart(now, first, backoff=not broker_poison)

    @property
    def _reports(self) -> int:
        return sum(p.cursor.reports for p in self.parts)

    def _check_stall(self, now: float) -> None:
        count, since = self._progress
        reports = self._reports
        if reports != count or not self.in_flight:
            self._progress = (reports, now)
        elif now - since >= self.settings.delivery_timeout_s:
            self._count_error(DeliveryError("DELIVERY_TIMEOUT", f"no delivery report for "
                                                                f"{self.settings.delivery_timeout_s:g} s"))
            self._restart(now, f"no delivery report for {self.settings.delivery_timeout_s:g} s")

    def _restart(self, now: float, reason: str, *, pause: str = "", backoff: bool = True) -> None:
        """Step 5: persist the acked prefix, rewind every partition to what is persisted, throw the producer away
        (purge, close) and make a new one after a backoff (or pause the target)."""
        self._persist(now)
        for p in self.parts:
            p.cursor.rewind()  # new generation first: the purged records' reports are ignored
        old, self.producer = self.producer, None
        self._fatal = None
        if old is not None:
            try:
                old.close()
            except Exception as exc:  # closing a broken client must not stop the mirror
                log.warning("mirror %s: closing the producer failed: %s", self.name, exc)
        delay = self.backoff.next_delay() if backoff else 0.0
        self.backoff_until = now + delay
        self._progress = (self._reports, now)
        if pause:
            self.paused = pause
            retry = self.settings.auth_retry_s
            self.probe_at = now + retry if retry else None
            log.error("mirror %s: PAUSED (%s): %s. Ingestion goes on and the log keeps everything; fix the "
                      "credentials or ACLs, then `edgestream mirror resume --target %s`%s", self.name, pause, reason,
                      self.name, f" (retrying in {retry:g} s)" if retry else "")
        else:
            log.warning("mirror %s: %s; new producer in %.1f s, re-sending from the persisted cursor", self.name,
                        reason, delay)

    def _dead_letter(self, part: MirroredPartition, offset: int, err: DeliveryError) -> bool:
        if not dead_letter(self.log, self.name, self.dead_letters, part, offset, err):
            return False
        self.dead_lettered[part.cursor.topic] = self.dead_lettered.get(part.cursor.topic, 0) + 1
        return True

    # -- the producer and the Kafka topics ----------------------------------------------------------------------

    def _make_producer(self, now: float) -> None:
        try:
            producer = self._factory()
        except MirrorError as exc:
            self._note_error(str(exc))
            self.backoff_until = now + self.backoff.next_delay()
            log.error("mirror %s: cannot create the producer: %s", self.name, exc)
            return
        self.producer = producer
        self.producers_made += 1
        self._progress = (self._reports, now)
        for part in self.parts:
            part.recheck_at = 0.0
        self._recheck_topics(now, force=True)

    def _recheck_topics(self, now: float, *, force: bool = False) -> None:
        """Look up the Kafka topics of blocked partitions (and all of them for a new producer)."""
        assert self.producer is not None
        checked: dict[str, int | Exception] = {}
        for part in self.parts:
            if not (force or (part.blocked and now >= part.recheck_at)):
                continue
            dest = part.mapping.destination
            if dest not in checked:
                try:
                    checked[dest] = self.producer.partitions(dest, _METADATA_TIMEOUT_S)
                    self.connected = True
                except KafkaUnreachableError as exc:
                    self._note_error(str(exc))
                    return  # no broker answered: producing waits for it the same way
                except KafkaTopicError as exc:
                    if exc.kind == AUTHORIZATION and self.settings.on_authorization_error == "pause":
                        self._restart(now, str(exc), pause=AUTHORIZATION)
                        return
                    checked[dest] = exc
            change = part.check_result(checked[dest], now, self.settings.topic_recheck_s)
            if change:
                (log.error if part.blocked else log.info)("mirror %s: %s", self.name, change)

    # -- commands (run in the mirror thread through `call`) -----------------------------------------------------

    def pause(self, reason: str = "operator") -> dict[str, Any]:
        """Stop feeding (in-flight records are still confirmed and persisted); ingestion is unaffected."""
        was = self.paused
        self.paused, self.probe_at = reason, None
        if not was:
            log.warning("mirror %s: paused (%s); the log keeps everything until `edgestream mirror resume`",
                        self.name, reason)
        return {"target": self.name, "paused": True, "was_paused": was or None}

    def resume(self) -> dict[str, Any]:
        was = self.paused
        self.paused, self.probe_at = "", None
        self.backoff.reset()
        self.backoff_until = 0.0
        if was:
            log.info("mirror %s: resumed (was paused: %s)", self.name, was)
        return {"target": self.name, "paused": False, "was_paused": was or None}

    def reset(self, req: ResetRequest) -> list[dict[str, Any]]:
        """Move cursors, persisted before this returns (reset.reset_partitions)."""
        changes = reset_partitions(self.log, self.settings, self.parts, req)
        self.wake.set()
        return changes

    def retune(self, settings: TargetSettings, mirror: MirrorSettings, dead_letters: Mapping[str, str]) -> None:
        """A config reload that changed only what this thread reads at every turn (reload.LIVE_FIELDS): the cap,
        the live share, batch sizes, priorities, the persist interval, dead-letter topics. The producer, the
        cursors and what is in flight stay; the producer factory keeps the settings it was made with, which
        agree with these on everything the producer is configured from."""
        self.settings, self.mirror, self.dead_letters = settings, mirror, dict(dead_letters)
        self.bucket.set_rate(settings.bandwidth_bytes_per_s, settings.burst, self.monotonic())
        for part in self.parts:
            part.mapping = settings.mapping(part.cursor.topic) or part.mapping
        self.wake.set()

    # -- stop -----------------------------------------------------------------------------------------------------

    def finish(self) -> None:
        """Give in-flight records until the deadline to be confirmed, persist the acked prefix, close."""
        while self.producer is not None and self.in_flight and self.monotonic() < self._stop_deadline:
            self.producer.poll(0.05)
        self.run_commands()
        now = self.monotonic()
        self._persist(now)
        if self.producer is not None:
            for p in self.parts:
                p.cursor.rewind()
            try:
                self.producer.close()
            except Exception as exc:
                log.warning("mirror %s: closing the producer failed: %s", self.name, exc)
            self.producer = None
        for part in self.parts:
            part.partition.remove_listener(self._on_new_data)
        self.stopped = True
        self._status = self._build_status(now)

    # -- status ---------------------------------------------------------------------------------------------------

    def status(self) -> TargetStatus:
        if self._status is None or not self.alive:
            self._status = self._build_status(self.monotonic())
        return self._status

    def _build_status(self, now: float) -> TargetStatus:
        now_ms = self.wall_ms()
        parts = [snapshot(part, self.log, now, now_ms) for part in self.parts]
        if self.stopped:
            state = "stopped"
        elif self.paused:
            state = "paused"
        elif now < self.backoff_until:
            state = "backoff"
        elif self.producer is None:
            state = "starting"
        else:
            state = "running"
        return TargetStatus(
            name=self.name, bootstrap=self.settings.bootstrap, state=state, paused_reason=self.paused,
            connected=self.connected, in_flight=self.in_flight, last_error=self.last_error,
            last_error_age_s=(now - self.last_error_at) if self.last_error_at is not None else None,
            backoff_remaining_s=max(0.0, self.backoff_until - now),
            producer_recreations=max(0, self.producers_made - 1), persists=self.persists,
            persist_failures=self.persist_failures, internal_errors=self.internal_errors, sent_bytes=self.sent_bytes,
            bandwidth_bytes_per_s=self.settings.bandwidth_bytes_per_s,
            delivery_errors=tuple(sorted(self.errors.items())),
            dead_letters=tuple(sorted(self.dead_lettered.items())), partitions=tuple(parts), updated_ms=now_ms)
