"""The MQTT protocol of one client connection, without I/O: bytes and decisions in, bytes and events out.

`ServerConnection` is fed the bytes a client sent (`receive_data`) and yields what the listener must act on
(`next_event`): a CONNECT to authenticate, a message to store, a dead letter to keep, subscriptions that
changed, the end of the connection. It answers everything else itself (PINGRESP, SUBACK, PUBCOMP, protocol
errors) into `data_to_send()`. The listener reports back with `accept`/`refuse` and `complete`.

Acknowledgement rules it enforces (MQTT 5.0 section 4.6, 3.1.1 section 4.6):
1. every QoS 1/2 PUBLISH gets a ticket; its PUBACK/PUBREC is written only once `complete(ticket)` says the
   record is durable (or was rejected for good), and acks leave in the order the PUBLISHes arrived: a
   completed ticket waits behind an earlier one still pending;
2. at most `receive_maximum` submissions (any QoS) and `max_inflight_bytes` of payload are unresolved at a
   time; past that `next_event` returns None until a completion frees room, and the listener stops reading
   the socket (backpressure, not buffering);
3. a QoS 2 packet id stays in the session from its PUBREC until the PUBREL, so a redelivered PUBLISH with
   that id is acknowledged again without being stored twice.
"""

from __future__ import annotations

import dataclasses
import secrets
import struct
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import cast

from ..errors import MalformedPacketError
from . import reasons
from .auth import Refusal
from .codec import encode_packet
from .decoder import PacketDecoder, decode_packet_bytes
from .errors import MalformedPublishError
from .events import (
    ConnectionClosed,
    ConnectionLimits,
    ConnectRequested,
    DeadLetterRequested,
    Event,
    MessageReceived,
    SubscriptionsChanged,
)
from .packets import (
    MQTT_5,
    AuthPacket,
    ConnackPacket,
    ConnectPacket,
    DisconnectPacket,
    OversizedPublish,
    Packet,
    PingreqPacket,
    PubackPacket,
    PubcompPacket,
    PublishPacket,
    PubrecPacket,
    PubrelPacket,
    SubackPacket,
    SubscribePacket,
    UnsubackPacket,
    UnsubscribePacket,
    Will,
)
from .properties import EMPTY, Properties
from .session import SessionState
from .topics import SHARED_PREFIX, TopicFilter, is_valid_topic_filter, is_valid_topic_name

_ACK = struct.Struct(">BBH")  # PUBACK/PUBREC/PUBCOMP with reason 0: type, remaining length 2, packet id
_PINGRESP = b"\xd0\x00"
_V3_UNACCEPTABLE_VERSION = b"\x20\x02\x00\x01"
_REASON_STRING_MAX = 200


class State(Enum):
    AWAIT_CONNECT = "await_connect"
    AUTHENTICATING = "authenticating"
    CONNECTED = "connected"
    CLOSED = "closed"


class _Inflight:
    __slots__ = ("packet_id", "qos", "reason_code", "reason_string", "size")

    def __init__(self, qos: int, packet_id: int | None, size: int) -> None:
        self.qos = qos
        self.packet_id = packet_id
        self.size = size
        self.reason_code: int | None = None
        self.reason_string: str | None = None


def _new_client_id() -> str:
    return "auto-" + secrets.token_hex(8)


class ServerConnection:
    def __init__(self, limits: ConnectionLimits, *, new_client_id: Callable[[], str] = _new_client_id) -> None:
        self.limits = limits
        self.state = State.AWAIT_CONNECT
        self.protocol_version = 0  # unknown until CONNECT
        self.client_id = ""
        self.keepalive_s = 0  # enforced by the listener at 1.5x; 0 = none
        self.session: SessionState | None = None
        self.clean_start = True
        self.max_packet_size_out: int | None = None  # the client's limit on what we send (MQTT 5)
        self.acks_sent = 0
        self._new_client_id = new_client_id
        self._decoder = PacketDecoder(max_packet_bytes=limits.max_packet_bytes)
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._connect: ConnectPacket | None = None
        self._assigned_id = False
        self._session_expiry_s = 0
        self._will: Will | None = None
        self._accepted = False
        self._draining = False
        self._problem_information = True
        self._aliases: dict[int, str] = {}
        self._inflight: dict[int, _Inflight] = {}
        self._inflight_bytes = 0
        self._acks: deque[_Inflight] = deque()
        self._qos2_pending: set[int] = set()
        self._next_ticket = 1

    # -------------------------------------------------------------------------------------------- state

    @property
    def inflight(self) -> int:
        """Submissions not yet completed."""
        return len(self._inflight)

    @property
    def window_full(self) -> bool:
        return (
            len(self._inflight) >= self.limits.receive_maximum
            or self._inflight_bytes >= self.limits.max_inflight_bytes
        )

    @property
    def blocked(self) -> bool:
        """True while `next_event` cannot make progress whatever arrives: stop reading the socket."""
        if self.state is State.CONNECTED:
            return self._draining or self.window_full
        return self.state is not State.AWAIT_CONNECT

    @property
    def buffered(self) -> int:
        return self._decoder.buffered

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    # ------------------------------------------------------------------------------------------- inputs

    def receive_data(self, data: bytes) -> None:
        if self.state is not State.CLOSED:
            self._decoder.receive_data(data)

    def next_event(self) -> Event | None:
        while True:
            if self._events:
                return self._events.popleft()
            if self.blocked or self.state is State.CLOSED:
                return None
            try:
                packet = self._decoder.next_packet()
            except MalformedPublishError as exc:
                letter = DeadLetterRequested(None, "malformed_packet", str(exc), None, exc.data)
                return self._violation(exc.reason_code, str(exc), letter)
            except MalformedPacketError as exc:
                return self._violation(exc.reason_code, str(exc))
            if packet is None:
                return None
            event = self._handle(packet)
            if event is not None:
                return event

    def accept(self, session: SessionState, *, session_present: bool) -> None:
        """Let the client in with `session` (a stored one when resuming, else new)."""
        if self.state is not State.AUTHENTICATING or self._connect is None:
            raise RuntimeError(f"accept() in state {self.state.value}")
        session.expiry_s = self._session_expiry_s
        self.session = session
        self.state = State.CONNECTED
        self._accepted = True
        self._decoder.capture_oversize_bytes = self.limits.oversize_capture_bytes
        props = EMPTY
        if self.protocol_version == MQTT_5:
            props = self._connack_properties(self._connect)
        self._send(ConnackPacket(session_present, reasons.SUCCESS, props))

    def refuse(self, refusal: Refusal, detail: str = "") -> None:
        if self.state is not State.AUTHENTICATING:
            raise RuntimeError(f"refuse() in state {self.state.value}")
        self._refuse_connect(refusal.code(self.protocol_version), detail, refusal.name.lower())

    def complete(self, ticket: int, reason_code: int = reasons.SUCCESS, reason_string: str | None = None) -> None:
        """The submission for `ticket` is settled: durable (SUCCESS), or rejected for good (an MQTT 5 reason
        code >= 0x80 that says why; MQTT 3.1.1 acknowledges it like a success)."""
        entry = self._inflight.pop(ticket, None)
        if entry is None:
            return
        self._inflight_bytes -= entry.size
        if entry.qos:
            entry.reason_code = reason_code
            entry.reason_string = reason_string
            self._flush_acks()

    def drain(self) -> None:
        """Stop taking packets (the server is stopping); acks of what is in flight still go out."""
        self._draining = True

    def close(self, reason_code: int, *, keep_will: bool = False, detail: str = "") -> None:
        """End the connection from the server side; MQTT 5 clients get a DISCONNECT with `reason_code`."""
        if self.state is State.CONNECTED and self.protocol_version == MQTT_5:
            self._send(DisconnectPacket(reason_code, self._reason_props(detail)))
        elif self.state is State.AUTHENTICATING:
            self._refuse_connect(Refusal.SERVER_UNAVAILABLE.code(self.protocol_version), detail, "")
        if not keep_will:
            self._will = None
        self.state = State.CLOSED

    def connection_lost(self) -> Will | None:
        """The socket is gone. Returns the will to publish, if the client had one and did not cancel it."""
        will = self._will if self._accepted else None
        self._will = None
        self.state = State.CLOSED
        self._acks.clear()
        return will

    def detach_session(self) -> SessionState | None:
        session, self.session = self.session, None
        return session

    # ----------------------------------------------------------------------------------------- handling

    def _handle(self, packet: Packet | OversizedPublish) -> Event | None:
        kind = type(packet)
        if self.state is State.AWAIT_CONNECT:
            if kind is ConnectPacket:
                return self._on_connect(cast(ConnectPacket, packet))
            return self._violation(reasons.PROTOCOL_ERROR, f"{kind.__name__} before CONNECT")
        if kind is PublishPacket:
            return self._on_publish(cast(PublishPacket, packet))
        if kind is PubrelPacket:
            self._on_pubrel(cast(PubrelPacket, packet))
        elif kind is PingreqPacket:
            self._out.append(_PINGRESP)
        elif kind is SubscribePacket:
            return self._on_subscribe(cast(SubscribePacket, packet))
        elif kind is UnsubscribePacket:
            return self._on_unsubscribe(cast(UnsubscribePacket, packet))
        elif kind is DisconnectPacket:
            return self._on_disconnect(cast(DisconnectPacket, packet))
        elif kind is OversizedPublish:
            return self._on_oversized(cast(OversizedPublish, packet))
        elif kind in (PubackPacket, PubrecPacket, PubcompPacket):
            pass  # acks of messages we never sent at QoS > 0: harmless, ignored
        elif kind is AuthPacket:
            return self._violation(reasons.PROTOCOL_ERROR, "AUTH without an authentication method")
        else:
            return self._violation(reasons.PROTOCOL_ERROR, f"{kind.__name__} sent by a client")
        return None

    def _on_connect(self, p: ConnectPacket) -> Event | None:
        self.protocol_version = p.protocol_version
        v5 = p.protocol_version == MQTT_5
        if p.properties.authentication_method is not None:
            code, detail = reasons.BAD_AUTHENTICATION_METHOD, "authentication methods: none"
            return self._refuse_connect(code, detail, reasons.name(code), violation=True)
        client_id = p.client_id
        if not client_id:
            if not v5 and not p.clean_start:
                code, detail = reasons.V3_IDENTIFIER_REJECTED, "an empty client id needs a clean session"
                return self._refuse_connect(code, detail, "client_identifier_not_valid", violation=True)
            client_id = self._new_client_id()
            self._assigned_id = True
        if p.will is not None:
            if not is_valid_topic_name(p.will.topic):
                code = reasons.TOPIC_NAME_INVALID
                detail = "invalid will topic"
                return self._refuse_connect(code if v5 else None, detail, reasons.name(code), violation=True)
            if p.will.qos > self.limits.max_qos:
                code = reasons.QOS_NOT_SUPPORTED
                detail = "will QoS not supported"
                return self._refuse_connect(code if v5 else None, detail, reasons.name(code), violation=True)
        max_expiry = self.limits.session_expiry_max_s
        if v5:
            self._session_expiry_s = min(p.properties.session_expiry_interval or 0, max_expiry)
            self.max_packet_size_out = p.properties.maximum_packet_size
            self._problem_information = p.properties.request_problem_information != 0
        else:
            self._session_expiry_s = 0 if p.clean_start else max_expiry  # 3.1.1 sessions never expire: cap
        self.keepalive_s = p.keepalive
        kmax = self.limits.keepalive_max_s
        if v5 and kmax and (p.keepalive == 0 or p.keepalive > kmax):
            self.keepalive_s = kmax  # announced as Server Keep Alive; 3.1.1 has no way to say so
        self.client_id = client_id
        self.clean_start = p.clean_start
        self._connect = p
        self._will = p.will
        self.state = State.AUTHENTICATING
        return ConnectRequested(p, client_id)

    def _connack_properties(self, p: ConnectPacket) -> Properties:
        limits = self.limits
        asked_expiry = p.properties.session_expiry_interval or 0
        return Properties(
            session_expiry_interval=self._session_expiry_s if self._session_expiry_s != asked_expiry else None,
            receive_maximum=limits.receive_maximum if limits.receive_maximum < 65535 else None,
            maximum_qos=limits.max_qos if limits.max_qos < 2 else None,
            maximum_packet_size=limits.max_packet_bytes,
            assigned_client_identifier=self.client_id if self._assigned_id else None,
            topic_alias_maximum=limits.topic_alias_maximum or None,
            server_keep_alive=self.keepalive_s if self.keepalive_s != p.keepalive else None,
            subscription_identifier_available=0,
            shared_subscription_available=0,
        )

    def _on_publish(self, p: PublishPacket) -> Event | None:
        if p.qos > self.limits.max_qos:
            return self._violation(reasons.QOS_NOT_SUPPORTED, f"QoS {p.qos} over the maximum {self.limits.max_qos}")
        topic = self._resolve_topic(p)
        if type(topic) is not str:
            return cast(ConnectionClosed, topic)
        if p.properties.subscription_identifiers:
            return self._violation(reasons.PROTOCOL_ERROR, "subscription identifier in a client's PUBLISH")
        if topic is not p.topic:
            p = dataclasses.replace(p, topic=topic)
        ticket = self._admit(p.qos, p.packet_id, len(p.payload))
        return None if ticket is None else MessageReceived(ticket, p)

    def _resolve_topic(self, p: PublishPacket) -> str | ConnectionClosed:
        topic = p.topic
        alias = p.properties.topic_alias
        if alias is not None:
            if not 0 < alias <= self.limits.topic_alias_maximum:
                return self._protocol_error(reasons.TOPIC_ALIAS_INVALID, f"topic alias {alias} out of range")
            if topic:
                if is_valid_topic_name(topic):
                    self._aliases[alias] = topic
            else:
                known = self._aliases.get(alias)
                if known is None:
                    return self._protocol_error(reasons.PROTOCOL_ERROR, f"topic alias {alias} was never set")
                topic = known
        if not is_valid_topic_name(topic):
            return self._protocol_error(reasons.TOPIC_NAME_INVALID, f"invalid topic name {topic!r}")
        return topic

    def _admit(self, qos: int, packet_id: int | None, size: int) -> int | None:
        """A ticket for one submission; None for a QoS 2 redelivery that must not be stored again."""
        if qos == 2:
            assert packet_id is not None and self.session is not None
            if packet_id in self._qos2_pending:
                return None  # still being stored: its PUBREC follows in order
            if packet_id in self.session.awaiting_release:
                entry = _Inflight(2, packet_id, 0)
                entry.reason_code = reasons.SUCCESS
                self._acks.append(entry)
                self._flush_acks()
                return None
            self._qos2_pending.add(packet_id)
        ticket = self._next_ticket
        self._next_ticket += 1
        entry = _Inflight(qos, packet_id, size)
        self._inflight[ticket] = entry
        self._inflight_bytes += size
        if qos:
            self._acks.append(entry)
        return ticket

    def _flush_acks(self) -> None:
        acks = self._acks
        v5 = self.protocol_version == MQTT_5
        while acks and acks[0].reason_code is not None:
            entry = acks.popleft()
            packet_id = cast(int, entry.packet_id)
            code = cast(int, entry.reason_code)
            if entry.qos == 2:
                self._qos2_pending.discard(packet_id)
                if (code < 0x80 or not v5) and self.session is not None:
                    self.session.awaiting_release.add(packet_id)
            if self.state is not State.CONNECTED:
                continue
            if code == reasons.SUCCESS or not v5:
                self._out.append(_ACK.pack(0x40 if entry.qos == 1 else 0x50, 2, packet_id))
            else:
                props = self._reason_props(entry.reason_string or "") if self._problem_information else EMPTY
                ack = PubackPacket(packet_id, code, props) if entry.qos == 1 else PubrecPacket(packet_id, code, props)
                self._send(ack)
            self.acks_sent += 1

    def _on_pubrel(self, p: PubrelPacket) -> None:
        assert self.session is not None
        if p.packet_id in self.session.awaiting_release:
            self.session.awaiting_release.discard(p.packet_id)
            self._out.append(_ACK.pack(0x70, 2, p.packet_id))
        elif self.protocol_version == MQTT_5:
            self._send(PubcompPacket(p.packet_id, reasons.PACKET_IDENTIFIER_NOT_FOUND))
        else:
            self._out.append(_ACK.pack(0x70, 2, p.packet_id))

    def _on_subscribe(self, p: SubscribePacket) -> Event:
        assert self.session is not None
        v5 = self.protocol_version == MQTT_5
        if v5 and p.properties.subscription_identifiers:
            return self._violation(reasons.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED, "subscription identifiers")
        subs = self.session.subscriptions
        codes = []
        for sub in p.subscriptions:
            text = sub.topic_filter
            if not self.limits.allow_subscribe:
                code = reasons.NOT_AUTHORIZED
            elif text.startswith(SHARED_PREFIX):
                code = reasons.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
            elif not is_valid_topic_filter(text):
                code = reasons.TOPIC_FILTER_INVALID
            elif text not in subs and len(subs) >= self.limits.max_subscriptions:
                code = reasons.QUOTA_EXCEEDED
            else:
                subs[text] = (TopicFilter.parse(text), sub)
                code = reasons.SUCCESS  # granted QoS 0: live tails are best effort
            codes.append(code if v5 or code == reasons.SUCCESS else reasons.UNSPECIFIED_ERROR)
        self._send(SubackPacket(p.packet_id, tuple(codes)))
        return SubscriptionsChanged()

    def _on_unsubscribe(self, p: UnsubscribePacket) -> Event:
        assert self.session is not None
        subs = self.session.subscriptions
        codes = tuple(
            reasons.SUCCESS if subs.pop(text, None) is not None else reasons.NO_SUBSCRIPTION_EXISTED
            for text in p.topic_filters
        )
        self._send(UnsubackPacket(p.packet_id, codes if self.protocol_version == MQTT_5 else ()))
        return SubscriptionsChanged()

    def _on_disconnect(self, p: DisconnectPacket) -> Event:
        expiry = p.properties.session_expiry_interval
        if expiry is not None:
            if self._session_expiry_s == 0 and expiry > 0:
                return self._violation(reasons.PROTOCOL_ERROR, "session expiry set at DISCONNECT after 0")
            if self.session is not None:
                self.session.expiry_s = min(expiry, self.limits.session_expiry_max_s)
        if p.reason_code != reasons.DISCONNECT_WITH_WILL:
            self._will = None
        self.state = State.CLOSED
        return ConnectionClosed("client_disconnect", None)

    def _on_oversized(self, o: OversizedPublish) -> Event | None:
        detail = f"PUBLISH of {o.size} bytes over the {o.limit}-byte limit"
        try:
            p: PublishPacket | None = cast(PublishPacket, decode_packet_bytes(o.data, self.protocol_version))
        except MalformedPacketError:
            p = None
        topic = None
        if p is not None:
            topic = p.topic or self._aliases.get(p.properties.topic_alias or 0)
        payload = o.data if p is None else p.payload
        if self.protocol_version == MQTT_5 or p is None or p.qos > self.limits.max_qos:
            # MQTT 5 clients were told the limit, so this is a protocol error; a 3.1.1 client was not, and
            # closing would make it redeliver forever: it gets its ack once the dead letter is stored.
            letter = DeadLetterRequested(None, "too_large", detail, topic, payload)
            return self._violation(reasons.PACKET_TOO_LARGE, detail, letter)
        ticket = self._admit(p.qos, p.packet_id, len(payload))
        return None if ticket is None else DeadLetterRequested(ticket, "too_large", detail, topic, payload)

    # ------------------------------------------------------------------------------------------ helpers

    def _send(self, packet: Packet) -> None:
        self._out.append(encode_packet(packet, self.protocol_version or 4))

    def _reason_props(self, detail: str) -> Properties:
        return Properties(reason_string=detail[:_REASON_STRING_MAX]) if detail else EMPTY

    def _refuse_connect(
        self, code: int | None, detail: str, label: str = "", *, violation: bool = False
    ) -> ConnectionClosed:
        """CONNACK with `code` (None: no code fits a 3.1.1 client, just close), then close."""
        v5 = self.protocol_version == MQTT_5
        if code is not None:
            self._send(ConnackPacket(False, code, self._reason_props(detail) if v5 else EMPTY))
        self._will = None
        self.state = State.CLOSED
        label = label or reasons.name(code if code is not None and v5 else reasons.UNSPECIFIED_ERROR)
        return ConnectionClosed(label, code, detail, violation)

    def _violation(self, code: int, detail: str, letter: DeadLetterRequested | None = None) -> Event:
        """The client broke the protocol: say why (MQTT 5) and close. The will, if any, is published.
        With a `letter`, the dead letter comes first and the close right after it."""
        closed = self._protocol_error(code, detail)
        if letter is None:
            return closed
        self._events.append(closed)
        return letter

    def _protocol_error(self, code: int, detail: str) -> ConnectionClosed:
        if self.state is State.CONNECTED and self.protocol_version == MQTT_5:
            self._send(DisconnectPacket(code, self._reason_props(detail)))
        elif self.state is State.AWAIT_CONNECT and code == reasons.UNSUPPORTED_PROTOCOL_VERSION:
            self._out.append(_V3_UNACCEPTABLE_VERSION)  # the one CONNACK every version can read
        self.state = State.CLOSED
        return ConnectionClosed(reasons.name(code), code, detail, violation=True)
