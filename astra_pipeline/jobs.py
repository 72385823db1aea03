"""Jobs are selections over the asset graph."""

import dagster as dg

from astra_pipeline.assets.alerts import ALERTS_KEY
from astra_pipeline.assets.features import CHURN_FEATURES
from astra_pipeline.assets.ingest import IngestConfig
from astra_pipeline.assets.scoring import ANOMALY_SCORES_KEY, CHURN_SCORES_KEY
from astra_pipeline.assets.windows import WINDOWED_AGGREGATES, WindowsConfig
from astra_pipeline.run_tags import MAX_RUNTIME_TAG
from resources.dagster_internals import AssetJob

INGEST_JOB_NAME = "ingest_events_job"


def build_ingest_job(config: IngestConfig) -> AssetJob:
    """The ingest job, its default run config taken from the settings.

    A run drains Kafka (the unpartitioned ingest assets), then refreshes the
    windowed_aggregates partition of the run (the hour the sensor launched it in) in the
    same process: the live hour's windows are queryable one run after the events
    arrive, not two (a run costs about 4 s to start). It recomputes only the windows the
    rows ingested since the hour's last refresh fall in. The other hours the run touched
    (late events, an hour that ended meanwhile) are refreshed by
    cleaned_events_windows_sensor, and the run's own hour too when the run failed.
    """
    return dg.define_asset_job(
        INGEST_JOB_NAME,
        selection=dg.AssetSelection.groups("ingest")
        | dg.AssetSelection.assets(WINDOWED_AGGREGATES),
        # One process per run: a micro-batch should not pay a subprocess start per step.
        executor_def=dg.in_process_executor,
        config=dg.RunConfig(
            ops={
                "ingest_events": config,
                "windowed_aggregates": WindowsConfig(since_last_refresh=True),
            }
        ),
        # A backstop for a run that hangs rather than dies (run monitoring cancels it,
        # and the next run re-reads its range): far above a healthy run's time budget
        # plus its refresh and a wait for the writer slot behind a backfill.
        tags={MAX_RUNTIME_TAG: str(int(max(600.0, 10 * config.time_budget_s)))},
        description="Drain Kafka into raw, clean and dead-letter tables, refresh the "
        "windows of the run's hour, and run their checks.",
    )


WINDOWS_JOB_NAME = "aggregate_windows_job"


def build_windows_job() -> AssetJob:
    """Re-materialize hourly partitions (one, or a range in a single run) and check them."""
    return dg.define_asset_job(
        WINDOWS_JOB_NAME,
        selection=dg.AssetSelection.assets(WINDOWED_AGGREGATES),
        executor_def=dg.in_process_executor,
        description="Recompute windowed_aggregates for the hours new events touched.",
    )


ANOMALY_JOB_NAME = "score_anomalies_job"


def build_anomaly_job() -> AssetJob:
    """Score and alert the hours whose aggregates were refreshed (one run per range)."""
    return dg.define_asset_job(
        ANOMALY_JOB_NAME,
        selection=dg.AssetSelection.assets(ANOMALY_SCORES_KEY, ALERTS_KEY),
        executor_def=dg.in_process_executor,
        description="Score the readings of refreshed hours against their devices' baselines "
        "and publish new alerts.",
    )


CHURN_JOB_NAME = "score_churn_job"


def build_churn_job() -> AssetJob:
    """One day's churn features and scores (or a range of days in a single run)."""
    return dg.define_asset_job(
        CHURN_JOB_NAME,
        selection=dg.AssetSelection.assets(CHURN_FEATURES, CHURN_SCORES_KEY),
        executor_def=dg.in_process_executor,
        description="Compute a day's churn features, train the churn model on past days "
        "and score the day's users.",
    )
