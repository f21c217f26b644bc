-- Central dedupe for an edgestream mirror, in DuckDB, over a Kafka export as JSON lines (kcat's -J format):
--
--   kcat -C -b kafka-1:9092 -t plant1.telemetry -o beginning -e -J -q > kafka-export.jsonl
--   duckdb -c "SET VARIABLE kafka_export = 'kafka-export.jsonl'" -c ".read dedupe.sql"
--   (or from Python: con.execute("SET VARIABLE kafka_export = '...'"); con.sql(open("dedupe.sql").read()))
--
-- The same rule as dedupe_consumer.py: per stream (edge.gw, edge.log, edge.p), in Kafka's order, a record is new
-- only if its (edge.ep, edge.off) is above every one seen before it; copies the gateway re-sent are dropped. For an
-- export in Parquet (e.g. from a sink connector) with the same columns, replace read_json(...) with read_parquet(...).
-- With partitioning = "key" (one stream over several Kafka partitions), keep the row_number() = 1 variant below.
WITH export AS (
    SELECT partition AS kafka_partition, "offset" AS kafka_offset, key, payload AS value, headers
    FROM read_json(coalesce(getvariable('kafka_export'), 'kafka-export.jsonl'), format = 'newline_delimited',
                   columns = {partition: 'INTEGER', "offset": 'BIGINT', key: 'VARCHAR', payload: 'VARCHAR',
                              headers: 'VARCHAR[]'})
),
identity AS (
    SELECT *,
           headers[list_position(headers, 'edge.gw') + 1] AS gw,
           headers[list_position(headers, 'edge.log') + 1] AS log,
           CAST(headers[list_position(headers, 'edge.ep') + 1] AS UBIGINT) AS ep,
           CAST(headers[list_position(headers, 'edge.p') + 1] AS UBIGINT) AS p,
           CAST(headers[list_position(headers, 'edge.off') + 1] AS UBIGINT) AS off,
           CAST(headers[list_position(headers, 'edge.ts') + 1] AS BIGINT) AS ts
    FROM export
    WHERE list_position(headers, 'edge.off') IS NOT NULL
),
ordered AS (
    SELECT *,
           -- (ep, off) as one number: epochs are 32-bit, offsets 64-bit
           CAST(ep AS HUGEINT) * 18446744073709551616 + off AS position,
           max(CAST(ep AS HUGEINT) * 18446744073709551616 + off) OVER (
               PARTITION BY gw, log, p ORDER BY kafka_partition, kafka_offset
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seen
    FROM identity
)
SELECT gw, log, ep, p, off, ts, key, value
FROM ordered
WHERE seen IS NULL OR position > seen
ORDER BY gw, log, p, ep, off;

-- partitioning = "key" variant: one row per identity, whatever the order.
-- SELECT gw, log, ep, p, off, ts, key, value FROM identity
-- QUALIFY row_number() OVER (PARTITION BY gw, log, p, ep, off ORDER BY kafka_partition, kafka_offset) = 1
-- ORDER BY gw, log, p, ep, off;
