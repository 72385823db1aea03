"""Asset checks of windowed_aggregates, over the partitions of the checked run.

A run's partition tags (one hour, or the range of a backfill) name the hours it
replaced; each check looks at exactly those hours, in their state when the check runs
(another run may have refreshed one of them since: the pool is held per step), with
the snapshot bound (seen_until) ops.window_partitions records for them. Checks executed
on their own (from the UI, a run without partitions) look at every partition. What each
verifies is in assets/window_audit.py, which the ingest run also uses for the live hour
it refreshes.
"""

import dagster as dg

from astra_pipeline.assets.window_audit import AUDITS, HourRange
from astra_pipeline.assets.window_refresh import partition_hour
from astra_pipeline.assets.windows import WINDOWED_AGGREGATES
from astra_pipeline.checks.run_partitions import run_partition_keys
from resources.warehouse import DuckDBWarehouseResource


def _run_hours(context: dg.AssetCheckExecutionContext) -> HourRange:
    """The run's first and last hour, or None (every partition) for a run without."""
    keys = run_partition_keys(context.run.tags)
    if keys is None:
        return None
    first, last = (partition_hour(key) for key in keys)
    return first, last


@dg.asset_check(
    asset=WINDOWED_AGGREGATES,
    blocking=True,
    description="Per partition, the 1-minute counts add up to the clean events of that hour.",
)
def windowed_aggregates_complete(
    context: dg.AssetCheckExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.AssetCheckResult:
    return AUDITS["windowed_aggregates_complete"](warehouse, _run_hours(context))


@dg.asset_check(
    asset=WINDOWED_AGGREGATES,
    description="Every window has its length, is aligned, and lies in its own partition.",
)
def windowed_aggregates_windows_in_partition(
    context: dg.AssetCheckExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.AssetCheckResult:
    return AUDITS["windowed_aggregates_windows_in_partition"](warehouse, _run_hours(context))


@dg.asset_check(
    asset=WINDOWED_AGGREGATES,
    description="Aggregates stay within the contract's physical bounds and min <= mean <= max.",
)
def windowed_aggregates_within_bounds(
    context: dg.AssetCheckExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.AssetCheckResult:
    return AUDITS["windowed_aggregates_within_bounds"](warehouse, _run_hours(context))


@dg.asset_check(
    asset=WINDOWED_AGGREGATES,
    description="A user's sessions never overlap.",
)
def windowed_aggregates_sessions_disjoint(
    context: dg.AssetCheckExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.AssetCheckResult:
    return AUDITS["windowed_aggregates_sessions_disjoint"](warehouse, _run_hours(context))


WINDOW_CHECKS = [
    windowed_aggregates_complete,
    windowed_aggregates_windows_in_partition,
    windowed_aggregates_within_bounds,
    windowed_aggregates_sessions_disjoint,
]
