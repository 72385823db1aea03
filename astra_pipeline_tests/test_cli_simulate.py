"""`astra simulate` with injected anomalies and declining users, ground truth stored."""

import json
import os
import subprocess
import sys
from pathlib import Path

from resources.warehouse import DuckDBWarehouseResource

BIN = Path(sys.executable).parent


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "astra"), "simulate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_simulate_stores_the_ground_truth(broker, topic, tmp_path: Path) -> None:
    db = tmp_path / "astra.duckdb"
    env = {
        **os.environ,
        "ASTRA_DUCKDB_PATH": str(db),
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "ASTRA_TOPIC_RAW": topic,
    }
    args = ["--count", "20000", "--devices", "10", "--users", "20", "--span-hours", "12"]
    args += ["--anomalies", "4", "--anomaly-kinds", "spike,stuck", "--declining", "0.5"]
    done = run([*args, "--seed", "5", "--truth"], env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["produced"] == 20_000
    truth = summary["ground_truth"]
    assert truth["anomalies"] > 0 and truth["declining_users"] == 10
    warehouse = DuckDBWarehouseResource(path=str(db))
    stored = warehouse.query(
        "SELECT count(DISTINCT (device_id, kind, anomaly_start)) AS anomalies, "
        "count(event_id) AS readings, list(DISTINCT kind ORDER BY kind) AS kinds "
        "FROM ml.anomaly_ground_truth"
    ).row(0, named=True)
    assert stored["anomalies"] == truth["anomalies"]
    assert stored["readings"] > 0 and stored["kinds"] == ["spike", "stuck"]
    assert warehouse.query("SELECT count(*) AS n FROM ml.declining_users_truth").item() == 10
    # The same seed again replaces its truth rather than adding to it.
    again = run([*args, "--seed", "5", "--truth"], env)
    assert again.returncode == 0, again.stderr
    assert warehouse.query("SELECT count(*) AS n FROM ml.declining_users_truth").item() == 10


def test_unknown_anomaly_kind_is_one_line() -> None:
    done = run(["--count", "10", "--anomaly-kinds", "spike,wobble"], dict(os.environ))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "wobble" in done.stderr
