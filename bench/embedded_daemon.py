"""The daemon setup the whole-system benchmarks share: a fresh SQLite Dagster instance
(dagster.embedded.yaml, as `make dev` uses), a temporary DuckDB file, and
`dagster-daemon run` with the sensors on, for one topic of a running broker (and an
alerts topic of its own, created here, for the scoring runs' alerts)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from resources.kafka import KafkaResource

ROOT = Path(__file__).resolve().parent.parent
INSTANCE_YAML = ROOT / "dagster.embedded.yaml"


@dataclass(frozen=True)
class Daemon:
    home: Path
    """DAGSTER_HOME of the instance (its run records stay there after the daemon stops)."""
    duckdb_path: Path


@contextlib.contextmanager
def embedded_daemon(workdir: Path, servers: str, topic: str, dlq: str) -> Iterator[Daemon]:
    home = workdir / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
    daemon = Daemon(home=home, duckdb_path=workdir / "astra.duckdb")
    alerts = f"{topic}_alerts"
    KafkaResource(bootstrap_servers=servers).create_topics({alerts: 1})
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": servers,
        "ASTRA_DUCKDB_PATH": str(daemon.duckdb_path),
        "ASTRA_TOPIC_RAW": topic,
        "ASTRA_TOPIC_DEADLETTER": dlq,
        "ASTRA_TOPIC_ALERTS": alerts,
        "ASTRA_CONSUMER_GROUP": f"g-{topic}",
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield daemon
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the daemon's process group, then SIGKILL what outlives 30 s (its code
    servers can outlive the daemon itself)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    time.sleep(1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
