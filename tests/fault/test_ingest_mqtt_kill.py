"""At least once through a real broker: 50,000 numbered QoS 1 messages via Mosquitto (persistence on), the gateway
SIGKILLed at random moments at least 5 times; afterwards every number is in the log at least once."""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.harness.gateway import GatewayProcess
from tests.harness.ingest import mqtt_gateway_config, numbers_in_log, start_publisher
from tests.harness.procs import wait_until

pytestmark = [pytest.mark.fault, pytest.mark.mosquitto, pytest.mark.slow]

COUNT = 50_000


def test_sigkill_gateway_five_times_loses_no_message(tmp_path, mosquitto) -> None:
    data = str(tmp_path / "data")
    rng = random.Random(4711)
    gw = GatewayProcess(str(tmp_path), mqtt_gateway_config(data, mosquitto.port))
    gw.start()
    pub = start_publisher(mosquitto.port, count=COUNT, rate=4000, log_path=str(tmp_path / "pub.log"))
    kills = 0
    try:
        while kills < 5 or pub.poll() is None:
            time.sleep(rng.uniform(0.5, 2.0))
            gw.kill()
            kills += 1
            if kills >= 8 and pub.poll() is not None:
                break
            gw.start()
        assert pub.wait(120) == 0, (tmp_path / "pub.log").read_text()[-2000:]
        if gw.proc is None or gw.proc.poll() is not None:
            gw.start()
        wait_until(lambda: len(numbers_in_log(data)) == COUNT, timeout=120, interval=1.0,
                   what=f"all {COUNT} numbers in the log")
        assert gw.stop() == 0
    finally:
        if pub.poll() is None:
            pub.kill()
        if gw.proc is not None and gw.proc.poll() is None:
            gw.kill()
    seen = numbers_in_log(data)
    missing = [n for n in range(COUNT) if seen[n] == 0]
    duplicates = sum(c - 1 for c in seen.values() if c > 1)
    print(f"\n{kills} SIGKILLs: {COUNT} numbers published, {len(seen)} distinct stored, "
          f"{duplicates} duplicates (redeliveries of messages not yet acked when the gateway died)")
    assert kills >= 5
    assert not missing, f"{len(missing)} numbers lost, e.g. {missing[:10]}"
    assert set(seen) == set(range(COUNT))
    assert os.path.isdir(data)
