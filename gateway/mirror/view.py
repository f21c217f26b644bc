"""Text views of the mirror's status document (`GET /v1/mirror/status`): the table of `edgestream mirror status`
and the few lines a demo prints. Plain functions over the JSON, so they work on what the API returned."""

from __future__ import annotations

from typing import Any

HEADERS = ["TARGET", "TOPIC/P", "KAFKA", "STATE", "LAG", "LAG BYTES", "LAG AGE", "DRAIN/S", "ETA", "ACKED", "NOTE"]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = float(seconds)
    if s < 60:
        return f"{s:.0f} s" if s >= 1 or s == 0 else f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.0f} B"


def rows(doc: dict[str, Any]) -> list[list[str]]:
    out = []
    for t in doc.get("targets", []):
        state = t["state"] + (f" ({t['paused_reason']})" if t.get("paused_reason") else "")
        for p in t["partitions"]:
            kp = "key" if p["kafka_partition"] < 0 else str(p["kafka_partition"])
            notes = []
            if p.get("blocked"):
                notes.append("waits: " + p["blocked"])
            if p.get("clamps"):
                notes.append("start: " + ", ".join(p["clamps"]))
            if p.get("epoch_raise_needed"):
                notes.append("EPOCH RAISE NEEDED")
            if p.get("dead_letters"):
                notes.append(f"{p['dead_letters']} dead letters")
            if sum((p.get("skipped") or {}).values()):
                notes.append("skipped " + ", ".join(f"{r}={n}" for r, n in p["skipped"].items()))
            out.append([t["name"], f"{p['topic']}/{p['partition']}", f"{p['kafka_topic']}/{kp}", state,
                        f"{p['lag_records']:,}", size(p["lag_bytes"]), duration(p["lag_seconds"]),
                        f"{p['drain_records_per_s']:,.0f}", duration(p["eta_seconds"]), f"{p['acked']:,}",
                        "; ".join(notes)])
    return out


def lag_lines(doc: dict[str, Any]) -> list[str]:
    """One line per target: state, total lag, the oldest unmirrored record's age, ETA, last error."""
    lines = []
    for t in doc.get("targets", []):
        state = t["state"] + (f" ({t['paused_reason']})" if t.get("paused_reason") else "")
        line = (f"mirror {t['name']} -> {t['bootstrap']}: {state}, lag {t['lag_records']:,} records / "
                f"{duration(t['lag_seconds'])}, ETA {duration(t['eta_seconds'])}, "
                f"{'connected' if t['connected'] else 'not connected'}")
        if t.get("last_error"):
            line += f"; last error {duration(t.get('last_error_age_s'))} ago: {t['last_error'][:120]}"
        lines.append(line)
    return lines
