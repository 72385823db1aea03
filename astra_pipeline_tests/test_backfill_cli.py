"""Backfills from the command line, against a temporary instance and lake.

Two documented ways: `dg launch --partition-range` (in-process, one run)
and `astra backfill`, which submits a real asset backfill to a running webserver's
GraphQL API for the daemon to execute.
"""

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from astra_pipeline.assets.ingest import IngestConfig, drain
from astra_pipeline.assets.window_refresh import partition_key
from astra_pipeline.simulator import SimulatorConfig, generate
from astra_pipeline_tests.helpers import lake_env, stop_process_group
from resources.broker import free_port
from resources.warehouse import DuckDBWarehouseResource

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOURS = 3


@pytest.fixture
def ingested(kafka, topic, warehouse) -> tuple[DuckDBWarehouseResource, str, str]:
    """Clean rows for the last HOURS hours in a lake; no aggregates yet."""
    now = dt.datetime.now(dt.UTC)
    config = SimulatorConfig(
        devices=10,
        users=30,
        seed=11,
        start=now - dt.timedelta(hours=HOURS),
        events_per_second=3_000 / (HOURS * 3600),
    )
    kafka.produce_all(topic, ((m.key, m.value) for m in generate(config, 3_000)))
    drain(kafka, warehouse, IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq"), None)
    first = (now - dt.timedelta(hours=HOURS)).replace(minute=0, second=0, microsecond=0)
    last = now.replace(minute=0, second=0, microsecond=0)
    return warehouse, partition_key(first), partition_key(last)


def instance_env(tmp_path: Path, warehouse: DuckDBWarehouseResource, kafka) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster.embedded.yaml", home / "dagster.yaml")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        **lake_env(warehouse),
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        # Only the backfill runs here: no sensor-triggered ingest or refresh runs.
        "ASTRA_SENSOR_RUNNING_BY_DEFAULT": "false",
    }


def window_counts(warehouse: DuckDBWarehouseResource) -> tuple[int, int, int]:
    return warehouse.query(
        "SELECT (SELECT coalesce(sum(reading_count), 0) FROM agg.sensor_1m) "
        "+ (SELECT coalesce(sum(event_count), 0) FROM agg.user_1m), "
        "(SELECT count(*) FROM clean.sensor_readings) "
        "+ (SELECT count(*) FROM clean.user_activity), "
        "(SELECT count(*) FROM ops.window_partitions)"
    ).row(0)


@pytest.mark.timeout(180)
def test_dg_launch_partition_range(ingested, kafka, tmp_path: Path) -> None:
    warehouse, first, last = ingested
    done = subprocess.run(
        [
            str(BIN / "dg"),
            "launch",
            "--assets",
            "windowed_aggregates",
            "--partition-range",
            f"{first}...{last}",
        ],
        env=instance_env(tmp_path, warehouse, kafka),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    in_windows, clean, partitions = window_counts(warehouse)
    assert in_windows == clean > 0
    assert partitions == HOURS + 1


def wait_for_webserver(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Until the webserver answers and has loaded the code location."""
    query = json.dumps(
        {"query": "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"}
    ).encode()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "dagster-webserver exited"
        request = urllib.request.Request(
            f"{url}/graphql", data=query, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                entries = json.loads(response.read())["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return
        except (OSError, KeyError, TypeError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"dagster-webserver not ready at {url} after {timeout_s}s")


@pytest.mark.timeout(240)
def test_astra_backfill_runs_through_the_instance(ingested, kafka, tmp_path: Path) -> None:
    warehouse, first, last = ingested
    env = instance_env(tmp_path, warehouse, kafka)
    dry = subprocess.run(
        [str(BIN / "astra"), "backfill", "--from", first, "--to", last, "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[: HOURS + 1] == [
        partition_key(
            dt.datetime.strptime(first, "%Y-%m-%d-%H:%M").replace(tzinfo=dt.UTC)
            + dt.timedelta(hours=i)
        )
        for i in range(HOURS + 1)
    ]
    assert window_counts(warehouse)[2] == 0, "a dry run must not run anything"

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workspace = str(REPO / "workspace.yaml")
    common = {"env": env, "cwd": REPO, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    webserver = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", workspace],
        start_new_session=True,
        **common,
    )
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", workspace], start_new_session=True, **common
    )
    try:
        wait_for_webserver(url, webserver, 90)
        done = subprocess.run(
            [
                str(BIN / "astra"),
                "backfill",
                "--from",
                first,
                "--to",
                last,
                "--url",
                url,
                "--wait",
                "150",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=170,
        )
        # Resuming needs a backfill that stopped: one that does not exist is refused in
        # one line, not a traceback.
        resume = subprocess.run(
            [str(BIN / "astra"), "backfill", "--resume", "nosuchid", "--url", url],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stop_process_group(daemon)
        stop_process_group(webserver)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "COMPLETED" in done.stdout
    assert f"{url}/runs/b/" in done.stdout
    assert resume.returncode == 2
    assert resume.stderr.startswith("astra backfill: ") and resume.stderr.count("\n") == 1
    assert "no backfill 'nosuchid'" in resume.stderr, resume.stderr
    in_windows, clean, partitions = window_counts(warehouse)
    assert in_windows == clean > 0
    assert partitions == HOURS + 1
