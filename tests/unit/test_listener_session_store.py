"""The MQTT listener's session storage: `SessionFile` (the file format, durable replace, torn files, write
errors) and the contract it shares with `MemorySessionStorage` (round trip, expiry at load by the wall clock,
bounds). Time is a `ManualClock`."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgestream.edge.clock import ManualClock
from edgestream.edge.mqtt.session import PacketIds
from edgestream.edge.mqtt.session_file import CORRUPT_SUFFIX, HEADER_SIZE, TMP_SUFFIX, SessionFile, parse, render
from edgestream.edge.mqtt.session_store import (
    MemorySessionStorage,
    SessionFileWriteError,
    SessionLimits,
    SessionStorage,
    StoredSession,
    StoredSubscription,
    encode_session,
)

T0 = 1_700_000_000_000  # the ManualClock's wall time at 0


def session(client_id: str, *, expiry_s: int = 300, disconnected_ms: int | None = T0, subs: int = 1,
            ids: tuple[int, ...] = ()) -> StoredSession:
    return StoredSession(
        client_id, expiry_s, disconnected_ms,
        tuple(StoredSubscription(f"plant/{client_id}/{i}/#", 0, i % 2 == 1, False, i % 3) for i in range(subs)),
        ids,
    )


StorageFactory = Callable[..., SessionStorage]


@pytest.fixture(params=["memory", "file"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> StorageFactory:
    """Makes the storage under test and 'restarts' it: the same object in memory, a new SessionFile on the
    same path for the file."""
    memory: list[MemorySessionStorage] = []

    def make(limits: SessionLimits | None = None) -> SessionStorage:
        if request.param == "memory":
            memory.append(memory[-1].reopen(limits) if memory else MemorySessionStorage(clock=clock, limits=limits))
            return memory[-1]
        return SessionFile(str(tmp_path / "listener" / "mqtt.sessions"), clock=clock, limits=limits)

    return make


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall_ms=T0)


# -------------------------------------------------------------------------------------------- contract


def test_round_trip_of_every_field(reopen: StorageFactory) -> None:
    storage = reopen()
    assert storage.load() == []
    stored = [session("a", subs=3, ids=(1, 7, 65535)), session("b", expiry_s=10, subs=0),
              session("connected", disconnected_ms=None)]
    storage.save({s.client_id: s for s in stored})
    storage.save({"b": None, "c": session("c")})  # b ends, c begins
    loaded = {s.client_id: s for s in reopen().load()}
    assert set(loaded) == {"a", "connected", "c"}
    assert loaded["a"] == stored[0]
    assert loaded["connected"].disconnected_ms == T0  # connected when the gateway stopped: disconnected now


def test_expiry_at_load_uses_the_wall_clock(reopen: StorageFactory, clock: ManualClock) -> None:
    storage = reopen()
    storage.load()
    storage.save({
        "short": session("short", expiry_s=10),
        "long": session("long", expiry_s=3600),
        "connected": session("connected", expiry_s=10, disconnected_ms=None),
        "future": session("future", expiry_s=10, disconnected_ms=T0 + 86_400_000),  # the clock went back
    })
    clock.advance(10)  # exactly the expiry of "short": gone
    again = reopen()
    assert {s.client_id for s in again.load()} == {"long", "connected", "future"}
    stats = again.statistics()
    assert (stats.loaded, stats.expired_at_load) == (3, 1)


def test_a_session_over_a_bound_is_not_kept_but_the_others_are(reopen: StorageFactory) -> None:
    limits = SessionLimits(max_sessions=2, max_subscriptions=2, max_session_bytes=400)
    storage = reopen(limits)
    storage.load()
    storage.save({"ok": session("ok", subs=2), "subs": session("subs", subs=3),
                  "big": session("big", ids=tuple(range(1, 200)))})
    storage.save({"ok2": session("ok2"), "third": session("third")})  # max_sessions: the third is refused
    storage.save({"ok": session("ok", subs=3)})  # grows over the bound: removed, not kept stale
    stats = storage.statistics()
    assert stats.over_limit == 4
    assert {s.client_id for s in reopen(limits).load()} == {"ok2"}


def test_lowered_limits_at_load_keep_the_sessions_expiring_last(reopen: StorageFactory) -> None:
    storage = reopen()
    storage.load()
    storage.save({f"s{i}": session(f"s{i}", expiry_s=100 + i) for i in range(5)}
                 | {"many": session("many", subs=5, expiry_s=1000)})
    again = reopen(SessionLimits(max_sessions=2, max_subscriptions=4))
    assert [s.client_id for s in again.load()] == ["s4", "s3"]
    assert again.statistics().over_limit == 4  # "many" for its subscriptions, s0..s2 for max_sessions


@settings(max_examples=40, deadline=None)
@given(st.lists(st.builds(
    StoredSession,
    client_id=st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
    expiry_s=st.integers(1, 0xFFFFFFFF),
    disconnected_ms=st.none() | st.integers(T0 - 10**9, T0),
    subscriptions=st.lists(st.builds(
        StoredSubscription,
        topic_filter=st.sampled_from(["#", "+", "a/+/b", "a/#", "$SYS/x", "ünï/cödé"]),
        qos=st.integers(0, 2), no_local=st.booleans(), retain_as_published=st.booleans(),
        retain_handling=st.integers(0, 2),
    ), max_size=4, unique_by=lambda s: s.topic_filter).map(tuple),
    awaiting_release=st.lists(st.integers(1, 65535), max_size=20, unique=True).map(lambda ids: tuple(sorted(ids))),
), max_size=8, unique_by=lambda s: s.client_id))
def test_the_file_format_round_trips_any_sessions(sessions: list[StoredSession]) -> None:
    body = b"[" + b",".join(encode_session(s) for s in sessions) + b"]"
    assert parse(render(body, T0)) == sessions


# ---------------------------------------------------------------------------------------------- the file


def _saved_file(tmp_path: Path, clock: ManualClock) -> tuple[str, bytes]:
    storage = SessionFile(str(tmp_path / "s.sessions"), clock=clock)
    storage.load()
    storage.save({"a": session("a", subs=2, ids=(3,)), "b": session("b")})
    data = Path(storage.path).read_bytes()
    return storage.path, data


def test_every_torn_or_flipped_file_is_treated_as_absent_and_kept_aside(tmp_path: Path, clock: ManualClock,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    path, good = _saved_file(tmp_path, clock)
    damaged = [good[:n] for n in range(len(good))]  # torn at every length
    damaged += [good[:i] + bytes([good[i] ^ 0x10]) + good[i + 1:] for i in range(len(good))]  # one bit off
    damaged.append(good + b"\n")  # a tail
    for data in damaged:
        Path(path).write_bytes(data)
        storage = SessionFile(path, clock=clock)
        assert storage.load() == [], data
        assert storage.statistics().corrupt_files == 1
        assert Path(path + CORRUPT_SUFFIX).read_bytes() == data
        assert not os.path.exists(path)
    assert "torn or garbled" in caplog.text


@pytest.mark.parametrize("body, why", [
    (b'[["a",10,null,[["a/#/b",0,false,false,0]],[]]]', "invalid topic filter"),
    (b'[["a",10,null,[],[]],["a",20,null,[],[]]]', "stored twice"),
    (b'[["a",10,null,[],[0]]]', ">= 1"),
    (b'[["a",-1,null,[],[]]]', ">= 0"),
    (b'{"a": 1}', "Expected `array`"),
])
def test_a_file_with_good_checksums_but_bad_content_is_corrupt(tmp_path: Path, clock: ManualClock,
                                                              body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse(render(body, T0))
    path = tmp_path / "s.sessions"
    path.write_bytes(render(body, T0))
    storage = SessionFile(str(path), clock=clock)
    assert storage.load() == []
    assert storage.statistics().corrupt_files == 1


def test_a_file_of_a_newer_format_version_is_not_read(tmp_path: Path, clock: ManualClock) -> None:
    path, good = _saved_file(tmp_path, clock)
    header = bytearray(good[:HEADER_SIZE - 4])
    header[4] = 2
    Path(path).write_bytes(bytes(header) + zlib.crc32(header).to_bytes(4, "little") + good[HEADER_SIZE:])
    with pytest.raises(ValueError, match="format version 2"):
        parse(Path(path).read_bytes())


def test_load_removes_an_interrupted_save_and_save_needs_load(tmp_path: Path, clock: ManualClock) -> None:
    path, good = _saved_file(tmp_path, clock)
    Path(path + TMP_SUFFIX).write_bytes(good[:10])
    storage = SessionFile(path, clock=clock)
    with pytest.raises(RuntimeError, match="before load"):
        storage.save({"x": session("x")})
    assert [s.client_id for s in storage.load()] == ["a", "b"]
    assert not os.path.exists(path + TMP_SUFFIX)
    assert Path(path).read_bytes() == good  # load never rewrites the file


def test_a_failed_save_removes_the_file_and_the_next_save_writes_everything(tmp_path: Path,
                                                                          clock: ManualClock) -> None:
    path, _ = _saved_file(tmp_path, clock)
    storage = SessionFile(path, clock=clock)
    storage.load()
    os.mkdir(path + TMP_SUFFIX)  # the temp file cannot be created
    with pytest.raises(SessionFileWriteError) as failed:
        storage.save({"b": None, "c": session("c", ids=(9,))})
    assert failed.value.removed and failed.value.retriable
    assert "the next change retries" in str(failed.value)
    assert not os.path.exists(path)  # no stale QoS 2 state for a restart to find
    os.rmdir(path + TMP_SUFFIX)
    storage.save({})
    assert [(s.client_id, s.awaiting_release) for s in SessionFile(path, clock=clock).load()] == [
        ("a", (3,)), ("c", (9,))
    ]
    stats = storage.statistics()
    assert (stats.writes, stats.write_errors, stats.bytes) == (1, 1, os.path.getsize(path))


def test_the_file_is_one_header_and_a_json_body(tmp_path: Path, clock: ManualClock) -> None:
    path, data = _saved_file(tmp_path, clock)
    body = msgspec.json.decode(data[HEADER_SIZE:])
    assert body == [["a", 300, T0, [["plant/a/0/#", 0, False, False, 0], ["plant/a/1/#", 0, True, False, 1]], [3]],
                    ["b", 300, T0, [["plant/b/0/#", 0, False, False, 0]], []]]
    assert data[:4] == b"EMQS"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_an_unusable_directory_means_no_sessions_and_failing_saves(tmp_path: Path, clock: ManualClock) -> None:
    (tmp_path / "file").write_text("not a directory")
    storage = SessionFile(str(tmp_path / "file" / "s.sessions"), clock=clock)
    assert storage.load() == []
    with pytest.raises(SessionFileWriteError):
        storage.save({"a": session("a")})


# ---------------------------------------------------------------------------------------------- PacketIds


def test_packet_ids_count_their_changes() -> None:
    ids = PacketIds([1, 2])
    ids.add(2)
    ids.discard(7)
    assert ids.version == 0  # no change, no save
    ids.add(3)
    ids.discard(1)
    ids |= {4}
    ids -= {2}
    assert sorted(ids) == [3, 4] and 3 in ids and 1 not in ids
    assert ids.version == 4
    ids.clear()
    assert len(ids) == 0 and ids.version == 6
