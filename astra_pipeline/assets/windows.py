"""Group `aggregate`: windowed_aggregates, hourly partitions on event time.

A run covers one partition (a live refresh) or a range (a backfill, single run): it
reads the clean rows the range needs, computes every window table and replaces the
range's rows, one transaction per day of the range.
"""

import datetime as dt
import time
import warnings

import dagster as dg

from astra_pipeline.assets.ingest import CLEANED_EVENTS, WRITER_POOL
from astra_pipeline.transforms.partition_windows import (
    compute_partition_windows,
    hours_between,
    input_ranges,
)
from resources.warehouse import DuckDBWarehouseResource
from resources.window_store import load_clean, record_partitions, replace_windows

# backfill_policy is beta in Dagster 1.13; it is used knowingly, so its warning is noise
# in every CLI call and test run.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

WINDOWED_AGGREGATES = dg.AssetKey("windowed_aggregates")
PARTITIONS_START = "2026-01-01-00:00"
PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"
HOURLY = dg.HourlyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1)
"""Hourly partitions on event time, up to and including the current hour."""

CHUNK = dt.timedelta(days=1)
"""A backfill writes one transaction per day of its range: bounded memory, and a
crash loses at most the day in progress (the next run replaces it whole)."""

DETAIL_LIMIT = 48
"""Per-partition metadata (amendments, late events) is listed for ranges up to this."""


def partition_key(hour: dt.datetime) -> str:
    return hour.astimezone(dt.UTC).strftime(PARTITION_KEY_FORMAT)


def partition_hour(key: str) -> dt.datetime:
    """The start of the hour a partition key names (the inverse of partition_key)."""
    return dt.datetime.strptime(key, PARTITION_KEY_FORMAT).replace(tzinfo=dt.UTC)


@dg.asset(
    key=WINDOWED_AGGREGATES,
    group_name="aggregate",
    deps=[CLEANED_EVENTS],
    partitions_def=HOURLY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WRITER_POOL,
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=dt.timedelta(minutes=10), warn_window=dt.timedelta(minutes=2)
    ),
    description="Per device and user event-time windows (agg.sensor_1m, agg.sensor_1h, "
    "agg.sensor_5m_sliding, agg.user_1m, agg.user_1h, agg.user_sessions); "
    "a partition is one hour of event time.",
)
def windowed_aggregates(
    context: dg.AssetExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    started = time.monotonic()
    window = context.partition_time_window
    hours = hours_between(window.start, window.end)
    warehouse.ensure_schema()
    rows: dict[str, int] = {}
    records = []
    for chunk_start in hours[:: int(CHUNK / dt.timedelta(hours=1))]:
        chunk_end = min(chunk_start + CHUNK, hours[-1] + dt.timedelta(hours=1))
        (r_from, r_until), (a_from, a_until) = input_ranges(chunk_start, chunk_end)
        with warehouse.transaction() as tx:
            clean = load_clean(tx, r_from, r_until, a_from, a_until)
            computed = compute_partition_windows(
                clean.readings, clean.activity, chunk_start, chunk_end
            )
            for name, count in replace_windows(tx, chunk_start, chunk_end, computed.tables).items():
                rows[name] = rows.get(name, 0) + count
            records.append(
                record_partitions(
                    tx,
                    computed.stats,
                    context.run.run_id,
                    clean.seen_until,
                    dt.datetime.now(dt.UTC),
                )
            )
    partitions = [r for frame in records for r in frame.iter_rows(named=True)]
    metadata: dict[str, dg.RawMetadataValue] = {
        "dagster/row_count": sum(rows.values()),
        **{f"rows_{name}": count for name, count in sorted(rows.items())},
        "partitions": len(partitions),
        "cleaned_events": sum(p["cleaned_events"] for p in partitions),
        "late_events": sum(p["late_events"] for p in partitions),
        "amended_partitions": sum(p["materializations"] > 1 for p in partitions),
        "seconds": round(time.monotonic() - started, 3),
    }
    if len(partitions) == 1:
        metadata["amendments"] = partitions[0]["materializations"] - 1
    if len(partitions) <= DETAIL_LIMIT:
        metadata["per_partition"] = dg.MetadataValue.json(
            {
                partition_key(p["partition_start"]): {
                    "amendments": p["materializations"] - 1,
                    "late_events": p["late_events"],
                    "cleaned_events": p["cleaned_events"],
                }
                for p in partitions
            }
        )
    return dg.MaterializeResult(metadata=metadata)
