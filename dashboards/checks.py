"""What the dashboard and alert checks share (tests/integration/test_dashboards*.py, dashboards/render_panels.py).

- `typescript_for(dashboard)`: a TypeScript module that assigns the dashboard JSON to Grafana's own `Dashboard`
  type from npm `@grafana/schema`, and each panel's `options` and `fieldConfig.defaults.custom` to that panel
  plugin's generated `Options` / `FieldConfig` types. `tsc --noEmit --strict` then rejects unknown keys (excess
  property checks on object literals) and values outside the enums. Grafana's string enums are declared as TS
  `enum`s, which a JSON string literal is not assignable to; `Lit<T>` maps them to their literal values.
- `queries(dashboard)`: every panel target's PromQL with the panel it belongs to; `grafana_to_promql` replaces
  Grafana's variables and macros with values a plain Prometheus accepts.
- `operands(expr)`: an alert expression split at its top-level comparison and set operators, so each side can be
  checked to return series (an `x > 0` alert is empty while healthy, but `x` must not be).

Standard library only: the render script and the tests both import it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARDS = ("fleet.json", "gateway.json", "mirror.json")
ALERTS = HERE / "alerts.yml"

# Panel type -> (module under @grafana/schema's composable panel configs, whether it has a FieldConfig type).
PANEL_TYPES = {
    "timeseries": ("timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen", True),
    "stat": ("stat/panelcfg/x/StatPanelCfg_types.gen", False),
    "table": ("table/panelcfg/x/TablePanelCfg_types.gen", True),
    "heatmap": ("heatmap/panelcfg/x/HeatmapPanelCfg_types.gen", True),
    "state-timeline": ("statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen", True),
}

TS_PRELUDE = """\
import type {{ Dashboard, DataSourceRef }} from '@grafana/schema';
{imports}

// Grafana declares its string enums as TS enums; JSON holds their values. Map every enum to its literal values.
type Lit<T> = T extends string
  ? (string extends T ? T : `${{T}}`)
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Lit<U>>
      : T extends object
        ? {{ [K in keyof T]: Lit<T[K]> }}
        : T;

// The Prometheus data source's query (grafana/public/app/plugins/datasource/prometheus, dataquery.cue): the fields
// a dashboard may set. Not part of @grafana/schema, so stated here; a typo'd key fails the excess-property check.
interface PrometheusQuery {{
  refId: string;
  expr: string;
  datasource?: DataSourceRef;
  editorMode?: 'code' | 'builder';
  range?: boolean;
  instant?: boolean;
  exemplar?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  legendFormat?: string;
  interval?: string;
  intervalFactor?: number;
  hide?: boolean;
}}
"""


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HERE / name).read_text())
    return data


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included (rows themselves too)."""
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", [])


def typescript_for(d: dict[str, Any]) -> str:
    used = sorted({p["type"] for p in panels(d) if p["type"] in PANEL_TYPES})
    imports = "\n".join(
        f"import type * as {_ident(t)} from '@grafana/schema/dist/esm/raw/composable/{PANEL_TYPES[t][0]}';"
        for t in used)
    out = [TS_PRELUDE.format(imports=imports),
           f"export const dashboard: Lit<Dashboard> = {json.dumps(d, indent=2)};\n"]
    for p in panels(d):
        if p["type"] == "row":
            continue
        if p["type"] not in PANEL_TYPES:
            raise ValueError(f"panel {p.get('title')!r}: type {p['type']!r} has no type check here; add it to "
                             "PANEL_TYPES")
        ns, has_field_config = _ident(p["type"]), PANEL_TYPES[p["type"]][1]
        pid = p["id"]
        out.append(f"// panel {pid}: {p.get('title', '')}")
        out.append(f"export const p{pid}_options: Lit<{ns}.Options> = {json.dumps(p.get('options', {}))};")
        custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            if not has_field_config:
                raise ValueError(f"panel {p.get('title')!r}: {p['type']} panels have no custom field config")
            out.append(f"export const p{pid}_custom: Lit<{ns}.FieldConfig> = {json.dumps(custom)};")
        out.append(f"export const p{pid}_targets: PrometheusQuery[] = {json.dumps(p.get('targets', []))};")
    return "\n".join(out) + "\n"


def _ident(panel_type: str) -> str:
    return panel_type.replace("-", "_")


TSCONFIG = {
    "compilerOptions": {"strict": True, "noEmit": True, "skipLibCheck": True, "module": "esnext",
                        "moduleResolution": "bundler", "target": "es2022", "types": []},
}


# -- queries ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref: str
    expr: str
    legend: str = ""

    @property
    def id(self) -> str:
        return f"{self.dashboard}:{self.panel}:{self.ref}"


def queries(name: str, d: dict[str, Any]) -> list[Query]:
    out = []
    for p in panels(d):
        for t in p.get("targets", []):
            out.append(Query(name.removesuffix(".json"), p.get("title", ""), t.get("refId", ""), t["expr"],
                             t.get("legendFormat", "")))
    return out


def variable_queries(name: str, d: dict[str, Any]) -> list[Query]:
    """The PromQL inside `label_values(<selector>, label)` of each query variable."""
    out = []
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
        if m:
            out.append(Query(name.removesuffix(".json"), f"variable {v['name']}", v["name"], m.group(1)))
    return out


def grafana_to_promql(expr: str, values: dict[str, str], rate_interval: str = "30s", range_: str = "5m") -> str:
    """Replace `$__rate_interval`, `$__interval`, `$__range` and `$var` / `${var}` as Grafana would."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", "15s")
    expr = expr.replace("$__range", range_)

    def var(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", var, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names referenced in a PromQL expression (identifiers followed by `{` or used bare)."""
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    names = set(re.findall(r"\b((?:edgestream|process|python)_[a-zA-Z0-9_]+|up)\b(?!\s*\()", no_strings))
    return names


# -- alert expressions ------------------------------------------------------------------------------------------------

_BINARY = re.compile(r"\s(==|!=|>=|<=|>|<|and|or|unless)\s+(?:(?:on|ignoring)\s*\([^)]*\)\s*)?"
                     r"(?:(?:group_left|group_right)\s*(?:\([^)]*\))?\s*)?(?:bool\s+)?")


def operands(expr: str) -> list[str]:
    """The sub-expressions joined by comparison or set operators at the top level, recursively; literals dropped.

    `sum(rate(x[5m])) == 0 and on(instance) (y > 0)` -> ["sum(rate(x[5m]))", "y"]."""
    expr = expr.strip()
    while _wrapped(expr):
        expr = expr[1:-1].strip()
    parts, depth, start, i = [], 0, 0, 0
    while i < len(expr):
        c = expr[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == '"':
            i = expr.index('"', i + 1)
        elif depth == 0:
            m = _BINARY.match(expr, i)
            if m and (i == 0 or expr[i - 1] != "\\"):
                parts.append(expr[start:i])
                start = i = m.end()
                continue
        i += 1
    parts.append(expr[start:])
    if len(parts) == 1:
        return [] if _literal(expr) else [expr]
    return [o for p in parts for o in operands(p)]


def _wrapped(expr: str) -> bool:
    if not (expr.startswith("(") and expr.endswith(")")):
        return False
    depth = 0
    for i, c in enumerate(expr):
        depth += c == "("
        depth -= c == ")"
        if depth == 0 and i < len(expr) - 1:
            return False
    return True


def _literal(expr: str) -> bool:
    return bool(re.fullmatch(r"[\d.eE+\-*/ ()]+", expr.strip()))
