"""Pictures of each dashboard's main panels from real data, for the README (docs/img/dashboard-*.png).

No Grafana runs here, so this does what Grafana would: it runs a scenario against real services, sends each panel's
own PromQL (from dashboards/*.json, variables and macros replaced) to a real Prometheus through its HTTP API, and
plots the answers with matplotlib under the panel's title, legend format and unit.

Scenario (about --seconds, default 240): two gateways ("line-1", "line-2") with simulated sensors, scraped every
second; line-1 mirrors to a real Kafka (tests/harness/kafka.py) behind a bandwidth cap and tiers to Parquet. A third
of the way in, line-1's WAN goes down for a sixth of the run (the backlog and its age grow, deliveries fail), then
comes back and drains at the cap; line-2 is restarted once (SIGKILL, unclean: an epoch bump).

    .venv/bin/python dashboards/render_panels.py [--seconds 240] [--out docs/img] [--no-kafka]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import checks  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tests.harness.gateway import GatewayProcess, simple_config  # noqa: E402
from tests.harness.prometheus import PrometheusServer, prometheus_binary  # noqa: E402

MAIN_PANELS = {
    "fleet.json": ["Gateways", "Ingest rate", "Mirror lag", "Disk headroom", "Restarts",
                   "Dropped and dead-lettered records"],
    "gateway.json": ["Records in by source", "Appended records by topic", "fsync latency", "fsync latency quantiles",
                     "Log size by topic", "Compression and batching", "Memory", "Event loop lag"],
    "mirror.json": ["Lag by partition (age)", "Backlog by topic (records)", "Drain rate against the bandwidth cap",
                    "In against out", "ETA by partition", "Delivery errors by reason"],
}
RATE_INTERVAL = "10s"


# -- the scenario ---------------------------------------------------------------------------------------------------


def _gateway(work: Path, gid: str, rate: int, **sections: Any) -> GatewayProcess:
    cfg = simple_config(
        str(work / gid / "data"),
        topics=[{"name": "telemetry", "partitions": 2, "decoder": "json", "linger_ms": 5, "segment_bytes": 1 << 20},
                {"name": "alarms", "partitions": 1, "linger_ms": 5}],
        sources=[{"name": "press-line", "type": "simulated", "topic": "telemetry", "key": "{sensor}",
                  "sensors": 40, "rate": rate, "malformed_rate": 0.002, "seed": 1},
                 {"name": "ovens", "type": "simulated", "topic": "telemetry", "key": "{sensor}", "sensors": 10,
                  "rate": rate // 3, "seed": 2},
                 {"name": "alarm-panel", "type": "simulated", "topic": "alarms", "sensors": 4, "rate": 5, "seed": 3}],
        **sections)
    cfg["gateway"]["id"] = gid
    (work / gid).mkdir(parents=True, exist_ok=True)
    return GatewayProcess(str(work / gid), cfg)


def run_scenario(work: Path, seconds: float, use_kafka: bool) -> tuple[PrometheusServer, dict[str, str], float,
                                                                         float, list[Any]]:
    (work / "prometheus").mkdir(parents=True, exist_ok=True)
    prom = PrometheusServer(work / "prometheus", prometheus_binary())
    prom.start()
    cleanup: list[Any] = [prom.stop]
    kafka = None
    sections: dict[str, Any] = {}
    if use_kafka:
        from tests.harness.kafka import KafkaCluster

        kafka = KafkaCluster(work / "kafka").start()
        cleanup.append(kafka.stop)
        topic = kafka.create_topic("plant1.telemetry", 2)
        alarms = kafka.create_topic("plant1.alarms", 1)
        sections["mirror"] = {"targets": [{
            "name": "central", "bootstrap": kafka.wan_bootstrap, "bandwidth_bytes_per_s": 250_000,
            "delivery_timeout_s": 5,
            "topics": [{"topic": "alarms", "kafka_topic": alarms, "priority": 10},
                       {"topic": "telemetry", "kafka_topic": topic}]}]}
        sections["tier"] = {"enabled": True, "interval_s": 5}
    line1 = _gateway(work, "line-1", 400, **sections).start()
    line2 = _gateway(work, "line-2", 150).start()
    cleanup += [line1.kill, line2.kill]
    # A fixed instance label per gateway, as a real fleet has (a restart here gets a new ephemeral port).
    instances = {"line-1": "gw-line-1:8080", "line-2": "gw-line-2:8080"}
    addresses = {"line-1": f"127.0.0.1:{line1.port}", "line-2": f"127.0.0.1:{line2.port}"}
    for gid, address in addresses.items():
        prom.add_target(address, instance=instances[gid])
    t0 = time.time()
    print(f"scenario: {seconds:.0f} s; Prometheus at {prom.url}", flush=True)
    cut_at, restore_at, restart_at = seconds / 3, seconds / 2, seconds * 0.7
    cut = restored = restarted = False
    while (now := time.time() - t0) < seconds:
        if kafka is not None and not cut and now >= cut_at:
            print(f"  {now:5.0f} s: WAN of line-1 down", flush=True)
            kafka.wan.cut()
            cut = True
        if kafka is not None and cut and not restored and now >= restore_at:
            print(f"  {now:5.0f} s: WAN back", flush=True)
            kafka.wan.restore()
            restored = True
        if not restarted and now >= restart_at:
            print(f"  {now:5.0f} s: line-2 killed and started again", flush=True)
            prom.remove_target(addresses["line-2"])
            line2.kill()
            line2.start()
            addresses["line-2"] = f"127.0.0.1:{line2.port}"
            prom.add_target(addresses["line-2"], instance=instances["line-2"])
            restarted = True
        time.sleep(1)
    return prom, instances, t0, time.time(), cleanup


# -- plotting -------------------------------------------------------------------------------------------------------


def _legend(fmt: str, labels: dict[str, str], expr: str) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or expr[:40]
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def _scale(unit: str, values: list[float]) -> tuple[float, str]:
    finite = [abs(v) for v in values if math.isfinite(v)]
    top = max(finite, default=0.0)
    if unit == "bytes":
        for factor, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if top >= factor:
                return factor, name
        return 1, "B"
    if unit == "Bps":
        for factor, name in ((2**20, "MiB/s"), (2**10, "KiB/s")):
            if top >= factor:
                return factor, name
        return 1, "B/s"
    if unit == "percentunit":
        return 0.01, "%"
    if unit.startswith("suffix:"):
        return 1, unit.split(":", 1)[1].strip()
    return 1, {"s": "s", "dtdurations": "s", "h": "h", "short": "", "reqps": "req/s", "none": ""}.get(unit, unit)


def _timeseries(ax: Any, prom: PrometheusServer, panel: dict[str, Any], values: dict[str, str], start: float,
                end: float) -> None:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    lines = []
    for t in panel["targets"]:
        expr = checks.grafana_to_promql(t["expr"], values, rate_interval=RATE_INTERVAL, range_="5m")
        for series in prom.query_range(expr, start, end, 2):
            xs = [dt.datetime.fromtimestamp(float(ts)) for ts, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            lines.append((_legend(t.get("legendFormat", ""), series["metric"], t["expr"]), xs, ys))
    if not lines:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        return
    factor, label = _scale(unit, [y for _, _, ys in lines for y in ys])
    for name, xs, ys in sorted(lines)[:12]:
        ax.plot(xs, [y / factor for y in ys], label=name, linewidth=1.2)
    ax.set_ylabel(label)
    ax.legend(fontsize=6, loc="upper left", ncol=2, frameon=False)
    ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%H:%M:%S" if end - start < 900 else "%H:%M"))


def _heatmap(ax: Any, prom: PrometheusServer, panel: dict[str, Any], values: dict[str, str], start: float,
             end: float) -> None:
    expr = checks.grafana_to_promql(panel["targets"][0]["expr"], values, rate_interval=RATE_INTERVAL)
    series = sorted(prom.query_range(expr, start, end, 5), key=lambda s: float(s["metric"]["le"]))
    if not series:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        return
    les = [s["metric"]["le"] for s in series]
    grid = [[float(v) for _, v in s["values"]] for s in series]
    width = min(len(r) for r in grid)
    cells = [[grid[i][j] - (grid[i - 1][j] if i else 0.0) for j in range(width)] for i in range(len(grid))]
    ax.imshow(cells, aspect="auto", origin="lower", cmap="Oranges", interpolation="nearest")
    ax.set_yticks(range(len(les)), [f"{float(x) * 1000:g} ms" if x != "+Inf" else "+Inf" for x in les], fontsize=6)
    ax.set_xticks([0, width - 1], ["start", "end"], fontsize=6)


def _table(ax: Any, prom: PrometheusServer, panel: dict[str, Any], values: dict[str, str]) -> None:
    renames = panel["transformations"][1]["options"]["renameByName"]
    columns = [renames.get(f"Value #{t['refId']}", t["refId"]) for t in panel["targets"]]
    rows: dict[str, dict[str, float]] = {}
    for t, col in zip(panel["targets"], columns, strict=True):
        expr = checks.grafana_to_promql(t["expr"], values, rate_interval=RATE_INTERVAL, range_="5m")
        for s in prom.query(expr):
            rows.setdefault(s["metric"].get("gateway", "?"), {})[col] = float(s["value"][1])
    units = {o["matcher"]["options"]: o["properties"][0]["value"] for o in panel["fieldConfig"]["overrides"]}
    cells = []
    for gw in sorted(rows):
        row = [gw]
        for col in columns:
            v = rows[gw].get(col)
            row.append("-" if v is None else _fmt(v, units.get(col, "short")))
        cells.append(row)
    ax.axis("off")
    headers = [c.replace(" ", "\n") for c in ["Gateway", *columns]]
    tab = ax.table(cellText=cells, colLabels=headers, cellLoc="center", bbox=[0, 0.25, 1, 0.6])
    tab.auto_set_font_size(False)
    tab.set_fontsize(7)
    tab.scale(1, 1.6)


def _fmt(v: float, unit: str) -> str:
    if not math.isfinite(v):
        return "-"
    if unit == "bool_yes_no":
        return "yes" if v else "no"
    factor, label = _scale(unit, [v])
    return f"{v / factor:,.1f} {label}".strip()


def render(prom: PrometheusServer, name: str, values: dict[str, str], start: float, end: float, out: Path) -> Path:
    d = checks.load(name)
    by_title = {p["title"]: p for p in checks.panels(d)}
    titles = MAIN_PANELS[name]
    cols = 2
    rows = math.ceil(len(titles) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.0 * rows))
    for ax, title in zip(axes.flat, titles, strict=False):
        panel = by_title[title]
        ax.set_title(title, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        if panel["type"] == "table":
            _table(ax, prom, panel, values)
        elif panel["type"] == "heatmap":
            _heatmap(ax, prom, panel, values, start, end)
        else:
            _timeseries(ax, prom, panel, values, start, end)
    for ax in list(axes.flat)[len(titles):]:
        ax.axis("off")
    fig.suptitle(f"{d['title']}  (real data: dashboards/render_panels.py)", fontsize=11, x=0.01, ha="left")
    fig.tight_layout()
    path = out / f"dashboard-{name.removesuffix('.json')}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=240)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--no-kafka", action="store_true", help="no mirror (and no tier): the mirror picture is empty")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgestream-render-") as tmp:
        prom, instances, start, end, cleanup = run_scenario(Path(tmp), args.seconds, not args.no_kafka)
        try:
            both = "|".join(instances.values())
            fleet = {"datasource": "prometheus", "gateway": ".*", "instance": both, "topic": ".*", "target": ".*"}
            one = {**fleet, "gateway": "line-1", "instance": instances["line-1"]}
            for name, values in (("fleet.json", fleet), ("gateway.json", one), ("mirror.json", one)):
                print(f"wrote {render(prom, name, values, start, end, out)}", flush=True)
        finally:
            for fn in reversed(cleanup):
                fn()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
