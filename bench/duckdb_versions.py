"""drain() of N simulated events into a fresh DuckDB file: the DuckDB version and events/s.

Run twice, alternating, to compare two DuckDB releases on the same data (the pinned one
from the venv, another from an unpacked wheel on PYTHONPATH):

    .venv/bin/pip download --no-deps duckdb==2.0.1 -d /tmp/duck2
    unzip -q /tmp/duck2/duckdb-2.0.1-*.whl -d /tmp/duck2/site
    .venv/bin/python bench/duckdb_versions.py 400000
    PYTHONPATH=/tmp/duck2/site .venv/bin/python bench/duckdb_versions.py 400000
"""

import sys
import tempfile
import time
import uuid
from pathlib import Path

import duckdb

from astra_pipeline.assets.ingest import IngestConfig, drain
from astra_pipeline.simulator import SimulatorConfig, generate
from resources.broker import EmbeddedBroker
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource


def main(n: int) -> None:
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers, consumer_group="ab")
        topic = f"t{uuid.uuid4().hex[:6]}"
        kafka.create_topics({topic: 6, f"{topic}_dlq": 1})
        kafka.produce_all(
            topic,
            (
                (m.key, m.value)
                for m in generate(SimulatorConfig(seed=1, malformed_fraction=0.01), n)
            ),
        )
        wh = DuckDBWarehouseResource(path=str(Path(tmp) / "a.duckdb"))
        t0 = time.perf_counter()
        totals = drain(
            kafka,
            wh,
            IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq", time_budget_s=3600),
            None,
        )
        s = time.perf_counter() - t0
        print(duckdb.__version__, totals.messages, f"{totals.messages / s:,.0f} ev/s")


if __name__ == "__main__":
    main(int(sys.argv[1]))
