"""Dead letters can be fixed and sent again, each exactly once (real broker, real DuckDB).

Expectations come from what the test itself produced (which events were broken and how),
and the topic is read with a plain consumer, not with the code under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from astra_pipeline import cli
from astra_pipeline.assets.ingest import IngestConfig, drain
from astra_pipeline.replay import REPLAY_ID_HEADER, REPLAY_OF_HEADER, replay
from astra_pipeline_tests.helpers import lake_env, lake_fields, sensor_reading
from resources.broker import EmbeddedBroker
from resources.deadletter_store import Selection, examples, summary
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource

REPO_ROOT = Path(__file__).resolve().parents[1]
BAD_TS = 6
NO_AMOUNT = 4
VALID = 40


def _sensor(event_id: str, ts: str) -> bytes:
    return sensor_reading(event_id, ts)


def _purchase(event_id: str) -> bytes:
    return json.dumps(
        {
            "event_type": "user_activity",
            "event_id": event_id,
            "user_id": "user-1",
            "session_id": "s-1",
            "ts": "2026-11-23T07:45:05Z",
            "action": "purchase",
        }
    ).encode()


def fix_ts(value: bytes, reason: str) -> bytes:
    """The repair a user would write: give the epoch-seconds timestamps an ISO form."""
    doc = json.loads(value)
    doc["ts"] = "2026-11-23T07:00:00Z"
    return json.dumps(doc).encode()


@pytest.fixture
def broken(broker: EmbeddedBroker, topic: str, kafka: KafkaResource, warehouse) -> str:
    """The topic ingested once: VALID good events, BAD_TS with "ts": "7", NO_AMOUNT
    purchases without an amount, all dead letters but the good ones."""
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i in range(VALID):
        producer.produce(topic, _sensor(f"ok-{i}", "2026-11-23T07:45:05Z"), key=b"dev-1")
    for i in range(BAD_TS):
        producer.produce(topic, _sensor(f"ts-{i}", "7"), key=b"dev-1")
    for i in range(NO_AMOUNT):
        producer.produce(topic, _purchase(f"buy-{i}"), key=b"user-1")
    assert producer.flush(30) == 0
    _ingest(kafka, warehouse, topic)
    return topic


def _ingest(kafka: KafkaResource, warehouse: DuckDBWarehouseResource, topic: str) -> None:
    drain(kafka, warehouse, IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq"), None)


def _replays_on_topic(bootstrap: str, topic: str) -> list[dict[str, str]]:
    """Every message of the topic carrying a replay header, as its headers."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    found, at_end, deadline = [], set(), time.monotonic() + 30
    try:
        while len(at_end) < len(partitions) and time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is None:
                continue
            if message.error():
                at_end.add(message.partition())
                continue
            headers = {k: (v or b"").decode() for k, v in message.headers() or []}
            if REPLAY_ID_HEADER in headers:
                found.append(headers)
    finally:
        consumer.close()
    return found


def test_a_repaired_replay_becomes_clean_and_an_unrepaired_one_a_linked_dead_letter(
    broken: str, broker: EmbeddedBroker, kafka: KafkaResource, warehouse
) -> None:
    topic = broken
    with warehouse.session(read_only=True) as session:
        reasons = {r["reason"]: r["dead_letters"] for r in summary(session, Selection()).to_dicts()}
    assert sum(reasons.values()) == BAD_TS + NO_AMOUNT
    assert sum(n for reason, n in reasons.items() if "ISO-8601" in reason) == BAD_TS
    assert sum(n for reason, n in reasons.items() if "amount" in reason) == NO_AMOUNT

    fixed = replay(kafka, warehouse, topic, Selection(reason="iso-8601"), fix_ts, "fix_ts")
    assert (fixed.selected, fixed.claimed, fixed.published) == (BAD_TS, BAD_TS, BAD_TS)
    again = replay(kafka, warehouse, topic, Selection(reason="ISO-8601"), fix_ts, "fix_ts")
    assert (again.selected, again.published) == (0, 0)  # each dead letter once
    _ingest(kafka, warehouse, topic)
    repaired = warehouse.query(
        "SELECT event_id, ts FROM clean.sensor_readings WHERE event_id LIKE 'ts-%'"
    )
    assert sorted(repaired["event_id"]) == sorted(f"ts-{i}" for i in range(BAD_TS))
    assert {str(t) for t in repaired["ts"]} == {"2026-11-23 07:00:00+00:00"}

    unfixed = replay(kafka, warehouse, topic, Selection(reason="amount*required"))
    assert unfixed.published == NO_AMOUNT
    _ingest(kafka, warehouse, topic)
    with warehouse.session(read_only=True) as session:
        recent = examples(session, Selection(reason="amount"), limit=100)
    originals = recent.filter(recent["replay_of"].is_null())
    returned = recent.filter(recent["replay_of"].is_not_null())
    assert originals.height == returned.height == NO_AMOUNT
    # Each returned dead letter points at a distinct original, which points back at it.
    coords = {f"{t}/{p}/{o}" for t, p, o in originals.select("topic", "partition", "offset").rows()}
    assert set(returned["replay_of"]) == coords
    back = {f"{t}/{p}/{o}" for t, p, o in returned.select("topic", "partition", "offset").rows()}
    assert set(originals["replayed_as"]) == back
    # On the topic: one message per replayed dead letter, naming its origin.
    on_topic = _replays_on_topic(broker.bootstrap_servers, topic)
    assert len(on_topic) == BAD_TS + NO_AMOUNT
    assert len({h[REPLAY_OF_HEADER] for h in on_topic}) == BAD_TS + NO_AMOUNT


CHILD = r"""
import sys, time
import json
from pathlib import Path
import astra_pipeline.replay as replay_module
from resources.deadletter_store import Selection
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource

bootstrap, topic, group, lake_json, kill_point, marker = sys.argv[1:7]

def freeze(label):
    Path(marker).write_text(label)
    while True:
        time.sleep(3600)

original = KafkaResource.publish_acknowledged
def publish_acknowledged(self, target, messages):
    if kill_point == "before_publish":
        freeze("claimed, nothing sent")
    landed = original(self, target, messages)
    freeze(f"{len(landed)} acknowledged, not recorded")
KafkaResource.publish_acknowledged = publish_acknowledged

replay_module.replay(
    KafkaResource(bootstrap_servers=bootstrap, consumer_group=group),
    DuckDBWarehouseResource(**json.loads(lake_json)),
    topic,
    Selection(reason="amount"),
)
Path(marker + ".finished").write_text("returned")
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kill_point", ["before_publish", "after_acknowledgement"])
def test_a_replay_killed_midway_and_run_again_sends_each_dead_letter_once(
    broken: str,
    broker: EmbeddedBroker,
    kafka: KafkaResource,
    warehouse: DuckDBWarehouseResource,
    tmp_path: Path,
    kill_point: str,
) -> None:
    topic = broken
    marker = tmp_path / "frozen"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            broker.bootstrap_servers,
            topic,
            kafka.consumer_group,
            json.dumps(lake_fields(warehouse)),
            kill_point,
            str(marker),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"the child did not reach {kill_point} (rc {child.poll()})"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not Path(f"{marker}.finished").exists()
    pending = warehouse.query(
        "SELECT count(*) AS n FROM ops.deadletter_replays WHERE published_at IS NULL"
    )
    assert pending["n"][0] == NO_AMOUNT  # claimed before the kill, not yet recorded

    report = replay(kafka, warehouse, topic, Selection(reason="amount"))
    if kill_point == "before_publish":
        assert (report.settled, report.published) == (0, NO_AMOUNT)
    else:
        assert (report.settled, report.published) == (NO_AMOUNT, 0)
    assert report.selected == 0  # every one was claimed by the killed run
    assert replay(kafka, warehouse, topic, Selection(reason="amount")).published == 0

    on_topic = _replays_on_topic(broker.bootstrap_servers, topic)
    assert len(on_topic) == NO_AMOUNT
    assert len({h[REPLAY_OF_HEADER] for h in on_topic}) == NO_AMOUNT
    rows = warehouse.query(
        "SELECT count(*) AS n, count(published_at) AS published, "
        "count(DISTINCT (target_partition, target_offset)) AS places "
        "FROM ops.deadletter_replays"
    ).row(0, named=True)
    assert rows == {"n": NO_AMOUNT, "published": NO_AMOUNT, "places": NO_AMOUNT}


def test_cli_lists_and_replays_with_a_repair_file(
    broken: str,
    broker: EmbeddedBroker,
    kafka: KafkaResource,
    warehouse,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repair = tmp_path / "repair.py"
    repair.write_text(
        "import json\n"
        "def fix(value: bytes, reason: str) -> bytes:\n"
        "    doc = json.loads(value)\n"
        "    doc['ts'] = '2026-11-23T07:00:00Z'\n"
        "    return json.dumps(doc).encode()\n"
    )
    for name, value in {
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        **lake_env(warehouse),
        "ASTRA_TOPIC_RAW": broken,
        "ASTRA_CONSUMER_GROUP": kafka.consumer_group,
    }.items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = cli.main(list(args))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("deadletter", "list", "--reason", "ISO-8601")
    assert code == 0, err
    assert "ISO-8601" in out
    fix = f"{repair}:fix"
    code, out, err = run(
        "deadletter", "replay", "--reason", "ISO-8601", "--transform", fix, "--dry-run"
    )
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["selected"] == BAD_TS
    code, out, err = run("deadletter", "replay", "--reason", "ISO-8601", "--transform", fix)
    assert json.loads(out.strip().splitlines()[-1])["published"] == BAD_TS
    code, out, err = run("deadletter", "replay", "--ids", "x/y")
    assert code == 2 and "--ids" in err and err.count("\n") == 1
    code, out, err = run(
        "deadletter", "replay", "--reason", "x", "--transform", "nosuch_module:fix"
    )
    assert code == 2 and err.count("\n") == 1 and "nosuch_module" in err
