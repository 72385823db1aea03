"""A topic deleted and created again (or an in-memory broker that lost its data) is
found by its topic id and reported loudly: the ingest run fails with a clear error and a
failed blocking check, and nothing of the new topic is mixed into the old epoch's
tables; a new epoch (a fresh warehouse) ingests every new message once."""

from __future__ import annotations

import time
from collections.abc import Callable

import dagster as dg
from confluent_kafka.admin import AdminClient, NewTopic

from astra_pipeline.assets.ingest import IngestConfig, ingest_events
from astra_pipeline.checks.ingest import STATIC_CHECKS
from astra_pipeline_tests.helpers import counts, produce
from resources.broker import EmbeddedBroker
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource


def _ingest(
    kafka: KafkaResource, warehouse: DuckDBWarehouseResource, topic: str
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [ingest_events, *STATIC_CHECKS],
        resources={"kafka": kafka, "warehouse": warehouse},
        run_config=dg.RunConfig(
            {"ingest_events": IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq")}
        ),
        raise_on_error=False,
    )


def _recreate(broker: EmbeddedBroker, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.delete_topics([topic])[topic].result(30)
    deadline = time.monotonic() + 30
    while True:
        try:
            admin.create_topics([NewTopic(topic, 6)])[topic].result(30)
            return
        except Exception:  # the deletion may not be complete yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_recreated_topic_fails_loudly_until_a_new_epoch_is_started(
    broker: EmbeddedBroker,
    topic: str,
    kafka: KafkaResource,
    warehouse: DuckDBWarehouseResource,
    new_lake: Callable[[], DuckDBWarehouseResource],
) -> None:
    first = produce(kafka, topic, 600, seed=21)
    assert _ingest(kafka, warehouse, topic).success
    old_id = kafka.topic_id(topic)
    _recreate(broker, topic)
    assert kafka.topic_id(topic) not in (None, old_id)
    # More messages than before: offsets past the ledger's end exist again, so only the
    # topic id tells that these are other messages.
    second = produce(kafka, topic, 1200, seed=22)

    failed = _ingest(kafka, warehouse, topic)
    assert not failed.success
    error = failed.get_step_failure_events()[0].step_failure_data.error
    assert error is not None and "deleted and created again" in error.message
    assert "Start a new epoch" in error.message
    (check,) = [
        c
        for c in failed.get_asset_check_evaluations()
        if c.check_name == "raw_events_topic_not_recreated"
    ]
    assert not check.passed
    assert counts(warehouse)["raw"] == first["total"], "nothing of the new topic was stored"

    # The documented new epoch: a fresh warehouse for the new topic. The old one keeps
    # the first epoch's rows, and its check keeps saying why it is not ingested into.
    fresh = new_lake()
    again = _ingest(kafka, fresh, topic)
    assert again.success and all(c.passed for c in again.get_asset_check_evaluations())
    got = counts(fresh)
    assert got["raw"] == second["total"] == got["ledger"]
