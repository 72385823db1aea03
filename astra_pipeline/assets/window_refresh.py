"""Refreshing hourly window partitions: the work behind windowed_aggregates.

Two callers: the windowed_aggregates asset (one partition, or a range in one run) and
the ingest run, which refreshes the live hour itself right after its drain, in the same
process and writer-pool slot (one run from event to queryable window, not two). Both
record the same figures, per partition.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import dagster as dg
import polars as pl

from astra_pipeline.transforms.live_windows import increment_scope, window_increment
from astra_pipeline.transforms.partition_windows import (
    compute_partition_windows,
    hours_between,
    input_ranges,
)
from astra_pipeline.transforms.windows import HOUR
from resources.errors import CommitConflict
from resources.warehouse import DuckDBWarehouseResource, WarehouseSession
from resources.watermark import Watermark
from resources.window_store import (
    PartitionRecord,
    clean_rows_since,
    load_clean,
    load_clean_in,
    newest_complete_window,
    partition_record,
    record_partitions,
    record_rollups,
    replace_sessions_of,
    replace_window_ranges,
    replace_windows,
    rollups_record,
)

WINDOWED_AGGREGATES = dg.AssetKey("windowed_aggregates")
PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"

CHUNK = dt.timedelta(days=1)
"""A backfill writes one transaction per day of its range: bounded memory, and a
crash loses at most the day in progress (the next run replaces it whole)."""

ROLLUP_EVERY = dt.timedelta(seconds=60)
"""An incremental refresh of the live hour recomputes its hourly roll-ups (sensor_1h,
user_1h: p95 and stddev need every value of the hour, millions late in a busy hour) only
when they are this old; in between they lag (metadata ``rollups: deferred``). An hour
that has ended gets them on every refresh."""

DETAIL_LIMIT = 48
"""Per-partition metadata (amendments, late events) is listed for ranges up to this."""


def partition_key(hour: dt.datetime) -> str:
    return hour.astimezone(dt.UTC).strftime(PARTITION_KEY_FORMAT)


def partition_hour(key: str) -> dt.datetime:
    """The start of the hour a partition key names (the inverse of partition_key)."""
    return dt.datetime.strptime(key, PARTITION_KEY_FORMAT).replace(tzinfo=dt.UTC)


def hour_of(moment: dt.datetime) -> dt.datetime:
    """The start of the UTC hour ``moment`` falls in."""
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class WindowRefresh:
    """What one refresh did: the metadata of its materialization, and the partitions
    it replaced (their start hours, in order)."""

    metadata: dict[str, dg.RawMetadataValue]
    hours: list[dt.datetime]


COMMIT_ATTEMPTS = 5
"""How often a refresh chunk is computed again after a lake refused its commit."""


def refresh_hours(
    warehouse: DuckDBWarehouseResource,
    first: dt.datetime,
    last: dt.datetime,
    run_id: str,
    since_last_refresh: bool = False,
) -> WindowRefresh:
    """Recompute the window tables of the hours ``first``..``last`` (inclusive) and
    replace their rows, one transaction per day. With ``since_last_refresh`` and a
    single hour that was refreshed before, only the windows the clean rows ingested
    since then fall in are recomputed (nothing at all when there are none)."""
    started = time.monotonic()
    hours = hours_between(first, last + HOUR)
    warehouse.ensure_schema()
    rows: dict[str, int] = {}
    records = []
    newest: dt.datetime | None = None
    mode = "full"
    rollups = "current"
    for chunk_start in hours[:: int(CHUNK / HOUR)]:
        chunk_end = min(chunk_start + CHUNK, hours[-1] + HOUR)
        # On a lake a concurrent commit to the same tables (another refresh, a
        # compaction) can refuse this one: the chunk is then computed again from the
        # start, in a new transaction that sees what the other committed.
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                with warehouse.transaction() as tx:
                    tx.commit_message(run_id, f"windows from {chunk_start:%Y-%m-%d %H:%M}")
                    now = dt.datetime.now(dt.UTC)
                    previous = (
                        partition_record(tx, chunk_start)
                        if since_last_refresh and len(hours) == 1
                        else None
                    )
                    since = previous.seen if previous is not None else None
                    if previous is not None and since is not None:
                        last_rollup = rollups_record(tx, chunk_start)
                        refreshed = _refresh_since(
                            tx, chunk_start, previous, since, last_rollup, now
                        )
                        if refreshed is None:
                            current = last_rollup is not None and last_rollup[1] == since
                            return WindowRefresh(_unchanged(previous, current, started), hours)
                        mode = "since_last_refresh"
                    else:
                        refreshed = _refresh_in_full(tx, chunk_start, chunk_end, now)
                    written, stats, seen, rolled_up = refreshed
                    record = record_partitions(tx, stats, run_id, seen, now)
                    newest = newest_complete_window(tx, chunk_start, chunk_end, now, newest)
                break
            except CommitConflict:
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))
        if not rolled_up:
            rollups = "deferred"
        for name, count in written.items():
            rows[name] = rows.get(name, 0) + count
        records.append(record)
    partitions = [r for frame in records for r in frame.iter_rows(named=True)]
    seconds = round(time.monotonic() - started, 3)
    if len(partitions) == 1:
        (only,) = partitions
        metadata: dict[str, dg.RawMetadataValue] = {
            "dagster/row_count": sum(rows.values()),
            **{f"rows_{name}": count for name, count in sorted(rows.items())},
            "cleaned_events": only["cleaned_events"],
            "late_events": only["late_events"],
            "amendments": only["materializations"] - 1,
        }
    else:
        # Dagster stamps a range run's one result on every partition of the range (no
        # per-partition results from one run yet): figures summed over the range would
        # read as each hour's. So no dagster/row_count here; the run's totals carry a
        # run_ prefix, and each hour's own figures are under per_partition.
        metadata = {
            **{f"run_rows_{name}": count for name, count in sorted(rows.items())},
            "run_cleaned_events": sum(p["cleaned_events"] for p in partitions),
            "run_late_events": sum(p["late_events"] for p in partitions),
            "run_amended_partitions": sum(p["materializations"] > 1 for p in partitions),
        }
    if newest is not None:
        # Event-time freshness (checks/freshness.py): the end of the newest complete
        # 1-minute window these hours hold.
        metadata["newest_window_end"] = newest.isoformat()
    metadata.update(
        {
            "partitions": len(partitions),
            "refresh": mode,
            "rollups": rollups,
            "seconds": seconds,
        }
    )
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
    return WindowRefresh(metadata, hours)


def rollups_due(hour: dt.datetime, last: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether an incremental refresh of partition ``hour`` recomputes its hourly
    roll-ups: never computed, computed ROLLUP_EVERY ago or more, or the hour has ended."""
    return last is None or now - last >= ROLLUP_EVERY or hour + HOUR <= now


Refreshed = tuple[dict[str, int], pl.DataFrame, Watermark, bool]
"""Rows written per table, the partitions' cleaned/late counts, the watermark of the
clean rows read, and whether the hourly roll-ups were computed."""


def _refresh_in_full(
    tx: WarehouseSession, start: dt.datetime, end: dt.datetime, now: dt.datetime
) -> Refreshed:
    (r_from, r_until), (a_from, a_until) = input_ranges(start, end)
    clean = load_clean(tx, r_from, r_until, a_from, a_until)
    computed = compute_partition_windows(clean.readings, clean.activity, start, end)
    written = replace_windows(tx, start, end, computed.tables)
    record_rollups(tx, hours_between(start, end), clean.seen, now)
    return written, computed.stats, clean.seen, True


def _refresh_since(
    tx: WarehouseSession,
    hour: dt.datetime,
    previous: PartitionRecord,
    since: Watermark,
    last_rollup: tuple[dt.datetime, Watermark] | None,
    now: dt.datetime,
) -> Refreshed | None:
    """Recompute the windows of the partition that rows ingested after ``since`` (its
    last refresh's watermark) fall in, the hourly roll-ups at most every ROLLUP_EVERY
    while the hour lasts (``last_rollup``: when they were last computed, and from which
    snapshot); None when there are no such rows."""
    (r_from, r_until), (a_from, a_until) = input_ranges(hour, hour + HOUR)
    new_readings, new_activity = clean_rows_since(tx, since, r_from, r_until, a_from, a_until)
    if new_readings.height == 0 and new_activity.height == 0:
        return None
    rollups = rollups_due(hour, last_rollup[0] if last_rollup else None, now)
    scope = increment_scope(new_readings, new_activity, hour, rollups=rollups)
    clean = load_clean_in(
        tx, scope.reading_ranges, scope.activity_ranges, scope.session_users, scope.session_range
    )
    increment = window_increment(clean.readings, clean.activity, scope)
    written = replace_window_ranges(tx, increment.tables, scope.ranges)
    written["user_sessions"] = replace_sessions_of(
        tx, hour, scope.session_users, increment.tables["user_sessions"]
    )
    if rollups:
        record_rollups(tx, [hour], clean.seen, now)
    stats = scope.stats.with_columns(
        pl.col("cleaned_events") + previous.cleaned_events,
        pl.col("late_events") + previous.late_events,
    )
    return written, stats, clean.seen, rollups


def _unchanged(
    previous: PartitionRecord, rollups_current: bool, started: float
) -> dict[str, dg.RawMetadataValue]:
    return {
        "dagster/row_count": 0,
        "partitions": 1,
        "cleaned_events": previous.cleaned_events,
        "late_events": previous.late_events,
        "amendments": previous.materializations - 1,
        "refresh": "unchanged",
        "rollups": "current" if rollups_current else "deferred",
        "seconds": round(time.monotonic() - started, 3),
    }
