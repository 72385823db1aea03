"""All window tables of a range of hourly partitions, from the clean rows they need.

One function serves both a live refresh of one or two hours and a backfill of many: the
result for a range is, table by table, the concatenation of the results for its hours
(tumbling windows never cross an hour; sliding windows and sessions belong to the hour
their start falls in; sessions are clipped per hour). Pure polars.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from astra_pipeline.transforms.windows import (
    HOUR,
    SESSION_GAP,
    SLIDING_LOOKAHEAD,
    USER_SESSIONS_SCHEMA,
    sensor_1h,
    sensor_1m,
    sensor_5m_sliding,
    user_1h,
    user_1m,
    user_sessions,
    utc_datetime,
)

LATE_AFTER = dt.timedelta(minutes=1)
"""An event counts as late when it was ingested more than this after its event time:
after its 1-minute window had closed."""

PARTITION_STATS_SCHEMA = pl.Schema(
    {
        "partition_start": pl.Datetime("us", "UTC"),
        "cleaned_events": pl.Int64(),
        "late_events": pl.Int64(),
    }
)


@dataclass(frozen=True)
class PartitionWindows:
    tables: dict[str, pl.DataFrame]
    """Short table name (sensor_1m, ...) -> rows of every hour of the range."""
    stats: pl.DataFrame
    """One row per hour of the range: partition_start, cleaned_events, late_events."""


def input_ranges(
    start: dt.datetime, end: dt.datetime
) -> tuple[tuple[dt.datetime, dt.datetime], tuple[dt.datetime, dt.datetime]]:
    """Event-time ranges of readings and of user activity that hours [start, end) need."""
    return (start, end + SLIDING_LOOKAHEAD), (start - SESSION_GAP, end)


def hours_between(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    lo, hi = utc_datetime(start, "start"), utc_datetime(end, "end")
    if lo.minute or lo.second or lo.microsecond or hi.minute or hi.second or hi.microsecond:
        raise ValueError(f"partition bounds must be whole hours: {lo} .. {hi}")
    return [lo + i * HOUR for i in range(int((hi - lo) / HOUR))]


def contiguous_ranges(
    hours: list[dt.datetime], step: dt.timedelta = HOUR
) -> list[tuple[dt.datetime, dt.datetime]]:
    """Hours (or other points ``step`` apart; any order, repeats allowed) as (first,
    last) of each run of consecutive ones, in order."""
    ranges: list[tuple[dt.datetime, dt.datetime]] = []
    for hour in sorted(set(hours)):
        if ranges and hour - ranges[-1][1] == step:
            ranges[-1] = (ranges[-1][0], hour)
        else:
            ranges.append((hour, hour))
    return ranges


def compute_partition_windows(
    readings: pl.DataFrame, activity: pl.DataFrame, start: dt.datetime, end: dt.datetime
) -> PartitionWindows:
    """Every window table for the hourly partitions in ``[start, end)``.

    ``readings`` and ``activity`` hold clean rows (with ``ingested_at``) covering the
    ranges :func:`input_ranges` gives; rows outside them are ignored.
    """
    hours = hours_between(start, end)
    lo, hi = hours[0], hours[-1] + HOUR
    ts = pl.col("ts")
    own_readings = readings.filter(ts >= lo, ts < hi)
    own_activity = activity.filter(ts >= lo, ts < hi)
    sessions = [
        user_sessions(
            activity.filter(ts >= hour - SESSION_GAP, ts < hour + HOUR), hour, hour + HOUR
        )
        for hour in hours
    ]
    tables = {
        "sensor_1m": sensor_1m(own_readings),
        "sensor_1h": sensor_1h(own_readings),
        "sensor_5m_sliding": sensor_5m_sliding(readings, lo, hi),
        "user_1m": user_1m(own_activity),
        "user_1h": user_1h(own_activity),
        "user_sessions": pl.concat(sessions) if sessions else USER_SESSIONS_SCHEMA.to_frame(),
    }
    return PartitionWindows(tables=tables, stats=partition_stats(own_readings, own_activity, hours))


def partition_stats(
    readings: pl.DataFrame, activity: pl.DataFrame, hours: list[dt.datetime]
) -> pl.DataFrame:
    """cleaned_events and late_events of each of ``hours`` (a row for each, zeros when it
    has no rows), counted from rows with ``ts`` and ``ingested_at``."""
    late = (pl.col("ingested_at") - pl.col("ts")) > LATE_AFTER
    events = pl.concat([readings.select("ts", "ingested_at"), activity.select("ts", "ingested_at")])
    counted = (
        events.with_columns(pl.col("ts").dt.truncate("1h").alias("partition_start"))
        .group_by("partition_start")
        .agg(
            pl.len().cast(pl.Int64).alias("cleaned_events"),
            late.sum().cast(pl.Int64).alias("late_events"),
        )
    )
    every_hour = pl.DataFrame(
        {"partition_start": pl.Series(hours, dtype=PARTITION_STATS_SCHEMA["partition_start"])}
    )
    return (
        every_hour.join(counted, on="partition_start", how="left")
        .with_columns(pl.col("cleaned_events", "late_events").fill_null(0))
        .select(list(PARTITION_STATS_SCHEMA))
        .sort("partition_start")
    )
