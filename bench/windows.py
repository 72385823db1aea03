"""Window benchmark: one hourly partition of clean.sensor_readings -> agg.sensor_1m.

One run, one simulated hour of N cleaned readings (in arrival order, with a share of late
readings), stored next to the previous hour's readings in a fresh lake (its catalog a
database of a private Postgres started here, bench/embedded_daemon.py, its Parquet files
in a temporary folder):

1. ours, end to end, through the warehouse resource and resources.window_store as the
   asset does it: one transaction that reads the hour's clean rows into polars
   (``load_clean``, Arrow), computes ``sensor_1m``, replaces the partition's rows
   (``replace_windows``: DELETE + INSERT) and commits; the median of --repeat runs,
   with the stages timed separately;
2. ours, the other sensor tables of the partition (computation only);
3. reference: DuckDB's own engine doing the same aggregation in the lake (one
   ``INSERT INTO agg.sensor_1m SELECT ... GROUP BY`` in one transaction: no transfer, no
   Python), checked to give the same rows: what the lake costs for the partition at best;
4. naive: a plain per-event Python implementation (rows as tuples from a DuckDB
   connection to the lake, dict of lists per (device, minute), the statistics module,
   one INSERT per aggregate row);
5. Quix Streams 3 tumbling window with the same aggregates, run by a separate
   interpreter (--quix-python, e.g. a throwaway venv with ``pip install quixstreams``)
   against the embedded broker, if that interpreter has quixstreams.

Usage: .venv/bin/python bench/windows.py --events 1000000 --write-doc
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
from embedded_daemon import lake_catalog

from astra_pipeline.events import SENSOR_STATUSES
from astra_pipeline.transforms.clean import enrich_sensor_readings
from astra_pipeline.transforms.windows import sensor_1h, sensor_1m, sensor_5m_sliding
from resources.lake import open_lake
from resources.tables import AGG_SENSOR_1M, SENSOR_READINGS
from resources.warehouse import DuckDBWarehouseResource
from resources.window_store import load_clean, replace_windows

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "windows.md"
BEGIN_MARK = "<!-- bench/windows.py results: begin -->"
END_MARK = "<!-- bench/windows.py results: end -->"
HOUR = dt.timedelta(hours=1)
PARTITION = dt.datetime(2026, 11, 23, 7, tzinfo=dt.UTC)
TARGET_RATE = 5_000_000
QUIX_PARTITIONS = 6

READ_SQL = f"""
SELECT device_id, ts, temperature_c, humidity_pct, battery_pct, status
FROM {SENSOR_READINGS} WHERE ts >= $1 AND ts < $2
"""
DELETE_SQL = f"DELETE FROM {AGG_SENSOR_1M} WHERE window_start >= $1 AND window_start < $2"

QUIX_CHILD = r"""
import json, statistics, sys, tempfile, time
from quixstreams import Application
from quixstreams.dataframe.windows import Collect, Count, Max, Mean, Min

servers, topic_name, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = Application(
    broker_address=servers, consumer_group=f"quix-bench-{time.time_ns()}",
    auto_offset_reset="earliest", state_dir=tempfile.mkdtemp(prefix="quix-state-"),
    use_changelog_topics=False, loglevel="WARNING",
)
topic = app.topic(
    topic_name, value_deserializer="json",
    timestamp_extractor=lambda value, headers, ts, ts_type: value["ts_ms"],
)
seen = {"messages": 0, "first": None, "last": None, "late": 0, "windows": 0, "counted": 0}

def arrived(value):
    now = time.perf_counter()
    if seen["first"] is None:
        seen["first"] = now
    seen["messages"] += 1
    if seen["messages"] == expected:
        seen["last"] = now
        app.stop()

def late(*args, **kwargs):
    seen["late"] += 1
    return False

def p95(values):
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]

def finish(row):
    seen["windows"] += 1
    seen["counted"] += row["count"]
    for metric in ("t", "h"):
        values = row.pop(metric + "_values")
        row[metric + "_stddev"] = statistics.stdev(values) if len(values) > 1 else None
        row[metric + "_p95"] = p95(values)
    statuses = row.pop("statuses")
    for status in ("ok", "degraded", "fault"):
        row["count_" + status] = statuses.count(status)
    return row

sdf = app.dataframe(topic).update(arrived)
sdf = (
    sdf.tumbling_window(60_000, grace_ms=0, on_late=late)
    .agg(
        count=Count(), t_mean=Mean("temperature_c"), t_min=Min("temperature_c"),
        t_max=Max("temperature_c"), t_values=Collect("temperature_c"),
        h_mean=Mean("humidity_pct"), h_min=Min("humidity_pct"), h_max=Max("humidity_pct"),
        h_values=Collect("humidity_pct"), battery_min=Min("battery_pct"),
        statuses=Collect("status"),
    )
    .final()
    .apply(finish)
)
t0 = time.perf_counter()
app.run()
seen["run_s"] = time.perf_counter() - t0
print(json.dumps(seen))
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> str:
    model = "unknown"
    mem = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) // 1024 // 1024} GiB RAM"
    except OSError:
        pass
    return (
        f"nproc={os.cpu_count()}, CPU: {model}{mem}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, polars {pl.__version__}, duckdb {duckdb.__version__}"
    )


def simulate(count: int, devices: int, hour: dt.datetime, seed: int, late: float) -> pl.DataFrame:
    """``count`` clean readings of ``hour`` in arrival order, as clean.sensor_readings holds
    them: arrival = event time + a short delay, and for a ``late`` share up to 30 minutes
    (still inside the hour by event time)."""
    rng = np.random.default_rng(seed)
    device = rng.integers(0, devices, count)
    offset_us = np.sort(rng.integers(0, 3_600_000_000, count))
    delay_us = rng.exponential(500_000, count).astype(np.int64)
    is_late = rng.random(count) < late
    delay_us[is_late] += rng.integers(60_000_000, 1_800_000_000, int(is_late.sum()))
    order = np.argsort(offset_us + delay_us, kind="stable")
    base_temp = rng.normal(20.0, 6.0, devices)
    base_hum = rng.uniform(20.0, 80.0, devices)
    start_us = int(hour.timestamp() * 1_000_000)
    device, offset_us, delay_us = device[order], offset_us[order], delay_us[order]
    frame = pl.DataFrame(
        {
            "event_id": [f"{seed:08x}-{i:024x}" for i in range(count)],
            "device_id": pl.Series([f"dev-{d:05d}" for d in range(devices)])[device],
            "ts": pl.Series(start_us + offset_us).cast(pl.Datetime("us", "UTC")),
            "temperature_c": np.clip(base_temp[device] + rng.normal(0, 0.8, count), -60, 85),
            "humidity_pct": np.clip(base_hum[device] + rng.normal(0, 3.0, count), 0, 100),
            "battery_pct": rng.uniform(5.0, 100.0, count).round(1),
            "lat": rng.uniform(-60, 60, count),
            "lon": rng.uniform(-180, 180, count),
            "status": pl.Series(list(SENSOR_STATUSES))[
                rng.choice(len(SENSOR_STATUSES), count, p=[0.97, 0.02, 0.01])
            ],
            "extra": pl.Series([None] * count, dtype=pl.String),
            "topic": "events_raw",
            "partition": (device % QUIX_PARTITIONS).astype(np.int32),
            "offset": np.arange(count, dtype=np.int64),
            "ingested_at": pl.Series(start_us + offset_us + delay_us).cast(
                pl.Datetime("us", "UTC")
            ),
            "batch_id": pl.Series(np.arange(count) // 100_000).cast(pl.String),
        }
    )
    return enrich_sensor_readings(frame)


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} / {five:.2f}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_ours(warehouse: DuckDBWarehouseResource, hour: dt.datetime) -> dict[str, Any]:
    """One partition as the asset does it (assets/window_refresh.py, for sensor_1m alone):
    one lake transaction that reads the hour's clean rows (``load_clean``), computes
    ``sensor_1m``, replaces the partition's rows (``replace_windows``) and commits."""
    end = hour + HOUR
    t0 = time.perf_counter()
    with warehouse.transaction() as tx:
        frame = load_clean(tx, hour, end, hour, hour).readings
        t1 = time.perf_counter()
        c1 = cpu_seconds()
        rows = sensor_1m(frame)
        c2 = cpu_seconds()
        t2 = time.perf_counter()
        replace_windows(tx, hour, end, {"sensor_1m": rows})
        t3 = time.perf_counter()
    t4 = time.perf_counter()
    return {
        "frame": rows,
        "events": frame.height,
        "rows": rows.height,
        "counted": int(rows["reading_count"].sum()),
        "read": t1 - t0,
        "compute": t2 - t1,
        "compute_cpu": c2 - c1,
        "write": t3 - t2,
        "commit": t4 - t3,
        "total": t4 - t0,
    }


NATIVE_SQL = f"""
INSERT INTO {AGG_SENSOR_1M} BY NAME
SELECT
    device_id,
    time_bucket(INTERVAL 1 MINUTE, ts) AS window_start,
    time_bucket(INTERVAL 1 MINUTE, ts) + INTERVAL 1 MINUTE AS window_end,
    count(*) AS reading_count,
    avg(temperature_c) AS temperature_c_mean,
    min(temperature_c) AS temperature_c_min,
    max(temperature_c) AS temperature_c_max,
    stddev_samp(temperature_c) AS temperature_c_stddev,
    quantile_cont(temperature_c, 0.95) AS temperature_c_p95,
    avg(humidity_pct) AS humidity_pct_mean,
    min(humidity_pct) AS humidity_pct_min,
    max(humidity_pct) AS humidity_pct_max,
    stddev_samp(humidity_pct) AS humidity_pct_stddev,
    quantile_cont(humidity_pct, 0.95) AS humidity_pct_p95,
    min(battery_pct) AS battery_min,
    {", ".join(f"count(*) FILTER (WHERE status = '{s}') AS count_{s}" for s in SENSOR_STATUSES)}
FROM {SENSOR_READINGS}
WHERE ts >= $1 AND ts < $2
GROUP BY ALL
"""


def run_native(warehouse: DuckDBWarehouseResource, hour: dt.datetime) -> dict[str, Any]:
    """The reference: the partition replaced in the lake by DuckDB alone, in one
    transaction, timed like ``run_ours``."""
    end = hour + HOUR
    t0 = time.perf_counter()
    with warehouse.transaction() as tx:
        tx.execute(DELETE_SQL, [hour, end])
        tx.execute(NATIVE_SQL, [hour, end])
        t1 = time.perf_counter()
    t2 = time.perf_counter()
    return {"aggregate_write": t1 - t0, "commit": t2 - t1, "total": t2 - t0}


def check_native_agrees(
    warehouse: DuckDBWarehouseResource, hour: dt.datetime, ours: pl.DataFrame
) -> str:
    """The reference's table against our rows: same windows, values within 1e-9."""
    with warehouse.session(read_only=True) as session:
        stored = session.frame(
            f"SELECT * FROM {AGG_SENSOR_1M} WHERE window_start >= $1 AND window_start < $2",
            [hour, hour + HOUR],
        )
    stored = stored.select(pl.col(name).cast(dtype) for name, dtype in ours.schema.items())
    keys = ["device_id", "window_start"]
    joined = ours.join(stored, on=keys, how="full", suffix="_ref", coalesce=True)
    assert joined.height == ours.height == stored.height, (ours.height, stored.height)
    worst = 0.0
    for column in ours.columns:
        if column in keys or column == "window_end":
            continue
        diff = joined.select(
            ((pl.col(column) - pl.col(f"{column}_ref")).abs()).max().fill_null(0.0)
        ).item()
        nulls = joined.filter(pl.col(column).is_null() != pl.col(f"{column}_ref").is_null())
        assert nulls.height == 0, f"{column}: null in one table only"
        worst = max(worst, float(diff))
    assert worst <= 1e-9, f"largest difference {worst}"
    return f"{ours.height:,} rows, identical windows, largest difference {worst:.1e}"


def naive_p95(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    ordered = sorted(values)
    h = 0.95 * (len(ordered) - 1)
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])


def naive_sensor_1m(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Per event: append to the lists of its (device, minute); then statistics per group."""
    groups: dict[
        tuple[str, dt.datetime], tuple[list[float], list[float], list[float], dict[str, int]]
    ]
    groups = {}
    for device, ts, temperature, humidity, battery, status in rows:
        key = (device, ts.replace(second=0, microsecond=0))
        group = groups.get(key)
        if group is None:
            group = groups[key] = ([], [], [], dict.fromkeys(SENSOR_STATUSES, 0))
        group[0].append(temperature)
        group[1].append(humidity)
        group[2].append(battery)
        group[3][status] += 1
    out = []
    for (device, start), (temps, hums, batteries, counts) in sorted(groups.items()):
        row: list[Any] = [device, start, start + dt.timedelta(minutes=1), len(temps)]
        for values in (temps, hums):
            row += [
                statistics.fmean(values),
                min(values),
                max(values),
                statistics.stdev(values) if len(values) > 1 else None,
                naive_p95(values),
            ]
        row.append(min(batteries))
        row += [counts[s] for s in SENSOR_STATUSES]
        out.append(tuple(row))
    return out


def run_naive(warehouse: DuckDBWarehouseResource, hour: dt.datetime, limit: int) -> dict[str, Any]:
    """Rows as tuples from a plain DuckDB connection to the lake, one INSERT per window
    row (each inlined in the lake's catalog: DuckLake inlines inserts of a few rows)."""
    end = hour + HOUR
    con = open_lake(warehouse.lake_location(), read_only=False)
    try:
        t0 = time.perf_counter()
        rows = con.execute(READ_SQL + " LIMIT $3", [hour, end, limit]).fetchall()
        t1 = time.perf_counter()
        out = naive_sensor_1m(rows)
        t2 = time.perf_counter()
        con.execute("BEGIN TRANSACTION")
        con.execute(DELETE_SQL, [hour, end])
        placeholders = ", ".join("?" * len(out[0]))
        for row in out:
            con.execute(f"INSERT INTO {AGG_SENSOR_1M} VALUES ({placeholders})", list(row))
        con.execute("COMMIT")
        t3 = time.perf_counter()
    finally:
        con.close()
    return {
        "events": len(rows),
        "rows": len(out),
        "read": t1 - t0,
        "compute": t2 - t1,
        "write": t3 - t2,
        "total": t3 - t0,
    }


def check_naive_agrees(frame: pl.DataFrame, limit: int) -> str:
    """The naive and the polars results on the same rows, compared value by value."""
    subset = frame.head(limit)
    ours = sensor_1m(subset).rows()
    cols = ["device_id", "ts", "temperature_c", "humidity_pct", "battery_pct", "status"]
    theirs = naive_sensor_1m(subset.select(cols).rows())
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        assert a[:4] == b[:4] and a[-4:] == b[-4:], (a, b)
        for x, y in zip(a[4:-4], b[4:-4], strict=True):
            assert (x is None) == (y is None), (a, b)
            if x is not None:
                worst = max(worst, abs(x - y) / max(1.0, abs(y)))
    assert worst < 1e-9, worst
    return f"{len(ours):,} rows equal (max relative float difference {worst:.1e})"


def run_quix(
    python: str, frame: pl.DataFrame, limit: int, timeout_s: float
) -> dict[str, Any] | str:
    """Quix Streams against the embedded broker; a string says why it did not run."""
    probe = subprocess.run(
        [python, "-c", "import quixstreams; print(quixstreams.__version__)"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"did not install / import with {python}: {reason}"
    version = probe.stdout.strip()
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from resources.broker import EmbeddedBroker

    subset = frame.head(limit).select(
        "device_id",
        (pl.col("ts").dt.epoch("ms")).alias("ts_ms"),
        "temperature_c",
        "humidity_pct",
        "battery_pct",
        "status",
    )
    with EmbeddedBroker() as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        # Quix derives its state topics' retention from the input topic's retention.ms;
        # the embedded broker reports only configs that were set explicitly.
        name = f"quix_bench_{time.time_ns()}"
        config = {"retention.ms": "604800000", "retention.bytes": "-1"}
        for future in admin.create_topics(
            [NewTopic(name, QUIX_PARTITIONS, 1, config=config)]
        ).values():
            future.result()
        producer = Producer(
            {"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20, "log_level": 3}
        )
        log(f"quix: producing {subset.height:,} JSON messages keyed by device_id")
        for i, (device, ts_ms, t, h, b, s) in enumerate(subset.iter_rows()):
            value = json.dumps(
                {
                    "ts_ms": ts_ms,
                    "temperature_c": t,
                    "humidity_pct": h,
                    "battery_pct": b,
                    "status": s,
                }
            )
            while True:
                try:
                    producer.produce(name, value=value.encode(), key=device.encode())
                    break
                except BufferError:
                    producer.poll(0.1)
            if i % 10_000 == 0:
                producer.poll(0)
        producer.flush(120)
        log("quix: running the Application")
        try:
            out = subprocess.run(
                [python, "-c", QUIX_CHILD, broker.bootstrap_servers, name, str(subset.height)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return f"quixstreams {version} ran but did not finish within {timeout_s:.0f}s"
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or ["no output"]
        return f"quixstreams {version} failed: {tail[0]}"
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["version"] = version
    return result


def fmt(value: float) -> str:
    return f"{value:,.0f}"


def timed(function: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        function()
        samples.append(time.perf_counter() - t0)
    return median(samples)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN_MARK not in doc or END_MARK not in doc:
        raise SystemExit(f"{DOC} lacks the result markers; not written")
    head, rest = doc.split(BEGIN_MARK, 1)
    _, tail = rest.split(END_MARK, 1)
    DOC.write_text(f"{head}{BEGIN_MARK}\n{text}\n{END_MARK}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--late", type=float, default=0.01, help="share of late readings")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--baseline-events", type=int, default=200_000)
    parser.add_argument("--quix-events", type=int, default=200_000)
    parser.add_argument("--quix-python", default="/tmp/quixvenv/bin/python")
    parser.add_argument("--quix-timeout", type=float, default=900)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--write-doc", action="store_true", help=f"update {DOC.name}")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="astra-bench-windows-"))
    try:
        with lake_catalog(tmp) as lakes:
            warehouse, _ = lakes.new()
            run(args, warehouse)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, warehouse: DuckDBWarehouseResource) -> None:
    n = args.events
    command = ".venv/bin/python bench/windows.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    hour = PARTITION
    rows: list[tuple[str, str, str]] = []
    notes: list[str] = []

    log(f"simulating {n:,} readings of {args.devices:,} devices in {hour:%Y-%m-%d %H:00}Z")
    frame = simulate(n, args.devices, hour, args.seed, args.late)
    before = simulate(n // 10, args.devices, hour - HOUR, args.seed + 1, args.late)
    warehouse.ensure_schema()
    with warehouse.transaction() as tx:
        for part in (before, frame):
            tx.append(SENSOR_READINGS, part)
    log(f"lake: {warehouse.describe()} ({n + n // 10:,} readings, {n:,} in the partition)")

    load_before = load()
    log(f"ours: read + sensor_1m + write, {args.repeat} times (load average {load_before})")
    runs = [run_ours(warehouse, hour) for _ in range(args.repeat)]
    load_after = load()
    first = runs[0]
    assert first["events"] == n and first["counted"] == n, first
    stages = ("read", "compute", "compute_cpu", "write", "commit", "total")
    parts = {k: median([r[k] for r in runs]) for k in stages}
    best_compute = min(r["compute"] for r in runs)
    compute_rate = n / parts["compute"]
    total_rate = n / parts["total"]
    detail = f"median of {args.repeat}; {first['rows']:,} window rows"
    rows.append(
        (
            "**Ours: `sensor_1m` computation alone** (polars frame in, rows out)",
            f"**{fmt(compute_rate)}**",
            f"{parts['compute'] * 1000:.0f} ms, {detail}; best {best_compute * 1000:.0f} ms "
            f"= {fmt(n / best_compute)} ev/s; CPU time (both threads) "
            f"{parts['compute_cpu'] * 1000:.0f} ms",
        )
    )
    rows.append(
        (
            "**Ours: lake -> `sensor_1m` -> lake** (one transaction: read, compute, "
            "replace, commit)",
            f"**{fmt(total_rate)}**",
            f"{parts['total'] * 1000:.0f} ms: read {parts['read'] * 1000:.0f}, "
            f"compute {parts['compute'] * 1000:.0f}, DELETE + INSERT "
            f"{parts['write'] * 1000:.0f}, COMMIT (Parquet files + catalog) "
            f"{parts['commit'] * 1000:.0f} ms (stage medians); {detail}",
        )
    )

    log(f"reference: DuckDB alone in the lake, {args.repeat} times")
    native = [run_native(warehouse, hour) for _ in range(args.repeat)]
    native_parts = {
        k: median([r[k] for r in native]) for k in ("aggregate_write", "commit", "total")
    }
    native_rate = n / native_parts["total"]
    agreement = check_native_agrees(warehouse, hour, first["frame"])
    notes.append(f"DuckDB's own aggregation and ours agree: {agreement}.")
    rows.append(
        (
            "Reference: DuckDB alone in the lake, `INSERT INTO agg.sensor_1m SELECT ... "
            "GROUP BY` (one transaction: replace, commit)",
            fmt(native_rate),
            f"{native_parts['total'] * 1000:.0f} ms: DELETE + aggregate + INSERT "
            f"{native_parts['aggregate_write'] * 1000:.0f}, COMMIT "
            f"{native_parts['commit'] * 1000:.0f} ms (stage medians, {args.repeat} runs); "
            "no transfer, no Python: what DuckDB itself needs for the partition",
        )
    )

    log("ours: the other sensor tables, computation only")
    with warehouse.session(read_only=True) as session:
        window_input = session.frame(READ_SQL, [hour, hour + HOUR + dt.timedelta(minutes=4)])
    for name, function in (
        ("sensor_1h", lambda: sensor_1h(frame)),
        ("sensor_5m_sliding", lambda: sensor_5m_sliding(window_input, hour, hour + HOUR)),
    ):
        seconds = timed(function, max(3, args.repeat // 2))
        rows.append(
            (f"Ours: `{name}` computation alone", fmt(n / seconds), f"{seconds * 1000:.0f} ms")
        )

    k = min(args.baseline_events, n)
    log(f"naive Python on the first {k:,} readings of the partition")
    notes.append(f"Naive and polars results agree: {check_naive_agrees(frame, min(k, 50_000))}.")
    naive = run_naive(warehouse, hour, k)
    scope = "all" if k == n else f"first {k:,} (rate extrapolates to N, stated as such)"
    naive_compute_rate = naive["events"] / naive["compute"]
    naive_total_rate = naive["events"] / naive["total"]
    rows.append(
        (
            "Naive Python: per-event dict-of-lists + statistics, computation alone",
            fmt(naive_compute_rate),
            f"{naive['events']:,} readings ({scope}) in {naive['compute']:.2f}s",
        )
    )
    rows.append(
        (
            "Naive Python: fetchall -> per-event loop -> one INSERT per window row",
            fmt(naive_total_rate),
            f"read {naive['read']:.2f}s + compute {naive['compute']:.2f}s + write "
            f"{naive['write']:.2f}s ({naive['rows']:,} rows)",
        )
    )

    q = min(args.quix_events, n)
    log(f"Quix Streams on the first {q:,} readings")
    quix = (
        run_quix(args.quix_python, frame, q, args.quix_timeout)
        if q > 0
        else "skipped (--quix-events 0)"
    )
    quix_rate: float | None = None
    if isinstance(quix, str):
        rows.append(("Quix Streams tumbling window", "not run", quix))
    else:
        quix_rate = quix["messages"] / (quix["last"] - quix["first"])
        rows.append(
            (
                f"Quix Streams {quix['version']}: consume + 1-min tumbling `.agg()` `.final()`",
                fmt(quix_rate),
                f"{quix['messages']:,} messages (first {q:,} of the partition, JSON from "
                f"the embedded broker, {QUIX_PARTITIONS} partitions) first->last message "
                f"{quix['last'] - quix['first']:.2f}s; Application.run {quix['run_s']:.1f}s; "
                f"{quix['windows']:,} windows closed holding {quix['counted']:,} readings, "
                f"{quix['late']:,} late readings dropped",
            )
        )

    ratio_naive = compute_rate / naive_compute_rate
    ratio_naive_total = total_rate / naive_total_rate
    verdict = "met" if compute_rate >= TARGET_RATE else "NOT met"
    verdict_total = "met" if total_rate >= TARGET_RATE else "NOT met"
    lines = [
        "### Command",
        "",
        "```",
        command,
        "```",
        "",
        f"Run from the repository root on {dt.date.today().isoformat()}. Machine: {machine()}.",
        "",
        f"Load average (1 min / 5 min) of the machine, shared with other work: "
        f"{load_before} before our runs, {load_after} after. With other processes on both "
        "cores the wall-clock figures drop; the CPU time of the computation does not.",
        "",
        f"Data: {n:,} cleaned readings of {args.devices:,} devices in one hour "
        f"({hour:%Y-%m-%d %H}:00Z), in arrival order with {args.late:.0%} late by 1-30 min, "
        f"plus {n // 10:,} readings of the previous hour in the same table.",
        "",
        "| Measurement | events/s | Detail |",
        "|---|---:|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
        f"- Target >= {TARGET_RATE:,} events/s for the 1-minute aggregates of one partition: "
        f"computation alone **{verdict}** ({fmt(compute_rate)} ev/s); lake read + compute "
        f"+ write **{verdict_total}** ({fmt(total_rate)} ev/s).",
        f"- DuckDB alone, doing the whole aggregation inside the database, reaches "
        f"{fmt(native_rate)} ev/s in the same run: {native_rate / total_rate:.2f}x ours "
        "lake to lake. "
        + (
            "Below the target too: on this machine even DuckDB's own engine, with no "
            "transfer and no Python, does not replace a partition of this size at that rate."
            if native_rate < TARGET_RATE
            else "It reaches the target; ours does not."
            if total_rate < TARGET_RATE
            else "Both reach the target."
        ),
        f"- Ours vs naive Python: {ratio_naive:,.0f}x (computation), {ratio_naive_total:,.0f}x "
        "(lake to lake).",
    ]
    if quix_rate is not None:
        lines.append(
            f"- Ours vs Quix Streams: {compute_rate / quix_rate:,.0f}x (computation) and "
            f"{total_rate / quix_rate:,.0f}x (lake to lake) against Quix's consume + window "
            "rate (Quix's figure includes reading and deserializing JSON from Kafka, which is "
            "how it runs; ours starts from rows already stored)."
        )
    lines += ["", *(f"- {note}" for note in notes)]
    text = "\n".join(lines)
    print(text)
    if args.write_doc:
        write_doc(text)
        log(f"wrote the results into {DOC}")


if __name__ == "__main__":
    main()
