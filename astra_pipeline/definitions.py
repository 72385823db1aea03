"""Composition root: the one Definitions object, built when the code location loads."""

from __future__ import annotations

import dagster as dg

from astra_pipeline.assets.ingest import IngestConfig, ingest_events
from astra_pipeline.assets.serving import (
    AGG_SPECS,
    CLEAN_SERVED_TABLES,
    ServedTable,
    build_serving_assets,
    select_served,
)
from astra_pipeline.assets.windows import HOURLY, WINDOWED_AGGREGATES, windowed_aggregates
from astra_pipeline.checks.ingest import STATIC_CHECKS, make_dead_letter_rate_check
from astra_pipeline.checks.windows import WINDOW_CHECKS
from astra_pipeline.jobs import build_ingest_job, build_windows_job
from resources.kafka import KafkaResource
from resources.serving import serving_resource_from_settings
from resources.settings import AstraSettings
from resources.warehouse import DuckDBWarehouseResource
from sensors.kafka_events import build_kafka_events_sensor
from sensors.window_refresh import build_windows_sensor


def build_definitions(settings: AstraSettings) -> dg.Definitions:
    ingest_job = build_ingest_job(
        IngestConfig(
            topic=settings.topic_raw,
            deadletter_topic=settings.topic_deadletter,
            max_batch_size=settings.max_batch_size,
            time_budget_s=settings.run_time_budget_s,
        )
    )
    windows_job = build_windows_job()
    served = select_served(
        [*(ServedTable(s, WINDOWED_AGGREGATES, HOURLY) for s in AGG_SPECS), *CLEAN_SERVED_TABLES],
        settings.serving_schemas(),
    )
    return dg.Definitions(
        assets=[
            ingest_events,
            windowed_aggregates,
            *build_serving_assets(served, automate=settings.pg_serving_automation),
        ],
        asset_checks=[
            *STATIC_CHECKS,
            make_dead_letter_rate_check(settings.deadletter_rate_threshold),
            *WINDOW_CHECKS,
        ],
        jobs=[ingest_job, windows_job],
        sensors=[
            build_kafka_events_sensor(
                settings.topic_raw,
                settings.sensor_interval_s,
                settings.sensor_running_by_default,
                ingest_job,
            ),
            build_windows_sensor(windows_job, settings.sensor_running_by_default),
        ],
        resources={
            "kafka": KafkaResource(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                consumer_group=settings.consumer_group,
            ),
            "warehouse": DuckDBWarehouseResource(
                path=str(settings.duckdb_path), lock_timeout_s=settings.duckdb_lock_timeout_s
            ),
            "serving_db": serving_resource_from_settings(settings),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(AstraSettings.from_env())
