"""Simulated MQTT sensors: factory telemetry published to a broker at a fixed aggregate rate.

Topics look like `<prefix>/line3/temperature/temperature-7`; payloads are the JSON of `telemetry.Sample`
(now and then a malformed one, as real lines produce). With `numbered`, every payload carries one global
sequence number so a test can check that each one arrived: `{"n":17,"sensor":...}` for JSON, `17|<bytes>` for
a malformed payload; `sequence_number()` reads both.

QoS 1 publishing keeps its own window of unacknowledged messages (default 100). paho's QoS 1 publisher scans
its whole outgoing table on every PUBACK (`_update_inflight`, measured ~3k msg/s at 1000 in flight against
~5k at 20-100) and its 16-bit packet ids collide past 65,535 unacked messages, so the window stays well below
both. paho's own thread does the I/O and reconnects; messages unacked when a connection drops are sent again
on the next one (duplicates are possible, losses are not).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from .telemetry import Sensor, fleet, malformed


def topic_for(sensor: Sensor, prefix: str) -> str:
    """`line2/vibration-6` -> `<prefix>/line2/vibration/vibration-6`."""
    line, name = sensor.sensor_id.split("/", 1)
    return f"{prefix}/{line}/{sensor.kind}/{name}"


def numbered(payload: bytes, n: int, *, is_json: bool) -> bytes:
    if is_json and payload.startswith(b"{"):
        return b'{"n":%d,' % n + payload[1:]
    return b"%d|" % n + payload


def sequence_number(payload: bytes) -> int | None:
    """The number `numbered()` put into a payload, or None if it carries none."""
    if payload.startswith(b'{"n":'):
        digits = payload[5:26].partition(b",")[0].partition(b"}")[0]
    else:
        digits = payload.partition(b"|")[0] if b"|" in payload[:21] else b""
    return int(digits) if digits.isdigit() else None


@dataclass(frozen=True, slots=True)
class SimulatedMessage:
    topic: str
    payload: bytes
    malformed: bool


def messages(
    sensors: list[Sensor],
    *,
    prefix: str = "factory",
    malformed_rate: float = 0.0,
    numbered_from: int | None = None,
    wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    seed: int = 0,
) -> Iterator[SimulatedMessage]:
    """Endless round-robin over the sensors (a sensor in a dropout is skipped). Pure apart from `wall_ms`."""
    rng = random.Random(seed)
    topics = [topic_for(s, prefix) for s in sensors]
    n = numbered_from
    while True:
        for sensor, topic in zip(sensors, topics, strict=True):
            sample = sensor.sample(wall_ms())
            if sample is None:
                continue  # the sensor is in a dropout, as real ones are now and then
            bad = bool(malformed_rate) and rng.random() < malformed_rate
            payload = malformed(rng) if bad else sample.to_json()
            if n is not None:
                payload = numbered(payload, n, is_json=not bad)
                n += 1
            yield SimulatedMessage(topic, payload, bad)


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    sensors: int = 10
    rate: float = 100.0  # messages per second, all sensors together
    qos: int = 1
    prefix: str = "factory"
    count: int | None = None  # stop after this many messages
    duration_s: float | None = None  # or after this long
    malformed_rate: float = 0.0
    numbered: bool = False
    protocol: str = "5"
    client_id: str = ""
    window: int = 100  # QoS 1 messages published and not yet acked
    username: str | None = None
    password: str | None = None
    seed: int = 0
    drain_timeout_s: float = 30.0  # at the end: how long to wait for the last PUBACKs

    def __post_init__(self) -> None:
        if self.sensors < 1:
            raise ValueError("sensors must be >= 1")
        if self.rate <= 0:
            raise ValueError("rate must be > 0 messages/s")
        if self.qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        if not 0.0 <= self.malformed_rate <= 1.0:
            raise ValueError("malformed rate must be between 0 and 1")
        if not 1 <= self.window <= 65535:
            raise ValueError("window must be 1..65535 (paho's packet ids are 16 bits)")
        if self.protocol not in ("3.1.1", "5"):
            raise ValueError("protocol must be 3.1.1 or 5")


@dataclass(frozen=True, slots=True)
class SimulationResult:
    sent: int  # handed to the client library
    acked: int  # PUBACKed by the broker (QoS 1) or written to the socket (QoS 0)
    failed: int  # refused by the client library (QoS 0 while disconnected)
    malformed: int
    elapsed_s: float
    reconnects: int

    def summary(self) -> str:
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (f"sent {self.sent}, acked {self.acked}, failed {self.failed}, malformed {self.malformed}, "
                f"reconnects {self.reconnects} in {self.elapsed_s:.2f} s ({rate:,.0f} msg/s)")


class Publisher:
    """paho client on its own thread with a bounded window of unacked QoS 1 messages."""

    def __init__(self, s: SimulatorSettings) -> None:
        self._window = threading.BoundedSemaphore(s.window)
        self._qos = s.qos
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.acked = 0
        self.connects = 0
        self.error = ""
        v5 = s.protocol == "5"
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id or f"edgestream-sim-{random.getrandbits(32):08x}",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        self._client.max_inflight_messages_set(s.window)  # never queued inside paho: our window is the limit
        self._client.reconnect_delay_set(1, 2)
        if s.username is not None:
            self._client.username_pw_set(s.username, s.password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._settings = s

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            self.error = f"broker refused the connection: {reason}"
            return
        self.connects += 1
        self._connected.set()

    def _on_disconnect(self, *args: object) -> None:
        self._connected.clear()

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason: object,
                    properties: object) -> None:
        with self._lock:
            self.acked += 1
        if self._qos:
            self._window.release()

    def connect(self, timeout: float = 10.0) -> None:
        s = self._settings
        try:
            self._client.connect(s.host, s.port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {s.host}:{s.port}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise ConnectionError(self.error or f"no CONNACK from {s.host}:{s.port} within {timeout:g}s")

    def publish(self, topic: str, payload: bytes) -> bool:
        if self._qos:
            self._window.acquire()  # blocks while `window` messages are unacked: memory stays bounded
        rc = self._client.publish(topic, payload, qos=self._qos).rc
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return True
        if self._qos and rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            return True  # paho keeps a QoS 1 message while disconnected and sends it after the reconnect
        if self._qos:
            self._window.release()
        return False

    def unacked(self, sent: int) -> int:
        with self._lock:
            return sent - self.acked

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def run(
    s: SimulatorSettings,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
) -> SimulationResult:
    """Publish until `count` messages, `duration_s`, or `stop` is set; then wait for the last PUBACKs."""
    pub = Publisher(s)
    pub.connect()
    stream = messages(fleet(s.sensors, seed=s.seed), prefix=s.prefix, malformed_rate=s.malformed_rate,
                      numbered_from=0 if s.numbered else None, seed=s.seed)
    sent = failed = bad = 0
    start = monotonic()
    try:
        try:
            for msg in stream:
                now = monotonic()
                if (s.count is not None and sent + failed >= s.count) or \
                        (s.duration_s is not None and now - start >= s.duration_s) or (stop and stop.is_set()):
                    break
                due = start + (sent + failed) / s.rate  # a schedule, not a sleep per message: no drift
                if due > now:
                    sleep(due - now)
                if pub.publish(msg.topic, msg.payload):
                    sent += 1
                    bad += msg.malformed
                else:
                    failed += 1
        except KeyboardInterrupt:
            pass  # Ctrl-C ends the run like --count would: wait for the acks, print the summary
        deadline = monotonic() + s.drain_timeout_s
        while pub.unacked(sent) > 0 and monotonic() < deadline:
            sleep(0.01)
    finally:
        elapsed = monotonic() - start
        pub.close()
    return SimulationResult(sent=sent, acked=pub.acked, failed=failed, malformed=bad, elapsed_s=elapsed,
                            reconnects=max(0, pub.connects - 1))
