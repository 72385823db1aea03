"""Helpers the benchmarks share (bench/ is on sys.path when a benchmark runs)."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resources.warehouse import DuckDBWarehouseResource

ROOT = Path(__file__).resolve().parent.parent

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


def machine() -> str:
    """The machine a figure was measured on: cores, CPU model, memory, OS, Python."""
    model, mem = "unknown", ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) // 1024 // 1024} GiB RAM"
    system = f"{platform.system()} {platform.release()}"
    return (
        f"nproc={os.cpu_count()}, CPU: {model}{mem}, {system}, Python {platform.python_version()}"
    )


def latency_ms(latencies: list[float]) -> dict[str, float]:
    """p50 and p99 (nearest rank) of latencies in seconds, in milliseconds; 0 when none."""
    if not latencies:
        return {"p50_ms": 0.0, "p99_ms": 0.0}
    return {"p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99)}


def invocation(script: str) -> str:
    """The command line that ran this benchmark, as docs quote it."""
    return f".venv/bin/python bench/{script} " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder for one run, removed afterwards whatever happens."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def start_drain_child(
    servers: str, group: str, topic: str, dlq: str, warehouse: DuckDBWarehouseResource, batch: int
) -> tuple[subprocess.Popen[str], list[str]]:
    """DRAIN_CHILD in a process of its own (as a Dagster run would be), returned once it
    is about to call drain(), with the list its stderr lines are collected into."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            DRAIN_CHILD,
            servers,
            group,
            topic,
            dlq,
            warehouse.lake_catalog,
            warehouse.lake_data_path,
            warehouse.lake_metadata_schema,
            str(batch),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    errors: list[str] = []
    stream = child.stderr
    threading.Thread(target=lambda: errors.extend(stream), daemon=True).start()
    first = child.stdout.readline().strip()
    if first != "start":
        child.wait()
        raise RuntimeError(f"drain child did not start: {first!r} {''.join(errors)[-3000:]}")
    return child, errors
