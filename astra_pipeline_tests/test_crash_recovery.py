"""Exactly-once ingestion survives a SIGKILL at the two dangerous points of a batch.

A child process drains the topic with small batches and is frozen, then SIGKILLed:

* ``in_transaction``: inside the lake transaction of the 3rd batch (rows appended, not
  committed). Recovery must discard the half-written batch and re-read its range.
* ``after_lake_commit``: after the 3rd batch's lake commit, before its Kafka offset
  commit. The ledger is ahead of the consumer group; recovery must neither re-insert the
  batch nor leave the group behind.
* ``before_deadletter_ack``: after the 3rd batch's lake commit, before its dead letters
  are published. Recovery must publish them, once.

Whatever the kill point, the dead-letter topic ends up with one record per dead letter.

Then a normal ``drain()`` in the test process finishes the topic, and the warehouse is
checked against what the simulator says it produced (not against the code under test).
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
from confluent_kafka import Consumer, TopicPartition

from astra_pipeline.assets.ingest import IngestConfig, drain
from astra_pipeline_tests.helpers import counts, lake_fields, produce
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource

REPO_ROOT = Path(__file__).resolve().parents[1]
EVENTS = 20_000
BATCH = 2_000
KILL_ON_CALL = 3
PARTITIONS = 6

# Runs drain() in a child process and freezes at the chosen point on the chosen call,
# after writing a marker file, so the parent can SIGKILL it exactly there.
CHILD = r"""
import os, sys, time
from pathlib import Path

bootstrap, topic, group, warehouse_json, kill_point, marker, kill_on, batch = sys.argv[1:9]
kill_on, batch = int(kill_on), int(batch)

import astra_pipeline.assets.ingest as ingest
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource

def freeze(label):
    Path(marker).write_text(label)
    while True:
        time.sleep(3600)

state = {"writes": 0, "pending_kafka_commit": False, "kafka_commits_after_write": 0}
original_write_batch = ingest.write_batch

def write_batch(*args, **kwargs):
    state["writes"] += 1
    if kill_point == "in_transaction" and state["writes"] == kill_on:
        # Append this batch's rows inside the open transaction, then freeze before COMMIT.
        original_write_batch(*args, **kwargs)
        freeze(f"write_batch #{state['writes']} inside the transaction")
    written = original_write_batch(*args, **kwargs)
    state["pending_kafka_commit"] = True
    return written

ingest.write_batch = write_batch

from resources.kafka import DeadLetterPublisher
original_publish = DeadLetterPublisher.publish

def publish(self, letters):
    # The dead letters of a batch are published after its lake commit.
    if kill_point == "before_deadletter_ack" and state["writes"] == kill_on:
        freeze(f"batch #{kill_on} committed, its dead letters not yet acknowledged")
    return original_publish(self, letters)

DeadLetterPublisher.publish = publish

original_commit = KafkaResource.commit_offsets

def commit_offsets(self, *args, **kwargs):
    # Only the commit that follows a batch's lake commit (in _ingest_one) counts;
    # drain()'s per-loop mirror commit does not.
    if state["pending_kafka_commit"]:
        state["pending_kafka_commit"] = False
        state["kafka_commits_after_write"] += 1
        if kill_point == "after_lake_commit" and state["kafka_commits_after_write"] == kill_on:
            freeze(f"commit_offsets after lake commit #{kill_on}")
    return original_commit(self, *args, **kwargs)

KafkaResource.commit_offsets = commit_offsets

kafka = KafkaResource(bootstrap_servers=bootstrap, consumer_group=group)
import json
warehouse = DuckDBWarehouseResource(**json.loads(warehouse_json))
config = ingest.IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq", max_batch_size=batch)
ingest.drain(kafka, warehouse, config, run_id="crashing-child")
Path(marker + ".finished").write_text("drain returned without being killed")
"""


def run_child_until_frozen(
    kafka: KafkaResource,
    topic: str,
    warehouse: DuckDBWarehouseResource,
    kill_point: str,
    tmp_path: Path,
) -> str:
    """Start the instrumented child, wait until it is frozen at the kill point, SIGKILL it."""
    marker = tmp_path / f"frozen-{kill_point}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    argv = [
        kafka.bootstrap_servers,
        topic,
        kafka.consumer_group,
        json.dumps(lake_fields(warehouse)),
        kill_point,
        str(marker),
        str(KILL_ON_CALL),
        str(BATCH),
    ]
    log = (tmp_path / "child.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if child.poll() is not None:
                log.close()
                output = (tmp_path / "child.log").read_text(errors="replace")
                pytest.fail(f"child exited ({child.returncode}) before the kill point:\n{output}")
            if time.monotonic() > deadline:
                pytest.fail("child never reached the kill point")
            time.sleep(0.02)
        label = marker.read_text()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        return label
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()


def ledger_is_contiguous(warehouse: DuckDBWarehouseResource, topic: str) -> dict[int, int]:
    """Assert each partition's ledger ranges run 0..end without gap or overlap; return ends."""
    ledger = warehouse.query(
        'SELECT "partition", start_offset, end_offset, message_count FROM ops.ingest_ledger '
        'WHERE topic = ? ORDER BY "partition", start_offset',
        [topic],
    )
    ends: dict[int, int] = {}
    for partition, start, end, message_count in ledger.rows():
        expected_start = ends.get(partition, 0)
        assert start == expected_start, f"partition {partition}: gap/overlap at {start}"
        assert end - start == message_count > 0, f"partition {partition}: bad range {start}..{end}"
        ends[partition] = end
    return ends


def deadletter_sources(kafka: KafkaResource, dlq: str) -> list[str]:
    """The `source` header of every record on the dead-letter topic (a plain consumer)."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"dlq-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(dlq, 0, 0)])
    sources = []
    try:
        while True:
            message = consumer.poll(10)
            assert message is not None, "no end of the dead-letter topic"
            if message.error():
                return sources
            sources.append(dict(message.headers() or [])["source"].decode())
    finally:
        consumer.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "kill_point", ["in_transaction", "after_lake_commit", "before_deadletter_ack"]
)
def test_sigkill_mid_ingest_then_recover_is_exactly_once(
    kafka: KafkaResource,
    topic: str,
    warehouse: DuckDBWarehouseResource,
    tmp_path: Path,
    kill_point: str,
) -> None:
    sent = produce(kafka, topic, EVENTS, malformed_fraction=0.02, duplicate_fraction=0.02)
    assert sent["malformed"] > 0 and sent["duplicates"] > 0

    label = run_child_until_frozen(kafka, topic, warehouse, kill_point, tmp_path)
    assert not (tmp_path / f"frozen-{kill_point}.finished").exists()

    # The state the crash left behind: only whole batches, and the kill point really hit.
    crashed = counts(warehouse)
    committed_before = sum(o or 0 for o in kafka.committed_offsets(topic).values())
    assert 0 < crashed["raw"] == crashed["ledger"] < sent["total"], (label, crashed)
    ledger_is_contiguous(warehouse, topic)
    batches = warehouse.query("SELECT count(DISTINCT batch_id) AS n FROM ops.ingest_ledger")
    if kill_point == "in_transaction":
        # Batches 1-2 committed everywhere; batch 3 was rolled back by the crash.
        assert batches["n"][0] == KILL_ON_CALL - 1
        assert committed_before == crashed["ledger"]
    else:
        # Batch 3 is in DuckDB, but the consumer group still points at its start.
        assert batches["n"][0] == KILL_ON_CALL
        assert committed_before < crashed["ledger"]
    if kill_point == "before_deadletter_ack":
        unpublished = warehouse.query(
            "SELECT count(*) AS n FROM clean.dead_letter_events WHERE published_at IS NULL"
        )
        assert unpublished["n"][0] > 0

    # Recovery: an ordinary run in this process.
    config = IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq", max_batch_size=BATCH)
    totals = drain(kafka, warehouse, config, run_id="recovery")
    assert totals.reached_eof
    assert totals.messages == sent["total"] - crashed["raw"]

    got = counts(warehouse)
    assert got["raw"] == sent["total"] == got["ledger"]
    assert got["dead"] == sent["malformed"]
    assert got["dups"] == sent["duplicates"]
    assert got["clean"] == got["distinct_ids"] == sent["unique_valid"]

    # Every (topic, partition, offset) exactly once, and per partition exactly 0..end-1.
    raw = warehouse.query(
        'SELECT "partition", count(*) AS n, count(DISTINCT "offset") AS distinct_offsets, '
        'min("offset") AS lo, max("offset") AS hi FROM raw.events WHERE topic = ? '
        'GROUP BY "partition" ORDER BY "partition"',
        [topic],
    )
    dup_coords = warehouse.query(
        'SELECT count(*) AS n FROM (SELECT topic, "partition", "offset" FROM raw.events '
        "GROUP BY ALL HAVING count(*) > 1)"
    )
    assert dup_coords["n"][0] == 0
    ends = ledger_is_contiguous(warehouse, topic)
    for partition, n, distinct_offsets, lo, hi in raw.rows():
        assert n == distinct_offsets == hi + 1 == ends[partition]
        assert lo == 0
    assert sum(ends.values()) == sent["total"]
    assert set(ends) <= set(range(PARTITIONS))

    # The dead-letter topic: one record per dead letter, none twice, none missing.
    sources = deadletter_sources(kafka, f"{topic}_dlq")
    assert len(sources) == len(set(sources)) == sent["malformed"]
    stored = warehouse.query(
        "SELECT topic || '/' || \"partition\" || '/' || \"offset\" AS s "
        "FROM clean.dead_letter_events"
    )["s"].to_list()
    assert sorted(sources) == sorted(stored)

    # The consumer group mirrors the ledger again: zero lag.
    committed = kafka.committed_offsets(topic)
    assert {p: o for p, o in committed.items() if o} == ends
    assert sum(o or 0 for o in committed.values()) == sent["total"]
