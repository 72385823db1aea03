"""Composition root: the one Definitions object, built when the code location loads."""

from __future__ import annotations

import dagster as dg

from astra_pipeline.assets.ingest import IngestConfig, ingest_events
from astra_pipeline.checks import STATIC_CHECKS, make_dead_letter_rate_check
from astra_pipeline.jobs import build_ingest_job
from resources.kafka import KafkaResource
from resources.settings import AstraSettings
from resources.warehouse import DuckDBWarehouseResource
from sensors.kafka_events import build_kafka_events_sensor


def build_definitions(settings: AstraSettings) -> dg.Definitions:
    ingest_job = build_ingest_job(
        IngestConfig(
            topic=settings.topic_raw,
            deadletter_topic=settings.topic_deadletter,
            max_batch_size=settings.max_batch_size,
            time_budget_s=settings.run_time_budget_s,
        )
    )
    return dg.Definitions(
        assets=[ingest_events],
        asset_checks=[
            *STATIC_CHECKS,
            make_dead_letter_rate_check(settings.deadletter_rate_threshold),
        ],
        jobs=[
            ingest_job,
        ],
        sensors=[
            build_kafka_events_sensor(
                settings.topic_raw,
                settings.sensor_interval_s,
                settings.sensor_running_by_default,
                ingest_job,
            )
        ],
        resources={
            "kafka": KafkaResource(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                consumer_group=settings.consumer_group,
            ),
            "warehouse": DuckDBWarehouseResource(
                path=str(settings.duckdb_path), lock_timeout_s=settings.duckdb_lock_timeout_s
            ),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(AstraSettings.from_env())
