"""Helpers the benchmarks share (bench/ is on sys.path when a benchmark runs)."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")

DRAIN_CHILD = r"""
import json, sys, time
from astra_pipeline.assets.ingest import IngestConfig, drain
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource
servers, group, topic, dlq, catalog, data_path, schema, batch = sys.argv[1:9]
kafka = KafkaResource(bootstrap_servers=servers, consumer_group=group)
warehouse = DuckDBWarehouseResource(lake_catalog=catalog, lake_data_path=data_path,
                                    lake_metadata_schema=schema)
config = IngestConfig(topic=topic, deadletter_topic=dlq, max_batch_size=int(batch),
                      time_budget_s=3600)
print("start", flush=True)
t0 = time.perf_counter()
totals = drain(kafka, warehouse, config, run_id=None)
seconds = time.perf_counter() - t0
print(json.dumps({"messages": totals.messages, "batches": totals.batches,
                  "sensor_readings": totals.sensor_readings,
                  "user_activity": totals.user_activity,
                  "dead_letters": totals.dead_letters, "duplicates": totals.duplicates,
                  "reached_eof": totals.reached_eof, "seconds": seconds}), flush=True)
"""
"""One drain of a lake in a process of its own (`python -c DRAIN_CHILD servers group topic
dlq catalog data_path schema batch`, from the repository root): "start" once it begins,
then one JSON line of its totals and seconds."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt(value: float) -> str:
    return f"{value:,.0f}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with fewer than 100 samples p99 is the max."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of ``pid`` (all its threads) and of the children it
    has reaped."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")": state is field 3, utime..cstime are fields 14..17.
    return sum(int(x) for x in fields[11:15]) / TICKS
