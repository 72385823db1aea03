"""Follow the alerts topic for one Server-Sent-Events connection of `astra api`.

Each connection has its own consumer (no group offsets, no commits: it only reads)
assigned to every partition of the topic at its end, so the client gets the alerts
published after it connected. Resuming after Last-Event-ID reads the topic from its
start, skips up to and including that alert and delivers what follows; an id the topic
no longer holds resumes at the end. (The alerts topic has one partition, as `astra dev`
and the compose stack create it, so "after" is well defined.) The alert id is the
message's `alert_id` header (assets/alerts.py). An alert published twice (a retried
publication) is delivered once per connection.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from resources.errors import KafkaUnavailable
from resources.kafka import LIBRDKAFKA_LOG, header_value


@dataclass(frozen=True)
class AlertMessage:
    alert_id: str
    value: bytes


class AlertFollower:
    def __init__(self, bootstrap_servers: str, topic: str, after_id: str | None) -> None:
        self._topic = topic
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": f"astra-api-sse-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "log_level": 3,
                "logger": LIBRDKAFKA_LOG,
            }
        )
        self._seen: set[str] = set()
        self._waiting_for = after_id
        try:
            metadata = self._consumer.list_topics(topic, timeout=10)
            partitions = sorted(metadata.topics[topic].partitions)
            self._ends = {
                p: self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            }
        except (KafkaException, KeyError) as error:
            self._consumer.close()
            raise KafkaUnavailable(f"cannot follow {topic}: {error}") from None
        self._ends = {p: end for p, end in self._ends.items() if end > 0}
        if not self._ends:
            self._waiting_for = None  # an empty topic holds no id to resume after
        start = OFFSET_BEGINNING if self._waiting_for else OFFSET_END
        self._consumer.assign([TopicPartition(topic, p, start) for p in partitions])

    def poll(self, timeout_s: float) -> list[AlertMessage]:
        """The next alerts to deliver (possibly none within ``timeout_s``)."""
        out: list[AlertMessage] = []
        for message in self._consumer.consume(500, timeout_s):
            if message.error() is not None:
                continue
            alert_id = header_value(message, "alert_id")
            if alert_id is None:
                continue
            if self._waiting_for is not None:
                self._skip_until(alert_id, message.partition() or 0, message.offset() or 0)
                continue
            if alert_id in self._seen:
                continue
            self._seen.add(alert_id)
            out.append(AlertMessage(alert_id, message.value() or b""))
        return out

    def _skip_until(self, alert_id: str, partition: int, offset: int) -> None:
        self._seen.add(alert_id)
        if alert_id == self._waiting_for:
            self._waiting_for = None
            return
        # Past what the topic held at connect time without finding the id: from here on.
        if offset + 1 >= self._ends.get(partition, 0):
            self._ends.pop(partition, None)
        if not self._ends:
            self._waiting_for = None

    def close(self) -> None:
        self._consumer.close()
