"""`edgestream produce` and `edgestream consume` through the installed binary."""

from __future__ import annotations

import json
import subprocess
import time

from edgestream.store import Log
from tests.cli import EDGESTREAM, assert_clean_error, run


def _topic(d: str, name: str = "t", *extra: str) -> None:
    r = run("topics", "create", name, *extra, data_dir=d)
    assert r.code == 0, r.err


def test_produce_reports_offsets_and_consume_reads_them_back(tmp_path) -> None:
    d = str(tmp_path)
    _topic(d, "t", "--partitions", "2")
    lines = [f"reading {i}" for i in range(500)]
    r = run("produce", "t", "--partition", "1", "--report-offsets", data_dir=d, input="\n".join(lines) + "\n")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [f"1 {i}" for i in range(500)]
    out = run("consume", "t", "--partition", "1", data_dir=d).out
    assert out.splitlines() == lines
    assert run("consume", "t", "--partition", "0", data_dir=d).out == ""


def test_keyed_records_land_on_one_partition_and_jsonl_has_every_field(tmp_path) -> None:
    d = str(tmp_path)
    _topic(d, "t", "--partitions", "4")
    r = run("produce", "t", "--key", "line3", "--report-offsets", data_dir=d, input="a\nb\nc")
    parts = {ln.split()[0] for ln in r.out.splitlines()}
    assert len(parts) == 1 and len(r.out.splitlines()) == 3, "one key, one partition, last line without newline kept"
    recs = [json.loads(x) for x in run("consume", "t", "--format", "jsonl", data_dir=d).out.splitlines()]
    assert [x["value"] for x in recs] == ["a", "b", "c"]
    assert {x["key"] for x in recs} == {"line3"}
    assert set(recs[0]) >= {"partition", "offset", "epoch", "timestamp", "timestamp_ms", "key", "value", "headers"}
    assert recs[0]["timestamp"].endswith("Z")


def test_binary_values_come_out_base64_in_jsonl(tmp_path) -> None:
    d = str(tmp_path)
    _topic(d)
    run("produce", "t", data_dir=d, input=b"\xff\xfe\x00raw\n")
    rec = json.loads(run("consume", "t", "--format", "jsonl", data_dir=d).out)
    assert rec["value"] is None and rec["value_b64"] == "//4AcmF3"


def test_consume_from_time_and_from_offset_and_max(tmp_path) -> None:
    d = str(tmp_path)
    _topic(d)
    with Log.open(d) as log:
        for i in range(10):
            log.append("t", 0, f"r{i}".encode(), timestamp_ms=1_700_000_000_000 + i * 1000).result()
    out = run("consume", "t", "--from-time", "2023-11-14T22:13:25Z", data_dir=d).out.split()
    assert out == [f"r{i}" for i in range(5, 10)]
    assert run("consume", "t", "--from-time", "1700000008000", data_dir=d).out.split() == ["r8", "r9"]
    assert run("consume", "t", "--from-offset", "7", "--max", "2", data_dir=d).out.split() == ["r7", "r8"]
    assert_clean_error(run("consume", "t", "--from-offset", "99", data_dir=d), "outside t/0")
    r = run("consume", "t", "--from-offset", "1", "--cursor", "c", data_dir=d)
    assert r.code == 2 and "at most one" in r.err


def test_cursor_resumes_where_it_stopped(tmp_path) -> None:
    d = str(tmp_path)
    _topic(d)
    run("produce", "t", data_dir=d, input="\n".join(str(i) for i in range(10)) + "\n")
    assert run("consume", "t", "--cursor", "ops", "--max", "4", data_dir=d).out.split() == ["0", "1", "2", "3"]
    assert run("consume", "t", "--cursor", "ops", data_dir=d).out.split() == ["4", "5", "6", "7", "8", "9"]
    assert run("consume", "t", "--cursor", "ops", data_dir=d).out == ""


def test_follow_sees_records_appended_by_another_process(tmp_path) -> None:
    d = str(tmp_path)
    _topic(d)
    follower = subprocess.Popen([EDGESTREAM, "--data-dir", d, "consume", "t", "--follow"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)  # let the follower start and reach the end of the (empty) log
        run("produce", "t", data_dir=d, input="late-1\nlate-2\n")
        assert follower.stdout is not None
        got = [follower.stdout.readline().strip() for _ in range(2)]
        assert got == [b"late-1", b"late-2"]
    finally:
        follower.terminate()
        follower.wait(10)


def test_record_over_the_limit_is_refused_with_a_clear_error(tmp_path) -> None:
    d = str(tmp_path)
    _topic(d, "t", "--max-record-bytes", "100")
    r = run("produce", "t", "--report-offsets", data_dir=d, input="small\n" + "x" * 101 + "\n")
    assert_clean_error(r, "over the limit of 100 bytes")
    assert run("consume", "t", data_dir=d).out.split() == ["small"], "the records before it are kept"


def test_locked_data_dir_is_a_clear_error(tmp_path) -> None:
    d = str(tmp_path)
    _topic(d)
    with Log.open(d):  # a "running gateway" holds the lock
        r = run("produce", "t", data_dir=d, input="x\n")
        assert_clean_error(r, "in use by another edgestream process", "pid")
        assert run("consume", "t", data_dir=d).code == 0, "reading beside a running gateway works"


def test_unknown_topic_and_partition(tmp_path) -> None:
    d = str(tmp_path)
    _topic(d)
    assert_clean_error(run("produce", "nope", data_dir=d, input="x\n"), "unknown topic")
    assert_clean_error(run("produce", "t", "--partition", "3", data_dir=d, input="x\n"), "no partition 3")
    assert_clean_error(run("consume", "t", "--partition", "3", data_dir=d), "no partition 3")
