"""Kafka adapter: watermarks, exact offset ranges by ``assign()``, producing, group commits.

confluent_kafka is imported only here; its errors leave this module as the project's own
exception types with a message that says what was being attempted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import dagster as dg
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from pydantic import Field

from resources.errors import KafkaUnavailable
from resources.kafka_range import KafkaBatch, KafkaRangeReader, ProcessRangeReader

__all__ = [
    "Outgoing",
    "DeadLetter",
    "DeadLetterPublisher",
    "KafkaBatch",
    "KafkaProducer",
    "KafkaRangeReader",
    "KafkaResource",
]

# librdkafka's own log lines (a client retrying an unreachable broker writes one every
# 50 ms to stderr) go to this logger, which keeps them: the failure itself reaches the
# caller as a KafkaUnavailable with the reason. Not registered with logging, so it
# changes no global logging configuration; attach a handler to see them.
LIBRDKAFKA_LOG = logging.Logger("astra.librdkafka")
LIBRDKAFKA_LOG.addHandler(logging.NullHandler())

KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
"""Apache Kafka's default max.message.bytes (topic) and message.max.bytes (broker)."""
LIBRDKAFKA_MAX_MESSAGE_BYTES = 1_000_000_000
_TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}
# Room for a dead letter's headers (source coordinates, a reason of at most 2,000
# characters) and the record framing on top of a value the input topic accepted.
_HEADER_ROOM_BYTES = 16 * 1024


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


@dataclass(frozen=True)
class DeadLetter:
    """A message that broke the contract, with where it came from and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


def _on_delivery(
    letter: DeadLetter, refused: list[DeadLetter], failures: list[str]
) -> Callable[[KafkaError | None, object], None]:
    def delivered(error: KafkaError | None, _message: object) -> None:
        if error is None:
            return
        if error.code() in _TOO_LARGE:
            refused.append(letter)
        else:
            failures.append(error.str())

    return delivered


class DeadLetterPublisher:
    """Publishes dead letters whole, or, when one is larger than the dead-letter topic
    takes, a small record that points to it (the whole message stays in the dead-letter
    table). A message's size can therefore never stop the stream; only an unreachable
    broker fails ``publish``.
    """

    def __init__(self, producer: Producer, topic: str, table: str) -> None:
        self._producer = producer
        self.topic = topic
        self._table = table
        self.pointers = 0
        """How many dead letters were published as pointers so far."""

    def publish(self, letters: Iterable[DeadLetter]) -> None:
        refused = self._send([(letter, False) for letter in letters])
        # A broker that refuses a record batch for its size fails every message in it:
        # try each refused one whole and alone before it becomes a pointer.
        for letter in refused:
            if self._send([(letter, False)]) and self._send([(letter, True)]):
                raise KafkaUnavailable(f"{self.topic} refused even a pointer record")

    def _send(self, letters: list[tuple[DeadLetter, bool]]) -> list[DeadLetter]:
        """Produce and flush; returns the letters refused for their size."""
        refused: list[DeadLetter] = []
        failures: list[str] = []
        for letter, as_pointer in letters:
            delivered = _on_delivery(letter, refused, failures)
            if as_pointer:
                value = json.dumps(self._pointer(letter)).encode()
                key = letter.key if letter.key is not None and len(letter.key) <= 1024 else None
            else:
                value, key = letter.value or b"", letter.key
            if self._produce(letter, value, key, delivered, as_pointer):
                self.pointers += as_pointer
            else:
                refused.append(letter)
        remaining = self._producer.flush(30.0)
        if remaining:
            raise KafkaUnavailable(f"{remaining} dead letters not delivered to {self.topic}")
        if failures:
            raise KafkaUnavailable(
                f"{len(failures)} dead letters not delivered to {self.topic}; "
                f"first error: {failures[0]}"
            )
        return refused

    def _pointer(self, letter: DeadLetter) -> dict[str, object]:
        return {
            "pointer": True,
            "why": f"the message is larger than {self.topic} accepts",
            "table": self._table,
            "topic": letter.topic,
            "partition": letter.partition,
            "offset": letter.offset,
            "value_bytes": len(letter.value or b""),
            "key_bytes": len(letter.key or b""),
            "reason": letter.reason,
        }

    def _produce(
        self,
        letter: DeadLetter,
        value: bytes,
        key: bytes | None,
        callback: Callable[[KafkaError | None, object], None],
        as_pointer: bool,
    ) -> bool:
        """False when the producer refuses the message for its size."""
        headers: list[tuple[str, str | bytes | None]] = [
            ("source", letter.source.encode()),
            ("reason", letter.reason.encode()),
        ]
        if as_pointer:
            headers.append(("astra-pointer", b"1"))
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, headers=headers, on_delivery=callback
                )
                return True
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as error:
                if error.args[0].code() in _TOO_LARGE:
                    return False
                raise KafkaUnavailable(f"producing to {self.topic}: {error}") from error


def header_value(message: Message, name: str) -> str | None:
    """The message's first header called ``name``, as text (None if absent)."""
    headers: list[tuple[str, bytes | None]] = message.headers() or []  # type: ignore[assignment]
    for key, value in headers:
        if key == name:
            return value.decode(errors="replace") if value is not None else ""
    return None


@dataclass(frozen=True)
class Outgoing:
    """A message to publish, with an id to learn where it landed."""

    id: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


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
        config = {**self.consumer_config(), "logger": LIBRDKAFKA_LOG, **overrides}
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

    def _admin(self) -> AdminClient:
        config: dict[str, object] = {
            "bootstrap.servers": self.bootstrap_servers,
            "log_level": 3,
            "logger": LIBRDKAFKA_LOG,
        }
        return AdminClient(config)  # type: ignore[arg-type]

    def _unreachable(self, doing: str, error: KafkaException) -> str:
        reason = error.args[0].str() if error.args else str(error)
        return (
            f"{doing}: no answer from Kafka at {self.bootstrap_servers} within "
            f"{self.timeout_s:.0f}s ({reason}); is the broker running? "
            "(ASTRA_KAFKA_BOOTSTRAP_SERVERS)"
        )

    def partitions(self, topic: str) -> list[int]:
        with self._short_consumer() as consumer:
            try:
                metadata = consumer.list_topics(topic, timeout=self.timeout_s)
            except KafkaException as error:
                raise KafkaUnavailable(self._unreachable(f"listing {topic}", error)) from error
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            reason = described.error.str() if described and described.error else "no partitions"
            raise KafkaUnavailable(f"topic {topic} on {self.bootstrap_servers}: {reason}")
        return sorted(described.partitions)

    def topic_id(self, topic: str) -> str | None:
        """The topic's id (a new one when the topic is deleted and created again, or an
        in-memory broker restarts), or None when the broker does not report ids."""
        admin = self._admin()  # kept until the answer: a dropped client cancels it
        try:
            described = admin.describe_topics(TopicCollection([topic]))[topic].result(
                timeout=self.timeout_s
            )
        except KafkaException as error:
            raise KafkaUnavailable(self._unreachable(f"describing {topic}", error)) from error
        found = getattr(described, "topic_id", None)
        return str(found) if found else None

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

    def lag_messages(self, topic: str) -> int:
        """Messages of ``topic`` past this group's committed offsets (the true end, even
        on the dev broker: resources/lag_probe.py)."""
        from resources.lag_probe import LagProbe

        probe = LagProbe(self.bootstrap_servers, self.consumer_group, topic, self.timeout_s)
        try:
            return sum(p.messages for p in probe.lag())
        finally:
            probe.close()

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
            "logger": LIBRDKAFKA_LOG,
        }
        config.update(overrides)
        wrapper = KafkaProducer(Producer(config))
        yield wrapper
        wrapper.flush()

    def max_message_bytes(self, topic: str) -> int | None:
        """The topic's max.message.bytes, or None when the broker does not report it
        (the embedded broker reports no configs and takes any size)."""
        admin = self._admin()
        resource = ConfigResource(ResourceType.TOPIC, topic)
        try:
            configs = admin.describe_configs([resource])[resource].result(timeout=self.timeout_s)
        except KafkaException as error:
            if error.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            raise KafkaUnavailable(f"describing topic {topic}: {error}") from error
        entry = configs.get("max.message.bytes")
        if entry is None or entry.value is None:
            return None
        return int(entry.value)

    @contextlib.contextmanager
    def dead_letter_publisher(
        self, source_topic: str, topic: str, table: str
    ) -> Iterator[DeadLetterPublisher]:
        """A publisher sized so that whatever ``source_topic`` accepted can be sent on:
        its producer takes messages up to the larger of both topics' max.message.bytes
        (Kafka's default where the broker does not say) plus room for the headers. The
        broker still enforces the dead-letter topic's own limit; what it refuses for size
        is published as a pointer."""
        known = [self.max_message_bytes(t) for t in (source_topic, topic)]
        limit = max([n for n in known if n is not None] or [KAFKA_DEFAULT_MAX_MESSAGE_BYTES])
        producer_limit = min(limit + _HEADER_ROOM_BYTES, LIBRDKAFKA_MAX_MESSAGE_BYTES)
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "linger.ms": 20,
                "message.max.bytes": producer_limit,
                "log_level": 3,
                "logger": LIBRDKAFKA_LOG,
            }
        )
        yield DeadLetterPublisher(producer, topic, table)
        producer.flush(30)

    def publish_acknowledged(
        self, topic: str, messages: Iterable[Outgoing]
    ) -> dict[str, tuple[int, int]]:
        """Publish through an idempotent producer (acks=all, retries add no copies) and
        wait for every acknowledgement: per message id, its (partition, offset). Raises
        KafkaUnavailable if any message was not acknowledged."""
        landed: dict[str, tuple[int, int]] = {}
        failures: list[str] = []

        def callback(message_id: str) -> Callable[[KafkaError | None, Message], None]:
            def delivered(error: KafkaError | None, message: Message) -> None:
                if error is not None:
                    failures.append(error.str())
                else:
                    landed[message_id] = (message.partition() or 0, message.offset() or 0)

            return delivered

        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "enable.idempotence": True,
                "message.max.bytes": LIBRDKAFKA_MAX_MESSAGE_BYTES,
                "log_level": 3,
                "logger": LIBRDKAFKA_LOG,
            }
        )
        for message in messages:
            while True:
                try:
                    producer.produce(
                        topic,
                        value=message.value,
                        key=message.key,
                        headers=message.headers,
                        on_delivery=callback(message.id),
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as error:
                    raise KafkaUnavailable(f"producing to {topic}: {error}") from error
        remaining = producer.flush(self.timeout_s * 4)
        if remaining or failures:
            first = failures[0] if failures else "no acknowledgement in time"
            raise KafkaUnavailable(
                f"{remaining + len(failures)} messages to {topic} not acknowledged: {first}"
            )
        return landed

    def find_header_values(
        self, topic: str, start_offsets: Mapping[int, int], header: str, wanted: set[str]
    ) -> dict[str, tuple[int, int]]:
        """Where messages carrying ``header`` with one of the ``wanted`` values are in
        ``topic`` from ``start_offsets`` on: value -> (partition, offset).

        Reads to the partitions' reported ends and then on until a second of silence:
        the embedded broker's reported end can trail the log by one producer batch, and
        a message missed here would be sent twice by the caller."""
        found: dict[str, tuple[int, int]] = {}
        if not wanted or not start_offsets:
            return found
        consumer = self._consumer()
        ends = self.high_watermarks(topic)
        position = dict(start_offsets)
        try:
            consumer.assign([TopicPartition(topic, p, o) for p, o in start_offsets.items()])
            quiet_since = None
            while len(found) < len(wanted):
                messages = consumer.consume(num_messages=10_000, timeout=0.2)
                for message in messages:
                    if message.error() is not None:
                        continue
                    partition, offset = message.partition() or 0, message.offset() or 0
                    position[partition] = offset + 1
                    text = header_value(message, header)
                    if text is not None and text in wanted:
                        found[text] = (partition, offset)
                at_end = all(position.get(p, 0) >= end for p, end in ends.items())
                if messages or not at_end:
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= 1.0:
                    break
        except KafkaException as error:
            raise KafkaUnavailable(f"reading {topic}: {error}") from error
        finally:
            consumer.close()
        return found

    def create_topics(self, partitions_by_topic: Mapping[str, int]) -> list[str]:
        """Create missing topics; returns the names that were created."""
        admin = self._admin()
        try:
            existing = set(admin.list_topics(timeout=self.timeout_s).topics)
        except KafkaException as error:
            raise KafkaUnavailable(self._unreachable("listing topics", error)) from error
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
