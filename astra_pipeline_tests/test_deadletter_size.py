"""A malformed message of any size the input topic accepted is dead-lettered and the
stream goes on (real broker, real lake)."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from astra_pipeline.assets.ingest import IngestConfig, drain
from astra_pipeline_tests.helpers import counts, sensor_reading
from resources.broker import EmbeddedBroker
from resources.kafka import DeadLetter, DeadLetterPublisher, KafkaResource
from resources.tables import DEAD_LETTER_EVENTS
from resources.warehouse import DuckDBWarehouseResource


def _valid(index: int) -> bytes:
    return sensor_reading(f"ok-{index}")


def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, dict[str, bytes]]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
            "log_level": 3,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out = []
    try:
        while True:
            message = consumer.poll(10)
            assert message is not None, "no EOF from the dead-letter topic"
            if message.error():
                break
            out.append((message.value(), dict(message.headers() or [])))
    finally:
        consumer.close()
    return out


@pytest.mark.parametrize("size", [1_040_000, 3_000_000])
def test_a_large_malformed_message_does_not_stop_the_topic(
    kafka: KafkaResource,
    topic: str,
    broker: EmbeddedBroker,
    warehouse: DuckDBWarehouseResource,
    size: int,
) -> None:
    """1,040,000 bytes: under a default Kafka's 1,048,588-byte topic limit, but over
    librdkafka's default 1,000,000-byte producer limit (the stop this test was written
    for). 3,000,000 bytes: over the dead-letter topic's limit: a pointer."""
    big = b"{" + b"x" * (size - 1)  # not JSON
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "message.max.bytes": 10_000_000}
    )
    producer.produce(topic, value=big, key=b"dev-1")
    for index in range(200):
        producer.produce(topic, value=_valid(index), key=b"dev-1")
    assert producer.flush(30) == 0

    totals = drain(
        kafka,
        warehouse,
        IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq", time_budget_s=30),
        run_id=None,
    )

    assert totals.sensor_readings == 200
    got = counts(warehouse)
    assert (got["raw"], got["clean"], got["dead"]) == (201, 200, 1)
    stored = warehouse.query(f"SELECT value, reason FROM {DEAD_LETTER_EVENTS}").row(0)
    assert stored[0] == big  # whole in the table, whatever went to the topic
    [(value, headers)] = _read_all(broker.bootstrap_servers, f"{topic}_dlq")
    if size < 1_048_588:
        assert value == big and "astra-pointer" not in headers
    else:
        assert headers["astra-pointer"] == b"1"
        pointer = json.loads(value or b"")
        assert pointer["table"] == DEAD_LETTER_EVENTS
        assert (pointer["topic"], pointer["value_bytes"]) == (topic, size)
        assert pointer["reason"] == stored[1]
    assert headers["reason"].decode() == stored[1]


LIMIT = 100_000


@pytest.mark.parametrize(
    ("value_bytes", "whole"),
    [
        (LIMIT // 2, True),
        (LIMIT - 2_000, True),
        (LIMIT, False),
        (LIMIT + 1, False),
        (LIMIT * 10, False),
    ],
)
def test_the_publisher_sends_whole_what_fits_and_a_pointer_for_the_rest(
    broker: EmbeddedBroker, topic: str, value_bytes: int, whole: bool
) -> None:
    """A producer limited to LIMIT bytes (as a topic's max.message.bytes would): each
    dead letter yields exactly one record, the message itself or a pointer to it."""
    dlq = f"{topic}_dlq"
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "message.max.bytes": LIMIT})
    publisher = DeadLetterPublisher(producer, dlq, DEAD_LETTER_EVENTS)
    letters = [
        DeadLetter(topic, 3, 17, b"k", b"a" * value_bytes, "json: Invalid JSON"),
        DeadLetter(topic, 3, 18, b"k", b"small", "json: Invalid JSON"),
    ]
    publisher.publish(letters)
    records = _read_all(broker.bootstrap_servers, dlq)
    assert len(records) == 2
    by_source = {headers["source"]: (value, headers) for value, headers in records}
    value, headers = by_source[f"{topic}/3/17".encode()]
    if whole:
        assert value == letters[0].value and "astra-pointer" not in headers
    else:
        pointer = json.loads(value or b"")
        assert (pointer["partition"], pointer["offset"], pointer["value_bytes"]) == (
            3,
            17,
            value_bytes,
        )
    assert publisher.pointers == (0 if whole else 1)
    assert by_source[f"{topic}/3/18".encode()][0] == b"small"
