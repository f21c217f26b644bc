"""ModbusPoller against a scripted master, FakeSink and ManualClock: schedule, payloads, failing units."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from edgestream.edge.clock import ManualClock
from edgestream.edge.modbus.fake import FakeModbusClient
from edgestream.edge.modbus.poller import ModbusPoller
from edgestream.edge.modbus.registers import encode_value
from edgestream.edge.modbus.settings import load_modbus_settings
from edgestream.edge.testing import FakeSink

BLOCKS = [
    {"name": "temperature", "function": "input", "address": 0, "type": "float32"},
    {"name": "parts", "function": "holding", "address": 0, "type": "uint32", "word_order": "little"},
    {"name": "oil_temp", "function": "holding", "address": 2, "type": "int16", "scale": 0.1},
    {"name": "running", "function": "coils", "address": 0, "count": 2},
]


async def until(cond: Callable[[], bool], steps: int = 2000) -> None:
    for _ in range(steps):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


class Rig:
    def __init__(self, units: tuple[int, ...] = (1, 2), **overrides: object) -> None:
        self.settings = load_modbus_settings(
            {
                "port": "/dev/ttyRS485",
                "poll_interval_s": 1.0,
                "units": [{"unit": u, "registers": BLOCKS} for u in units],
                **overrides,
            }
        )
        self.sink = FakeSink()
        self.clock = ManualClock()
        self.client = FakeModbusClient()
        for u in units:
            self.client.set(u, "input", 0, encode_value("float32", 40.0 + u))
            self.client.set(u, "holding", 0, encode_value("uint32", 70000 + u, word_order="little"))
            self.client.set(u, "holding", 2, encode_value("int16", -15))
            self.client.set(u, "coils", 0, [1, 0])
        self.poller = ModbusPoller("press4", self.settings, self.sink, clock=self.clock, client=self.client)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Rig:
        self.task = asyncio.create_task(self.poller.run())
        await until(lambda: self.clock.sleepers == 1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.poller.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    async def tick(self, seconds: float = 1.0) -> None:
        """Advance to the next tick and let that poll finish."""
        polls = self.poller.statistics().polls
        self.clock.advance(seconds)
        await until(lambda: self.poller.statistics().polls > polls and self.clock.sleepers == 1)


async def test_one_reading_per_unit_per_poll_with_decoded_and_raw_values() -> None:
    async with Rig() as rig:
        assert len(rig.sink.readings) == 2
        first = rig.sink.readings[0]
        assert first.source == "press4"
        assert dict(first.fields) == {"port": "/dev/ttyRS485", "unit": "1"}
        assert first.timestamp_ms == rig.clock.wall_ms()
        body = json.loads(first.payload)
        assert body["unit"] == 1 and body["ts"] == first.timestamp_ms
        assert body["values"] == {"temperature": 41.0, "parts": 70001, "oil_temp": -1.5, "running": [True, False]}
        assert body["raw"]["parts"] == encode_value("uint32", 70001, word_order="little")
        assert body["raw"]["running"] == [1, 0]
        assert dict(rig.sink.readings[1].fields)["unit"] == "2"


async def test_polls_follow_the_clock_and_nothing_else() -> None:
    async with Rig() as rig:
        reads = len(rig.client.reads)
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(rig.client.reads) == reads  # no time passed: no poll
        rig.clock.advance(0.999)
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(rig.client.reads) == reads
        await rig.tick(0.001)
        await rig.tick()
        assert rig.poller.statistics().polls == 3 and len(rig.sink.readings) == 6


async def test_a_slow_poll_skips_ticks_instead_of_bunching_up() -> None:
    async with Rig() as rig:
        # Unit 2 now takes 2.5 s to answer its first block: the poll that starts at t=1 ends at t=3.5.
        rig.client.on_read = lambda unit, function: (
            rig.clock.advance(2.5) if unit == 2 and function == "input" else None
        )
        await rig.tick()
        rig.client.on_read = None
        stats = rig.poller.statistics()
        assert stats.overruns == 2  # the ticks at 2 and 3 were missed; the next is at 4
        sleepers_due = rig.clock.monotonic()
        await rig.tick(0.5)  # next tick on the grid: t=4
        assert rig.clock.monotonic() == sleepers_due + 0.5 == 4.0


async def test_a_silent_unit_costs_one_timeout_per_poll_and_the_others_keep_polling() -> None:
    async with Rig(units=(1, 2, 3)) as rig:
        rig.client.fail[2] = "timeout"
        rig.client.reads.clear()
        for _ in range(3):
            await rig.tick()
        unit2_reads = [r for r in rig.client.reads if r[0] == 2]
        assert len(unit2_reads) == 3  # only the first block, once per poll
        stats = {u.unit: u for u in rig.poller.statistics().units}
        assert dict(stats[2].errors) == {"timeout": 3} and stats[2].readings == 1
        assert stats[1].readings == stats[3].readings == 4
        assert not stats[1].errors and not stats[3].errors
        assert [r.fields["unit"] for r in rig.sink.readings[-2:]] == ["1", "3"]


async def test_failures_are_counted_by_unit_and_reason_and_never_fatal() -> None:
    async with Rig() as rig:
        rig.client.fail[1] = "exception"
        await rig.tick()
        rig.client.fail[1] = "crc"
        await rig.tick()
        del rig.client.fail[1]
        rig.client.tables[2]["holding"].pop(2)  # unit 2 now answers "illegal address" for oil_temp
        await rig.tick()
        units = {u.unit: u for u in rig.poller.statistics().units}
        assert dict(units[1].errors) == {"exception": 1, "crc": 1} and units[1].readings == 2
        assert dict(units[2].errors) == {"exception": 1} and units[2].readings == 3
        assert rig.task is not None and not rig.task.done()


async def test_unplugged_port_is_retried_on_each_tick() -> None:
    async with Rig() as rig:
        rig.client.unplug()
        await rig.tick()
        await rig.tick()
        stats = rig.poller.statistics()
        assert stats.connect_failures == 2 and not stats.connected and len(rig.sink.readings) == 2
        rig.client.plug()
        await rig.tick()
        assert rig.poller.statistics().connected and len(rig.sink.readings) == 4


async def test_full_window_pauses_polling_until_the_sink_catches_up() -> None:
    async with Rig(window=3) as rig:
        rig.sink.hold()
        await rig.tick()  # two readings in flight
        rig.clock.advance(1.0)  # the next poll's first unit makes three: the window; the second unit waits
        await until(lambda: rig.poller.statistics().in_flight == 3)
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(rig.sink.readings) == 5 and rig.clock.sleepers == 0
        rig.sink.release()
        await until(lambda: rig.clock.sleepers == 1)
        assert len(rig.sink.readings) == 6


async def test_a_closing_sink_stops_the_poller() -> None:
    rig = Rig()
    await rig.__aenter__()
    rig.sink.close()
    rig.clock.advance(1.0)
    assert rig.task is not None
    await asyncio.wait_for(rig.task, 5)


async def test_stop_is_not_held_up_by_a_sink_that_never_resolves() -> None:
    async with Rig(window=1) as rig:
        rig.sink.hold()
        rig.clock.advance(1.0)  # unit 1's reading fills the window; unit 2 waits for room
        await until(lambda: rig.poller.statistics().in_flight == 1 and len(rig.sink.readings) == 3)
        await asyncio.wait_for(rig.poller.stop(), 5)
        assert rig.task is not None and rig.task.done()
