"""Queries worth showing: the ones docs/query.md explains, as SQL text for `edgestream query` or `POST /query`.

They assume the sensor JSON of `edge.simulate.telemetry` (sensor, kind, value, unit, status, ...) decoded with
`decoder = "json"`: its `value` and `ts` fields are the columns `payload_value` and `payload_ts`, because `value`
and `ts` are the record's own columns (the raw payload and the gateway's timestamp). Pure text: importing this
module needs neither pyarrow nor duckdb.
"""

from __future__ import annotations


def per_minute(topic: str = "telemetry", limit: int = 20) -> str:
    """Each sensor's min / avg / max per minute, newest first."""
    return f"""SELECT sensor, time_bucket(INTERVAL 1 minute, ts) AS minute, count(*) AS readings,
       round(min(payload_value), 2) AS min, round(avg(payload_value), 2) AS avg, round(max(payload_value), 2) AS max,
       any_value(unit) AS unit
FROM "{topic}"
WHERE decode_error IS NULL AND kind <> 'counter'
GROUP BY sensor, minute
ORDER BY minute DESC, sensor
LIMIT {limit}"""


def gaps(topic: str = "telemetry", factor: float = 3.0, limit: int = 10) -> str:
    """Where a sensor went quiet: silences longer than `factor` times its usual interval, longest first."""
    return f"""WITH steps AS (
    SELECT sensor, ts, epoch(ts - lag(ts) OVER (PARTITION BY sensor ORDER BY ts)) AS silent_s
    FROM "{topic}" WHERE sensor IS NOT NULL),
usual AS (SELECT sensor, median(silent_s) AS period_s FROM steps GROUP BY sensor)
SELECT sensor, ts - to_seconds(silent_s) AS quiet_from, ts AS quiet_until, round(silent_s, 1) AS seconds,
       round(period_s, 2) AS usual_period_s
FROM steps JOIN usual USING (sensor)
WHERE silent_s > {factor} * period_s
ORDER BY seconds DESC
LIMIT {limit}"""


def anomalies(topic: str = "telemetry", limit: int = 10) -> str:
    """The readings furthest from their sensor's mean, in standard deviations (z-score)."""
    return f"""WITH stats AS (
    SELECT sensor, avg(payload_value) AS mean, stddev_pop(payload_value) AS sd
    FROM "{topic}" WHERE decode_error IS NULL AND kind <> 'counter' GROUP BY sensor)
SELECT t.sensor, t.ts, t.payload_value AS value, t.unit, round((t.payload_value - s.mean) / s.sd, 1) AS z,
       t.status, t.partition, t."offset"
FROM "{topic}" t JOIN stats s USING (sensor)
WHERE s.sd > 0 AND t.decode_error IS NULL
ORDER BY abs(t.payload_value - s.mean) / s.sd DESC
LIMIT {limit}"""


def demo_queries(topic: str = "telemetry") -> list[tuple[str, str]]:
    """(title, SQL) for the demo: `edgestream query "<SQL>"` on each."""
    return [
        ("Per sensor and minute: min / avg / max", per_minute(topic, limit=12)),
        ("Gaps: where a sensor went quiet", gaps(topic, limit=8)),
        ("Top anomalies (z-score against the sensor's own mean)", anomalies(topic, limit=8)),
    ]
