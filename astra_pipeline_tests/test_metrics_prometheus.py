"""A real Prometheus (Debian's package) scrapes a running `astra api` every second while
the test produces events without ingesting them, then ingests them."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from astra_pipeline.assets.ingest import IngestConfig, drain
from astra_pipeline_tests.api_server import ApiProcess, free_port
from astra_pipeline_tests.grafana_dashboards import dashboard_targets
from astra_pipeline_tests.helpers import produce
from astra_pipeline_tests.serving_rows import serve_tables
from resources.broker import EmbeddedBroker
from resources.embedded_postgres import EmbeddedPostgres
from resources.kafka import KafkaResource
from resources.serving import PostgresServingResource
from resources.warehouse import DuckDBWarehouseResource

REPO = Path(__file__).resolve().parent.parent


def need(tool: str) -> str:
    """The tool's path; CI installs it (.ci/run), elsewhere a missing one skips."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: .ci/run installs Debian's prometheus package")
        pytest.skip(f"{tool} not installed (apt-get install prometheus)")
    return path


class Prometheus:
    def __init__(self, folder: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = folder / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: astra-api\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self._log = (folder / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                need("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        try:
            result = self.query(promql)
        except httpx.HTTPError:
            return None
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _dashboard_queries_answer(prometheus: Prometheus) -> None:
    """Every PromQL panel of the Grafana dashboards returns series, with the labels its
    legend uses."""
    time.sleep(3)  # two scrapes after ingest: rates over them are defined
    checked = 0
    for target in dashboard_targets("prometheus"):
        result = prometheus.query(target["expr"])
        assert result, f"no series for {target['expr']}"
        for label in re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")):
            assert all(label in r["metric"] for r in result), (target["expr"], label)
        checked += 1
    assert checked >= 10


def wait_for(read: Any, want: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    got = None
    while time.monotonic() < deadline:
        got = read()
        if got == want:
            return got
        time.sleep(0.5)
    raise AssertionError(f"got {got!r}, want {want!r}")


def _instance_with_runs(home: Path) -> Path:
    """A Dagster instance holding one successful and one failed run."""
    home.mkdir()
    shutil.copy(REPO / "dagster.embedded.yaml", home / "dagster.yaml")

    @dg.asset
    def fine() -> None:
        return None

    @dg.asset
    def broken() -> None:
        raise ValueError("broken on purpose")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert dg.materialize([fine], instance=instance).success
        assert not dg.materialize([broken], instance=instance, raise_on_error=False).success
    return home


@pytest.fixture
def api(
    broker: EmbeddedBroker, embedded_postgres: EmbeddedPostgres, lake_catalog: str, tmp_path: Path
) -> Iterator[tuple[ApiProcess, dict[str, str]]]:
    need("prometheus")
    tag = uuid.uuid4().hex[:10]
    topic = f"events_{tag}"
    KafkaResource(bootstrap_servers=broker.bootstrap_servers).create_topics(
        {topic: 3, f"{topic}_dlq": 1}
    )
    home = _instance_with_runs(tmp_path / "dagster_home")
    pg = embedded_postgres.create_database(f"metrics_{tag}")
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    serve_tables(PostgresServingResource(url=pg), now - dt.timedelta(hours=3))
    env = {
        "DAGSTER_HOME": str(home),
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "ASTRA_TOPIC_RAW": topic,
        "ASTRA_TOPIC_DEADLETTER": f"{topic}_dlq",
        "ASTRA_CONSUMER_GROUP": f"g-{topic}",
        "ASTRA_PG_URL": pg,
        "ASTRA_LAKE_CATALOG": lake_catalog,
        "ASTRA_LAKE_DATA_PATH": str(tmp_path / "lake"),
        "ASTRA_LAKE_METADATA_SCHEMA": f"lake_{tag}",
    }
    DuckDBWarehouseResource(
        lake_catalog=lake_catalog,
        lake_data_path=env["ASTRA_LAKE_DATA_PATH"],
        lake_metadata_schema=env["ASTRA_LAKE_METADATA_SCHEMA"],
    ).ensure_schema()
    running = ApiProcess(env, tmp_path / "api.log").wait_ready()
    try:
        yield running, env
    finally:
        running.stop()


def test_prometheus_sees_the_lag_of_produced_events_then_their_ingestion(
    api: tuple[ApiProcess, dict[str, str]], tmp_path: Path
) -> None:
    server, env = api
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{server.port}")
    try:
        lag = "sum(astra_kafka_lag_messages)"
        ingested = "sum(astra_ingested_events_total)"
        wait_for(lambda: prometheus.value(lag), 0.0, 60)
        before = prometheus.value(ingested)
        assert before == 0.0
        kafka = KafkaResource(
            bootstrap_servers=env["ASTRA_KAFKA_BOOTSTRAP_SERVERS"],
            consumer_group=env["ASTRA_CONSUMER_GROUP"],
        )
        produced = produce(kafka, env["ASTRA_TOPIC_RAW"], 3_000, seed=5, malformed_fraction=0.02)
        n = produced["total"]
        wait_for(lambda: prometheus.value(lag), float(n), 60)
        age = prometheus.value("max(astra_kafka_lag_seconds)")
        assert age is not None and age > 0
        warehouse = DuckDBWarehouseResource(
            lake_catalog=env["ASTRA_LAKE_CATALOG"],
            lake_data_path=env["ASTRA_LAKE_DATA_PATH"],
            lake_metadata_schema=env["ASTRA_LAKE_METADATA_SCHEMA"],
        )
        drain(
            kafka,
            warehouse,
            IngestConfig(
                topic=env["ASTRA_TOPIC_RAW"], deadletter_topic=env["ASTRA_TOPIC_DEADLETTER"]
            ),
            run_id=None,
        )
        clean = warehouse.query(
            "SELECT (SELECT count(*) FROM clean.sensor_readings)"
            " + (SELECT count(*) FROM clean.user_activity) AS n"
        ).item()
        assert clean == produced["unique_valid"]
        wait_for(lambda: prometheus.value(lag), 0.0, 60)
        wait_for(lambda: prometheus.value(ingested), float(clean), 60)
        dead = prometheus.value("sum(astra_dead_letter_events_total)")
        assert dead == produced["malformed"]
        classes = {
            r["metric"]["reason"] for r in prometheus.query("astra_dead_letter_events_total")
        }
        assert classes and len(classes) <= 20
        latency = prometheus.value("sum(astra_end_to_end_latency_seconds_count)")
        assert latency == clean
        requests = prometheus.query('astra_http_requests_total{route="/metrics"}')
        assert requests and requests[0]["metric"]["method"] == "GET"
        up = {
            r["metric"]["source"]: r["value"][1]
            for r in prometheus.query("astra_metrics_source_up")
        }
        assert up == {"kafka": "1", "warehouse": "1", "serving": "1", "dagster": "1"}, up
        runs = {
            r["metric"]["status"]: float(r["value"][1])
            for r in prometheus.query("astra_dagster_runs_total")
        }
        assert runs == {"success": 1.0, "failure": 1.0}, runs
        freshness = prometheus.value("astra_window_freshness_seconds")
        assert freshness is not None and 0 <= freshness < 120
        assert prometheus.value("sum(astra_alerts_total)") == 45
        _dashboard_queries_answer(prometheus)
    finally:
        prometheus.stop()
