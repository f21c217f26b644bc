"""`edgestream topics ...` through the installed binary."""

from __future__ import annotations

import json

from tests.cli import assert_clean_error, run


def test_create_list_describe_delete(tmp_path) -> None:
    d = str(tmp_path / "data")
    r = run("topics", "create", "sensors", "--partitions", "3", "--codec", "lz4", "--durability", "interval:20",
            data_dir=d)
    assert r.code == 0, r.err
    assert "created topic sensors: 3 partition(s)" in r.out
    listed = json.loads(run("topics", "list", "--json", data_dir=d).out)
    assert listed == [{"topic": "sensors", "partitions": 3, "records": 0, "bytes": 3 * 64,
                       "durability": "interval:20", "codec": "lz4"}]
    desc = json.loads(run("topics", "describe", "sensors", "--json", data_dir=d).out)
    assert desc["config"]["codec"] == "lz4"
    assert [p["partition"] for p in desc["partitions"]] == [0, 1, 2]
    assert len({p["log_id"] for p in desc["partitions"]}) == 3, "every partition has its own log id"
    table = run("topics", "list", data_dir=d).out
    assert "sensors" in table and "interval:20" in table
    assert_clean_error(run("topics", "create", "sensors", data_dir=d), "already exists")
    assert run("topics", "create", "sensors", "--if-not-exists", data_dir=d).code == 0
    r = run("topics", "delete", "sensors", "--yes", data_dir=d)
    assert r.code == 0 and "deleted topic sensors" in r.out
    assert json.loads(run("topics", "list", "--json", data_dir=d).out) == []


def test_bad_input_gets_one_clear_line(tmp_path) -> None:
    d = str(tmp_path)
    assert_clean_error(run("topics", "describe", "nope", data_dir=d), "unknown topic 'nope'")
    assert_clean_error(run("topics", "create", "bad/name", data_dir=d), "invalid topic name")
    assert_clean_error(run("topics", "create", "x", "--durability", "sometimes", data_dir=d), "durability")
    assert_clean_error(run("topics", "create", "x", "--partitions", "0", data_dir=d), "partitions")
    assert_clean_error(run("topics", "list", data_dir=str(tmp_path / "missing")), "does not exist")
    r = run("topics", "create", "x", "--codec", "gzip", data_dir=d)
    assert r.code == 2 and "Traceback" not in r.err and "gzip" in r.err


def test_data_dir_from_environment(tmp_path) -> None:
    d = str(tmp_path)
    assert run("topics", "create", "envtopic", env={"EDGESTREAM_DATA_DIR": d}).code == 0
    assert "envtopic" in run("topics", "list", data_dir=d).out
