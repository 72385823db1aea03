"""Kafka adapter: watermarks, exact offset ranges by ``assign()``, producing, group commits.

confluent_kafka is imported only here; its errors leave this module as the project's own
exception types with a message that says what was being attempted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

import dagster as dg
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from pydantic import Field

from resources.errors import KafkaUnavailable
from resources.kafka_range import KafkaBatch, KafkaRangeReader, ProcessRangeReader

__all__ = ["KafkaBatch", "KafkaProducer", "KafkaRangeReader", "KafkaResource"]


class KafkaProducer:
    """A thin producer wrapper whose ``flush`` raises if any message was not delivered."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._failures: list[str] = []

    def _on_delivery(self, error: KafkaError | None, _message: object) -> None:
        if error is not None:
            self._failures.append(error.str())

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                return
            except BufferError:
                # The local queue is full: let librdkafka deliver some, then retry.
                self._producer.poll(0.05)
            except KafkaException as error:
                raise KafkaUnavailable(f"producing to {topic}: {error}") from error

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise KafkaUnavailable(f"{remaining} messages not delivered within {timeout_s:.0f}s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise KafkaUnavailable(
                f"{len(failures)} messages were not delivered; first error: {failures[0]}"
            )


class KafkaResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Kafka cluster the events come from (the embedded broker or any Kafka)."""

    bootstrap_servers: str = Field(description="host:port[,host:port...]")
    consumer_group: str = Field(
        default="astra-ingest",
        description="Group whose committed offsets mirror the ingest ledger (for lag tools).",
    )
    timeout_s: float = Field(default=15.0, description="Timeout for one request to Kafka.")

    def consumer_config(self) -> dict[str, object]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.consumer_group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "error",
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
            "socket.timeout.ms": int(self.timeout_s * 1000),
            "log_level": 3,
        }

    def _consumer(self, **overrides: object) -> Consumer:
        config = {**self.consumer_config(), **overrides}
        try:
            return Consumer(config)
        except KafkaException as error:
            raise KafkaUnavailable(
                f"creating a consumer for {self.bootstrap_servers}: {error}"
            ) from error

    @contextlib.contextmanager
    def _short_consumer(self) -> Iterator[Consumer]:
        consumer = self._consumer()
        try:
            yield consumer
        finally:
            consumer.close()

    def partitions(self, topic: str) -> list[int]:
        with self._short_consumer() as consumer:
            try:
                metadata = consumer.list_topics(topic, timeout=self.timeout_s)
            except KafkaException as error:
                raise KafkaUnavailable(
                    f"listing {topic} on {self.bootstrap_servers}: {error}"
                ) from error
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            reason = described.error.str() if described and described.error else "no partitions"
            raise KafkaUnavailable(f"topic {topic} on {self.bootstrap_servers}: {reason}")
        return sorted(described.partitions)

    def high_watermarks(self, topic: str) -> dict[int, int]:
        """The broker's reported end of each partition (may trail the true end)."""
        partitions = self.partitions(topic)
        with self._short_consumer() as consumer:
            try:
                return {
                    p: consumer.get_watermark_offsets(
                        TopicPartition(topic, p), timeout=self.timeout_s, cached=False
                    )[1]
                    for p in partitions
                }
            except KafkaException as error:
                raise KafkaUnavailable(f"watermarks of {topic}: {error}") from error

    def committed_offsets(self, topic: str) -> dict[int, int | None]:
        """The consumer group's committed next offsets; None where nothing is committed."""
        partitions = self.partitions(topic)
        with self._short_consumer() as consumer:
            try:
                committed = consumer.committed(
                    [TopicPartition(topic, p) for p in partitions], timeout=self.timeout_s
                )
            except KafkaException as error:
                raise KafkaUnavailable(f"committed offsets of {topic}: {error}") from error
        return {tp.partition: (None if tp.offset < 0 else tp.offset) for tp in committed}

    def commit_offsets(self, topic: str, offsets: Mapping[int, int]) -> None:
        """Commit next offsets for the consumer group, without joining it."""
        if not offsets:
            return
        with self._short_consumer() as consumer:
            try:
                consumer.commit(
                    offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                    asynchronous=False,
                )
            except KafkaException as error:
                raise KafkaUnavailable(f"committing offsets of {topic}: {error}") from error

    @contextlib.contextmanager
    def reader(self, topic: str) -> Iterator[KafkaRangeReader]:
        consumer = self._consumer()
        try:
            yield KafkaRangeReader(consumer, topic, timeout_s=self._read_timeout_s)
        finally:
            consumer.close()

    @contextlib.contextmanager
    def process_reader(self, topic: str) -> Iterator[ProcessRangeReader]:
        """A reader in a helper process: for draining a backlog, where reading in this
        process would compete for the GIL with what is done with the messages."""
        reader = ProcessRangeReader(self.consumer_config(), topic, self._read_timeout_s)
        try:
            yield reader
        finally:
            reader.close()

    @property
    def _read_timeout_s(self) -> float:
        return max(self.timeout_s, 30.0)

    @contextlib.contextmanager
    def producer(self, **overrides: object) -> Iterator[KafkaProducer]:
        config: dict[str, object] = {
            "bootstrap.servers": self.bootstrap_servers,
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
            "compression.type": "none",
            "enable.idempotence": False,
            "log_level": 3,
        }
        config.update(overrides)
        wrapper = KafkaProducer(Producer(config))
        yield wrapper
        wrapper.flush()

    def create_topics(self, partitions_by_topic: Mapping[str, int]) -> list[str]:
        """Create missing topics; returns the names that were created."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 3})
        try:
            existing = set(admin.list_topics(timeout=self.timeout_s).topics)
        except KafkaException as error:
            raise KafkaUnavailable(
                f"listing topics on {self.bootstrap_servers}: {error}"
            ) from error
        wanted = [
            NewTopic(name, num_partitions=count, replication_factor=1)
            for name, count in partitions_by_topic.items()
            if name not in existing
        ]
        if not wanted:
            return []
        created = []
        for name, future in admin.create_topics(wanted, request_timeout=self.timeout_s).items():
            try:
                future.result()
                created.append(name)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise KafkaUnavailable(f"creating topic {name}: {error}") from error
        return created

    def produce_all(self, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
        """Produce (key, value) pairs and wait until all are delivered."""
        count = 0
        with self.producer() as producer:
            for key, value in messages:
                producer.send(topic, value=value, key=key)
                count += 1
                if count % 10_000 == 0:
                    producer.poll()
        return count
