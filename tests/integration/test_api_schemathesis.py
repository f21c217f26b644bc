"""Property-based tests of the HTTP API against its own OpenAPI document (schemathesis): for every operation,
generated valid and invalid requests get documented status codes and content types, bodies that match the
response schemas, 4xx for invalid input and never a 5xx; the bearer token is enforced where the document says so.

The document is taken from `gateway.openapi` at import (schemathesis builds one test per operation at collection
time); a separate test checks that the running gateway serves exactly that document.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from edgestream.gateway.openapi import document
from tests.harness.gateway import GatewayProcess, running_gateway, simple_config

TOKEN = "schema-token"
MAX_EXAMPLES = 30
AUTH = {"Authorization": f"Bearer {TOKEN}"}

schema = schemathesis.openapi.from_dict(document(token=True))
schema.config.generation.update(max_examples=MAX_EXAMPLES)
# 416 is the answer to an offset beyond the high watermark, which a schema cannot know: like 404, it depends on
# the state of the log, not on the shape of the request.
_accept = schema.config.checks.positive_data_acceptance
_accept.expected_statuses = [*_accept.expected_statuses, "416"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("schemathesis")
    cfg = simple_config(str(work / "data"), topics=[
        {"name": "telemetry", "partitions": 2, "decoder": "json", "linger_ms": 1},
        {"name": "events", "partitions": 1, "linger_ms": 1, "max_record_bytes": 4096},
    ])
    cfg["http"] = {"listen": "127.0.0.1:0", "token": TOKEN}
    with running_gateway(str(work), cfg) as gw:
        yield gw


def test_the_gateway_serves_this_document(gateway: GatewayProcess) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{gateway.port}/openapi.json", headers=AUTH)
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read()) == json.loads(json.dumps(document(token=True)))


def _excluded(case: Any) -> list[Any]:
    """Checks that do not apply to this case. OpenAPI 3.0 cannot say "at most one of these query parameters", so a
    fetch giving offset, timestamp_ms and cursor together is schema-valid yet rightly refused with a 400."""
    starts = [k for k in ("offset", "timestamp_ms", "cursor") if k in (case.query or {})]
    if case.operation.path.endswith("/records") and case.method == "GET" and len(starts) > 1:
        return [positive_data_acceptance]
    return []


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: Any, gateway: GatewayProcess) -> None:
    if case.query and "wait_ms" in case.query and isinstance(case.query["wait_ms"], int):
        case.query["wait_ms"] = min(case.query["wait_ms"], 200)  # long polls on idle topics: keep the run short
    case.call_and_validate(base_url=f"http://127.0.0.1:{gateway.port}", headers=AUTH, timeout=40,
                           excluded_checks=_excluded(case))
