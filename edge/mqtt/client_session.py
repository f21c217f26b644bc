"""One connection to a broker: the `MqttSession` interface the client source drives, and its paho adapter.

`PahoSession` runs paho-mqtt inside the asyncio loop, the way aiomqtt does, without paho's own thread: the
blocking TCP connect and TLS handshake run once in a worker thread (no socket callbacks are registered yet,
so paho writes CONNECT from there and nothing else touches the client meanwhile); after that the socket is
registered with `loop.add_reader`, writes go out from the loop (`loop_write`; `add_writer` only when the
kernel buffer is full), and a task calls `loop_misc` every second for keepalive. Every paho callback
therefore runs on the loop thread: no locks, no `call_soon_threadsafe`. Measured against the alternatives
in `client.py`.

One `PahoSession` is one connection; the source makes a new one per attempt, so no state of a dead connection
(packet ids, half-read packets) leaks into the next. Manual ack is switched on in the constructor, before the
connect, so the queued session messages the broker sends right after CONNACK are not auto-acked.

paho exceptions and return codes are mapped here to edgestream errors: refused connections are
`BrokerRefusedError` (retriable or not by reason code), network failures `SourceUnavailableError`, TLS
verification failures `BrokerTlsError`, refused subscriptions `SubscriptionRefusedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..clock import Clock
from ..errors import ConfigError, EdgeError, SourceUnavailableError
from .client_settings import MqttClientSettings, TopicFilter

READ_BATCH = 256  # packets per readable event: amortises the event loop's cost over many small messages
MISC_INTERVAL_S = 1.0  # keepalive resolution; paho checks the ping deadline when loop_misc runs

# CONNACK reasons that can clear without an operator (3.1.1 code 3 is "server unavailable").
_RETRIABLE_CONNACK = {3, 0x88, 0x89, 0x97, 0x9F}  # unavailable, busy, quota exceeded, rate exceeded


class BrokerRefusedError(EdgeError):
    """The broker answered CONNECT with a failure. Bad credentials or a banned client id need an operator."""

    def __init__(self, host: str, port: int, reason: str, code: int) -> None:
        self.retriable = code in _RETRIABLE_CONNACK
        hint = "" if self.retriable else "; check username/password, client_id and the broker's ACL"
        super().__init__(f"broker {host}:{port} refused the connection: {reason} (code {code}){hint}")
        self.host, self.port, self.reason, self.code = host, port, reason, code


class BrokerTlsError(EdgeError):
    """The broker's certificate did not verify, or ours was refused: fix tls.* or the host name."""

    def __init__(self, host: str, port: int, detail: str) -> None:
        super().__init__(f"TLS with {host}:{port} failed: {detail}; check tls.ca_file, tls.cert_file/"
                         "key_file and that `host` matches the broker certificate")
        self.host, self.port, self.detail = host, port, detail


class SubscriptionRefusedError(EdgeError):
    """The broker refused a topic filter (ACL, or shared subscriptions not supported)."""

    def __init__(self, topic_filter: str, reason: str) -> None:
        super().__init__(f"broker refused subscription {topic_filter!r}: {reason}; check the broker ACL "
                         "for this client/user (and, for $share/..., that the broker supports shared "
                         "subscriptions)")
        self.topic_filter, self.reason = topic_filter, reason


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One PUBLISH as the source sees it. `topic` is None if the broker sent a topic that is not UTF-8."""

    topic: str | None
    payload: bytes
    qos: int
    mid: int
    retain: bool = False
    dup: bool = False
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectResult:
    session_present: bool


class MqttSession(Protocol):
    """One connection. Delivers PUBLISHes to the handler given at construction, on the loop thread."""

    closed: asyncio.Future[BaseException | None]  # resolves when the connection is gone (None: we closed it)

    async def connect(self) -> ConnectResult: ...

    async def subscribe(self, topics: Sequence[TopicFilter]) -> list[int]:
        """Subscribe; returns the granted QoS per filter. Raises SubscriptionRefusedError."""

    def ack(self, mid: int, qos: int) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    async def disconnect(self) -> None:
        """Send DISCONNECT (the broker keeps the session and its unacked messages) and close."""

    def abort(self) -> None:
        """Close at once, without DISCONNECT, as a crash would."""


SessionFactory = Callable[[MqttClientSettings, Callable[[IncomingMessage], None], Clock], MqttSession]


def tls_context(settings: MqttClientSettings) -> ssl.SSLContext:
    tls = settings.tls
    assert tls is not None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
        if tls.cert_file and tls.key_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS file not found: {exc.filename}", key="tls",
                          hint="check tls.ca_file / tls.cert_file / tls.key_file") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot load TLS files: {exc.reason or exc}", key="tls",
                          hint="PEM files expected; the key must match the certificate") from None
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class BufferedSocket:
    """paho's socket, read in 64 KiB chunks and written in one send per loop turn.

    paho reads a packet with three or more `recv` calls (command byte, each length byte, body) and writes every
    PUBACK with its own `send`: measured, those syscalls were a third of the gateway's CPU per message. This
    wrapper serves paho's small reads from one large read and collects its writes until `flush()`. paho only ever
    sees the socket API (recv, send, fileno, close, ...), so it needs no change of its own.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._in = b""
        self._pos = 0
        self._out = bytearray()

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._in):
            data = self._sock.recv(65536)  # BlockingIOError / SSLWantReadError pass through to paho
            if not data:
                return b""
            self._in, self._pos = data, 0
        chunk = self._in[self._pos : self._pos + bufsize]
        self._pos += len(chunk)
        return chunk

    def send(self, data: bytes | bytearray | memoryview) -> int:
        self._out += data
        return len(data)

    def flush(self) -> bool:
        """Write what paho handed over. True when all of it left (or the connection is gone: the next read
        tells paho); False: call again when writable."""
        while self._out:
            try:
                n = self._sock.send(self._out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return False
            except OSError:
                self._out.clear()  # unacked messages are redelivered on the next session: nothing is lost
                return True
            del self._out[:n]
        return True

    def close(self) -> None:
        """paho closes right after queueing DISCONNECT (and the acks before it): send those first."""
        self.flush()
        self._sock.close()

    @property
    def unsent(self) -> int:
        return len(self._out)

    def pending(self) -> int:
        """Bytes already read but not yet handed to paho (plus what TLS holds decrypted)."""
        inner = getattr(self._sock, "pending", None)
        return len(self._in) - self._pos + (inner() if inner is not None else 0)

    @property
    def raw(self) -> Any:
        return self._sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class PahoSession:
    def __init__(self, settings: MqttClientSettings, handler: Callable[[IncomingMessage], None],
                 clock: Clock) -> None:
        self._settings = settings
        self._handler = handler
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._v5 = settings.is_v5
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=None if self._v5 else False,
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,  # reconnects are ours (backoff, injected clock); no silent downgrade
            manual_ack=True,
        )
        client.suppress_exceptions = True  # a raising callback must not leave paho's reader half-way
        client.connect_timeout = settings.connect_timeout_s
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls is not None:
            client.tls_set_context(tls_context(settings))
            if settings.tls.insecure:
                client.tls_insecure_set(True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        self._sock: Any = None
        self._paused = False
        self._delivered = 0
        self._write_scheduled = False
        self._writer_added = False
        self._connack: asyncio.Future[ConnectResult] = self._loop.create_future()
        self._subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._misc: asyncio.Task[None] | None = None
        self._closing = False
        self._dropping = False
        self.closed: asyncio.Future[BaseException | None] = self._loop.create_future()

    # -- connect / subscribe --------------------------------------------------------------------------------

    async def connect(self) -> ConnectResult:
        s = self._settings
        kwargs: dict[str, Any] = {}
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
            props.ReceiveMaximum = s.max_inflight
            kwargs = {"clean_start": False, "properties": props}
        attempt = asyncio.ensure_future(asyncio.to_thread(self._client.connect, s.host, s.port,
                                                          s.keepalive_s, **kwargs))
        try:
            await asyncio.shield(attempt)
        except asyncio.CancelledError:
            # The thread cannot be interrupted; close whatever socket it ends up with.
            attempt.add_done_callback(lambda _: self._close_socket_quietly())
            raise
        except ssl.SSLCertVerificationError as exc:
            detail = f"certificate verify failed: {exc.verify_message or exc}"
            raise BrokerTlsError(s.host, s.port, detail) from None
        except ssl.SSLError as exc:
            if "CERTIFICATE" in str(exc).upper() or "ALERT" in str(exc).upper():
                raise BrokerTlsError(s.host, s.port, exc.reason or str(exc)) from None
            raise SourceUnavailableError(f"mqtt {s.host}:{s.port}", f"TLS handshake: {exc}") from None
        except (OSError, ValueError) as exc:
            raise SourceUnavailableError(f"mqtt {s.host}:{s.port}", _describe(exc)) from None
        self._attach()
        try:
            result: ConnectResult = await self._within(self._connack, "CONNACK")
            return result
        except BaseException:
            self.abort()
            raise

    def _attach(self) -> None:
        """Hand the connected socket to the event loop; from here on paho runs only on the loop thread."""
        client = self._client
        self._sock = BufferedSocket(client.socket())
        client._sock = self._sock  # paho keeps its socket here; it only uses the socket API on it
        with contextlib.suppress(OSError, AttributeError):
            # paho leaves Nagle on: a PUBACK written while the previous one is unacknowledged by TCP would wait
            # for the broker's delayed ACK (~40 ms), and with Receive Maximum the broker waits for our PUBACKs.
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._loop.add_reader(self._sock, self._on_readable)
        if client.want_write():  # CONNECT not fully written by the thread
            self._on_register_write(client, None, self._sock)
        self._misc = asyncio.ensure_future(self._misc_loop())

    async def subscribe(self, topics: Sequence[TopicFilter]) -> list[int]:
        if self._v5:
            # Retained messages only for a subscription the session did not have yet: a reconnect would
            # otherwise store every retained message again.
            entries: list[Any] = [(t.filter, SubscribeOptions(qos=t.qos, retainHandling=1)) for t in topics]
        else:
            entries = [(t.filter, t.qos) for t in topics]
        rc, mid = self._client.subscribe(entries)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise SourceUnavailableError(f"mqtt {self._settings.host}:{self._settings.port}",
                                         f"subscribe failed: {paho.error_string(rc)}")
        fut: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._subacks[mid] = fut
        codes = await self._within(fut, "SUBACK")
        for topic, code in zip(topics, codes, strict=False):
            if code.is_failure:
                raise SubscriptionRefusedError(topic.filter, f"{code.getName()} (code {code.value:#x})")
        return [code.value for code in codes]

    async def _within(self, fut: asyncio.Future[Any], what: str) -> Any:
        """Wait for `fut`, the connection's end, or connect_timeout_s on the injected clock."""
        timer = asyncio.ensure_future(self._clock.sleep(self._settings.connect_timeout_s))
        try:
            await asyncio.wait({fut, self.closed, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if fut.done():
            return fut.result()
        s = self._settings
        if self.closed.done():
            exc = self.closed.result()
            if isinstance(exc, EdgeError):
                raise exc
            raise SourceUnavailableError(f"mqtt {s.host}:{s.port}",
                                         f"connection closed while waiting for {what}")
        raise SourceUnavailableError(f"mqtt {s.host}:{s.port}", f"no {what} within {s.connect_timeout_s:g}s")

    # -- paho callbacks (loop thread) -----------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            s = self._settings
            err = BrokerRefusedError(s.host, s.port, reason.getName(), reason.value)
            self._connack.set_exception(err)
            self._set_closed(err)
        else:
            self._connack.set_result(ConnectResult(session_present=bool(flags.session_present)))

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: list[ReasonCode],
                      properties: Any) -> None:
        fut = self._subacks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(list(codes))

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._dropping:
            return  # bytes read while aborting: not handed on, not acked, so the broker redelivers them
        self._delivered += 1
        try:
            topic: str | None = msg.topic
        except UnicodeDecodeError:
            topic = None
        props = getattr(msg, "properties", None)
        user = tuple(getattr(props, "UserProperty", ())) if props is not None else ()
        try:
            self._handler(IncomingMessage(topic, bytes(msg.payload), msg.qos, msg.mid, bool(msg.retain),
                                          bool(msg.dup), user))
        except Exception as exc:
            # The source's handler does not raise by contract; if it does, the message is not acked and the
            # connection is dropped so the broker redelivers rather than the message being lost here.
            self._set_closed(exc)
            self._loop.call_soon(self.abort)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        if self._closing and not flags.is_disconnect_packet_from_server:
            self._set_closed(None)
            return
        s = self._settings
        who = "broker sent DISCONNECT" if flags.is_disconnect_packet_from_server else "connection lost"
        self._set_closed(SourceUnavailableError(f"mqtt {s.host}:{s.port}", f"{who}: {reason.getName()}"))

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho calls this before closing the fd, so the loop never polls a closed (or reused) descriptor.
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        self._writer_added = False
        if self._misc is not None:
            self._misc.cancel()
        # paho calls on_disconnect right after this with the reason; this is only the fallback.
        s = self._settings
        self._loop.call_soon(self._set_closed, None if self._closing else
                             SourceUnavailableError(f"mqtt {s.host}:{s.port}", "socket closed"))

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Try the write on the next loop turn first: acks for a whole batch of settled records go out in one
        # pass and the socket is registered for writability only if the kernel buffer is full.
        if not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write_now)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._writer_added and not self._sock.unsent:
            self._writer_added = False
            self._loop.remove_writer(sock)

    # -- I/O ------------------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        client = self._client
        for _ in range(READ_BATCH):
            before = self._delivered
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                return  # paho closed the socket; on_disconnect/on_socket_close did the rest
            if self._delivered == before or self._paused:
                break  # nothing more buffered (or the source's window is full)
        # TLS: decrypted bytes can wait inside the SSL object while the socket itself is not readable.
        pending = getattr(self._sock, "pending", None)
        if not self._paused and pending is not None and pending() > 0:
            self._loop.call_soon(self._on_readable)

    def _write_now(self) -> None:
        self._write_scheduled = False
        client = self._client
        if client.socket() is None:
            return
        client.loop_write()
        needs_writer = not self._sock.flush() or client.want_write()
        if needs_writer and not self._writer_added and client.socket() is not None:
            self._writer_added = True
            self._loop.add_writer(self._sock, self._on_writable)

    def _on_writable(self) -> None:
        client = self._client
        if client.socket() is None:
            return
        client.loop_write()
        if self._sock.flush() and not client.want_write():
            self._writer_added = False
            self._loop.remove_writer(self._sock)

    async def _misc_loop(self) -> None:
        while self._client.socket() is not None:
            await self._clock.sleep(MISC_INTERVAL_S)
            self._client.loop_misc()

    # -- the source's controls ------------------------------------------------------------------------------

    def ack(self, mid: int, qos: int) -> None:
        self._client.ack(mid, qos)

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            if self._client.socket() is not None:
                self._loop.remove_reader(self._sock)

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if self._client.socket() is not None:
                self._loop.add_reader(self._sock, self._on_readable)
                self._loop.call_soon(self._on_readable)  # bytes may sit in the SSL buffer

    async def disconnect(self) -> None:
        if self._client.socket() is None:
            self._set_closed(None)
            return
        self._closing = True
        self._client.disconnect()
        timer = asyncio.ensure_future(self._clock.sleep(self._settings.connect_timeout_s))
        try:
            waiting: list[asyncio.Future[Any]] = [self.closed, timer]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        self.abort()

    def abort(self) -> None:
        self._closing = self._dropping = True
        sock: Any = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            # paho reads EOF and cleans up through its own path (on_socket_close, on_disconnect); packets
            # still buffered before the EOF are read and dropped.
            for _ in range(100_000):
                if self._client.socket() is None:
                    break
                self._client.loop_read()
        self._close_socket_quietly()
        self._set_closed(None)

    def _close_socket_quietly(self) -> None:
        sock = self._client.socket()
        if sock is not None:  # only when paho's own cleanup did not run (cancelled connect)
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
            with contextlib.suppress(OSError):
                sock.close()
        if self._misc is not None:
            self._misc.cancel()

    def _set_closed(self, exc: BaseException | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on this port?)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "connect timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror}"
    return str(exc) or type(exc).__name__
