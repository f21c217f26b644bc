"""What every benchmark module shares: the row format of BENCHMARKS.md, medians, the machine line.

A benchmark module `tests/bench/bench_<area>.py` defines `run(ctx: BenchContext) -> list[Row]`. Every figure is the
median of several runs and is stated as a ratio to a baseline measured in the same run on the same machine
(raw disk, bare paho, kcat, NATS JetStream, ...): absolute numbers move on shared machines, ratios much less.
Benchmarks never fail the test suite.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Row:
    area: str  # section of BENCHMARKS.md: "log", "mqtt", "serial", "mirror", "tier", "ops"
    name: str  # what was measured
    value: float  # the median
    unit: str  # "records/s", "ms", "MB", "bytes/byte", ...
    runs: list[float]  # every run, for the spread
    command: str  # how to reproduce this row alone
    baseline: str = ""  # what the ratio is against
    baseline_value: float | None = None  # its median, same run
    target: str = ""  # the goal, e.g. ">= 0.6x" or "<= 2 s"
    met: bool | None = None  # whether the median meets the target (None: no target)
    notes: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0):
            return None
        return self.value / self.baseline_value  # type: ignore[operator]


@dataclass
class BenchContext:
    workdir: str
    runs: int = 5
    quick: bool = False  # fewer, smaller runs (smoke-testing the benchmarks themselves)
    extra: dict[str, object] = field(default_factory=dict)

    def tempdir(self, prefix: str) -> str:
        return tempfile.mkdtemp(prefix=prefix, dir=self.workdir)


def median_runs(fn: Callable[[], float], runs: int) -> tuple[float, list[float]]:
    values = [fn() for _ in range(runs)]
    return statistics.median(values), values


def machine_line(path: str = ".") -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    disk = "?"
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True, check=False).stdout.splitlines()
        if len(out) > 1:
            parts = out[1].split()
            disk = f"{parts[1]} on {parts[0]}"
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, {disk}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None or os.path.exists(f"/usr/sbin/{cmd}")
