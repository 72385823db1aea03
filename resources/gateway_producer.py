"""The gateway's Kafka producer: idempotent, acks=all, one per `astra api` process.

A request's messages are produced at once and awaited together; each result is the
(partition, offset) Kafka acknowledged or the error that stopped it. Nothing is called
accepted before its acknowledgement. The producer's queue is bounded
(ASTRA_API_PRODUCER_QUEUE_MESSAGES): a request that would overflow it is refused whole
(ProducerBusy, 503 with Retry-After) before anything of it is sent. Delivery reports run
on one polling thread and are handed to the event loop that awaits them.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from resources.errors import AstraResourceError, KafkaUnavailable
from resources.kafka import LIBRDKAFKA_LOG


class ProducerBusy(AstraResourceError):
    """The producer holds as many unacknowledged messages as it may: try again shortly."""


@dataclass(frozen=True)
class GatewayMessage:
    key: bytes
    value: bytes
    headers: list[tuple[str, str | bytes | None]]
    """Shared by a request's messages (one list, not one per message)."""


@dataclass(frozen=True)
class Delivered:
    partition: int
    offset: int


@dataclass(frozen=True)
class NotDelivered:
    reason: str


class GatewayProducer:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        timeout_s: float,
        queue_messages: int,
    ) -> None:
        self.topic = topic
        self.queue_limit = queue_messages
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": int(timeout_s * 1000),
                "queue.buffering.max.messages": queue_messages,
                "log_level": 3,
                "logger": LIBRDKAFKA_LOG,
            }
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="gateway-producer", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def queued(self) -> int:
        """Messages produced and not yet acknowledged (or failed)."""
        return len(self._producer)

    async def send(self, messages: Sequence[GatewayMessage]) -> list[Delivered | NotDelivered]:
        """Produce every message and wait for each one's acknowledgement (one future for
        the request, settled by its last delivery report)."""
        if self.queued() + len(messages) > self.queue_limit:
            raise ProducerBusy(
                f"the producer holds {self.queued()} unacknowledged messages "
                f"(limit {self.queue_limit})"
            )
        if not messages:
            return []
        batch = _Batch(asyncio.get_running_loop(), len(messages))
        produce = self._producer.produce
        for index, message in enumerate(messages):
            try:
                produce(
                    self.topic,
                    value=message.value,
                    key=message.key,
                    headers=message.headers,
                    on_delivery=functools.partial(batch.delivered, index),
                )
            except BufferError:
                raise ProducerBusy("the producer's queue is full") from None
            except KafkaException as error:
                raise KafkaUnavailable(f"producing to {self.topic}: {error}") from None
        return await batch.future

    def topic_partitions(self, timeout_s: float) -> int:
        """How many partitions the topic has, from the brokers' metadata (readiness)."""
        try:
            metadata = self._producer.list_topics(self.topic, timeout=timeout_s)
        except KafkaException as error:
            raise KafkaUnavailable(f"Kafka metadata: {error}") from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise KafkaUnavailable(f"topic {self.topic} is not available: {topic and topic.error}")
        return len(topic.partitions)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout_s)
        self._stop.set()
        self._poller.join(timeout=5)


class _Batch:
    """The delivery reports of one request's messages; its future is settled, on the
    event loop, when the last one arrived (reports come from the one polling thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self.results: list[Delivered | NotDelivered] = [NotDelivered("no report")] * size
        self._left = size
        self._lock = threading.Lock()
        self.future: asyncio.Future[list[Delivered | NotDelivered]] = loop.create_future()

    def delivered(self, index: int, error: KafkaError | None, message: Message) -> None:
        self.results[index] = (
            NotDelivered(error.str())
            if error is not None
            else Delivered(message.partition() or 0, message.offset() or 0)
        )
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if not self.future.done():
            self.future.set_result(self.results)
