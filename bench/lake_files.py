"""Lake files under a dev-rate stream: files per table after N minutes, without and with
maintenance.

What `astra dev` does to its lake, minus Dagster: one private Postgres for the catalog, a
temporary data folder, the embedded broker, and the real `astra simulate --rate 50
--malformed 0.01 --duplicates 0.01 --late 0.02` (as cmd_dev starts it) producing for
``--minutes`` of wall-clock time. Every ``--interval`` seconds (the ingest sensor's 5 s)
one ingest: ``drain()`` (max_batch_size 100,000, time budget 60 s) and then
``refresh_live_hour`` with the totals it returned, as the ingest asset does.

Every ``--checkpoint-every`` minutes: Parquet files per table on disk
(``<data>/<schema>/<table>/**/*.parquet``, data and delete files), the live files the
catalog lists (``ducklake_table_info``), and the catalog's snapshots.

At the end (stream stopped, topic drained): the "without maintenance" figures, then
``resources.lake_maintenance.maintain`` twice, as the lake_files asset runs it: with the
default 168 h retention (files merged, history kept), then with 1 minute (history expired,
unreferenced files deleted), and (``--settle`` seconds later, 0 to skip) once more with 1
minute: ducklake_cleanup_old_files only deletes files scheduled for deletion before the
cutoff, so what a pass's expiry frees goes at the next pass. Each time: files and bytes,
files scheduled for deletion, files deleted, bytes reclaimed, maintain()'s wall time, the
tables' row counts (must not change), and a count query and a query of the last 10 minutes
of 1-minute windows, ``--reps`` times each through ``warehouse.query`` (p50/p99).

Usage: .venv/bin/python bench/lake_files.py --minutes 30
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import free_port, log, machine, percentile  # noqa: E402

from astra_pipeline.assets.ingest import IngestConfig, drain, refresh_live_hour  # noqa: E402
from astra_pipeline.cli import DEV_STREAM_FLAWS  # noqa: E402
from resources.broker import EmbeddedBroker  # noqa: E402
from resources.embedded_postgres import EmbeddedPostgres  # noqa: E402
from resources.kafka import KafkaResource  # noqa: E402
from resources.lake import LAKE  # noqa: E402
from resources.lake_maintenance import folder_bytes, maintain, table_files  # noqa: E402
from resources.warehouse import DuckDBWarehouseResource  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "events_raw"
DEADLETTER = "events_deadletter"
GROUP = "astra-ingest"
PARTITIONS = 6
RUN_ID = "bench-lake-files"

COUNT_SQL = "SELECT count(*) FROM raw.events"
WINDOW_SQL = (
    "SELECT device_id, window_start, reading_count FROM agg.sensor_1m WHERE window_start >= "
    "(SELECT max(window_start) - INTERVAL 10 MINUTE FROM agg.sensor_1m)"
)
COUNTED = (
    "raw.events",
    "clean.sensor_readings",
    "clean.user_activity",
    "clean.dead_letter_events",
    "clean.duplicate_events",
    "agg.sensor_1m",
    "ops.ingest_ledger",
)


def disk_files(data: Path) -> dict[str, dict[str, int]]:
    """Per schema.table: Parquet data files, delete files and bytes on disk."""
    found: dict[str, dict[str, int]] = defaultdict(lambda: {"data": 0, "delete": 0, "bytes": 0})
    for path in data.rglob("*.parquet"):
        parts = path.relative_to(data).parts
        name = f"{parts[0]}.{parts[1]}" if len(parts) >= 3 else "(top)"
        kind = "delete" if "delete" in path.name else "data"
        with contextlib.suppress(FileNotFoundError):
            found[name]["bytes"] += path.stat().st_size
            found[name][kind] += 1
    return dict(sorted(found.items()))


def snapshot(warehouse: DuckDBWarehouseResource, data: Path) -> dict[str, Any]:
    with warehouse.session(read_only=True) as session:
        live = table_files(session)
        info = session.frame(f"SELECT * FROM ducklake_table_info('{LAKE}')")
        snapshots = int(session.scalar(f"SELECT count(*) FROM ducklake_snapshots('{LAKE}')"))
        # Files no snapshot references any more, waiting for ducklake_cleanup_old_files.
        scheduled = int(
            session.scalar(
                f"SELECT count(*) FROM __ducklake_metadata_{LAKE}."
                "ducklake_files_scheduled_for_deletion"
            )
        )
    return {
        "scheduled_for_deletion": scheduled,
        "disk": disk_files(data),
        "live": {
            name: {"files": t.files, "bytes": t.bytes, "delete_files": t.delete_files}
            for name, t in live.items()
        },
        "table_info": info.to_dicts(),
        "snapshots": snapshots,
        "disk_bytes": folder_bytes(str(data)) or 0,
    }


def row_counts(warehouse: DuckDBWarehouseResource) -> dict[str, int]:
    sql = "SELECT " + ", ".join(f'(SELECT count(*) FROM {t}) AS "{t}"' for t in COUNTED)
    return {k: int(v) for k, v in warehouse.query(sql).row(0, named=True).items()}


def latencies(warehouse: DuckDBWarehouseResource, reps: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, sql in (("count", COUNT_SQL), ("window", WINDOW_SQL)):
        warehouse.query(sql)  # warm-up, not counted
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            warehouse.query(sql)
            times.append(time.perf_counter() - t0)
        out[name] = {"p50_s": percentile(times, 50), "p99_s": percentile(times, 99)}
    return out


def ingest_once(
    kafka: KafkaResource, warehouse: DuckDBWarehouseResource, config: IngestConfig
) -> tuple[int, int, float, float]:
    """One sensor tick's run: drain, then the live hour's refresh. Returns (messages,
    batches, drain seconds, refresh seconds)."""
    t0 = time.perf_counter()
    totals = drain(kafka, warehouse, config, run_id=None)
    t1 = time.perf_counter()
    for _ in refresh_live_hour(warehouse, totals, RUN_ID):
        pass
    return totals.messages, totals.batches, t1 - t0, time.perf_counter() - t1


def stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "machine": machine(),
        "command": ".venv/bin/python bench/"
        + " ".join([Path(sys.argv[0]).name, *map(shlex.quote, sys.argv[1:])]),
        "minutes": args.minutes,
        "interval_s": args.interval,
        "rate": args.rate,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "checkpoints": [],
        "ingests": [],
    }
    data = tmp / "lake"
    data.mkdir()
    postgres = EmbeddedPostgres(tmp / "pg", free_port()).start()
    stack = contextlib.ExitStack()
    stack.callback(postgres.stop)
    with stack:
        url = postgres.create_database("lake")
        warehouse = DuckDBWarehouseResource(lake_catalog=url, lake_data_path=str(data))
        warehouse.ensure_schema()
        broker = stack.enter_context(EmbeddedBroker(log_path=tmp / "broker.log"))
        kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers, consumer_group=GROUP)
        kafka.create_topics({TOPIC: PARTITIONS, DEADLETTER: 1, "events_alerts": 1})
        config = IngestConfig(
            topic=TOPIC, deadletter_topic=DEADLETTER, max_batch_size=100_000, time_budget_s=60
        )
        env = {
            **os.environ,
            "ASTRA_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "ASTRA_TOPIC_RAW": TOPIC,
            "ASTRA_TOPIC_DEADLETTER": DEADLETTER,
        }
        simulate = [
            str(Path(sys.executable).parent / "astra"),
            "simulate",
            "--duration",
            str(int(args.minutes * 60)),
            "--rate",
            str(args.rate),
            *DEV_STREAM_FLAWS,
        ]
        result["simulate"] = " ".join(simulate[1:])
        sim_log = open(tmp / "simulate.log", "wb")  # noqa: SIM115
        stack.callback(sim_log.close)
        producer = subprocess.Popen(
            simulate,
            env=env,
            stdout=sim_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=tmp,
        )
        stack.callback(stop_group, producer)
        began = time.monotonic()
        end = began + args.minutes * 60
        next_checkpoint = began + args.checkpoint_every * 60
        tick = 0
        window: list[dict[str, Any]] = []
        while True:
            now = time.monotonic()
            if now >= next_checkpoint - 0.5 and next_checkpoint <= end + 1:
                point = snapshot(warehouse, data)
                point["minute"] = round((now - began) / 60, 2)
                point["ingests"] = len(result["ingests"])
                point["messages"] = sum(i["messages"] for i in result["ingests"])
                point["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
                runs = [i["drain_s"] + i["refresh_s"] for i in window]
                point["run_s_p50"] = statistics.median(runs) if runs else 0.0
                point["run_s_max"] = max(runs) if runs else 0.0
                window = []
                result["checkpoints"].append(point)
                log(
                    f"checkpoint {point['minute']} min: {point['ingests']} ingests, "
                    f"{point['messages']} msgs, disk files "
                    f"{sum(t['data'] + t['delete'] for t in point['disk'].values())}, "
                    f"live {sum(t['files'] for t in point['live'].values())}, "
                    f"snapshots {point['snapshots']}"
                )
                next_checkpoint += args.checkpoint_every * 60
            if now >= end and producer.poll() is not None:
                break
            due = began + tick * args.interval
            if due > now:
                time.sleep(due - now)
            tick += 1
            started = time.monotonic() - began
            messages, batches, drain_s, refresh_s = ingest_once(kafka, warehouse, config)
            record = {
                "at_s": round(started, 2),
                "messages": messages,
                "batches": batches,
                "drain_s": round(drain_s, 3),
                "refresh_s": round(refresh_s, 3),
            }
            result["ingests"].append(record)
            window.append(record)
            # The sensor does not start a run while one is in progress: on an overrun the
            # next tick is the first one after this run ends.
            tick = max(tick, int((time.monotonic() - began) // args.interval) + 1)
        result["simulate_rc"] = producer.returncode
        result["simulate_output"] = (tmp / "simulate.log").read_text()[-2000:]
        # Whatever the producer sent last.
        while True:
            messages, *_ = ingest_once(kafka, warehouse, config)
            if not messages:
                break
            result["ingests"].append(
                {
                    "at_s": round(time.monotonic() - began, 2),
                    "messages": messages,
                    "batches": 1,
                    "drain_s": 0,
                    "refresh_s": 0,
                }
            )
        result["high_watermarks"] = sum(kafka.high_watermarks(TOPIC).values())
        result["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]

        phases: dict[str, Any] = {}
        counts0 = row_counts(warehouse)
        phases["without"] = {
            **snapshot(warehouse, data),
            "counts": counts0,
            "latency": latencies(warehouse, args.reps),
        }
        log(f"without maintenance: {counts0}")
        passes = [
            ("retention_168h", dt.timedelta(hours=168)),
            ("retention_1min", dt.timedelta(minutes=1)),
        ]
        if args.settle:
            # ducklake_cleanup_old_files deletes the files whose deletion was scheduled
            # before the cutoff; the expiry of the pass before scheduled them just now,
            # so only a later pass (the next cron tick) deletes them.
            passes.append(("retention_1min_again", dt.timedelta(minutes=1)))
        for label, retention in passes:
            if label == "retention_1min_again":
                log(f"waiting {args.settle:.0f} s before the third pass")
                time.sleep(args.settle)
            t0 = time.perf_counter()
            report = maintain(warehouse, retention=retention, now=dt.datetime.now(dt.UTC))
            seconds = time.perf_counter() - t0
            counts = row_counts(warehouse)
            phases[label] = {
                **snapshot(warehouse, data),
                "maintain_s": seconds,
                "snapshots_expired": report.snapshots_expired,
                "files_deleted": report.files_deleted,
                "bytes_reclaimed": report.bytes_reclaimed,
                "counts": counts,
                "counts_unchanged": counts == counts0,
                "latency": latencies(warehouse, args.reps),
            }
            log(
                f"{label}: maintain {seconds:.1f}s, deleted {report.files_deleted}, "
                f"reclaimed {report.bytes_reclaimed}, counts unchanged {counts == counts0}"
            )
        result["phases"] = phases
    return result


def _total_disk(point: dict[str, Any]) -> int:
    return sum(t["data"] + t["delete"] for t in point["disk"].values())


def _total_live(point: dict[str, Any]) -> int:
    return sum(t["files"] for t in point["live"].values())


def markdown(result: dict[str, Any]) -> str:
    """The tables for docs/performance.md (written into it by hand)."""
    cps = result["checkpoints"]
    phases = result["phases"]

    def used(p: dict[str, Any], n: str) -> bool:
        d, live = p["disk"].get(n, {}), p["live"].get(n, {})
        return bool(d.get("data") or d.get("delete") or live.get("files"))

    names = sorted(
        {n for p in [*cps, *phases.values()] for n in (*p["disk"], *p["live"]) if used(p, n)}
    )
    lines = [
        "Parquet files on disk per table (data + delete files; history included) at each "
        "checkpoint:",
        "",
        "| table | " + " | ".join(f"{c['minute']:.0f} min" for c in cps) + " |",
        "|---|" + "---:|" * len(cps),
    ]
    for name in names:
        cells = []
        for c in cps:
            d = c["disk"].get(name, {"data": 0, "delete": 0})
            cells.append(f"{d['data']} + {d['delete']}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "| **all tables, on disk** | " + " | ".join(str(_total_disk(c)) for c in cps) + " |",
        "| live files (`ducklake_table_info`) | "
        + " | ".join(str(_total_live(c)) for c in cps)
        + " |",
        "| snapshots | " + " | ".join(str(c["snapshots"]) for c in cps) + " |",
        "| data folder, MB | " + " | ".join(f"{c['disk_bytes'] / 1e6:.1f}" for c in cps) + " |",
        "| ingests / events so far | "
        + " | ".join(f"{c['ingests']} / {c['messages']:,}" for c in cps)
        + " |",
        "| ingest run p50 / max (s) | "
        + " | ".join(f"{c['run_s_p50']:.2f} / {c['run_s_max']:.2f}" for c in cps)
        + " |",
        "| load average (1 min) | " + " | ".join(c["loadavg"][0] for c in cps) + " |",
        "",
    ]
    w = phases["without"]
    done = [
        phases[k]
        for k in ("retention_168h", "retention_1min", "retention_1min_again")
        if k in phases
    ]
    cols = (w, *done)
    heads = ["maintain(168 h)", "then maintain(1 min)", "1 min later, maintain(1 min)"]
    lines += [
        "| at the end | without maintenance | " + " | ".join(heads[: len(done)]) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for name in names:
        cells = []
        for p in cols:
            live = p["live"].get(name, {"files": 0, "delete_files": 0})
            d = p["disk"].get(name, {"data": 0, "delete": 0})
            cells.append(f"{live['files']} + {live['delete_files']} ({d['data'] + d['delete']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    def row(label: str, values: list[str]) -> str:
        return f"| {label} | " + " | ".join(values) + " |"

    lines += [
        row(
            "**all tables**",
            [
                f"{_total_live(p)} + {sum(t['delete_files'] for t in p['live'].values())} "
                f"({_total_disk(p)})"
                for p in cols
            ],
        ),
        row(
            "live bytes / data folder, MB",
            [
                f"{sum(t['bytes'] for t in p['live'].values()) / 1e6:.1f} / "
                f"{p['disk_bytes'] / 1e6:.1f}"
                for p in cols
            ],
        ),
        row("snapshots", [str(p["snapshots"]) for p in cols]),
        row(
            "files scheduled for deletion",
            [str(p.get("scheduled_for_deletion", "?")) for p in cols],
        ),
        row("maintain() wall time", ["-", *(f"{p['maintain_s']:.1f} s" for p in done)]),
        row(
            "snapshots expired / files deleted",
            ["-", *(f"{p['snapshots_expired']} / {p['files_deleted']}" for p in done)],
        ),
        row(
            "bytes reclaimed (data folder)",
            ["-", *(f"{p['bytes_reclaimed'] / 1e6:.1f} MB" for p in done)],
        ),
        row("row counts unchanged", ["-", *(str(p["counts_unchanged"]) for p in done)]),
        row(
            "`count(*)` raw.events p50 / p99",
            [
                f"{p['latency']['count']['p50_s'] * 1e3:.0f} / "
                f"{p['latency']['count']['p99_s'] * 1e3:.0f} ms"
                for p in cols
            ],
        ),
        row(
            "10-minute agg.sensor_1m query p50 / p99",
            [
                f"{p['latency']['window']['p50_s'] * 1e3:.0f} / "
                f"{p['latency']['window']['p99_s'] * 1e3:.0f} ms"
                for p in cols
            ],
        ),
    ]
    counts = w["counts"]
    lines += ["", "Row counts at the end: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between ingests")
    parser.add_argument("--checkpoint-every", type=float, default=5.0, help="minutes")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument(
        "--settle",
        type=float,
        default=65.0,
        help="seconds to wait before a third maintain(1 min) pass (0: no third pass)",
    )
    parser.add_argument("--json", type=Path, help="write the full result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lake-files-") as tmp:
        result = run(args, Path(tmp))
    text = markdown(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    print(
        f"Machine: {result['machine']}; load average {result['loadavg_start']} at the start, "
        f"{result['loadavg_end']} at the end."
    )
    print(
        f"Command: {result['command']}  (producer: astra {result['simulate']}, "
        f"exit {result['simulate_rc']}; {result['high_watermarks']:,} messages on the topic)"
    )
    print()
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
