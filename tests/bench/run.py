"""`make bench`: run every tests/bench/bench_*.py and rewrite BENCHMARKS.md.

    python tests/bench/run.py --write BENCHMARKS.md            # all areas
    python tests/bench/run.py --only log --runs 3              # one area, print only

Each area runs in a process of its own, so that what one leaves behind (threads, a large heap, services it
started) does not bend the next one's figures: the tier's rate measured 0.49x its baseline after the other
areas in one process and 0.60x alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.bench.common import BenchContext, Row, machine_line


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.4g}"


def render(rows: list[Row], failures: list[str], machine: str, elapsed: float) -> str:
    out = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python tests/bench/run.py --write BENCHMARKS.md`); do not edit by hand.",
        "Every figure is the **median** of several runs, with the spread (min..max), and its **ratio to a baseline "
        "measured in the same run** on the same machine. Targets come from the issues; benchmarks never fail the "
        "test suite.",
        "",
        f"- Machine: {machine}",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, took {elapsed / 60:.1f} min",
        "",
    ]
    for area in dict.fromkeys(r.area for r in rows):
        out += [f"## {area}", "",
                "| figure | median (min..max) | baseline (same run) | ratio | target | met | command |",
                "|---|---|---|---|---|---|---|"]
        for r in rows:
            if r.area != area:
                continue
            spread = f"{fmt(min(r.runs))}..{fmt(max(r.runs))}" if r.runs else ""
            base = f"{r.baseline}: {fmt(r.baseline_value)}" if r.baseline else "-"
            ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
            met = "-" if r.met is None else ("yes" if r.met else "**no**")
            out.append(
                f"| {r.name} | {fmt(r.value)} {r.unit} ({spread}) | {base} | {ratio} | {r.target or '-'} | {met} "
                f"| `{r.command}` |"
            )
        notes = [f"- {r.name}: {r.notes}" for r in rows if r.area == area and r.notes]
        if notes:
            out += ["", *notes]
        out.append("")
    if failures:
        out += ["## Benchmarks that did not run", ""] + [f"- {f}" for f in failures] + [""]
    return "\n".join(out)


ROWS = "edgestream-bench-rows: "


def run_area(name: str, runs: int, quick: bool) -> list[Row]:
    """One area in this process (the child's side of `main`)."""
    with tempfile.TemporaryDirectory(prefix="edgestream-bench-", dir=os.environ.get("BENCH_TMPDIR")) as work:
        ctx = BenchContext(workdir=work, runs=runs, quick=quick)
        mod = importlib.import_module(f"tests.bench.bench_{name}")
        rows: list[Row] = mod.run(ctx)
        return rows


def run_child(name: str, runs: int, quick: bool) -> list[Row]:
    """One area in a fresh interpreter; its output goes through, its rows come back as JSON."""
    cmd = [sys.executable, os.path.abspath(__file__), "--area", name, "--runs", str(runs)]
    cmd += ["--quick"] if quick else []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    rows: list[Row] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(ROWS):
            rows = [Row(**d) for d in json.loads(line[len(ROWS):])]
        else:
            print(line, end="", flush=True)
    if proc.wait() != 0:
        raise RuntimeError(f"exit status {proc.returncode}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", help="rewrite this markdown file")
    ap.add_argument("--only", action="append", help="area module name(s): bench_<name>.py")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small, fast runs (checks the benchmarks work)")
    ap.add_argument("--area", help=argparse.SUPPRESS)  # internal: run one area here, rows as JSON on stdout
    args = ap.parse_args()
    if args.area:
        got = run_area(args.area, args.runs, args.quick)
        print(ROWS + json.dumps([dataclasses.asdict(r) for r in got]), flush=True)
        return 0
    here = os.path.dirname(os.path.abspath(__file__))
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([here]) if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if n in args.only]
    rows: list[Row] = []
    failures: list[str] = []
    t0 = time.monotonic()
    for name in names:
        print(f"== bench_{name}", flush=True)
        try:
            got = run_child(name, args.runs, args.quick)
        except Exception as exc:  # a broken benchmark is reported, the others still run
            traceback.print_exc()
            failures.append(f"bench_{name}: {exc!r}")
            continue
        for r in got:
            print(f"  {r.name}: {fmt(r.value)} {r.unit}" + (f" ({r.ratio:.2f}x {r.baseline})" if r.ratio else ""),
                  flush=True)
        rows.extend(got)
    text = render(rows, failures, machine_line(), time.monotonic() - t0)
    if args.write:
        with open(args.write, "w") as f:
            f.write(text)
        print(f"wrote {args.write}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
