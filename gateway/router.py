"""Router: where sources deliver (it implements edge.source.Sink). Source -> topic, partition and key, into the log.

For each reading: the source's route names the topic; the key comes from the route's template (`{topic_levels[1]}`,
`{port}:{unit}`, ...); the partition from the rule (`key_hash`: by the key, or by the source when there is no key;
`source`: one partition per source; `fixed:N`). The payload is stored as it came. The topic's decoder checks it on
the way in: an undecodable payload is still stored, with a `decode_error` header, and counted. Bytes that could not
be framed, and records over the topic's size limit, go to the topic's dead-letter topic with the reason in headers.

The awaitable `submit` returns resolves when the log acknowledged the record; store errors are mapped to the two
errors sources understand: RecordRejectedError (counted, ack the sender) and SinkClosedError (do not ack).
"""

from __future__ import annotations

import asyncio
import functools
import string
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..edge.decoders import Validator, validator_for
from ..edge.errors import DecodeError, RecordRejectedError, SinkClosedError
from ..edge.source import DeadLetter, Reading
from ..store import AsyncLog, RecordIn
from ..store.errors import DiskFullError, LogBrokenError, LogClosedError
from ..store.topic import partition_for_key
from .config import SourceSpec, TopicSpec

_formatter = string.Formatter()


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a failed dead letter is counted where it failed; do not log "never retrieved"

KeyFunction = Callable[[Reading], "bytes | None"]


def compile_key_template(template: str) -> KeyFunction | None:
    """A function that renders `template` for a reading, or None for "no key".

    The common shapes (`{sensor}`, `{topic_levels[2]}`, literal text around them) compile to plain lookups: this
    runs for every message. Anything fancier (format specs, attributes) falls back to str.format. A reading that
    lacks a named field gets no key (the router counts it).
    """
    if not template:
        return None
    parts: list[tuple[str, str, int | None]] = []  # (literal, field, level index)
    simple = True
    for literal, field, spec, conv in _formatter.parse(template):
        if field is None:
            parts.append((literal, "", None))
            continue
        if spec or conv:
            simple = False
            break
        if field.startswith("topic_levels[") and field.endswith("]") and field[13:-1].isdigit():
            parts.append((literal, "topic", int(field[13:-1])))
        elif field.isidentifier():
            parts.append((literal, field, None))
        else:
            simple = False
            break
    if not simple:
        def slow(reading: Reading) -> bytes | None:
            fields: dict[str, Any] = dict(reading.fields)
            fields["source"] = reading.source
            topic = fields.get("topic")
            if topic is not None:
                fields["topic_levels"] = str(topic).split("/")
            try:
                return _formatter.vformat(template, (), fields).encode()
            except (KeyError, IndexError, AttributeError, ValueError):
                return None

        return slow

    def fast(reading: Reading) -> bytes | None:
        fields = reading.fields
        out = []
        for literal, field, level in parts:
            out.append(literal)
            if not field:
                continue
            if field == "source":
                value = reading.source
            else:
                got = fields.get(field)
                if got is None:
                    return None
                value = str(got)
            if level is not None:
                levels = value.split("/")
                if level >= len(levels):
                    return None
                value = levels[level]
            out.append(value)
        return "".join(out).encode()

    return fast


@dataclass(frozen=True)
class Route:
    source: str
    topic: str
    partitions: int
    rule: str  # key_hash | source | fixed:N
    key_template: str
    validate: Validator | None
    dead_letter_topic: str
    fixed: int = 0
    key_function: KeyFunction | None = None
    max_record_bytes: int = 1 << 20

    def key_for(self, reading: Reading) -> bytes | None:
        return self.key_function(reading) if self.key_function is not None else None

    def partition_for(self, key: bytes | None) -> int:
        if self.rule == "key_hash":
            return partition_for_key(key if key is not None else self.source.encode(), self.partitions)
        if self.rule == "source":
            return zlib.crc32(self.source.encode()) % self.partitions
        return self.fixed


class _Batch:
    """Readings staged for one partition during one loop turn."""

    __slots__ = ("counters", "futures", "records", "routes", "sizes")

    def __init__(self) -> None:
        self.records: list[RecordIn] = []
        self.futures: list[asyncio.Future[None]] = []
        self.counters: list[tuple[str, str]] = []
        self.sizes: list[int] = []
        self.routes: list[Route] = []

    def add(self, record: RecordIn, fut: asyncio.Future[None], counter: tuple[str, str], size: int,
            route: Route) -> None:
        self.records.append(record)
        self.futures.append(fut)
        self.counters.append(counter)
        self.sizes.append(size)
        self.routes.append(route)


@dataclass(frozen=True, slots=True)
class RouterStatistics:
    records_in: tuple[tuple[str, str, int], ...]  # (source, topic, records acknowledged)
    bytes_in: tuple[tuple[str, str, int], ...]
    decode_errors: tuple[tuple[str, str, int], ...]  # (topic, reason, count)
    dead_letters: tuple[tuple[str, str, int], ...]  # (topic, reason, count)
    rejected: tuple[tuple[str, str, int], ...]  # (source, reason, count)
    key_template_misses: tuple[tuple[str, int], ...]  # (source, count)
    in_flight: int


def make_route(spec: SourceSpec, topic: TopicSpec) -> Route:
    fixed = 0
    if spec.partition.startswith("fixed:"):
        fixed = int(spec.partition.split(":", 1)[1])
        if fixed >= topic.config.partitions:
            raise ValueError(f"source {spec.name}: partition fixed:{fixed} but topic {topic.name} has "
                             f"{topic.config.partitions} partition(s)")
    return Route(
        source=spec.name,
        topic=topic.name,
        partitions=topic.config.partitions,
        rule="fixed" if spec.partition.startswith("fixed:") else spec.partition,
        key_template=spec.key,
        validate=validator_for(topic.decoder, csv_columns=topic.csv_columns, csv_delimiter=topic.csv_delimiter),
        dead_letter_topic=topic.dead_letter_topic,
        fixed=fixed,
        key_function=compile_key_template(spec.key),
        max_record_bytes=topic.config.max_record_bytes,
    )


class Router:
    def __init__(self, alog: AsyncLog, routes: dict[str, Route]) -> None:
        self.alog = alog
        self.routes = routes
        self._closed = False
        self._records_in: dict[tuple[str, str], int] = {}
        self._bytes_in: dict[tuple[str, str], int] = {}
        self._decode_errors: dict[tuple[str, str], int] = {}
        self._dead_letters: dict[tuple[str, str], int] = {}
        self._rejected: dict[tuple[str, str], int] = {}
        self._key_misses: dict[str, int] = {}
        # Readings of one loop turn, per (topic, partition), appended together by `_flush` (see `submit`).
        self._staged: dict[tuple[str, int], _Batch] = {}
        self._flush_scheduled = False
        # Called with (route, record) for each acknowledged record: the MQTT listener's live tails.
        self.on_accepted: Callable[[Route, RecordIn], None] | None = None

    def replace_routes(self, routes: dict[str, Route]) -> None:
        """SIGHUP: new readings follow the new routes; readings in flight keep the route they were given."""
        self.routes = routes

    def close(self) -> None:
        self._closed = True

    # -- Sink ---------------------------------------------------------------------------------------------------

    def submit(self, reading: Reading) -> Awaitable[None]:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[None] = loop.create_future()
        if self._closed:
            result.set_exception(SinkClosedError("the gateway is shutting down"))
            return result
        route = self.routes.get(reading.source)
        if route is None:
            result.set_exception(SinkClosedError(f"source {reading.source!r} has no route (removed by a reload)"))
            return result
        key = route.key_for(reading)
        if key is None and route.key_template:
            self._key_misses[route.source] = self._key_misses.get(route.source, 0) + 1
        headers = reading.headers
        if route.validate is not None:
            try:
                route.validate(reading.payload)
            except DecodeError as exc:
                k = (route.topic, exc.reason)
                self._decode_errors[k] = self._decode_errors.get(k, 0) + 1
                headers = (*headers, ("decode_error", exc.reason.encode()))
        record = RecordIn(reading.timestamp_ms, key, reading.payload, headers)
        nbytes = len(reading.payload)
        if nbytes + (len(key) if key is not None else 0) > route.max_record_bytes:
            self._reject(route.source, "too_large")
            detail = f"record of {nbytes} bytes is over the limit of {route.max_record_bytes} (max_record_bytes)"
            letter = DeadLetter(reading.source, reading.payload, "too_large", reading.timestamp_ms,
                                detail=detail, fields=reading.fields)
            dl = asyncio.ensure_future(self._store_dead_letter(route, letter))
            dl.add_done_callback(_consume_exception)
            result.set_exception(RecordRejectedError("too_large", detail))
            return result
        # Stage it: every reading of this loop turn bound for one partition becomes one append (one queue entry
        # for the writer, one future resolved by the log), in submission order. Sources that hand over one
        # message at a time (MQTT, serial) then cost the log per batch, not per message.
        slot = (route.topic, route.partition_for(key))
        batch = self._staged.get(slot)
        if batch is None:
            batch = self._staged[slot] = _Batch()
        batch.add(record, result, (route.source, route.topic), nbytes, route)
        counter = (route.source, route.topic)
        # Counted when handed over, taken back in `_fail` if the log refuses the batch.
        self._records_in[counter] = self._records_in.get(counter, 0) + 1
        self._bytes_in[counter] = self._bytes_in.get(counter, 0) + nbytes
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return result

    def _flush(self) -> None:
        self._flush_scheduled = False
        staged, self._staged = self._staged, {}
        for (topic, partition), batch in staged.items():
            try:
                fut = self.alog.append_batch_nowait(topic, partition, batch.records)
            except (LogClosedError, LogBrokenError) as exc:
                self._fail(batch, exc)
                continue
            fut.add_done_callback(functools.partial(self._settle, batch))

    def _settle(self, batch: _Batch, fut: asyncio.Future[Any]) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled() or exc is not None:
            self._fail(batch, exc or SinkClosedError("cancelled"))
            return
        for f in batch.futures:
            if not f.done():
                f.set_result(None)
        if self.on_accepted is not None:
            for record, route in zip(batch.records, batch.routes, strict=True):
                self.on_accepted(route, record)

    def _fail(self, batch: _Batch, exc: BaseException) -> None:
        """The log refused a batch: map the error to what sources understand, and take the counts back."""
        for f, counter, nbytes in zip(batch.futures, batch.counters, batch.sizes, strict=True):
            self._records_in[counter] -= 1
            self._bytes_in[counter] -= nbytes
            if isinstance(exc, DiskFullError):
                self._reject(counter[0], "full")
                err: BaseException = RecordRejectedError("full", str(exc))
            else:
                err = SinkClosedError(str(exc))
            if not f.done():
                f.set_exception(err)

    def dead_letter(self, letter: DeadLetter) -> Awaitable[None]:
        route = self.routes.get(letter.source)
        if route is None:
            loop = asyncio.get_running_loop()
            f: asyncio.Future[None] = loop.create_future()
            f.set_exception(SinkClosedError(f"source {letter.source!r} has no route"))
            return f
        return asyncio.ensure_future(self._store_dead_letter(route, letter))

    async def _store_dead_letter(self, route: Route, letter: DeadLetter) -> None:
        dlq = route.dead_letter_topic
        limit = self.alog.log.topic(dlq).config.max_record_bytes - 1024
        payload = letter.payload
        headers = [("dlq.reason", letter.reason.encode()), ("dlq.source", letter.source.encode()),
                   ("dlq.topic", route.topic.encode())]
        if letter.detail:
            headers.append(("dlq.detail", letter.detail.encode()[:1000]))
        if len(payload) > limit:
            headers.append(("dlq.truncated_from", str(len(payload)).encode()))
            payload = payload[:limit]
        for k, v in letter.fields.items():
            headers.append((f"field.{k}", str(v).encode()[:1000]))
        key = (route.topic, letter.reason)
        try:
            await self.alog.append_batch_nowait(dlq, 0, [RecordIn(letter.timestamp_ms, None, payload,
                                                                  tuple(headers))])
        except (LogClosedError, LogBrokenError) as exc:
            raise SinkClosedError(str(exc)) from None
        except DiskFullError as exc:
            self._reject(letter.source, "full")
            raise RecordRejectedError("full", str(exc)) from None
        self._dead_letters[key] = self._dead_letters.get(key, 0) + 1

    def _reject(self, source: str, reason: str) -> None:
        k = (source, reason)
        self._rejected[k] = self._rejected.get(k, 0) + 1

    def statistics(self) -> RouterStatistics:
        return RouterStatistics(
            records_in=tuple((s, t, n) for (s, t), n in sorted(self._records_in.items())),
            bytes_in=tuple((s, t, n) for (s, t), n in sorted(self._bytes_in.items())),
            decode_errors=tuple((t, r, n) for (t, r), n in sorted(self._decode_errors.items())),
            dead_letters=tuple((t, r, n) for (t, r), n in sorted(self._dead_letters.items())),
            rejected=tuple((s, r, n) for (s, r), n in sorted(self._rejected.items())),
            key_template_misses=tuple(sorted(self._key_misses.items())),
            in_flight=self.alog.log.writer.statistics().pending_records if self.alog.log.writer else 0,
        )
