"""The warehouse side of the windowed aggregates.

Reads the clean rows a range of hourly partitions needs, replaces that range's window
rows, and keeps per-partition bookkeeping (how often a partition was materialized, how
many of its events arrived late), all inside the caller's transaction, so readers see a
range either before or after a re-materialization, never half of it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
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
    WINDOW_ROLLUPS,
)
from resources.warehouse import WarehouseSession
from resources.watermark import Watermark, after_sql, clean_watermark

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
    seen: Watermark
    """The watermark of the clean rows this transaction can see."""


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
    return CleanRange(readings=readings, activity=activity, seen=clean_watermark(session))


@dataclass(frozen=True)
class PartitionRecord:
    materializations: int
    cleaned_events: int
    late_events: int
    seen_until: dt.datetime | None
    seen_snapshot: int | None
    """Every clean row up to this watermark is in the partition's window rows."""

    @property
    def seen(self) -> Watermark | None:
        if self.seen_until is None and self.seen_snapshot is None:
            return None
        return Watermark(self.seen_until, self.seen_snapshot)


def partition_record(session: WarehouseSession, hour: dt.datetime) -> PartitionRecord | None:
    """The bookkeeping of the partition starting at ``hour``; None before its first
    materialization."""
    rows = session.query(
        f"SELECT materializations, cleaned_events, late_events, seen_until, seen_snapshot "
        f"FROM {WINDOW_PARTITIONS} WHERE partition_start = ?",
        [hour],
    )
    return PartitionRecord(**rows.row(0, named=True)) if rows.height else None


def clean_rows_since(
    session: WarehouseSession,
    since: Watermark,
    readings_from: dt.datetime,
    readings_until: dt.datetime,
    activity_from: dt.datetime,
    activity_until: dt.datetime,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """ts and ingested_at of the clean readings, and ts, ingested_at and user_id of the
    user activity, ingested after the watermark ``since``, with event time in the given
    ranges (resources.watermark: by snapshot)."""
    after, params = after_sql(since)
    readings = session.frame(
        f"SELECT ts, ingested_at FROM {SENSOR_READINGS} WHERE ts >= ? AND ts < ? AND {after}",
        [readings_from, readings_until, *params],
    )
    activity = session.frame(
        f"SELECT ts, ingested_at, user_id FROM {USER_ACTIVITY} "
        f"WHERE ts >= ? AND ts < ? AND {after}",
        [activity_from, activity_until, *params],
    )
    return readings, activity


def _in_ranges(column: str, ranges: Sequence[tuple[dt.datetime, dt.datetime]]) -> str:
    if not ranges:
        return "false"
    return "(" + " OR ".join(f"({column} >= ? AND {column} < ?)" for _ in ranges) + ")"


def load_clean_in(
    session: WarehouseSession,
    reading_ranges: Sequence[tuple[dt.datetime, dt.datetime]],
    activity_ranges: Sequence[tuple[dt.datetime, dt.datetime]],
    session_users: Sequence[str],
    session_range: tuple[dt.datetime, dt.datetime],
) -> CleanRange:
    """Like :func:`load_clean`, for the readings in ``reading_ranges`` and the activity
    in ``activity_ranges`` plus that of ``session_users`` in ``session_range``; without
    event_id and ingested_at, which the window functions do not read (the event ids are
    most of the bytes of a busy hour: leaving them out halves the read)."""
    readings = session.frame(
        f"SELECT {', '.join(_WINDOW_INPUT[SENSOR_READINGS])} FROM {SENSOR_READINGS} "
        f"WHERE {_in_ranges('ts', reading_ranges)} ORDER BY ts, event_id",
        [t for r in reading_ranges for t in r],
    )
    users = pl.DataFrame({"user_id": list(session_users)}, schema={"user_id": pl.String})
    with session.with_frame("_session_users", users):
        activity = session.frame(
            f"SELECT {', '.join(_WINDOW_INPUT[USER_ACTIVITY])} FROM {USER_ACTIVITY} "
            f"WHERE {_in_ranges('ts', activity_ranges)} OR (ts >= ? AND ts < ? AND "
            "user_id IN (SELECT user_id FROM _session_users)) ORDER BY ts, event_id",
            [*(t for r in activity_ranges for t in r), *session_range],
        )
    return CleanRange(readings=readings, activity=activity, seen=clean_watermark(session))


_WINDOW_INPUT = {
    SENSOR_READINGS: [c for c in READING_COLUMNS if c not in ("event_id", "ingested_at")],
    USER_ACTIVITY: [c for c in ACTIVITY_COLUMNS if c not in ("event_id", "ingested_at")],
}


def rollups_record(
    session: WarehouseSession, hour: dt.datetime
) -> tuple[dt.datetime, Watermark] | None:
    """When the partition's hourly roll-ups were last computed, and the watermark they
    were computed at; None if never."""
    rows = session.query(
        f"SELECT refreshed_at, seen_until, seen_snapshot FROM {WINDOW_ROLLUPS} "
        "WHERE partition_start = ?",
        [hour],
    )
    if not rows.height:
        return None
    refreshed_at, until, snapshot = rows.row(0)
    return refreshed_at, Watermark(until, snapshot)


def record_rollups(
    session: WarehouseSession,
    hours: Sequence[dt.datetime],
    seen: Watermark,
    now: dt.datetime,
) -> None:
    """Note that the hourly roll-ups of ``hours`` were computed now."""
    for hour in hours:
        session.execute(
            f"MERGE INTO {WINDOW_ROLLUPS} AS r USING (SELECT ?::TIMESTAMPTZ AS partition_start, "
            "?::TIMESTAMPTZ AS seen_until, ?::BIGINT AS seen_snapshot, "
            "?::TIMESTAMPTZ AS refreshed_at) AS s "
            "ON r.partition_start = s.partition_start "
            "WHEN MATCHED THEN UPDATE SET seen_until = s.seen_until, "
            "seen_snapshot = s.seen_snapshot, refreshed_at = s.refreshed_at "
            "WHEN NOT MATCHED THEN INSERT (partition_start, seen_until, seen_snapshot, "
            "refreshed_at) VALUES (s.partition_start, s.seen_until, s.seen_snapshot, "
            "s.refreshed_at)",
            [hour, seen.until, seen.snapshot, now],
        )


def replace_window_ranges(
    session: WarehouseSession,
    frames: Mapping[str, pl.DataFrame],
    ranges: Mapping[str, Sequence[tuple[dt.datetime, dt.datetime]]],
) -> dict[str, int]:
    """For each table, delete the rows whose window starts in its ranges and insert
    ``frames[name]`` (which holds exactly the rows of those ranges)."""
    written: dict[str, int] = {}
    for name, table_ranges in ranges.items():
        table = WINDOW_TABLES[name]
        for start, end in table_ranges:
            session.execute(
                f"DELETE FROM {table} WHERE window_start >= ? AND window_start < ?", [start, end]
            )
        written[name] = session.append(table, frames[name]) if table_ranges else 0
    return written


def replace_sessions_of(
    session: WarehouseSession,
    hour: dt.datetime,
    users: Sequence[str],
    sessions: pl.DataFrame,
) -> int:
    """Replace the sessions starting in the hour of the given users by ``sessions``."""
    if not users:
        return 0
    with session.with_frame("_session_users", pl.DataFrame({"user_id": list(users)})):
        session.execute(
            f"DELETE FROM {AGG_USER_SESSIONS} WHERE session_start >= ? AND session_start < ? "
            "AND user_id IN (SELECT user_id FROM _session_users)",
            [hour, hour + dt.timedelta(hours=1)],
        )
    return session.append(AGG_USER_SESSIONS, sessions)


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
    seen: Watermark,
    now: dt.datetime,
) -> pl.DataFrame:
    """Count one more materialization for each partition in ``stats`` (columns
    partition_start, cleaned_events, late_events); returns the partitions' new records."""
    if stats.height == 0:
        return stats
    with session.with_frame("_partition_stats", stats):
        session.execute(
            f"MERGE INTO {WINDOW_PARTITIONS} AS w USING (SELECT partition_start, cleaned_events, "
            "late_events, ?::TIMESTAMPTZ AS seen_until, ?::BIGINT AS seen_snapshot, "
            "?::VARCHAR AS run_id, ?::TIMESTAMPTZ AS materialized_at FROM _partition_stats) "
            "AS s ON w.partition_start = s.partition_start "
            "WHEN MATCHED THEN UPDATE SET materializations = w.materializations + 1, "
            "cleaned_events = s.cleaned_events, late_events = s.late_events, "
            "seen_until = s.seen_until, seen_snapshot = s.seen_snapshot, run_id = s.run_id, "
            "materialized_at = s.materialized_at "
            "WHEN NOT MATCHED THEN INSERT (partition_start, materializations, cleaned_events, "
            "late_events, seen_until, seen_snapshot, run_id, materialized_at) VALUES "
            "(s.partition_start, 1, s.cleaned_events, s.late_events, s.seen_until, "
            "s.seen_snapshot, s.run_id, s.materialized_at)",
            [seen.until, seen.snapshot, run_id, now],
        )
        return session.frame(
            f"SELECT w.* FROM {WINDOW_PARTITIONS} AS w JOIN _partition_stats AS s "
            "USING (partition_start) ORDER BY partition_start"
        )


def newest_complete_window(
    tx: WarehouseSession,
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    newest: dt.datetime | None,
) -> dt.datetime | None:
    """The later of ``newest`` and the end of the newest 1-minute window (sensor or user)
    starting in [start, end) that has ended by ``now``."""
    found = tx.scalar(
        "SELECT greatest("
        "(SELECT max(window_end) FROM agg.sensor_1m"
        " WHERE window_start >= ? AND window_start < ? AND window_end <= ?),"
        "(SELECT max(window_end) FROM agg.user_1m"
        " WHERE window_start >= ? AND window_start < ? AND window_end <= ?))",
        [start, end, now] * 2,
    )
    if found is None:
        return newest
    window_end: dt.datetime = found
    return window_end if newest is None else max(newest, window_end)
