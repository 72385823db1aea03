"""Kafka lag as `/metrics` reports it: per partition of the raw topic, the messages past
the ingest consumer group's committed offset, and the age of the oldest of them.

Cheap enough for every scrape: the watermarks and the group's committed offsets are one
metadata request each; the age reads one message per partition with lag (its Kafka
timestamp). The committed offsets are what an ingest run commits right after its ledger
transaction (docs/exactly-once.md), so lag 0 means ingested.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from resources.errors import KafkaUnavailable
from resources.kafka import LIBRDKAFKA_LOG


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    messages: int
    oldest_age_s: float
    end_offset: int
    """The offset after the partition's last message: every message ever produced to it."""


class LagProbe:
    def __init__(self, bootstrap_servers: str, group: str, topic: str, timeout_s: float) -> None:
        self.topic = topic
        self._timeout_s = timeout_s
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": group,  # only to read its committed offsets: never commits
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                # It reads one message, or one batch: small fetches, answered at once.
                "fetch.wait.max.ms": 10,
                "max.partition.fetch.bytes": 65_536,
                "log_level": 3,
                "logger": LIBRDKAFKA_LOG,
            }
        )

    def lag(self) -> list[PartitionLag]:
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=self._timeout_s)
            topic = metadata.topics.get(self.topic)
            if topic is None or topic.error is not None:
                raise KafkaUnavailable(f"topic {self.topic} is not available")
            partitions = [TopicPartition(self.topic, p) for p in sorted(topic.partitions)]
            committed = self._consumer.committed(partitions, timeout=self._timeout_s)
            out = []
            for tp in committed:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, tp.partition), timeout=self._timeout_s
                )
                # Nothing committed yet: everything the partition still holds is lag.
                start = max(tp.offset, low) if tp.offset >= 0 else low
                end = self._true_end(tp.partition, high) if high > start else high
                messages = max(0, end - start)
                age = self._age(tp.partition, start) if messages else 0.0
                out.append(PartitionLag(tp.partition, messages, age, end))
            return out
        except KafkaException as error:
            raise KafkaUnavailable(f"Kafka lag of {self.topic}: {error}") from None

    def _true_end(self, partition: int, high: int) -> int:
        """The offset after the partition's last message. Kafka's high watermark is that;
        the embedded dev broker (Tansu) reports its last batch's base offset + 1 instead,
        so the batch that starts at high - 1 is read to its end (one message on Kafka)."""
        self._consumer.assign([TopicPartition(self.topic, partition, high - 1)])
        end = high
        try:
            # Until the end-of-partition event: a first fetch on a loaded machine can
            # take longer than one consume's wait.
            # poll, not consume(n): consume waits out its timeout unless n messages came.
            deadline = time.monotonic() + self._timeout_s
            while time.monotonic() < deadline:
                message = self._consumer.poll(0.2)
                if message is None:
                    continue
                if message.error() is not None:  # end of the partition
                    return end
                end = max(end, (message.offset() or 0) + 1)
        finally:
            self._consumer.unassign()
        return end

    def _age(self, partition: int, offset: int) -> float:
        """Seconds since the message at ``offset`` was written (0 if it cannot be read)."""
        self._consumer.assign([TopicPartition(self.topic, partition, offset)])
        try:
            message = self._consumer.poll(self._timeout_s)
        finally:
            self._consumer.unassign()
        if message is None or message.error() is not None:
            return 0.0  # (an end-of-partition event: nothing to age)
        _, millis = message.timestamp()
        return max(0.0, time.time() - millis / 1000) if millis > 0 else 0.0

    def close(self) -> None:
        self._consumer.close()
