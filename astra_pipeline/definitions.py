"""Composition root: the one Definitions object, built when the code location loads."""

from __future__ import annotations

import dagster as dg

from astra_pipeline.assets.alerts import ALERTS_KEY, build_alerts_asset
from astra_pipeline.assets.features import CHURN_FEATURES, DAILY, churn_features
from astra_pipeline.assets.ingest import IngestConfig, build_ingest_events
from astra_pipeline.assets.lake import build_lake_files
from astra_pipeline.assets.scoring import (
    ANOMALY_SCORES_KEY,
    CHURN_SCORES_KEY,
    anomaly_scores,
    churn_scores,
)
from astra_pipeline.assets.serving import (
    AGG_SPECS,
    ALERTS_SPEC,
    ANOMALY_SCORES_SPEC,
    CHURN_SCORES_SPEC,
    CLEAN_SERVED_TABLES,
    DEVICE_HEALTH_SPEC,
    SERVING_GROUP,
    USER_CHURN_SPEC,
    ServedTable,
    build_serving_assets,
    select_served,
)
from astra_pipeline.assets.windows import HOURLY, WINDOWED_AGGREGATES, windowed_aggregates
from astra_pipeline.checks.freshness import windowed_aggregates_fresh_on_event_time
from astra_pipeline.checks.ingest import STATIC_CHECKS, make_dead_letter_rate_check
from astra_pipeline.checks.scoring import scoring_checks
from astra_pipeline.checks.windows import WINDOW_CHECKS
from astra_pipeline.jobs import (
    ANOMALY_JOB_NAME,
    CHURN_JOB_NAME,
    LAKE_MAINTENANCE_JOB_NAME,
    WINDOWS_JOB_NAME,
    build_anomaly_job,
    build_churn_job,
    build_ingest_job,
    build_lake_maintenance_job,
    build_windows_job,
)
from resources.kafka import KafkaResource
from resources.serving import serving_resource_from_settings
from resources.settings import AstraSettings
from resources.warehouse import warehouse_from_settings
from sensors.churn_schedule import build_churn_schedule
from sensors.kafka_events import build_kafka_events_sensor
from sensors.lake_schedule import build_lake_maintenance_schedule
from sensors.window_refresh import build_scoring_sensor, build_windows_sensor


def build_definitions(settings: AstraSettings) -> dg.Definitions:
    ingest_config = IngestConfig(
        topic=settings.topic_raw,
        deadletter_topic=settings.topic_deadletter,
        max_batch_size=settings.max_batch_size,
        time_budget_s=settings.run_time_budget_s,
        shards=settings.ingest_shards,
    )
    ingest_job = build_ingest_job(ingest_config)
    windows_job = build_windows_job()
    churn_job = build_churn_job()
    anomaly_job = build_anomaly_job()
    served = select_served(
        [
            *(ServedTable(s, WINDOWED_AGGREGATES, HOURLY) for s in AGG_SPECS),
            ServedTable(USER_CHURN_SPEC, CHURN_FEATURES, DAILY),
            ServedTable(DEVICE_HEALTH_SPEC, CHURN_FEATURES, DAILY),
            ServedTable(CHURN_SCORES_SPEC, CHURN_SCORES_KEY, DAILY),
            ServedTable(ANOMALY_SCORES_SPEC, ANOMALY_SCORES_KEY, HOURLY),
            ServedTable(ALERTS_SPEC, ALERTS_KEY, HOURLY),
            *CLEAN_SERVED_TABLES,
        ],
        settings.serving_schemas(),
    )
    return dg.Definitions(
        assets=[
            build_ingest_events(ingest_config),
            windowed_aggregates,
            churn_features,
            churn_scores,
            anomaly_scores,
            build_alerts_asset(settings.topic_alerts),
            *build_serving_assets(served, automate=settings.pg_serving_automation),
            build_lake_files(
                settings.lake_snapshot_retention_hours, settings.lake_raw_retention_days
            ),
        ],
        asset_checks=[
            *STATIC_CHECKS,
            make_dead_letter_rate_check(settings.deadletter_rate_threshold),
            *WINDOW_CHECKS,
            windowed_aggregates_fresh_on_event_time,
            *scoring_checks(),
        ],
        jobs=[ingest_job, windows_job, anomaly_job, churn_job, build_lake_maintenance_job()],
        schedules=[
            build_churn_schedule(CHURN_JOB_NAME, settings.sensor_running_by_default),
            build_lake_maintenance_schedule(
                LAKE_MAINTENANCE_JOB_NAME,
                settings.lake_maintenance_cron,
                settings.sensor_running_by_default,
            ),
        ],
        sensors=[
            *_serving_automation(settings),
            build_kafka_events_sensor(
                settings.topic_raw,
                settings.sensor_interval_s,
                settings.sensor_running_by_default,
                shards=settings.ingest_shards,
            ),
            build_windows_sensor(WINDOWS_JOB_NAME, settings.sensor_running_by_default),
            build_scoring_sensor(ANOMALY_JOB_NAME, settings.sensor_running_by_default),
        ],
        resources={
            "kafka": KafkaResource(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                consumer_group=settings.consumer_group,
                timeout_s=settings.kafka_timeout_s,
            ),
            "warehouse": warehouse_from_settings(settings),
            "serving_db": serving_resource_from_settings(settings),
        },
    )


def _serving_automation(settings: AstraSettings) -> list[dg.SensorDefinition]:
    """With ASTRA_PG_SERVING_AUTOMATION, a sensor of the serving group's automation
    conditions, running by default (Dagster's own default sensor starts stopped)."""
    if not settings.pg_serving_automation:
        return []
    return [
        dg.AutomationConditionSensorDefinition(
            "serving_automation_sensor",
            target=dg.AssetSelection.groups(SERVING_GROUP),
            default_status=(
                dg.DefaultSensorStatus.RUNNING
                if settings.sensor_running_by_default
                else dg.DefaultSensorStatus.STOPPED
            ),
            description="Re-copies each served partition after its upstream changes.",
        )
    ]


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(AstraSettings.from_env())
