"""Group `aggregate`: windowed_aggregates, hourly partitions on event time.

A run covers one partition or a range (a backfill, single run): it reads the clean
rows the range needs, computes every window table and replaces the range's rows, one
transaction per day of the range (assets/window_refresh.py). The live hour is refreshed
by the ingest run itself, which records that partition's materialization.
"""

import warnings

import dagster as dg

from astra_pipeline.assets.ingest import CLEANED_EVENTS, WRITER_POOL
from astra_pipeline.assets.window_refresh import (
    WINDOWED_AGGREGATES as WINDOWED_AGGREGATES,  # the asset's key, defined beside its refresh
)
from astra_pipeline.assets.window_refresh import refresh_hours
from astra_pipeline.transforms.windows import HOUR
from resources.settings import partitions_start
from resources.warehouse import DuckDBWarehouseResource

# backfill_policy is beta in Dagster 1.13; it is used knowingly, so its warning is noise
# in every CLI call and test run.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

HOURLY = dg.HourlyPartitionsDefinition(
    start_date=f"{partitions_start().isoformat()}-00:00", end_offset=1
)
"""Hourly partitions on event time, from ASTRA_PARTITIONS_START up to and including the
current hour."""


class WindowsConfig(dg.Config):
    since_last_refresh: bool = False
    """Refresh a single partition incrementally: recompute only the windows that clean
    rows ingested since its last refresh fall in (how an ingest run refreshes its live
    hour). The first refresh of a partition, and every range, is computed in full."""


@dg.asset(
    key=WINDOWED_AGGREGATES,
    group_name="aggregate",
    deps=[CLEANED_EVENTS],
    partitions_def=HOURLY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WRITER_POOL,
    description="Per device and user event-time windows (agg.sensor_1m, agg.sensor_1h, "
    "agg.sensor_5m_sliding, agg.user_1m, agg.user_1h, agg.user_sessions); "
    "a partition is one hour of event time.",
)
def windowed_aggregates(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBWarehouseResource,
    config: WindowsConfig,
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    window = context.partition_time_window
    refresh = refresh_hours(
        warehouse,
        window.start,
        window.end - HOUR,
        context.run.run_id,
        since_last_refresh=config.since_last_refresh,
    )
    return dg.MaterializeResult(metadata=refresh.metadata)
