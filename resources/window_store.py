"""The warehouse side of the windowed aggregates.

Reads the clean rows a range of hourly partitions needs, replaces that range's window
rows, and keeps per-partition bookkeeping (how often a partition was materialized, how
many of its events arrived late), all inside the caller's transaction, so readers see a
range either before or after a re-materialization, never half of it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from resources.tables import (
    AGG_SENSOR_1H,
    AGG_SENSOR_1M,
    AGG_SENSOR_5M_SLIDING,
    AGG_USER_1H,
    AGG_USER_1M,
    AGG_USER_SESSIONS,
    SENSOR_READINGS,
    USER_ACTIVITY,
    WINDOW_PARTITIONS,
)
from resources.warehouse import WarehouseSession

WINDOW_TABLES: dict[str, str] = {
    "sensor_1m": AGG_SENSOR_1M,
    "sensor_1h": AGG_SENSOR_1H,
    "sensor_5m_sliding": AGG_SENSOR_5M_SLIDING,
    "user_1m": AGG_USER_1M,
    "user_1h": AGG_USER_1H,
    "user_sessions": AGG_USER_SESSIONS,
}
"""Short name (as the window functions call their output) -> table."""

PARTITION_COLUMN: dict[str, str] = {AGG_USER_SESSIONS: "session_start"}
"""The column whose hour places a row in its partition; window_start where not listed."""

READING_COLUMNS = (
    "event_id",
    "device_id",
    "ts",
    "temperature_c",
    "humidity_pct",
    "battery_pct",
    "status",
    "ingested_at",
)
ACTIVITY_COLUMNS = ("event_id", "user_id", "session_id", "ts", "action", "revenue", "ingested_at")


@dataclass(frozen=True)
class CleanRange:
    readings: pl.DataFrame
    activity: pl.DataFrame
    seen_until: dt.datetime | None
    """The latest ingestion time among the clean rows this transaction can see."""


def load_clean(
    session: WarehouseSession,
    readings_from: dt.datetime,
    readings_until: dt.datetime,
    activity_from: dt.datetime,
    activity_until: dt.datetime,
) -> CleanRange:
    """Clean rows with event time in the given half-open ranges, as the window functions
    take them, in one canonical order (so floating sums come out bit-identical however
    the rows were ingested)."""
    readings = session.frame(
        f"SELECT {', '.join(READING_COLUMNS)} FROM {SENSOR_READINGS} WHERE ts >= ? AND ts < ? "
        "ORDER BY ts, event_id",
        [readings_from, readings_until],
    )
    activity = session.frame(
        f"SELECT {', '.join(ACTIVITY_COLUMNS)} FROM {USER_ACTIVITY} WHERE ts >= ? AND ts < ? "
        "ORDER BY ts, event_id",
        [activity_from, activity_until],
    )
    seen_until = session.scalar(
        f"SELECT greatest((SELECT max(ingested_at) FROM {SENSOR_READINGS}), "
        f"(SELECT max(ingested_at) FROM {USER_ACTIVITY}))"
    )
    return CleanRange(readings=readings, activity=activity, seen_until=seen_until)


def replace_windows(
    session: WarehouseSession,
    start: dt.datetime,
    end: dt.datetime,
    frames: Mapping[str, pl.DataFrame],
) -> dict[str, int]:
    """Delete the range's rows of every window table and insert the new ones."""
    written: dict[str, int] = {}
    for name, frame in frames.items():
        table = WINDOW_TABLES[name]
        column = PARTITION_COLUMN.get(table, "window_start")
        session.execute(f"DELETE FROM {table} WHERE {column} >= ? AND {column} < ?", [start, end])
        written[name] = session.append(table, frame)
    return written


def record_partitions(
    session: WarehouseSession,
    stats: pl.DataFrame,
    run_id: str | None,
    seen_until: dt.datetime | None,
    now: dt.datetime,
) -> pl.DataFrame:
    """Count one more materialization for each partition in ``stats`` (columns
    partition_start, cleaned_events, late_events); returns the partitions' new records."""
    if stats.height == 0:
        return stats
    with session.with_frame("_partition_stats", stats):
        session.execute(
            f"INSERT INTO {WINDOW_PARTITIONS} "
            "SELECT s.partition_start, coalesce(w.materializations, 0) + 1, s.cleaned_events, "
            "s.late_events, ?, ?, ? FROM _partition_stats AS s "
            f"LEFT JOIN {WINDOW_PARTITIONS} AS w USING (partition_start) "
            "ON CONFLICT (partition_start) DO UPDATE SET "
            "materializations = excluded.materializations, "
            "cleaned_events = excluded.cleaned_events, late_events = excluded.late_events, "
            "seen_until = excluded.seen_until, run_id = excluded.run_id, "
            "materialized_at = excluded.materialized_at",
            [seen_until, run_id, now],
        )
        return session.frame(
            f"SELECT w.* FROM {WINDOW_PARTITIONS} AS w JOIN _partition_stats AS s "
            "USING (partition_start) ORDER BY partition_start"
        )
