"""The HTTP API of a running gateway (`edgestream run`, a child process): health, auth, produce (JSON and raw),
fetch by offset, time and cursor with long poll, cursors, errors as JSON with 4xx statuses, /metrics counting it.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgestream.store import Log
from tests.harness.gateway import GatewayProcess, running_gateway, simple_config

TOKEN = "s3cret-token"


class Api:
    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN, raw: bytes | None = None,
             ctype: str = "application/json", timeout: float = 30) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"http://127.0.0.1:{self.gw.port}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", ctype)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, payload, headers = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            status, payload, headers = exc.code, exc.read(), dict(exc.headers)
        ct = headers.get("Content-Type", "")
        return status, json.loads(payload) if ct.startswith("application/json") else payload, headers

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, doc, _ = self.call(method, path, body, **kw)
        assert status == 200, (status, doc)
        return doc

    def err(self, expected: int, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        status, doc, _ = self.call(method, path, body, **kw)
        assert status == expected, (status, doc)
        assert isinstance(doc, dict) and doc["error"] and doc["message"], doc
        return doc


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    work = tmp_path_factory.mktemp("api")
    cfg = simple_config(
        str(work / "data"),
        topics=[{"name": "telemetry", "partitions": 2, "decoder": "json", "linger_ms": 2},
                {"name": "events", "partitions": 3, "linger_ms": 1},
                {"name": "quiet", "partitions": 1, "linger_ms": 1},
                {"name": "small", "partitions": 1, "max_record_bytes": 100, "linger_ms": 1}],
    )
    cfg["http"] = {"listen": "127.0.0.1:0", "token": TOKEN}
    with running_gateway(str(work), cfg) as gw:
        yield Api(gw)


def test_health_is_open_everything_else_needs_the_token(api: Api) -> None:
    assert api.call("GET", "/healthz", token=None)[:2] == (200, {"status": "ok"})
    status, doc, _ = api.call("GET", "/readyz", token=None)
    assert status == 200 and doc == {"status": "ready"}, "no summary without the token"
    assert "records" in api.ok("GET", "/readyz")["summary"]
    for token in (None, "wrong", TOKEN + "x"):
        doc = api.err(401, "GET", "/v1/topics", token=token)
        assert doc["error"] == "unauthorized" and "Bearer" in doc["message"]
        api.err(401, "GET", "/metrics", token=token)
    assert b"edgestream_ready 1.0" in api.call("GET", "/metrics")[1]


def test_topics_and_partitions(api: Api) -> None:
    names = {t["name"]: t for t in api.ok("GET", "/v1/topics")["topics"]}
    assert {"telemetry", "telemetry.dlq", "events", "quiet", "small"} <= set(names)
    assert names["events"]["partitions"] == 3
    detail = api.ok("GET", "/v1/topics/events")
    assert detail["config"]["partitions"] == 3 and [p["partition"] for p in detail["partitions"]] == [0, 1, 2]
    assert api.ok("GET", "/v1/topics/events/partitions")["topic"] == "events"
    p = api.ok("GET", "/v1/topics/events/partitions/2")
    assert p["topic"] == "events" and p["partition"] == 2 and p["high_watermark"] >= p["log_start"] == 0
    assert api.err(404, "GET", "/v1/topics/nope")["error"] == "topic_not_found"
    assert api.err(404, "GET", "/v1/topics/events/partitions/3")["error"] == "partition_not_found"
    assert api.err(400, "GET", "/v1/topics/events/partitions/x")["error"] == "invalid_parameter"


def test_produce_json_then_fetch_the_same_records(api: Api) -> None:
    records = [
        {"value": {"t": 21.5}, "key": "k1", "headers": {"unit": "C"}},
        {"value": "plain text", "partition": 2, "timestamp_ms": 1_700_000_000_000},
        {"value_b64": base64.b64encode(b"\xff\x00\xfe").decode(), "key_b64": base64.b64encode(b"\xff\x01").decode(),
         "partition": 2},
        {"value": [1, 2, 3], "partition": 0},
    ]
    out = api.ok("POST", "/v1/topics/events/records", {"records": records})
    assert out["topic"] == "events" and len(out["offsets"]) == 4
    where = [(o["partition"], o["offset"]) for o in out["offsets"]]
    assert where[1][0] == where[2][0] == 2 and where[2][1] == where[1][1] + 1, "input order within a partition"
    p, off = where[0]
    got = api.ok("GET", f"/v1/topics/events/partitions/{p}/records?offset={off}&max_records=1")["records"][0]
    assert (got["key"], got["value"], got["headers"]) == ("k1", '{"t":21.5}', {"unit": "C"})
    page = api.ok("GET", f"/v1/topics/events/partitions/2/records?offset={where[1][1]}&max_records=2")
    text, binary = page["records"]
    assert text["value"] == "plain text" and text["timestamp_ms"] == 1_700_000_000_000
    assert binary["value"] is None and base64.b64decode(binary["value_b64"]) == b"\xff\x00\xfe"
    assert base64.b64decode(binary["key_b64"]) == b"\xff\x01"
    assert page["next_offset"] == where[2][1] + 1 and page["high_watermark"] >= page["next_offset"]
    same_key = api.ok("POST", "/v1/topics/events/records", {"records": [{"value": "again", "key": "k1"}]})
    assert same_key["offsets"][0]["partition"] == p, "a key always maps to one partition"


def test_produce_a_raw_body(api: Api) -> None:
    out = api.ok("POST", "/v1/topics/events/records?key=dev-7&partition=1", raw=b"\x00raw bytes\xff",
                 ctype="application/octet-stream")
    [(p, off)] = [(o["partition"], o["offset"]) for o in out["offsets"]]
    assert p == 1
    rec = api.ok("GET", f"/v1/topics/events/partitions/1/records?offset={off}")["records"][0]
    assert rec["key"] == "dev-7" and base64.b64decode(rec["value_b64"]) == b"\x00raw bytes\xff"
    text = api.ok("POST", "/v1/topics/events/records?partition=0", raw=b"line one", ctype="text/plain")
    assert text["offsets"][0]["partition"] == 0


@pytest.mark.parametrize(("body", "code"), [
    ({"records": []}, "invalid_body"),
    ({"records": [{}]}, "invalid_body"),
    ({"records": [{"value": "a", "value_b64": "YQ=="}]}, "invalid_body"),
    ({"records": [{"value_b64": "not base64!"}]}, "invalid_body"),
    ({"records": [{"value": "a", "partition": -1}]}, "invalid_body"),
    ({"records": [{"value": "a", "key": 5}]}, "invalid_body"),
    ({"records": [{"value": "a", "colour": "red"}]}, "invalid_body"),
    ({"records": [{"value": "a", "headers": {"n": 1}}]}, "invalid_body"),
    ({"records": [{"value": "\ud800"}]}, "invalid_body"),  # JSON can say it, UTF-8 cannot
    ({"records": [{"value": "a", "partition": None}]}, "invalid_body"),
    ([1, 2], "invalid_body"),
])
def test_produce_refuses_bad_bodies_with_a_reason(api: Api, body: Any, code: str) -> None:
    before = api.ok("GET", "/v1/topics/events")["records"]
    doc = api.err(400, "POST", "/v1/topics/events/records", body)
    assert doc["error"] == code
    assert api.ok("GET", "/v1/topics/events")["records"] == before, "nothing written"


def test_produce_errors_write_nothing(api: Api) -> None:
    assert api.err(400, "POST", "/v1/topics/events/records", raw=b"{not json")["error"] == "invalid_json"
    assert api.err(404, "POST", "/v1/topics/nope/records", {"records": [{"value": 1}]})["error"] == "topic_not_found"
    doc = api.err(404, "POST", "/v1/topics/events/records", {"records": [{"value": 1, "partition": 9}]})
    assert doc["error"] == "partition_not_found"
    doc = api.err(413, "POST", "/v1/topics/small/records", {"records": [{"value": "ok"}, {"value": "x" * 500}]})
    assert doc["error"] == "record_too_large" and doc["limit"] == 100
    assert api.ok("GET", "/v1/topics/small")["records"] == 0, "the whole request is refused, not half of it"
    doc = api.err(413, "POST", "/v1/topics/events/records", raw=b"x" * (9 << 20), ctype="application/octet-stream")
    assert doc["error"] == "payload_too_large"


def test_fetch_by_offset_time_and_cursor(api: Api) -> None:
    t0 = int(time.time() * 1000)
    api.ok("POST", "/v1/topics/quiet/records", {"records": [{"value": f"r{i}", "timestamp_ms": t0 + i * 1000}
                                                            for i in range(5)]})
    hw = api.ok("GET", "/v1/topics/quiet/partitions/0")["high_watermark"]
    base = hw - 5
    page = api.ok("GET", f"/v1/topics/quiet/partitions/0/records?offset={base}&max_records=2")
    assert [r["value"] for r in page["records"]] == ["r0", "r1"] and page["next_offset"] == base + 2
    by_time = api.ok("GET", f"/v1/topics/quiet/partitions/0/records?timestamp_ms={t0 + 2500}")
    assert [r["value"] for r in by_time["records"]] == ["r3", "r4"]
    api.ok("PUT", "/v1/cursors/reader", {"offsets": [{"topic": "quiet", "partition": 0, "offset": base + 4}]})
    by_cursor = api.ok("GET", "/v1/topics/quiet/partitions/0/records?cursor=reader")
    assert [r["value"] for r in by_cursor["records"]] == ["r4"]
    assert api.ok("GET", f"/v1/topics/quiet/partitions/0/records?offset={hw}")["records"] == []
    doc = api.err(416, "GET", f"/v1/topics/quiet/partitions/0/records?offset={hw + 1}")
    assert doc["error"] == "offset_out_of_range" and doc["high_watermark"] == hw and doc["log_start"] == 0
    for query in ("offset=-1", "offset=abc", "max_records=0", "max_records=10001", "wait_ms=30001",
                  "offset=1&cursor=reader"):
        doc = api.err(400, "GET", f"/v1/topics/quiet/partitions/0/records?{query}")
        assert doc["error"] == "invalid_parameter", query
    assert api.err(404, "GET", "/v1/topics/quiet/partitions/0/records?cursor=nobody")["error"] == "cursor_not_found"


def test_long_poll_returns_as_soon_as_a_record_arrives(api: Api) -> None:
    hw = api.ok("GET", "/v1/topics/quiet/partitions/0")["high_watermark"]
    result: dict[str, Any] = {}

    def poll() -> None:
        t = time.monotonic()
        result["doc"] = api.ok("GET", f"/v1/topics/quiet/partitions/0/records?offset={hw}&wait_ms=20000")
        result["took"] = time.monotonic() - t

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)  # let the poll reach the server and wait there
    assert waiter.is_alive(), "the poll waits at the high watermark"
    api.ok("POST", "/v1/topics/quiet/records", {"records": [{"value": "wake up"}]})
    waiter.join(20)
    assert [r["value"] for r in result["doc"]["records"]] == ["wake up"]
    assert result["took"] < 10, "answered when the record arrived, not at wait_ms"
    t = time.monotonic()
    empty = api.ok("GET", f"/v1/topics/quiet/partitions/0/records?offset={hw + 1}&wait_ms=300")
    assert empty["records"] == [] and empty["next_offset"] == hw + 1
    assert 0.25 < time.monotonic() - t < 10


def test_cursors_commit_read_list_delete(api: Api) -> None:
    hw = api.ok("GET", "/v1/topics/events/partitions/0")["high_watermark"]
    cur = api.ok("PUT", "/v1/cursors/dash-1", {"offsets": [{"topic": "events", "partition": 0, "offset": hw}],
                                              "required": False})
    assert cur["name"] == "dash-1" and cur["offsets"][0]["offset"] == hw and len(cur["offsets"][0]["log_id"]) == 32
    assert Path(api.gw.data_dir, "cursors", "dash-1").exists(), "committed to disk before the reply"
    assert api.ok("GET", "/v1/cursors/dash-1") == cur
    assert "dash-1" in {c["name"] for c in api.ok("GET", "/v1/cursors")["cursors"]}
    doc = api.err(400, "PUT", "/v1/cursors/dash-1", {"offsets": [{"topic": "events", "partition": 0,
                                                                  "offset": hw + 100}]})
    assert "outside" in doc["message"]
    api.err(400, "PUT", "/v1/cursors/dash-1", {"offsets": "all"})
    api.err(404, "PUT", "/v1/cursors/dash-1", {"offsets": [{"topic": "nope", "partition": 0, "offset": 0}]})
    api.err(400, "PUT", "/v1/cursors/..", {"offsets": []})
    assert api.ok("DELETE", "/v1/cursors/dash-1") == {"deleted": "dash-1"}
    assert api.err(404, "GET", "/v1/cursors/dash-1")["error"] == "cursor_not_found"
    assert api.err(404, "DELETE", "/v1/cursors/dash-1")["error"] == "cursor_not_found"


def test_unknown_paths_and_methods_answer_json(api: Api) -> None:
    assert api.err(404, "GET", "/v2/anything")["error"] == "not_found"
    status, doc, headers = api.call("DELETE", "/v1/topics")
    assert status == 405 and doc["error"] == "method_not_allowed" and headers.get("Allow") == "GET"


def test_status_document_and_openapi(api: Api) -> None:
    doc = api.ok("GET", "/v1/status")
    assert doc["gateway"] == "test-gw" and doc["ready"] is True and doc["sources"][0]["name"] == "sim"
    assert {t["name"] for t in doc["topics"]} >= {"telemetry", "events"}
    assert doc["disk"]["free_bytes"] > 0 and doc["recovery"]["unclean_partitions"] == 0
    spec = api.ok("GET", "/openapi.json")
    assert spec["openapi"].startswith("3.0") and spec["security"] == [{"bearer": []}]
    assert "/v1/topics/{topic}/partitions/{partition}/records" in spec["paths"]


def test_metrics_count_requests_by_route_and_produced_records(api: Api) -> None:
    api.ok("POST", "/v1/topics/quiet/records", {"records": [{"value": "m"}] * 3})
    text = api.call("GET", "/metrics")[1].decode()
    assert 'edgestream_http_requests_total{code="200",method="POST",route="/v1/topics/{topic}/records"}' in text
    assert 'edgestream_http_requests_total{code="401",method="GET",route="/v1/topics"}' in text
    produced = [line for line in text.splitlines() if line.startswith('edgestream_http_produced_records_total'
                                                                         '{topic="quiet"}')]
    assert produced and float(produced[0].split()[-1]) >= 3


def test_a_long_poll_does_not_hold_up_shutdown(tmp_path: Path) -> None:
    cfg = simple_config(str(tmp_path / "data"), sources=[])
    with running_gateway(str(tmp_path), cfg) as gw:
        api = Api(gw)
        hw = api.ok("GET", "/v1/topics/telemetry/partitions/0", token=None)["high_watermark"]
        result: dict[str, Any] = {}

        def poll() -> None:
            try:
                result["status"] = api.call("GET", f"/v1/topics/telemetry/partitions/0/records?offset={hw}"
                                                   "&wait_ms=30000", token=None)[0]
            except OSError as exc:  # the server closed the connection: also an answer
                result["status"] = str(exc)

        waiter = threading.Thread(target=poll)
        waiter.start()
        time.sleep(0.5)  # the poll is waiting in the server
        t = time.monotonic()
        gw.signal(signal.SIGTERM)
        assert gw.stop() == 0
        assert time.monotonic() - t < 15, "shutdown does not wait out the 30 s poll"
        waiter.join(10)
        assert not waiter.is_alive(), "the poll was answered or its connection closed"
        assert result["status"] == 200 or isinstance(result["status"], str), result
    with Log.open(str(tmp_path / "data")) as log:
        assert all(r.clean for r in log.recovery_reports())
