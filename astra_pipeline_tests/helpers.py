"""Shared test helpers: produce simulated events, count what the warehouse holds."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from astra_pipeline.simulator import SimulatorConfig, generate
from resources.kafka import KafkaResource
from resources.settings import AstraSettings, env_var_name
from resources.tables import TABLES
from resources.warehouse import DuckDBWarehouseResource


def produce(
    kafka: KafkaResource, topic: str, count: int, seed: int = 1, **fractions: float
) -> dict[str, int]:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=count)
    config = SimulatorConfig(seed=seed, start=start, **fractions)
    messages = list(generate(config, count))
    kafka.produce_all(topic, ((m.key, m.value) for m in messages))
    valid_ids = {m.event_id for m in messages if m.kind in ("valid", "late")}
    return {
        "total": len(messages),
        "malformed": sum(m.kind == "malformed" for m in messages),
        "duplicates": sum(m.kind == "duplicate" for m in messages),
        "unique_valid": len(valid_ids),
    }


def sensor_reading(event_id: str, ts: str = "2026-11-23T07:45:05Z") -> bytes:
    """One valid sensor reading of device dev-1, as the wire carries it."""
    doc = {
        "event_type": "sensor_reading",
        "event_id": event_id,
        "device_id": "dev-1",
        "ts": ts,
        "temperature_c": 20.0,
        "humidity_pct": 40.0,
        "battery_pct": 90.0,
        "lat": 1.0,
        "lon": 2.0,
        "status": "ok",
    }
    return json.dumps(doc).encode()


def settings_for(
    kafka: KafkaResource, topic: str, warehouse: DuckDBWarehouseResource
) -> AstraSettings:
    """Settings naming this test's broker, topic (its dead letters on TOPIC_dlq),
    consumer group and warehouse."""
    return AstraSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        topic_raw=topic,
        topic_deadletter=f"{topic}_dlq",
        consumer_group=kafka.consumer_group,
        **lake_fields(warehouse),
    )


def lake_fields(warehouse: DuckDBWarehouseResource) -> dict[str, str]:
    """The settings (AstraSettings fields) that name ``warehouse``."""
    return {
        "lake_catalog": warehouse.lake_catalog,
        "lake_data_path": warehouse.lake_data_path,
        "lake_metadata_schema": warehouse.lake_metadata_schema,
    }


def copy_lake(source: DuckDBWarehouseResource, target: DuckDBWarehouseResource) -> None:
    """Every table's rows of ``source`` into the new lake ``target`` (a test that alters
    rows works on a copy of a lake other tests share)."""
    target.ensure_schema()
    with source.session(read_only=True) as reader, target.transaction() as tx:
        for table in TABLES:
            tx.execute(f"DELETE FROM {table}")  # the turn tables' initial rows
            tx.append(table, reader.frame(f"SELECT * FROM {table}"))


def lake_env(warehouse: DuckDBWarehouseResource) -> dict[str, str]:
    """The environment variables that name ``warehouse`` to another process."""
    return {env_var_name(name): value for name, value in lake_fields(warehouse).items()}


def counts(warehouse: DuckDBWarehouseResource) -> dict[str, Any]:
    row = warehouse.query(
        "SELECT (SELECT count(*) FROM raw.events) AS raw,"
        " (SELECT count(*) FROM clean.sensor_readings)"
        " + (SELECT count(*) FROM clean.user_activity) AS clean,"
        " (SELECT count(DISTINCT event_id) FROM clean.sensor_readings) +"
        " (SELECT count(DISTINCT event_id) FROM clean.user_activity) AS distinct_ids,"
        " (SELECT count(*) FROM clean.dead_letter_events) AS dead,"
        " (SELECT count(*) FROM clean.duplicate_events) AS dups,"
        " (SELECT coalesce(sum(message_count), 0) FROM ops.ingest_ledger) AS ledger"
    )
    return row.row(0, named=True)


def stop_process_group(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM a process started with start_new_session=True and its whole group; then
    SIGKILL whatever outlives the grace period (a daemon's code servers can outlive it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def make_lake(catalog: str, folder: Path) -> DuckDBWarehouseResource:
    """A fresh DuckLake: a new schema of ``catalog``, its files in a new folder of
    ``folder``."""
    name = f"lake_{uuid.uuid4().hex[:12]}"
    return DuckDBWarehouseResource(
        lake_catalog=catalog, lake_data_path=str(folder / name), lake_metadata_schema=name
    )


@dataclass(frozen=True)
class PostgresServer:
    """Where a test's Postgres server answers (conftest's postgres_server)."""

    host: str
    port: int
    user: str = "postgres"

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def with_database(self, name: str) -> PostgresServer:
        """This server, once database ``name`` exists on it."""
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return self
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self
