"""`astra simulate` with injected anomalies and declining users, ground truth stored."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from astra_pipeline import cli
from astra_pipeline_tests.helpers import lake_env

BIN = Path(sys.executable).parent


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "astra"), "simulate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_simulate_stores_the_ground_truth(broker, topic, warehouse) -> None:
    env = {
        **os.environ,
        **lake_env(warehouse),
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


def _event_ids(bootstrap: str, topic: str) -> list[str]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"ids-{topic}", "enable.partition.eof": True}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    ids, ended = [], set()
    try:
        while len(ended) < len(partitions):
            message = consumer.poll(5)
            assert message is not None, "no end of partition"
            if message.error():
                ended.add(message.partition())
            else:
                ids.append(json.loads(message.value())["event_id"])
    finally:
        consumer.close()
    return ids


def test_simulations_without_a_seed_never_share_event_ids(
    broker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two simulators on one topic (the dev one and a user's) must not collide: ingest
    would drop the second one's events as duplicates. An explicit seed repeats a run."""
    monkeypatch.setenv("ASTRA_KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    topics = {}
    for name, args in {
        "first": [],
        "second": [],
        "seed_a": ["--seed", "7"],
        "seed_b": ["--seed", "7"],
    }.items():
        topic = f"seeds_{name}_{uuid.uuid4().hex[:6]}"
        monkeypatch.setenv("ASTRA_TOPIC_RAW", topic)
        assert cli.main(["simulate", "--count", "200", *args]) == 0
        topics[name] = (topic, json.loads(capsys.readouterr().out)["seed"])
    ids = {name: _event_ids(broker.bootstrap_servers, t) for name, (t, _) in topics.items()}
    assert len(ids["first"]) == len(ids["second"]) == 200
    assert not set(ids["first"]) & set(ids["second"])
    assert topics["first"][1] != topics["second"][1]
    assert sorted(ids["seed_a"]) == sorted(ids["seed_b"])
    assert topics["seed_a"][1] == 7
