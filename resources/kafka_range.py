"""Reading exact offset ranges with ``assign()``, in this process or in a helper one.

Split from resources/kafka.py so that the helper process (resources/kafka_range_worker)
imports only confluent_kafka and polars, not Dagster: it starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import polars as pl
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from resources.errors import AstraResourceError, KafkaUnavailable, LedgerAheadOfBroker

# How often a read asks for fresh watermarks to find partitions at their end.
END_CHECK_EVERY_S = 0.3


@dataclass(frozen=True)
class KafkaBatch:
    """Messages read from exact per-partition offset ranges, as columns."""

    topic: str
    frame: pl.DataFrame
    """Columns: partition (Int32), offset (Int64), key and value (Binary), kafka_ts."""
    start_offsets: dict[int, int]
    end_offsets: dict[int, int]
    """Per partition, the next offset to read: last offset read + 1, or the start."""
    reached_eof: bool
    """Every partition was read to its end at the time of reading."""

    @property
    def size(self) -> int:
        return self.frame.height


class KafkaRangeReader:
    """Reads offset ranges with ``assign()``: no consumer-group join, no rebalance."""

    def __init__(self, consumer: Consumer, topic: str, timeout_s: float) -> None:
        self._consumer = consumer
        self._topic = topic
        self._timeout_s = timeout_s
        self._last_end_check = 0.0

    def read(self, start_offsets: Mapping[int, int], max_messages: int) -> KafkaBatch:
        """Read every partition from its start offset to its end (EOF), at most
        ``max_messages`` in all. Each partition's messages form one contiguous prefix."""
        topic = self._topic
        self._consumer.assign([TopicPartition(topic, p, o) for p, o in start_offsets.items()])
        partitions: list[int] = []
        offsets: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        stamps: list[tuple[int, int]] = []
        at_eof: set[int] = set()
        next_offset = dict(start_offsets)
        self._last_end_check = time.monotonic()
        deadline = time.monotonic() + self._timeout_s
        try:
            while len(at_eof) < len(start_offsets) and len(offsets) < max_messages:
                messages = self._consumer.consume(
                    num_messages=min(10_000, max_messages - len(offsets)), timeout=0.2
                )
                if messages:
                    # The timeout is for silence, not for the whole read: a long read
                    # that keeps receiving is healthy.
                    deadline = time.monotonic() + self._timeout_s
                elif time.monotonic() > deadline:
                    missing = sorted(set(start_offsets) - at_eof)
                    raise KafkaUnavailable(
                        f"no data and no end-of-partition from {topic} partitions {missing} "
                        f"within {self._timeout_s:.0f}s"
                    )
                if any(message.error() is not None for message in messages):
                    messages = self._drop_errors(messages, start_offsets, at_eof)
                if messages:
                    # Column-wise comprehensions: about twice as fast as one loop of appends.
                    first = len(offsets)
                    partitions.extend([m.partition() or 0 for m in messages])
                    offsets.extend([m.offset() or 0 for m in messages])
                    keys.extend([m.key() for m in messages])
                    values.extend([m.value() for m in messages])
                    stamps.extend([m.timestamp() for m in messages])
                    for index in range(first, len(offsets)):
                        next_offset[partitions[index]] = offsets[index] + 1
                at_eof |= self._partitions_at_end(next_offset, at_eof)
        finally:
            # Pausing is remembered per partition by the consumer: undo it for the next read.
            self._consumer.resume([TopicPartition(topic, p) for p in start_offsets])
            self._consumer.unassign()
        frame = pl.DataFrame(
            {
                "partition": pl.Series(partitions, dtype=pl.Int32),
                "offset": pl.Series(offsets, dtype=pl.Int64),
                "key": pl.Series(keys, dtype=pl.Binary),
                "value": pl.Series(values, dtype=pl.Binary),
                "kafka_ts": pl.Series(
                    [stamp if kind else None for kind, stamp in stamps], dtype=pl.Int64
                ).cast(pl.Datetime("ms", "UTC")),
            }
        )
        end_offsets = dict(start_offsets)
        end_offsets.update(next_offset)
        return KafkaBatch(
            topic=topic,
            frame=frame,
            start_offsets=dict(start_offsets),
            end_offsets=end_offsets,
            reached_eof=len(at_eof) == len(start_offsets),
        )

    def _drop_errors(
        self, messages: list[Message], starts: Mapping[int, int], at_eof: set[int]
    ) -> list[Message]:
        kept: list[Message] = []
        for message in messages:
            error = message.error()
            if error is None:
                kept.append(message)
                continue
            partition = message.partition() or 0
            self._handle_error(error, partition, starts)
            # The end "at that moment": stop fetching this partition, or a steady
            # trickle of new messages would keep the read going forever.
            at_eof.add(partition)
            self._consumer.pause([TopicPartition(self._topic, partition)])
        return kept

    def _partitions_at_end(self, next_offset: dict[int, int], at_eof: set[int]) -> set[int]:
        """Partitions that are at their end without an EOF event.

        librdkafka signals EOF when its position equals the high watermark. The embedded
        broker reports a watermark that trails the true end by up to one producer batch,
        so after reading such a batch the position is past the watermark and no EOF ever
        comes. A partition whose position is at or past the watermark of the latest fetch
        response is at its end at this moment. The watermark is librdkafka's cached one
        (no request: asking the broker costs ~50 ms per partition, as a watermark request
        queues behind large fetches), checked at most every END_CHECK_EVERY_S.
        """
        now = time.monotonic()
        if now - self._last_end_check < END_CHECK_EVERY_S:
            return set()
        self._last_end_check = now
        ended: set[int] = set()
        for partition, position in next_offset.items():
            if partition in at_eof:
                continue
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self._topic, partition), cached=True
                )
            except KafkaException as error:
                raise KafkaUnavailable(f"watermarks of {self._topic}: {error}") from error
            # No fetch response yet: the end is unknown. Fetches return whole record
            # batches, so a position at or past the base offset of the last batch means
            # that batch has been read: this is the end.
            if high >= 0 and position >= high:
                ended.add(partition)
        if ended:
            self._consumer.pause([TopicPartition(self._topic, p) for p in ended])
        return ended

    def _handle_error(self, error: KafkaError, partition: int, starts: Mapping[int, int]) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
            raise LedgerAheadOfBroker(
                f"{self._topic}[{partition}]: the ledger's next offset {starts.get(partition)} "
                "is outside the partition's log; the broker lost data it had acknowledged "
                "(an in-memory broker restarted?) or the topic was recreated. Point "
                "ASTRA_LAKE_METADATA_SCHEMA or ASTRA_LAKE_CATALOG at a fresh lake for a new broker."
            )
        raise KafkaUnavailable(f"reading {self._topic}[{partition}]: {error.str()}")


_FRAME = struct.Struct("<Q")


def send_frame(stream: IO[bytes], payload: object) -> None:
    data = pickle.dumps(payload, protocol=5)
    stream.write(_FRAME.pack(len(data)))
    stream.write(data)
    stream.flush()


def receive_frame(stream: IO[bytes]) -> Any:
    """The next pickled frame, or None at the end of the stream."""
    header = stream.read(_FRAME.size)
    if len(header) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None  # the writer died in the middle of a frame: as good as the end
    return pickle.loads(data)


_ERRORS: dict[str, type[AstraResourceError]] = {
    "KafkaUnavailable": KafkaUnavailable,
    "LedgerAheadOfBroker": LedgerAheadOfBroker,
}


class ProcessRangeReader:
    """A KafkaRangeReader in a helper process, with the same ``read``.

    librdkafka hands every message to Python as an object, under the GIL; reading a
    backlog in the same process as the validation and the DuckDB writes makes the two
    take turns on one core. In a helper process the read runs on the other core: batches
    come back as Arrow IPC bytes (one copy, no per-message objects on this side).
    Errors come back as the same exception types.
    """

    def __init__(self, consumer_config: Mapping[str, object], topic: str, timeout_s: float):
        self._topic = topic
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "resources.kafka_range_worker",
                json.dumps(dict(consumer_config)),
                topic,
                str(timeout_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def read(self, start_offsets: Mapping[int, int], max_messages: int) -> KafkaBatch:
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        try:
            send_frame(stdin, (dict(start_offsets), max_messages))
        except BrokenPipeError as error:
            raise KafkaUnavailable(f"the reader process of {self._topic} is gone") from error
        answer = receive_frame(stdout)
        if answer is None:
            raise KafkaUnavailable(
                f"the reader process of {self._topic} exited ({self._process.poll()})"
            )
        if answer[0] == "error":
            _, kind, message = answer
            raise _ERRORS.get(kind, KafkaUnavailable)(message)
        _, ipc, starts, ends, reached_eof = answer
        return KafkaBatch(
            topic=self._topic,
            frame=pl.read_ipc(io.BytesIO(ipc)),
            start_offsets=starts,
            end_offsets=ends,
            reached_eof=reached_eof,
        )

    def close(self) -> None:
        if self._process.stdin:
            # A process that died leaves unflushed bytes behind: nothing to deliver.
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout:
            self._process.stdout.close()
