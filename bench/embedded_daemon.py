"""The set-up the whole-system benchmarks share: fresh lakes (DuckLake: a catalog database
of a private Postgres, ``resources.embedded_postgres``, and a temporary Parquet folder),
and `dagster-daemon run` with the sensors on, on a fresh SQLite Dagster instance
(dagster.embedded.yaml) and a fresh lake, for one topic of a running broker (and an
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

from bench_util import free_port

from resources.embedded_postgres import EmbeddedPostgres
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource

ROOT = Path(__file__).resolve().parent.parent
INSTANCE_YAML = ROOT / "dagster.embedded.yaml"
METADATA_SCHEMA = "astra_lake"


class Lakes:
    """Fresh lakes: one database of the private Postgres and one data folder each."""

    def __init__(self, postgres: EmbeddedPostgres, root: Path, schema: str) -> None:
        self.postgres = postgres
        self.root = root
        self.schema = schema
        self.count = 0

    def new(self) -> tuple[DuckDBWarehouseResource, str]:
        """A fresh lake (no tables yet) and the name of its catalog database."""
        self.count += 1
        name = f"lake{self.count}"
        url = self.postgres.create_database(name)
        data = self.root / name
        data.mkdir(parents=True)
        warehouse = DuckDBWarehouseResource(
            lake_catalog=url, lake_data_path=str(data), lake_metadata_schema=self.schema
        )
        return warehouse, name

    def xact_commits(self, database: str) -> int:
        """Postgres transactions committed in ``database`` so far (pg_stat_database)."""
        self.postgres.psql("SELECT pg_stat_force_next_flush()", database)
        out = self.postgres.psql(
            f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{database}'"
        )
        return int(out.strip() or 0)


@contextlib.contextmanager
def lake_catalog(workdir: Path, schema: str = METADATA_SCHEMA) -> Iterator[Lakes]:
    """A private Postgres on a free loopback port (its data in ``workdir/pg``) for the
    lakes' catalogs, their Parquet folders under ``workdir/lakes``; stopped on exit."""
    postgres = EmbeddedPostgres(workdir / "pg", free_port()).start()
    try:
        yield Lakes(postgres, workdir / "lakes", schema)
    finally:
        postgres.stop()


def lake_env(warehouse: DuckDBWarehouseResource) -> dict[str, str]:
    """This process's environment without its ASTRA_ settings, plus the lake's: what a
    daemon or an `astra` command started by a benchmark gets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTRA_")}
    env["ASTRA_LAKE_CATALOG"] = warehouse.lake_catalog
    env["ASTRA_LAKE_DATA_PATH"] = warehouse.lake_data_path
    if warehouse.lake_metadata_schema:
        env["ASTRA_LAKE_METADATA_SCHEMA"] = warehouse.lake_metadata_schema
    return env


@dataclass(frozen=True)
class Daemon:
    home: Path
    """DAGSTER_HOME of the instance (its run records stay there after the daemon stops)."""
    warehouse: DuckDBWarehouseResource
    """The daemon's lake, to read from the benchmark's process."""
    env: dict[str, str]
    """The environment `dagster-daemon` was started with."""


@contextlib.contextmanager
def embedded_daemon(
    workdir: Path,
    servers: str,
    topic: str,
    dlq: str,
    warehouse: DuckDBWarehouseResource | None = None,
) -> Iterator[Daemon]:
    """`dagster-daemon run` on ``warehouse`` (a lake, e.g. ``Lakes.new()``; by default a
    fresh one in a private Postgres started here under ``workdir/lake``, stopped after
    the daemon: pass your own to read the lake after the daemon has stopped)."""
    home = workdir / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
    alerts = f"{topic}_alerts"
    KafkaResource(bootstrap_servers=servers).create_topics({alerts: 1})
    with contextlib.ExitStack() as stack:
        if warehouse is None:
            warehouse, _ = stack.enter_context(lake_catalog(workdir / "lake")).new()
        env = {
            **lake_env(warehouse),
            "DAGSTER_HOME": str(home),
            "ASTRA_KAFKA_BOOTSTRAP_SERVERS": servers,
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
            yield Daemon(home=home, warehouse=warehouse, env=env)
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
