"""The range reader in this process and in a helper process read the same batches."""

import pytest

from astra_pipeline_tests.helpers import produce
from resources.errors import KafkaUnavailable


def test_process_reader_reads_what_the_thread_reader_reads(kafka, topic) -> None:
    produce(kafka, topic, 5_000, malformed_fraction=0.05)
    starts = {p: 0 for p in range(6)}
    with kafka.reader(topic) as here, kafka.process_reader(topic) as there:
        first_here, first_there = here.read(starts, 2_000), there.read(starts, 2_000)
        # Which partitions fill a capped read depends on fetch timing: compare whole reads.
        assert first_here.size == first_there.size == 2_000
        rest_here = here.read(starts, 10_000)
        rest_there = there.read(starts, 10_000)
    assert rest_here.reached_eof and rest_there.reached_eof
    assert rest_here.end_offsets == rest_there.end_offsets
    assert sum(rest_there.end_offsets.values()) == 5_000
    order = ["partition", "offset"]
    assert rest_here.frame.sort(order).equals(rest_there.frame.sort(order))


def test_a_dead_reader_process_is_a_clear_error(kafka, topic) -> None:
    produce(kafka, topic, 10)
    with kafka.process_reader(topic) as reader:
        reader._process.kill()
        reader._process.wait()
        with pytest.raises(KafkaUnavailable, match="reader process"):
            reader.read({p: 0 for p in range(6)}, 100)
