"""Jobs are selections over the asset graph.

The builders return ``Any``: `dg.define_asset_job` returns a type Dagster 1.13 does not
export publicly. Sensors and schedules name their job (``job_name``)."""

from typing import Any

import dagster as dg

from astra_pipeline.assets.alerts import ALERTS_KEY
from astra_pipeline.assets.features import CHURN_FEATURES
from astra_pipeline.assets.ingest import IngestConfig
from astra_pipeline.assets.lake import LAKE_FILES
from astra_pipeline.assets.scoring import ANOMALY_SCORES_KEY, CHURN_SCORES_KEY
from astra_pipeline.assets.windows import WINDOWED_AGGREGATES
from astra_pipeline.run_tags import MAX_RUNTIME_TAG

INGEST_JOB_NAME = "ingest_events_job"


def build_ingest_job(config: IngestConfig) -> Any:
    """The ingest job: the ingest assets, with no partitions, however it is launched.

    A run drains Kafka, then refreshes the windows of the live hour its new rows touched
    in the same process (assets.ingest.refresh_live_hour): the live hour's windows are
    queryable one run after the events arrive, not two (a run costs about 4 s to start).
    The other hours the run touched (late events, an hour that ended meanwhile) are
    refreshed by cleaned_events_windows_sensor. The run config's defaults are the
    settings (``config``, in the ingest asset's config schema).
    """
    return dg.define_asset_job(
        INGEST_JOB_NAME,
        selection=dg.AssetSelection.groups("ingest"),
        # One process per run: a micro-batch should not pay a subprocess start per step.
        executor_def=dg.in_process_executor,
        # A backstop for a run that hangs rather than dies (run monitoring cancels it,
        # and the next run re-reads its range): far above a healthy run's time budget
        # plus its refresh and a wait for the writer slot behind a backfill.
        tags={MAX_RUNTIME_TAG: str(int(max(600.0, 10 * config.time_budget_s)))},
        description="Drain Kafka into raw, clean and dead-letter tables, refresh the "
        "windows of the live hour, and run their checks.",
    )


WINDOWS_JOB_NAME = "aggregate_windows_job"


def build_windows_job() -> Any:
    """Re-materialize hourly partitions (one, or a range in a single run) and check them."""
    return dg.define_asset_job(
        WINDOWS_JOB_NAME,
        selection=dg.AssetSelection.assets(WINDOWED_AGGREGATES),
        executor_def=dg.in_process_executor,
        description="Recompute windowed_aggregates for the hours new events touched.",
    )


ANOMALY_JOB_NAME = "score_anomalies_job"


def build_anomaly_job() -> Any:
    """Score and alert the hours whose aggregates were refreshed (one run per range)."""
    return dg.define_asset_job(
        ANOMALY_JOB_NAME,
        selection=dg.AssetSelection.assets(ANOMALY_SCORES_KEY, ALERTS_KEY),
        executor_def=dg.in_process_executor,
        description="Score the readings of refreshed hours against their devices' baselines "
        "and publish new alerts.",
    )


CHURN_JOB_NAME = "score_churn_job"


def build_churn_job() -> Any:
    """One day's churn features and scores (or a range of days in a single run)."""
    return dg.define_asset_job(
        CHURN_JOB_NAME,
        selection=dg.AssetSelection.assets(CHURN_FEATURES, CHURN_SCORES_KEY),
        executor_def=dg.in_process_executor,
        description="Compute a day's churn features, train the churn model on past days "
        "and score the day's users.",
    )


LAKE_MAINTENANCE_JOB_NAME = "lake_maintenance_job"


def build_lake_maintenance_job() -> Any:
    """Compact the lake and expire its old snapshots (assets.lake)."""
    return dg.define_asset_job(
        LAKE_MAINTENANCE_JOB_NAME,
        selection=dg.AssetSelection.assets(LAKE_FILES),
        executor_def=dg.in_process_executor,
        description="Merge the lake's small files, apply deletes, expire snapshots past "
        "the retention and delete the files no snapshot references.",
    )
