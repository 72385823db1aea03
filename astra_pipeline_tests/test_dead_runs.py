"""A run killed inside the pooled ingest step does not stop ingestion (real daemon, real
broker, real lake, nobody touching the instance).

Before, the dead run was marked failed by its code server but kept its `duckdb_writer`
pool slot, so the next run waited for the slot forever while the sensor, seeing that run
STARTED, asked for no other: the stream stopped until a person freed the slot. Run
monitoring now frees a finished run's slots and fails runs whose worker is gone
(dagster.yaml) and dead_run_watchdog fails runs whose worker is gone (sensors/dead_runs.py);
the bound is in docs/exactly-once.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from astra_pipeline.jobs import INGEST_JOB_NAME
from astra_pipeline_tests.helpers import counts, lake_env, produce, stop_process_group
from resources.broker import EmbeddedBroker
from resources.errors import WarehouseError
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource

REPO = Path(__file__).resolve().parent.parent
BOUND_S = 60.0
"""From the kill to the next run's first committed batch, with nobody touching the
instance (docs/exactly-once.md, "Dead runs")."""
DRAIN_LIMIT_S = 180.0
"""From the kill to every event ingested: the bound above plus the drain of the backlog,
whose time is the machine's speed (30-60 s here), not the recovery's."""


@pytest.fixture
def daemon_env(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, warehouse: DuckDBWarehouseResource
) -> Iterator[dict[str, str]]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.embedded.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        **lake_env(warehouse),
        "ASTRA_TOPIC_RAW": topic,
        "ASTRA_TOPIC_DEADLETTER": f"{topic}_dlq",
        "ASTRA_CONSUMER_GROUP": f"g-{topic}",
        "ASTRA_SENSOR_INTERVAL_S": "2",
        # Small batches: the run commits one every few milliseconds for seconds, so the
        # kill lands inside the pooled step, between or inside batch transactions.
        "ASTRA_MAX_BATCH_SIZE": "2000",
    }
    # Create the SQLite instance storage before the daemon starts: two processes creating
    # it at once can both stamp its schema version ("more than one head present").
    dg.DagsterInstance.from_config(str(home)).dispose()
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield env
    finally:
        stop_process_group(daemon)
        log.close()


def _ingest_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(job_name=INGEST_JOB_NAME)))


def _worker_in_step(instance: dg.DagsterInstance, deadline: float) -> tuple[str, int]:
    """The first ingest run whose pooled step has committed a batch, and its worker pid."""
    while time.monotonic() < deadline:
        for run in _ingest_runs(instance):
            logs = instance.all_logs(run.run_id)
            started = [e for e in logs if e.dagster_event_type == dg.DagsterEventType.RUN_START]
            in_step = any("batch 1:" in (e.user_message or "") for e in logs)
            if started and in_step and run.status == dg.DagsterRunStatus.STARTED:
                pid = started[0].dagster_event.pid  # type: ignore[union-attr]
                assert pid, "RUN_START carries the worker's pid"
                return run.run_id, int(pid)
        time.sleep(0.05)
    raise AssertionError("no ingest run reached its pooled step in time")


def _parent(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])


def _counts(warehouse: DuckDBWarehouseResource) -> dict[str, int] | None:
    try:
        return counts(warehouse)
    except WarehouseError:
        return None


def _kill_in_step(daemon_env: dict[str, str], kafka: KafkaResource, topic: str, server: bool):
    instance = dg.DagsterInstance.from_config(daemon_env["DAGSTER_HOME"])
    produced = produce(kafka, topic, 200_000, seed=21, malformed_fraction=0.01)
    run_id, pid = _worker_in_step(instance, time.monotonic() + 120)
    if server:
        # The code server that launched the run dies with it (an OOM kill, a crash):
        # nobody is left to report the worker's death but dead_run_watchdog.
        os.kill(_parent(pid), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    return instance, produced, run_id, time.monotonic(), time.time()


def _timeline(instance: dg.DagsterInstance, killed_wall: float) -> str:
    """Every ingest run's events, in seconds from the kill: what a failure message needs
    to tell a slow launch from a slow drain."""
    lines = []
    for run in _ingest_runs(instance):
        lines.append(f"run {run.run_id[:8]} {run.status.value} tags={dict(run.tags)}")
        for event in instance.all_logs(run.run_id):
            what = event.dagster_event_type.value if event.dagster_event_type else ""
            text = (event.user_message or "")[:100]
            if what or "batch 1:" in text:
                lines.append(f"  {event.timestamp - killed_wall:+7.1f}s {what} {text}")
    return "\n".join(lines)


def _lag_observations(
    instance: dg.DagsterInstance, until_caught_up_s: float
) -> list[dict[str, float]]:
    """The sensor's lag observations of raw_events, newest first, once the newest says
    the backlog is gone (or the time is up)."""
    deadline = time.monotonic() + until_caught_up_s
    while True:
        records = instance.fetch_observations(
            dg.AssetKey("raw_events"), limit=1000, ascending=False
        ).records
        lags = [
            {k: v.value for k, v in r.asset_observation.metadata.items()}  # type: ignore[union-attr]
            for r in records
        ]
        if (lags and lags[0]["kafka_lag"] == 0) or time.monotonic() > deadline:
            return lags  # type: ignore[return-value]
        time.sleep(1)


def _failed_after(instance: dg.DagsterInstance, run_id: str, killed_at: float, limit_s: float):
    while time.monotonic() - killed_at < limit_s:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.status == dg.DagsterRunStatus.FAILURE:
            return time.monotonic() - killed_at
        time.sleep(0.5)
    raise AssertionError(f"the killed run is still {run.status} after {limit_s:.0f}s")


def _raw_rows(warehouse: DuckDBWarehouseResource) -> int | None:
    got = _counts(warehouse)
    return None if got is None else int(got["raw"])


@pytest.mark.timeout(300)
def test_a_run_killed_in_the_pooled_step_is_failed_and_the_next_run_catches_up(
    daemon_env: dict[str, str],
    kafka: KafkaResource,
    topic: str,
    warehouse: DuckDBWarehouseResource,
) -> None:
    instance, first, run_id, killed_at, killed_wall = _kill_in_step(
        daemon_env, kafka, topic, server=False
    )
    second = produce(kafka, topic, 5_000, seed=22, malformed_fraction=0.01)

    failed_after = _failed_after(instance, run_id, killed_at, BOUND_S)
    at_kill = int(counts(warehouse)["raw"])  # the killed run committed batches: a lake
    # The promise: the stream goes on. The next run commits a batch within the bound,
    # with nobody touching the instance; draining the rest then takes what the machine's
    # speed makes it (measured, printed), within the test's own limit.
    resumed_after = None
    while time.monotonic() - killed_at < BOUND_S:
        rows = _raw_rows(warehouse)
        if rows is not None and rows > at_kill:
            resumed_after = time.monotonic() - killed_at
            break
        time.sleep(0.5)
    timeline = _timeline(instance, killed_wall)
    assert resumed_after is not None, (
        f"no batch committed {BOUND_S:.0f}s after the kill:\n{timeline}"
    )
    want = first["total"] + second["total"]
    got = None
    while time.monotonic() - killed_at < DRAIN_LIMIT_S:
        got = _counts(warehouse)
        if got and got["raw"] >= want:
            break
        time.sleep(1)
    caught_up_after = time.monotonic() - killed_at
    assert got is not None and got["raw"] == want, (got, want, caught_up_after, timeline)
    # Exactly once: every message once in raw, every valid event once in clean.
    assert got["ledger"] == want
    assert got["clean"] == got["distinct_ids"] == first["unique_valid"] + second["unique_valid"]
    assert got["dead"] == first["malformed"] + second["malformed"]
    # Nothing is left pretending to run.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = _ingest_runs(instance)
        if all(r.is_finished for r in runs):
            break
        time.sleep(1)
    assert all(r.is_finished for r in runs), [(r.run_id, r.status) for r in runs]
    later = [r for r in runs if r.run_id != run_id]
    assert later and all(r.status == dg.DagsterRunStatus.SUCCESS for r in later)
    # The sensor observed the lag every tick, in messages and seconds (the UI's plots):
    # a backlog with an age while it drained, then none.
    lags = _lag_observations(instance, until_caught_up_s=30)
    assert any(m["kafka_lag"] > 0 and m["kafka_lag_seconds"] > 0 for m in lags), lags[:5]
    assert lags[0] == {"kafka_lag": 0, "kafka_lag_seconds": 0}, lags[:5]
    print(
        f"killed run failed after {failed_after:.1f}s, next batch after {resumed_after:.1f}s,"
        f" caught up after {caught_up_after:.1f}s"
    )


SERVER_DETECTION_BOUND_S = 20.0
"""dead_run_watchdog's interval (2 s here) and the daemon's sensor loop, with room."""


@pytest.mark.timeout(300)
def test_a_run_whose_code_server_died_with_it_is_failed_and_its_slot_freed(
    daemon_env: dict[str, str], kafka: KafkaResource, topic: str
) -> None:
    """Only dead_run_watchdog (its own code location) can tell: the server that would
    report the worker is gone.
    (The daemon itself starts a new code server within a minute, after which the sensor
    asks for the next run as in the test above.)"""
    instance, _, run_id, killed_at, _ = _kill_in_step(daemon_env, kafka, topic, server=True)
    failed_after = _failed_after(instance, run_id, killed_at, SERVER_DETECTION_BOUND_S)
    message = [
        e.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    ]
    assert any("worker process" in (m or "") for m in message), message
    while time.monotonic() - killed_at < SERVER_DETECTION_BOUND_S + 15:
        info = instance.event_log_storage.get_concurrency_info("duckdb_writer")
        if not info.claimed_slots:
            break
        time.sleep(0.5)
    assert not info.claimed_slots, info.claimed_slots
    print(
        f"run failed after {failed_after:.1f}s, slot free after {time.monotonic() - killed_at:.1f}s"
    )
