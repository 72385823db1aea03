"""The repo's dagster.yaml on a fresh Postgres database: daemon + sensor + an ingest run,
with the run, its events and the sensor ticks stored in Postgres (no SQLite anywhere)."""

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterEventType

from astra_pipeline_tests.helpers import PostgresServer, lake_env, produce, stop_process_group
from resources.broker import EmbeddedBroker
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def instance_db(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"astra_it_{uuid.uuid4().hex[:12]}"
    admin = postgres_server.conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.timeout(90)
def test_daemon_on_postgres_storage_runs_sensor_and_ingest(
    broker: EmbeddedBroker,
    topic: str,
    kafka: KafkaResource,
    instance_db: str,
    tmp_path: Path,
    warehouse: DuckDBWarehouseResource,
    postgres_server: PostgresServer,
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": postgres_server.host,
        "DAGSTER_PG_PORT": str(postgres_server.port),
        "DAGSTER_PG_USER": postgres_server.user,
        "DAGSTER_PG_PASSWORD": "",  # trust authentication on the test server
        "DAGSTER_PG_DB": instance_db,
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        **lake_env(warehouse),
        "ASTRA_TOPIC_RAW": topic,
        "ASTRA_TOPIC_DEADLETTER": f"{topic}_dlq",
        "ASTRA_CONSUMER_GROUP": f"g-{topic}",
        "ASTRA_SENSOR_INTERVAL_S": "1",
    }
    produced = produce(kafka, topic, 500, seed=3, malformed_fraction=0.02)
    storage = postgres_server.conninfo(instance_db)
    bin_dir = Path(sys.executable).parent
    log = tmp_path / "daemon.log"
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
        env=env,
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    run_id = None
    try:
        deadline = time.monotonic() + 50
        while run_id is None and time.monotonic() < deadline:
            time.sleep(1)
            assert daemon.poll() is None, "dagster-daemon exited"
            with psycopg.connect(storage) as conn:
                if conn.execute("SELECT to_regclass('public.runs')").fetchone() == (None,):
                    continue  # the daemon is still creating the schema
                row = conn.execute(
                    "SELECT run_id FROM runs WHERE pipeline_name = 'ingest_events_job' "
                    "AND status = 'SUCCESS' ORDER BY create_timestamp LIMIT 1"
                ).fetchone()
            run_id = row[0] if row else None
        assert run_id, (
            "no successful ingest run in Postgres; daemon log:\n" + log.read_text()[-3000:]
        )
    finally:
        stop_process_group(daemon)

    with psycopg.connect(storage) as conn:
        sensor_tag = conn.execute(
            "SELECT value FROM run_tags WHERE run_id = %s AND key = 'dagster/sensor_name'",
            (run_id,),
        ).fetchone()
        events = dict(
            conn.execute(
                "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s "
                "AND dagster_event_type IS NOT NULL GROUP BY 1",
                (run_id,),
            ).fetchall()
        )
        materialized = {
            key
            for (key,) in conn.execute(
                "SELECT asset_key FROM event_logs WHERE run_id = %s "
                "AND dagster_event_type = 'ASSET_MATERIALIZATION'",
                (run_id,),
            ).fetchall()
        }
        sensor_ticks = conn.execute(
            "SELECT count(*) FROM job_ticks WHERE type = 'SENSOR' AND status = 'SUCCESS'"
        ).fetchone()
    assert sensor_tag == ("kafka_events_sensor",)
    assert events.get(DagsterEventType.RUN_SUCCESS.value) == 1
    # The three ingest assets, then the windows of the run's own hour in the same run.
    assert events.get(DagsterEventType.ASSET_MATERIALIZATION.value) == 4
    assert events.get(DagsterEventType.ASSET_CHECK_EVALUATION.value, 0) >= 1
    assert materialized == {
        '["raw_events"]',
        '["cleaned_events"]',
        '["dead_letter_events"]',
        '["windowed_aggregates"]',
    }
    assert sensor_ticks is not None and sensor_ticks[0] >= 1
    assert not list(home.rglob("*.db")), "instance storage fell back to SQLite"
    # The run really ingested the topic (nothing else ran against this lake).
    raw = warehouse.query("SELECT count(*) AS n FROM raw.events")
    assert raw["n"][0] == produced["total"]
