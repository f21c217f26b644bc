"""Small builders for Grafana dashboard JSON (panels, targets, variables, layout), used by dashboards/build.py.

Conventions of every edgestream dashboard:

- current Grafana schema (schemaVersion 42), datasource as a variable (`${datasource}`, type prometheus);
- a `gateway` variable (label_values of edgestream_gateway_info) and a hidden `instance` variable derived from it:
  every query selects `instance=~"$instance"` and joins the gateway id in with
  `* on(instance) group_left(gateway) edgestream_gateway_info` where a legend names the gateway;
- `$__rate_interval` for rates, `$__range` for "in the selected time range".
"""

from __future__ import annotations

from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'
GW = "* on(instance) group_left(gateway) edgestream_gateway_info"
RATE = "$__rate_interval"


def by_gateway(agg: str, expr: str) -> str:
    """`agg by (gateway) (expr * on(instance) group_left(gateway) edgestream_gateway_info)`."""
    return f"{agg} by (gateway) ({expr} {GW})"


# -- panels ------------------------------------------------------------------------------------------------------


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, fmt: str = "time_series") -> dict:
    t: dict[str, Any] = {"refId": ref, "datasource": DS, "editorMode": "code", "expr": expr, "range": not instant,
                         "instant": instant, "format": fmt}
    if legend:
        t["legendFormat"] = legend
    return t


def _thresholds(*steps: tuple[float | None, str]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


GREEN = ((None, "green"),)


def timeseries(title: str, targets: list[dict], unit: str, description: str, *, stack: bool = False,
               minimum: float | None = 0, bars: bool = False, thresholds: tuple = GREEN,
               threshold_style: str = "off", overrides: list[dict] | None = None, w: int = 12, h: int = 8) -> dict:
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line", "lineInterpolation": "linear", "lineWidth": 1,
        "fillOpacity": 60 if bars else 10, "gradientMode": "none", "showPoints": "never", "pointSize": 4,
        "spanNulls": False, "axisPlacement": "auto", "axisBorderShow": False, "axisCenteredZero": False,
        "barAlignment": 0, "scaleDistribution": {"type": "linear"},
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
        "thresholdsStyle": {"mode": threshold_style},
    }
    defaults: dict[str, Any] = {"unit": unit, "color": {"mode": "palette-classic"}, "custom": custom,
                                "thresholds": _thresholds(*thresholds)}
    if minimum is not None:
        defaults["min"] = minimum
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS, "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {"legend": {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": []},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "gridPos": {"w": w, "h": h},
    }


def stat(title: str, expr: str, unit: str, description: str, *, thresholds: tuple = GREEN,
         mappings: list[dict] | None = None, decimals: int | None = None, w: int = 3, h: int = 4,
         color_mode: str = "value", graph: bool = False) -> dict:
    defaults: dict[str, Any] = {"unit": unit, "color": {"mode": "thresholds"}, "thresholds": _thresholds(*thresholds),
                                "mappings": mappings or []}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "targets": [target(expr, instant=not graph)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "orientation": "auto", "textMode": "value", "colorMode": color_mode,
                    "graphMode": "area" if graph else "none", "justifyMode": "auto", "wideLayout": True,
                    "showPercentChange": False, "percentChangeColorMode": "standard"},
        "gridPos": {"w": w, "h": h},
    }


def state_timeline(title: str, targets: list[dict], description: str, mappings: list[dict], *,
                   thresholds: tuple = GREEN, w: int = 12, h: int = 6) -> dict:
    return {
        "type": "state-timeline", "title": title, "description": description, "datasource": DS, "targets": targets,
        "fieldConfig": {"defaults": {"color": {"mode": "thresholds"}, "thresholds": _thresholds(*thresholds),
                                     "mappings": mappings,
                                     "custom": {"fillOpacity": 80, "lineWidth": 0,
                                                "hideFrom": {"legend": False, "tooltip": False, "viz": False}}},
                        "overrides": []},
        "options": {"showValue": "auto", "rowHeight": 0.9, "mergeValues": True, "alignValue": "left",
                    "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom", "calcs": []},
                    "tooltip": {"mode": "single", "sort": "none"}},
        "gridPos": {"w": w, "h": h},
    }


def heatmap(title: str, expr: str, description: str, *, w: int = 12, h: int = 8) -> dict:
    return {
        "type": "heatmap", "title": title, "description": description, "datasource": DS,
        "targets": [target(expr, "{{le}}", fmt="heatmap")],
        "fieldConfig": {"defaults": {"custom": {"hideFrom": {"legend": False, "tooltip": False, "viz": False},
                                                "scaleDistribution": {"type": "linear"}}},
                        "overrides": []},
        "options": {"calculate": False, "cellGap": 1,
                    "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange", "scale": "exponential",
                              "exponent": 0.5, "steps": 64, "reverse": False},
                    "exemplars": {"color": "rgba(255,0,255,0.7)"}, "filterValues": {"le": 1e-9},
                    "legend": {"show": True}, "rowsFrame": {"layout": "auto"}, "showValue": "never",
                    "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
                    "yAxis": {"axisPlacement": "left", "unit": "s", "reverse": False}},
        "gridPos": {"w": w, "h": h},
    }


def table(title: str, targets: list[dict], description: str, renames: dict[str, str], units: dict[str, str],
          *, w: int = 24, h: int = 8) -> dict:
    overrides = [{"matcher": {"id": "byName", "options": name},
                  "properties": [{"id": "unit", "value": unit}]} for name, unit in units.items()]
    return {
        "type": "table", "title": title, "description": description, "datasource": DS, "targets": targets,
        "transformations": [{"id": "merge", "options": {}},
                            {"id": "organize", "options": {"excludeByName": {"Time": True},
                                                           "renameByName": renames}}],
        "fieldConfig": {"defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False,
                                                "filterable": False},
                                     "color": {"mode": "thresholds"}, "thresholds": _thresholds(*GREEN)},
                        "overrides": overrides},
        "options": {"showHeader": True, "frameIndex": 0, "cellHeight": "sm",
                    "sortBy": [{"displayName": "Gateway", "desc": False}]},
        "gridPos": {"w": w, "h": h},
    }


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": 24, "h": 1}}


READY_MAP = [{"type": "value", "options": {"0": {"text": "not ready", "color": "red"},
                                           "1": {"text": "ready", "color": "green"}}}]
UP_MAP = [{"type": "value", "options": {"0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}}}]
PAUSED_MAP = [{"type": "value", "options": {"0": {"text": "running", "color": "green"},
                                            "1": {"text": "paused", "color": "orange"}}}]


# -- variables and the dashboard ----------------------------------------------------------------------------------


def _query_var(name: str, label: str, query: str, *, multi: bool, include_all: bool, hide: int = 0,
               regex: str = "") -> dict:
    v: dict[str, Any] = {"type": "query", "name": name, "label": label, "datasource": DS,
                         "query": {"query": query, "refId": f"var-{name}"}, "refresh": 2,
                         "sort": 1, "multi": multi, "includeAll": include_all, "hide": hide, "options": [],
                         "current": {"text": "All" if include_all else "", "value": "$__all" if include_all else ""}}
    if include_all:
        v["allValue"] = ".*"
    if regex:
        v["regex"] = regex
    return v


def variables(*, multi_gateway: bool, extra: list[dict] | None = None) -> dict:
    return {"list": [
        {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus", "refresh": 1,
         "hide": 0, "options": [], "current": {"text": "", "value": ""}},
        _query_var("gateway", "Gateway", "label_values(edgestream_gateway_info, gateway)", multi=multi_gateway,
                   include_all=multi_gateway),
        _query_var("instance", "Instance", 'label_values(edgestream_gateway_info{gateway=~"$gateway"}, instance)',
                   multi=True, include_all=True, hide=2),
        *(extra or []),
    ]}


def layout(panels: list[dict]) -> list[dict]:
    """Assign ids and x/y: panels flow left to right in rows 24 units wide; a row panel starts a new line."""
    x = y = line_h = 0
    out = []
    for i, p in enumerate(panels, start=1):
        p = dict(p)
        gp = dict(p["gridPos"])
        if p["type"] == "row" or x + gp["w"] > 24:
            y += line_h
            x = line_h = 0
        gp["x"], gp["y"] = x, y
        x += gp["w"]
        line_h = max(line_h, gp["h"])
        if p["type"] == "row":
            y += gp["h"]
            x = line_h = 0
        p["gridPos"] = gp
        p["id"] = i
        out.append(p)
    return out


def dashboard(uid: str, title: str, description: str, panels: list[dict], templating: dict, *,
              time_from: str = "now-6h", links: bool = True) -> dict:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["edgestream"], "editable": True,
        "schemaVersion": 42, "version": 1, "graphTooltip": 1, "timezone": "browser", "refresh": "30s",
        "fiscalYearStartMonth": 0, "liveNow": False,
        "time": {"from": time_from, "to": "now"}, "timepicker": {},
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"title": "edgestream", "type": "dashboards", "tags": ["edgestream"], "asDropdown": True,
                   "icon": "external link", "includeVars": True, "keepTime": True, "targetBlank": False,
                   "tooltip": "", "url": ""}] if links else [],
        "templating": templating,
        "panels": layout(panels),
    }
