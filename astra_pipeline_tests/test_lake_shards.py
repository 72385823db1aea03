"""Ingest shards on a lake (issue 12, item 6): the topic's partitions split into shards
that ingest side by side.

- The split, by hand; the sensor's one run per shard with lag, tagged with its shard.
- Two shards (two `astra ingest` processes) drain one backlog at the same time: every
  event exactly once, each dead letter once, the ledger contiguous per partition, and
  no batch of one shard holds a partition of the other.
- The incremental window refresh goes by snapshot: a batch stamped before another but
  committed after a refresh that saw the other is still counted by the next refresh.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
from confluent_kafka import Producer

from astra_pipeline.assets.window_audit import complete
from astra_pipeline.assets.window_refresh import refresh_hours
from astra_pipeline.run_tags import INGEST_SHARD_TAG
from astra_pipeline.transforms.ingest_batch import build_ingest_frames
from astra_pipeline.transforms.shards import shard_partitions
from astra_pipeline_tests.helpers import produce, sensor_reading
from astra_pipeline_tests.test_lake import (
    _lake_env,
    _ledger_is_contiguous,
    _raw_counts,
    _run_ingests,
)
from resources.broker import EmbeddedBroker
from resources.ingest_store import BatchRows, write_batch
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource, WarehouseSession
from sensors.kafka_events import build_kafka_events_sensor, shard_lags


def test_shard_partitions_by_hand() -> None:
    six = range(6)
    assert shard_partitions(six, 3, 0) == [0, 3]
    assert shard_partitions(six, 3, 1) == [1, 4]
    assert shard_partitions(six, 3, 2) == [2, 5]
    assert shard_partitions(six, 1, 0) == [0, 1, 2, 3, 4, 5]
    assert shard_partitions(range(2), 3, 2) == []  # more shards than partitions
    with pytest.raises(ValueError, match="shard 3 is not one of 0..2"):
        shard_partitions(six, 3, 3)
    assert shard_lags({0: 5, 1: 0, 2: 7, 3: 1, 4: 0, 5: 0}, 3) == {0: 6, 1: 0, 2: 7}


def test_the_sensor_requests_one_run_per_shard_with_lag(
    broker: EmbeddedBroker, topic: str, kafka: KafkaResource
) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for offset in range(40):
        # Partitions 1 and 4 (shard 1 of 3) and 2 (shard 2); none of shard 0.
        partition = (1, 4, 2)[offset % 3]
        producer.produce(topic, sensor_reading(f"e{offset}"), b"k", partition=partition)
    producer.flush()
    sensor = build_kafka_events_sensor(topic, interval_s=5, running_by_default=True, shards=3)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"kafka": kafka})
        result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        requests = sorted(result.run_requests, key=lambda r: r.tags[INGEST_SHARD_TAG])
        assert [r.tags[INGEST_SHARD_TAG] for r in requests] == ["1", "2"]
        for request in requests:
            shard = int(request.tags[INGEST_SHARD_TAG])
            config = request.run_config["ops"]["ingest_events"]["config"]
            assert config == {"shard": shard, "shards": 3}
        assert len({r.run_key for r in requests}) == 2


def test_two_shards_drain_one_backlog_side_by_side_exactly_once(
    broker: EmbeddedBroker,
    topic: str,
    kafka: KafkaResource,
    lake_warehouse: DuckDBWarehouseResource,
) -> None:
    env = _lake_env(lake_warehouse, broker, topic)
    sent = produce(kafka, topic, 30_000, seed=8, malformed_fraction=0.02, duplicate_fraction=0.02)
    lake_warehouse.ensure_schema()
    totals = _run_ingests(env, *(["--shards", "2", "--shard", str(k)] for k in (0, 1)))
    # Disjoint partitions: neither shard lost a race to the other, both reached the end.
    assert all(t["reached_eof"] for t in totals), totals
    assert sum(t["messages"] for t in totals) == sent["total"]
    raw = _raw_counts(lake_warehouse)
    assert raw == {"n": sent["total"], "distinct_offsets": sent["total"]}
    clean = lake_warehouse.query(
        "SELECT (SELECT count(DISTINCT event_id) FROM clean.sensor_readings) "
        "+ (SELECT count(DISTINCT event_id) FROM clean.user_activity) AS ids, "
        "(SELECT count(*) FROM clean.sensor_readings) "
        "+ (SELECT count(*) FROM clean.user_activity) AS n"
    ).row(0, named=True)
    assert clean == {"ids": sent["unique_valid"], "n": sent["unique_valid"]}
    dead = lake_warehouse.query(
        "SELECT count(*) AS n, count(*) FILTER (WHERE published_at IS NULL) AS unpublished "
        "FROM clean.dead_letter_events"
    ).row(0, named=True)
    assert dead == {"n": sent["malformed"], "unpublished": 0}
    _ledger_is_contiguous(lake_warehouse, topic)
    mixed = lake_warehouse.query(
        "SELECT batch_id FROM ops.ingest_ledger GROUP BY batch_id "
        'HAVING count(DISTINCT "partition" % 2) > 1'
    )
    assert mixed.height == 0, "a batch held partitions of both shards"


HOUR_START = dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)


def _batch_rows(kafka: KafkaResource, topic: str, partition: int, stamp: dt.datetime) -> tuple:
    with kafka.reader(topic) as reader:
        batch = reader.read({partition: 0}, 10_000)
    frames = build_ingest_frames(batch.frame, topic, f"b{partition}", stamp)
    rows = BatchRows(
        raw_events=frames.raw_events,
        sensor_readings=frames.sensor_readings,
        user_activity=frames.user_activity,
        dead_letters=frames.dead_letters,
        duplicates=frames.duplicates,
    )
    return batch, rows


def _write(tx: WarehouseSession, topic: str, partition: int, batch, rows, stamp) -> None:
    write_batch(
        tx,
        topic=topic,
        batch_id=f"b{partition}",
        run_id=None,
        start_offsets=batch.start_offsets,
        end_offsets=batch.end_offsets,
        rows=rows,
        committed_at=stamp,
    )


def _window_events(warehouse: DuckDBWarehouseResource) -> int:
    return int(
        warehouse.query(
            "SELECT coalesce(sum(reading_count), 0) FROM agg.sensor_1m "
            "WHERE window_start >= ? AND window_start < ?",
            [HOUR_START, HOUR_START + dt.timedelta(hours=1)],
        ).item()
    )


def test_a_batch_committed_after_a_refresh_but_stamped_before_it_is_not_missed(
    broker: EmbeddedBroker,
    topic: str,
    kafka: KafkaResource,
    lake_warehouse: DuckDBWarehouseResource,
) -> None:
    """Two shards stamp ingested_at when their transactions open and commit in any order:
    shard A stamps t1, shard B stamps t2 > t1 and commits first, a refresh then sees B's
    rows (latest ingested_at t2), and A commits. A watermark by ingestion time would skip
    A's rows for good; by snapshot the next refresh counts them."""
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    sizes = {0: 30, 1: 20, 2: 10}
    for partition, count in sizes.items():
        for i in range(count):
            ts = (HOUR_START + dt.timedelta(minutes=i, seconds=partition)).isoformat()
            producer.produce(
                topic,
                sensor_reading(f"p{partition}-{i}", ts.replace("+00:00", "Z")),
                b"k",
                partition=partition,
            )
    producer.flush()
    lake_warehouse.ensure_schema()
    now = dt.datetime.now(dt.UTC)
    base = _batch_rows(kafka, topic, 2, now)
    with lake_warehouse.transaction() as tx:
        _write(tx, topic, 2, *base, now)
    refresh_hours(lake_warehouse, HOUR_START, HOUR_START, "r0")
    assert _window_events(lake_warehouse) == 10

    t1, t2 = now + dt.timedelta(seconds=1), now + dt.timedelta(seconds=2)
    batch_a, rows_a = _batch_rows(kafka, topic, 0, t1)
    batch_b, rows_b = _batch_rows(kafka, topic, 1, t2)
    shard_a = lake_warehouse.transaction()
    tx_a = shard_a.__enter__()
    _write(tx_a, topic, 0, batch_a, rows_a, t1)  # open, not committed yet
    with lake_warehouse.transaction() as tx_b:
        _write(tx_b, topic, 1, batch_b, rows_b, t2)
    first = refresh_hours(lake_warehouse, HOUR_START, HOUR_START, "r1", since_last_refresh=True)
    assert first.metadata["refresh"] == "since_last_refresh"
    assert _window_events(lake_warehouse) == 30
    shard_a.__exit__(None, None, None)  # A commits after the refresh that saw t2

    second = refresh_hours(lake_warehouse, HOUR_START, HOUR_START, "r2", since_last_refresh=True)
    assert second.metadata["refresh"] == "since_last_refresh"
    assert _window_events(lake_warehouse) == 60
    assert complete(lake_warehouse, (HOUR_START, HOUR_START)).passed
