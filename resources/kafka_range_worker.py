"""The helper process behind ProcessRangeReader: reads ranges on request, forever.

Protocol on stdin/stdout, one pickled frame each way per read: in ``(start_offsets,
max_messages)``, out ``("batch", arrow_ipc_bytes, start_offsets, end_offsets,
reached_eof)`` or ``("error", exception_type_name, message)``. It ends when stdin closes,
which also happens when the process that started it dies.
"""

from __future__ import annotations

import io
import json
import sys

from confluent_kafka import Consumer

from resources.errors import AstraResourceError
from resources.kafka_range import KafkaRangeReader, receive_frame, send_frame


def main() -> None:
    config, topic, timeout_s = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    consumer = Consumer(config)
    reader = KafkaRangeReader(consumer, topic, timeout_s)
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    try:
        while (request := receive_frame(requests)) is not None:
            starts, max_messages = request
            try:
                batch = reader.read(starts, max_messages)
            except AstraResourceError as error:
                send_frame(answers, ("error", type(error).__name__, str(error)))
                continue
            ipc = io.BytesIO()
            batch.frame.write_ipc(ipc)
            send_frame(
                answers,
                (
                    "batch",
                    ipc.getvalue(),
                    batch.start_offsets,
                    batch.end_offsets,
                    batch.reached_eof,
                ),
            )
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
