"""Serving copy benchmark: lake (DuckLake) -> Postgres for 1,000,000 aggregate rows.

One run, one fresh lake (its catalog a database of a private Postgres started here,
bench/embedded_daemon.py, its Parquet files in a temporary folder), one Postgres database
to serve into (--pg; a fresh schema, dropped at the end):

1. build a lake table shaped like agg.sensor_1m (per device and minute: counts and
   statistics of temperature and humidity, battery, status counts), N rows, in one
   commit;
2. ours: exactly what a serving asset does for one partition window: `read_partition`
   (lake -> Parquet -> polars, through the warehouse resource), `ensure_table`,
   `replace_partition` (one transaction: DELETE the window, COPY the rows, COMMIT) into
   a fresh table; then the same window again (DELETE N + COPY N: a re-materialization);
3. baselines on the first K rows, read from the lake row by row (fetchall on a DuckDB
   connection to it), each into a fresh table with the same DDL: a loop of single
   INSERTs in autocommit (each row its own transaction), the same loop inside one
   transaction, and psycopg's executemany.

Usage: .venv/bin/python bench/serving.py --rows 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from embedded_daemon import lake_catalog

from astra_pipeline.assets.serving import read_partition
from resources.lake import open_lake
from resources.serving import PostgresServingResource, ServingTableSpec, col
from resources.warehouse import DuckDBWarehouseResource

TARGET_RATIO = 20
DEVICES = 2_000
T0 = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)

STATS = [
    f"{m}_{s}" for m in ("temperature", "humidity") for s in ("mean", "min", "max", "p95", "stddev")
]
COLUMNS = (
    col("window_start", "timestamptz", nullable=False),
    col("device_id", "text", nullable=False),
    col("readings", "bigint", nullable=False),
    *(col(name, "double precision") for name in STATS),
    col("battery_min", "double precision"),
    col("status_ok", "integer", nullable=False),
    col("status_degraded", "integer", nullable=False),
    col("status_fault", "integer", nullable=False),
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def spec_for(schema: str, table: str) -> ServingTableSpec:
    return ServingTableSpec(
        table=f"{schema}.{table}",
        columns=COLUMNS,
        primary_key=("window_start", "device_id"),
        index_columns=("window_start", "device_id"),
        partition_column="window_start",
    )


def build_lake(warehouse: DuckDBWarehouseResource, rows: int) -> tuple[dt.datetime, dt.datetime]:
    """N aggregate rows: DEVICES devices x N/DEVICES minutes, deterministic values, in the
    (fresh) lake's agg.sensor_1m, one commit."""
    stats = ", ".join(
        f"round(20 + 10 * sin(i * {k + 1}) + {k}, 3) AS {name}" for k, name in enumerate(STATS)
    )
    with warehouse.transaction() as tx:
        tx.execute("CREATE SCHEMA IF NOT EXISTS agg")
        tx.execute(
            f"""
            CREATE TABLE agg.sensor_1m AS
            SELECT TIMESTAMPTZ '{T0.isoformat()}' + to_minutes((i // {DEVICES})::BIGINT)
                       AS window_start,
                   'dev-' || lpad((i % {DEVICES})::VARCHAR, 5, '0') AS device_id,
                   (i % 60 + 1)::BIGINT AS readings,
                   {stats},
                   CASE WHEN i % 11 = 0 THEN NULL ELSE (i % 100)::DOUBLE END AS battery_min,
                   (i % 50)::INTEGER AS status_ok,
                   (i % 7)::INTEGER AS status_degraded,
                   (i % 3)::INTEGER AS status_fault
            FROM range({rows}) r(i)
            """
        )
    minutes = -(-rows // DEVICES)
    end = T0 + dt.timedelta(hours=-(-minutes // 60))
    return T0, end


def ours(
    warehouse: DuckDBWarehouseResource,
    serving: PostgresServingResource,
    spec: ServingTableSpec,
    start: dt.datetime,
    end: dt.datetime,
) -> dict[str, float]:
    began = time.perf_counter()
    frame = read_partition(
        warehouse, spec.model_copy(update={"table": "agg.sensor_1m"}), start, end
    )
    read_s = time.perf_counter() - began
    serving.ensure_table(spec)
    result = serving.replace_partition(spec, frame, start=start, end=end)
    total = time.perf_counter() - began
    return {
        "rows": frame.height,
        "deleted": result.deleted,
        "seconds": total,
        "read_seconds": read_s,
        "load_seconds": result.seconds,
    }


def baseline(
    warehouse: DuckDBWarehouseResource, pg: str, spec: ServingTableSpec, rows: int, mode: str
) -> dict[str, float]:
    """Row by row: fetch the first `rows` rows from the lake, one INSERT per row."""
    names = ", ".join(f'"{c.name}"' for c in COLUMNS)
    marks = ", ".join(["%s"] * len(COLUMNS))
    insert = f"INSERT INTO {spec.table} ({names}) VALUES ({marks})"
    began = time.perf_counter()
    con = open_lake(warehouse.lake_location(), read_only=True)
    try:
        data = con.execute(
            f"SELECT {names} FROM agg.sensor_1m ORDER BY window_start, device_id LIMIT ?", [rows]
        ).fetchall()
    finally:
        con.close()
    with psycopg.connect(pg, autocommit=(mode == "autocommit")) as conn:
        with conn.cursor() as cursor:
            if mode == "executemany":
                cursor.executemany(insert, data)
            else:
                for row in data:
                    cursor.execute(insert, row)
        if mode != "autocommit":
            conn.commit()
    seconds = time.perf_counter() - began
    return {"rows": rows, "seconds": seconds, "rows_per_second": rows / seconds}


def count(pg: str, table: str) -> int:
    with psycopg.connect(pg) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def machine(pg: str) -> str:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    with psycopg.connect(pg) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    return (
        f"nproc={os.cpu_count()}, CPU: {model}, Python {platform.python_version()}, "
        f"PostgreSQL {version[0] if version else '?'} on 127.0.0.1 (TCP)"
    )


def main(args: argparse.Namespace) -> int:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    serving = PostgresServingResource(url=args.pg)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder, lake_catalog(Path(folder)) as lakes:
        warehouse, _ = lakes.new()
        log(f"building {args.rows:,} aggregate rows in a fresh lake")
        start, end = build_lake(warehouse, args.rows)
        try:
            spec = spec_for(schema, "sensor_1m")
            log("ours: first load")
            results["ours_first_load"] = ours(warehouse, serving, spec, start, end)
            log("ours: replace of the same window")
            results["ours_replace"] = ours(warehouse, serving, spec, start, end)
            assert count(args.pg, spec.table) == args.rows
            for mode, rows in (
                ("autocommit", args.autocommit_rows),
                ("one_transaction", args.baseline_rows),
                ("executemany", args.baseline_rows),
            ):
                table = spec_for(schema, f"baseline_{mode}")
                serving.ensure_table(table)
                log(f"baseline {mode}: {rows:,} rows")
                results[f"baseline_{mode}"] = baseline(warehouse, args.pg, table, rows, mode)
                assert count(args.pg, table.table) == rows
        finally:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    for name in ("ours_first_load", "ours_replace"):
        results[name]["rows_per_second"] = results[name]["rows"] / results[name]["seconds"]
    report(args, results)
    return 0


def report(args: argparse.Namespace, results: dict[str, dict[str, float]]) -> None:
    first, replace = results["ours_first_load"], results["ours_replace"]
    print(f"Machine: {machine(args.pg)}; {dt.date.today().isoformat()}\n")
    print("| Measurement | rows/s | Detail |\n|---|---:|---|")
    for label, r in (("Ours: first load", first), ("Ours: re-materialization", replace)):
        print(
            f"| {label} | {r['rows_per_second']:,.0f} | {int(r['rows']):,} rows in "
            f"{r['seconds']:.2f}s (lake read {r['read_seconds']:.2f}s, Postgres "
            f"{r['load_seconds']:.2f}s; {int(r['deleted']):,} rows replaced) |"
        )
    labels = {
        "autocommit": "Row by row: one INSERT per row, autocommit",
        "one_transaction": "Row by row: one INSERT per row, one transaction",
        "executemany": "executemany (psycopg pipelines the INSERTs)",
    }
    for mode, label in labels.items():
        r = results[f"baseline_{mode}"]
        extrapolated = args.rows / r["rows_per_second"]
        print(
            f"| {label} | {r['rows_per_second']:,.0f} | {int(r['rows']):,} rows in "
            f"{r['seconds']:.2f}s; {args.rows:,} rows extrapolated: {extrapolated:,.0f}s |"
        )
    print()
    for mode, label in labels.items():
        base = results[f"baseline_{mode}"]["rows_per_second"]
        ratios = [r["rows_per_second"] / base for r in (first, replace)]
        verdict = "met" if min(ratios) >= TARGET_RATIO else "NOT met"
        print(
            f"- vs {label.lower()}: {ratios[0]:,.1f}x (first load), {ratios[1]:,.1f}x "
            f"(re-materialization); target {TARGET_RATIO}x: {verdict}"
        )
    print("\n" + json.dumps(results, indent=1), file=sys.stderr)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=50_000)
    parser.add_argument("--autocommit-rows", type=int, default=5_000)
    parser.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres dbname=test")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main(parse_args()))
