"""edgestream's own MQTT server: sensors publish to the gateway, and their PUBACK means "on disk".

`MqttListener` accepts MQTT 3.1.1 and 5 clients over TCP or TLS, authenticates them (password hashes, client
certificates, or anonymous when allowed), hands every PUBLISH to the `Sink` as a `Reading` and acknowledges
QoS 1/2 only once the sink says the record is durable (rules in `connection.py`). It also serves live tails:
`publish_local` forwards what the gateway accepted to subscribers, at QoS 0, dropping for slow ones.

Structure: `connection.ServerConnection` is the protocol (no I/O), `listener_protocol.ListenerProtocol`
drives one connection from asyncio's callbacks, and this module owns what spans connections: the server
socket, client ids and sessions (takeover, expiry), authentication, subscriptions, timers and counters.

Sessions (subscriptions, QoS 2 packet ids awaiting PUBREL, expiry) are saved through the injected
`SessionStorage` (a file under the data dir in the gateway, in memory by default) and restored at `start()`;
what a client is sent never runs ahead of what is saved (rules in `listener_sessions.py`).

Deliberate limits: wills are stored as soon as a connection breaks (an MQTT 5 Will Delay Interval is not
waited out) and not at all on session takeover or shutdown; an MQTT 5 client that sends more than the
Receive Maximum we announced is slowed down, like a 3.1.1 client, rather than disconnected with 0x93,
because paho 2.x ignores the server's Receive Maximum and would be disconnected over and over.

Shutdown (`stop`), in order:
1. stop accepting connections, and stop reading the ones open (what they sent and we did not read is not
   acknowledged: their clients redeliver it);
2. wait up to `stop_timeout_s` (on the injected clock) for the submissions in flight to resolve, the
   session changes their acks wait for to be saved, and the acks to be written;
3. tell MQTT 5 clients "server shutting down" and close every connection; sockets that do not close within
   a short grace are aborted;
4. save the sessions once more (up to `stop_timeout_s`), now with the time each connection ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from ..clock import Clock, SystemClock
from ..errors import ConfigError
from ..source import Sink
from . import reasons
from .auth import Authenticator, Refusal
from .codec import encode_packet
from .connection import State
from .errors import ListenerBindError
from .events import ConnectionLimits, ConnectRequested
from .listener_protocol import ListenerProtocol
from .listener_sessions import SessionKeeper
from .listener_settings import MqttListenerSettings
from .listener_stats import Counters, MqttListenerStatistics
from .packets import MQTT_3_1_1, MQTT_5, PublishPacket
from .session import SessionState, SessionStore
from .session_store import MemorySessionStorage, SessionLimits, SessionStorage

log = logging.getLogger(__name__)

_SWEEP_S = 1.0  # keepalive and connect timeouts are checked this often; MQTT's own unit is the second
_CLOSE_GRACE_S = 5.0  # a closed connection whose client does not read its last bytes is aborted after this


class MqttListener:
    """An MQTT server for sensors, feeding `sink`. A `Source`: `run()` serves until `stop()`.

    `sessions` keeps persistent sessions across restarts (`session_file.SessionFile`); by default they are
    kept in memory, which a restarted gateway does not find."""

    def __init__(self, settings: MqttListenerSettings, sink: Sink, *, clock: Clock | None = None,
                 sessions: SessionStorage | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self.sink = sink
        self.clock: Clock = clock or SystemClock()
        self.limits = ConnectionLimits.from_settings(settings)
        self.counters = Counters()
        self._changed = asyncio.Event()
        self._auth = Authenticator(settings.users, allow_anonymous=settings.allow_anonymous)
        self._hashing = asyncio.Semaphore(1)  # slow password checks use one core at most, even under a flood
        self._clients: set[ListenerProtocol] = set()
        self._active: dict[str, ListenerProtocol] = {}  # client id -> its connected connection
        self._subscribers: set[ListenerProtocol] = set()
        self._sessions = SessionStore(settings.max_sessions, on_drop=self._session_dropped)
        if sessions is None:
            sessions = MemorySessionStorage(clock=self.clock, limits=self.session_limits(settings))
        self.keeper = SessionKeeper(sessions, self._sessions, self._session_of, name=self.name,
                                    on_saved=self._changed.set)
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self.port: int | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        """Bind and start serving. Returns the bound port (the one picked when settings.port is 0)."""
        if self._server is not None:
            raise RuntimeError("MqttListener.start() called twice")
        settings = self.settings
        context = self._tls_context() if settings.tls else None
        await self.keeper.restore(self.clock, settings.session_expiry_max_s)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: ListenerProtocol(self),
                settings.host,
                settings.port,
                ssl=context,
                reuse_address=True,
                ssl_handshake_timeout=settings.connect_timeout_s if context else None,
            )
        except OSError as exc:
            raise ListenerBindError(settings.host, settings.port, exc.strerror or str(exc)) from exc
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._sweeper = asyncio.create_task(self._sweep(), name=f"{self.name}-timers")
        log.info("MQTT listener %r on %s:%d (%s)", self.name, settings.host, self.port, "TLS" if context else "TCP")
        return self.port

    async def run(self) -> None:
        if self._server is None:
            await self.start()
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting and reading, wait for in-flight acks (up to stop_timeout_s), close everything."""
        if self._server is None:
            return
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._server.close()
        for client in list(self._clients):
            client.core.drain()
            client.pump()
        settled = await self._wait_until(
            lambda: self.keeper.idle and all(c.core.inflight == 0 for c in self._clients),
            self.settings.stop_timeout_s,
        )
        if not settled:
            log.warning("MQTT listener %r: stopping with submissions still in flight (not acknowledged; "
                        "their clients will redeliver)", self.name)
        for client in list(self._clients):
            client.close(reasons.SERVER_SHUTTING_DOWN, "server shutting down")
        if not await self._wait_until(lambda: not self._clients, _CLOSE_GRACE_S):
            for client in list(self._clients):
                client.abort()
        if not await self._wait_until(lambda: self.keeper.idle, self.settings.stop_timeout_s):
            log.warning("MQTT listener %r: stopping before the last session save finished (sessions keep the "
                        "state of the previous save)", self.name)
        self.keeper.close()
        for task in [*self._tasks, self._sweeper]:
            if task is not None:
                task.cancel()
        for task in [*self._tasks, self._sweeper]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._server.wait_closed()
        self._stopped.set()

    async def _wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = asyncio.ensure_future(self.clock.sleep(timeout_s))
        try:
            while not done():
                self._changed.clear()
                changed = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait({changed, deadline}, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if deadline.done():
                    return done()
            return True
        finally:
            deadline.cancel()

    @staticmethod
    def session_limits(settings: MqttListenerSettings) -> SessionLimits:
        """The bounds a session storage for these settings needs: every connected client's session and the
        disconnected ones kept in memory."""
        return SessionLimits(max_sessions=settings.max_sessions + settings.max_connections,
                             max_subscriptions=settings.max_subscriptions)

    def progressed(self) -> None:
        """Called when a submission resolved (stop() may be waiting for that)."""
        if self._stopping:
            self._changed.set()

    def _tls_context(self) -> ssl.SSLContext:
        s = self.settings
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(s.tls_cert_file), str(s.tls_key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load TLS certificate {s.tls_cert_file} with key {s.tls_key_file}: {exc}",
                              key="tls_cert_file", hint="check both paths and that the key matches the certificate",
                              ) from exc
        if s.tls_ca_file:
            try:
                context.load_verify_locations(cafile=s.tls_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load the client CA {s.tls_ca_file}: {exc}", key="tls_ca_file",
                                  hint="point it at a PEM file of the CA that signs client certificates") from exc
        context.verify_mode = (
            ssl.CERT_REQUIRED if s.require_client_cert else ssl.CERT_OPTIONAL if s.tls_ca_file else ssl.CERT_NONE
        )
        return context

    # ----------------------------------------------------------------------------------- connections

    def connection_made(self, client: ListenerProtocol) -> None:
        counters = self.counters
        if self._stopping or len(self._clients) >= self.settings.max_connections:
            counters.connections_refused += 1
            log.warning("MQTT listener %r: refused %s: %d connections open (raise max_connections)",
                        self.name, client.peer, len(self._clients))
            client.core.state = State.CLOSED
            client.abort()
            return
        counters.connections_total += 1
        self._clients.add(client)

    def connection_lost(self, client: ListenerProtocol) -> None:
        if client not in self._clients:
            return
        self._clients.discard(client)
        self._subscribers.discard(client)
        self.counters.acks_sent_closed += client.core.acks_sent
        will = client.core.connection_lost()
        client_id = client.core.client_id
        self.keeper.forget(client)
        if self._active.get(client_id) is client:
            del self._active[client_id]
            session = client.core.detach_session()
            if session is not None:
                session.disconnected_ms = self.clock.wall_ms()
                self._sessions.put(session, self.clock.monotonic())
                self.keeper.changed(client_id)
        if will is not None and not self._stopping:
            client.publish_will(will)
        self._changed.set()

    def authenticate(self, client: ListenerProtocol, event: ConnectRequested) -> None:
        task = asyncio.ensure_future(self._authenticate(client, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _authenticate(self, client: ListenerProtocol, event: ConnectRequested) -> None:
        p = event.packet
        try:
            if self._auth.is_fast(p.username, p.password):
                refusal = self._auth.check(p.username, p.password, certificate=client.certificate)
            else:
                async with self._hashing:
                    refusal = await asyncio.to_thread(
                        self._auth.check, p.username, p.password, certificate=client.certificate
                    )
        except Exception:
            log.exception("MQTT listener %r: authentication of %s failed", self.name, client.peer)
            refusal = Refusal.SERVER_UNAVAILABLE
        if client.core.state is not State.AUTHENTICATING:
            return  # the connection went away meanwhile
        if self._stopping:
            refusal = Refusal.SERVER_UNAVAILABLE
        if refusal is None:
            self._accept(client, event)
        else:
            if refusal is not Refusal.SERVER_UNAVAILABLE:
                self.counters.auth_failures += 1
                log.info("MQTT listener %r: refused %s (client id %r, user %r): %s", self.name, client.peer,
                         event.client_id, p.username, refusal.name.lower())
            client.core.refuse(refusal)
            client.close(reasons.NOT_AUTHORIZED)
        client.pump()

    def _accept(self, client: ListenerProtocol, event: ConnectRequested) -> None:
        client_id = event.client_id
        clean = event.packet.clean_start
        old = self._active.pop(client_id, None)
        if old is not None:
            # One client id, one connection: the newer wins (a sensor that reconnected before we noticed).
            self.counters.takeovers += 1
            session = old.core.detach_session()
            self._subscribers.discard(old)
            old.close(reasons.SESSION_TAKEN_OVER, "another connection took over this client id")
        else:
            session = self._sessions.take(client_id, self.clock.monotonic())
        if clean:
            session = None
        present = session is not None
        session = session or SessionState(client_id)
        session.disconnected_ms = None
        self._active[client_id] = client
        client.core.accept(session, session_present=present)
        client.session_attached()
        self._update_subscribers(client)
        self.keeper.changed(client_id, client)  # the CONNACK waits if the session is (or was) stored

    def subscriptions_changed(self, client: ListenerProtocol) -> None:
        self._update_subscribers(client)
        self.session_changed(client)

    def session_changed(self, client: ListenerProtocol) -> None:
        """The session of a connected client changed: saved before the client hears of it."""
        if self._active.get(client.core.client_id) is client:
            self.keeper.changed(client.core.client_id, client)

    def _update_subscribers(self, client: ListenerProtocol) -> None:
        session = client.core.session
        if session is not None and session.subscriptions:
            self._subscribers.add(client)
        else:
            self._subscribers.discard(client)

    def _session_of(self, client_id: str) -> SessionState | None:
        client = self._active.get(client_id)
        if client is not None:
            return client.core.session
        return self._sessions.peek(client_id)

    def _session_dropped(self, client_id: str) -> None:
        self.keeper.changed(client_id)  # expired or evicted: gone from the storage too

    async def _sweep(self) -> None:
        settings = self.settings
        while True:
            await self.clock.sleep(_SWEEP_S)
            now = self.clock.monotonic()
            for client in list(self._clients):
                try:
                    client.check_timers(now, settings.connect_timeout_s, _CLOSE_GRACE_S)
                except Exception:  # one connection's bug must not stop the timers of all the others
                    log.exception("MQTT listener %r: timer check of %s failed; aborting it", self.name, client.peer)
                    client.abort()
            self._sessions.expire(now)

    # ------------------------------------------------------------------------------------- live tails

    def publish_local(self, topic: str, payload: bytes, *, client_id: str | None = None) -> int:
        """Forward a record the gateway accepted to matching subscribers, at QoS 0. Returns how many got it.

        A subscriber whose socket buffer already holds `subscriber_buffer_bytes` misses the message (counted
        in `subscriber_drops`): a slow tail must not grow memory. `client_id` names the publisher, for MQTT 5
        subscriptions with No Local. Call it on the event loop's thread.
        """
        if not self._subscribers:
            return 0
        levels = topic.split("/")
        dollar = topic.startswith("$")
        encoded: dict[int, bytes] = {}
        limit = self.settings.subscriber_buffer_bytes
        counters = self.counters
        sent = 0
        for client in self._subscribers:
            core = client.core
            transport = client.transport
            if core.session is None or core.state is not State.CONNECTED or transport is None:
                continue
            for topic_filter, sub in core.session.subscriptions.values():
                if topic_filter.matches(levels, dollar) and not (sub.no_local and client_id == core.client_id):
                    break
            else:
                continue
            version = MQTT_5 if core.protocol_version == MQTT_5 else MQTT_3_1_1
            data = encoded.get(version)
            if data is None:
                try:
                    data = encoded[version] = encode_packet(PublishPacket(topic, payload), version)
                except ValueError:  # a topic over MQTT's 65,535 bytes: no subscriber can be sent it
                    counters.subscriber_drops += 1
                    break
            too_big = core.max_packet_size_out is not None and len(data) > core.max_packet_size_out
            if too_big or transport.is_closing() or client.buffered_out + len(data) > limit:
                counters.subscriber_drops += 1
                continue
            client.send_live(data)
            sent += 1
        counters.forwarded += sent
        return sent

    # ------------------------------------------------------------------------------------- statistics

    def statistics(self) -> MqttListenerStatistics:
        return self.counters.snapshot(
            connections_current=len(self._clients),
            acks_sent=self.counters.acks_sent_closed + sum(c.core.acks_sent for c in self._clients),
            inflight=sum(c.core.inflight for c in self._clients),
            sessions_stored=len(self._sessions),
            subscribers=len(self._subscribers),
            sessions=self.keeper.counts(),
        )
