"""ModbusPoller with pymodbus's RTU client against the pymodbus RTU server of `edge.simulate.modbus`, over ptys.
The poll schedule runs on a ManualClock (one advance = one poll); request timeouts are pymodbus's, real time."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edgestream.edge.clock import ManualClock
from edgestream.edge.modbus.client import ModbusReadError, PymodbusRtuClient
from edgestream.edge.modbus.fake import FakeModbusClient
from edgestream.edge.modbus.poller import ModbusPoller
from edgestream.edge.modbus.settings import load_modbus_settings
from edgestream.edge.simulate.modbus import ModbusDeviceSimulator, poller_units
from edgestream.edge.testing import FakeSink

EDGESTREAM = str(Path(sys.executable).with_name("edgestream"))
TIMEOUT_S = 1.0  # per request: generous for two busy cores; a silent unit costs exactly this per poll


async def wait_until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class Bus:
    def __init__(self, device: ModbusDeviceSimulator, poller: ModbusPoller, clock: ManualClock, sink: FakeSink) -> None:
        self.device, self.poller, self.clock, self.sink = device, poller, clock, sink

    def units(self) -> dict[int, Any]:
        return {u.unit: u for u in self.poller.statistics().units}

    async def poll(self, times: int = 1) -> None:
        for _ in range(times):
            polls = self.poller.statistics().polls
            self.clock.advance(1.0)
            await wait_until(
                lambda p=polls: self.poller.statistics().polls > p and self.clock.sleepers == 1, what="a poll"
            )

    def last(self, unit: int) -> dict[str, Any]:
        body: dict[str, Any] = json.loads([r for r in self.sink.readings if r.fields["unit"] == str(unit)][-1].payload)
        return body


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    clock = ManualClock()  # the units sample their sensors on the same clock: one sample per poll
    device = ModbusDeviceSimulator((1, 2), seed=5, clock=clock)
    path = await device.start()
    sink = FakeSink()
    settings = load_modbus_settings(
        {
            "port": path,
            "parity": "N",
            "poll_interval_s": 1.0,
            "timeout_s": TIMEOUT_S,
            "retries": 0,
            "units": poller_units((1, 2)),
        }
    )
    poller = ModbusPoller("press4", settings, sink, clock=clock)
    task = asyncio.create_task(poller.run())
    try:
        await wait_until(lambda: clock.sleepers == 1 or task.done(), what="the first poll")
        yield Bus(device, poller, clock, sink)
    finally:
        await asyncio.wait_for(poller.stop(), 15)
        await asyncio.wait_for(task, 15)
        await device.stop()


async def test_every_unit_yields_one_decoded_reading_per_poll(bus: Bus) -> None:
    await bus.poll(2)
    assert len(bus.sink.readings) == 6 and [r.fields["unit"] for r in bus.sink.readings] == ["1", "2"] * 3
    for unit in (1, 2):
        body = bus.last(unit)
        v = body["values"]
        assert body["unit"] == unit and body["ts"] == bus.clock.wall_ms()
        assert 20.0 < v["temperature"] < 70.0 and 0.0 < v["pressure"] < 20.0
        assert abs(v["temperature_x10"] - v["temperature"]) <= 0.051  # int16 tenths of the same sample
        assert v["current_cdab"] == v["current"]  # the same float, other word order
        assert v["parts"] >= 1 and v["status"] in (0, 1) and v["door_closed"] is True
        assert v["running"] == [True, v["status"] == 1]
        assert body["raw"]["current_cdab"] == body["raw"]["current"][::-1]
    first_parts = json.loads(bus.sink.readings[0].payload)["values"]["parts"]
    assert bus.last(1)["values"]["parts"] >= first_parts  # a counter never goes back
    stats = bus.poller.statistics()
    assert stats.connected and stats.readings == 6 and all(not u.errors for u in stats.units)


async def test_a_silent_unit_is_counted_and_the_other_keeps_being_polled(bus: Bus) -> None:
    bus.device.silence(2)
    started = time.monotonic()
    await bus.poll(3)
    elapsed = time.monotonic() - started
    units = bus.units()
    assert dict(units[2].errors) == {"timeout": 3} and units[2].readings == 1
    assert units[1].readings == 4 and not units[1].errors
    assert bus.device.statistics().suppressed == {2: 3}  # one request per poll, not one per block
    assert elapsed >= 3 * TIMEOUT_S  # each poll waited out the timeout once ...
    assert elapsed < 3 * TIMEOUT_S + 10  # ... and only once (generous slack for busy machines)

    bus.device.silence(2, False)
    await bus.poll()
    assert bus.units()[2].readings == 2


async def test_crc_errors_and_exception_responses_are_counted_by_unit(bus: Bus) -> None:
    bus.device.corrupt(1)
    bus.device.busy(2)
    await bus.poll()
    units = bus.units()
    assert dict(units[1].errors) == {"crc": 1} and dict(units[2].errors) == {"exception": 1}
    bus.device.corrupt(1, False)
    bus.device.busy(2, False)
    await bus.poll()
    units = bus.units()
    assert units[1].readings == units[2].readings == 2
    assert bus.poller.statistics().connected


@pytest.mark.timeout(120)
async def test_simulate_modbus_binary_with_a_silent_unit() -> None:
    proc = subprocess.Popen(
        [EDGESTREAM, "simulate", "modbus", "--units", "1,2", "--silent", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        path = (await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)).strip()
        assert path.startswith("/dev/pts/"), path
        sink = FakeSink()
        settings = load_modbus_settings(
            {"port": path, "parity": "N", "poll_interval_s": 0.1, "timeout_s": 0.3, "units": poller_units((1, 2))}
        )
        poller = ModbusPoller("press5", settings, sink)
        task = asyncio.create_task(poller.run())
        try:
            await wait_until(
                lambda: (
                    poller.statistics().units[0].readings >= 3
                    and poller.statistics().units[1].errors.get("timeout", 0) >= 2
                ),
                timeout=60,
                what="unit 1 readings and unit 2 timeouts",
            )
        finally:
            await poller.stop()
            await task
        assert all(r.fields["unit"] == "1" for r in sink.readings)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(asyncio.to_thread(proc.communicate), 30)
    assert proc.returncode == 0, err
    assert "responses by unit: 1:" in err and "suppressed" in err


def test_simulate_modbus_help_has_an_example() -> None:
    out = subprocess.run([EDGESTREAM, "simulate", "modbus", "--help"], capture_output=True, text=True, check=True)
    assert "Example" in out.stdout and "edgestream simulate modbus --units 1,2" in out.stdout


@pytest.mark.parametrize("kind", ["fake", "pymodbus"])
async def test_client_contract(kind: str) -> None:
    """What ModbusPoller relies on, held by the pymodbus adapter and by the fake the unit tests use."""
    device: ModbusDeviceSimulator | None = None
    client: Any
    if kind == "pymodbus":
        device = ModbusDeviceSimulator((1, 2))
        path = await device.start()
        settings = load_modbus_settings({"port": path, "parity": "N", "timeout_s": 0.5, "units": poller_units((1,))})
        client = PymodbusRtuClient(settings)
        silence: Callable[[int], None] = device.silence
    else:
        client = FakeModbusClient()
        for unit in (1, 2):
            client.set(unit, "input", 0, [0] * 8)
            client.set(unit, "holding", 0, [0] * 8)
            client.set(unit, "coils", 0, [1, 0])
        silence = lambda unit: client.fail.__setitem__(unit, "timeout")  # noqa: E731
    try:
        assert not client.connected
        await client.connect()
        assert client.connected
        words = await client.read(1, "input", 0, 8)
        assert len(words) == 8 and all(isinstance(w, int) and 0 <= w <= 0xFFFF for w in words)
        assert await client.read(2, "coils", 0, 2) == [True, False]
        with pytest.raises(ModbusReadError) as info:
            await client.read(1, "holding", 100, 2)  # outside the unit's map
        assert (info.value.reason, info.value.code, info.value.unit) == ("exception", 2, 1)
        silence(2)
        with pytest.raises(ModbusReadError) as info:
            await client.read(2, "input", 0, 2)
        assert info.value.reason == "timeout"
        assert len(await client.read(1, "holding", 0, 8)) == 8  # the other unit is unaffected
    finally:
        client.close()
        if device is not None:
            await device.stop()
    assert not client.connected
