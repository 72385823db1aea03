"""Broker + dagster-daemon with the sensors on + simulator: the tables fill exactly,
and the hourly windows the events fall into (late ones included) refresh by themselves."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from astra_pipeline.simulator import SimulatorConfig, generate
from astra_pipeline_tests.helpers import lake_env, stop_process_group
from resources.errors import WarehouseError

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(240)
def test_daemon_ingests_simulated_events_exactly_once(broker, tmp_path: Path, warehouse) -> None:
    topic = f"e2e_{int(time.time())}"
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
    }
    count = 3_000
    config = SimulatorConfig(
        seed=7, malformed_fraction=0.02, duplicate_fraction=0.02, late_fraction=0.05
    )
    messages = list(generate(config, count))
    expected_clean = len({m.event_id for m in messages if m.kind in ("valid", "late")})
    expected_dead = sum(m.kind == "malformed" for m in messages)
    bin_dir = Path(sys.executable).parent
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        produced = subprocess.run(
            [
                str(bin_dir / "astra"),
                "simulate",
                "--count",
                str(count),
                "--seed",
                "7",
                "--malformed",
                "0.02",
                "--duplicates",
                "0.02",
                "--late",
                "0.05",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert produced.returncode == 0, produced.stderr
        deadline = time.monotonic() + 180
        got: tuple = ()
        while time.monotonic() < deadline:
            time.sleep(2)
            try:
                got = warehouse.query(
                    "SELECT (SELECT count(*) FROM raw.events),"
                    " (SELECT count(*) FROM clean.sensor_readings)"
                    " + (SELECT count(*) FROM clean.user_activity),"
                    " (SELECT count(*) FROM clean.dead_letter_events)"
                ).row(0)
            except WarehouseError:
                continue
            if got[0] >= count:
                break
        assert got == (count, expected_clean, expected_dead)
        # The windows sensor refreshes every touched hour: the 1-minute counts catch up
        # with the clean tables without anyone asking.
        windowed = -1
        while time.monotonic() < deadline and windowed != expected_clean:
            time.sleep(2)
            try:
                windowed = warehouse.query(
                    "SELECT (SELECT coalesce(sum(reading_count), 0) FROM agg.sensor_1m)"
                    " + (SELECT coalesce(sum(event_count), 0) FROM agg.user_1m)"
                ).item()
            except WarehouseError:
                continue
        assert windowed == expected_clean
    finally:
        stop_process_group(daemon)
