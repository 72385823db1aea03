"""The window rows of one hourly partition that new clean rows change, and only those.

A live hour is refreshed after every ingest batch. Recomputing the whole hour each time
costs more the later it is in the hour (half an hour at 2,000 events/s is 3.6 million
readings); the rows a batch changes are few:

- ``sensor_1m`` / ``user_1m``: the minutes the new rows fall in;
- ``sensor_5m_sliding``: the windows holding a new reading, i.e. those starting in the
  reading's minute or the 4 before it;
- ``user_sessions``: the sessions of the users with new events (their events in the hour
  and the half hour before decide them);
- ``sensor_1h`` / ``user_1h``: the hour, when it has new rows (p95 and stddev need all of
  the hour's values, so these are recomputed from the whole hour). That is most of the
  cost of an increment late in a busy hour, so the caller may leave them for a later
  increment (``rollups=False``).

:func:`increment_scope` says which rows to read for that, :func:`window_increment`
computes the rows from them.

Each changed window is computed by the same functions, from the same rows in the same
order, as a full refresh of the partition computes it, so the increment leaves exactly
the rows a full refresh would (bit for bit; see ``windows._ordered_sum``). Pure polars.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from astra_pipeline.transforms.partition_windows import contiguous_ranges, partition_stats
from astra_pipeline.transforms.windows import (
    HOUR,
    MINUTE,
    SESSION_GAP,
    SLIDING_LOOKAHEAD,
    sensor_1h,
    sensor_1m,
    sensor_5m_sliding,
    user_1h,
    user_1m,
    user_sessions,
    utc_datetime,
)

Range = tuple[dt.datetime, dt.datetime]


@dataclass(frozen=True)
class IncrementScope:
    """Which windows of an hourly partition an increment recomputes, and the clean rows
    that takes."""

    hour: dt.datetime
    ranges: dict[str, list[Range]]
    """Short table name -> the [start, end) ranges of window_start to recompute (every
    table but user_sessions; empty: the table is left as it is)."""
    session_users: list[str]
    """The users whose sessions starting in the hour are recomputed."""
    reading_ranges: list[Range]
    """Event-time ranges of the readings the recomputation needs (all of them)."""
    activity_ranges: list[Range]
    """Event-time ranges of the user activity it needs, besides the session users'."""
    session_range: Range
    """The event-time range of the session users' activity it needs."""
    stats: pl.DataFrame
    """The new rows' share of the hour's cleaned_events and late_events (one row)."""

    @property
    def empty(self) -> bool:
        return not self.session_users and not any(self.ranges.values())


@dataclass(frozen=True)
class WindowIncrement:
    scope: IncrementScope
    tables: dict[str, pl.DataFrame]
    """Short table name -> the recomputed rows of the scope's ranges (of its session users
    for user_sessions)."""


def minute_runs(
    ts: pl.Series, lo: dt.datetime, hi: dt.datetime, reach_back: int = 0
) -> list[Range]:
    """The minutes ``m - reach_back .. m`` for each minute ``m`` that ``ts`` falls in,
    kept inside ``[lo, hi)``, as sorted, disjoint ``[start, end)`` runs."""
    minutes: set[dt.datetime] = set()
    for minute in ts.drop_nulls().dt.truncate("1m").unique().to_list():
        for back in range(reach_back + 1):
            start = minute.astimezone(dt.UTC) - back * MINUTE
            if lo <= start < hi:
                minutes.add(start)
    return [(first, last + MINUTE) for first, last in contiguous_ranges(list(minutes), MINUTE)]


def _within(frame: pl.DataFrame, ranges: list[Range]) -> pl.DataFrame:
    if not ranges:
        return frame.clear()
    ts = pl.col("ts")
    return frame.filter(pl.any_horizontal([(ts >= lo) & (ts < hi) for lo, hi in ranges]))


def _merged(ranges: list[Range]) -> list[Range]:
    merged: list[Range] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def increment_scope(
    new_readings: pl.DataFrame,
    new_activity: pl.DataFrame,
    hour: dt.datetime,
    rollups: bool = True,
) -> IncrementScope:
    """What partition ``hour`` recomputes when ``new_readings`` (``ts``,
    ``ingested_at``) and ``new_activity`` (``ts``, ``ingested_at``, ``user_id``) have
    arrived. With ``rollups=False`` the hourly roll-ups are left as they are; with
    ``rollups=True`` they are recomputed from the whole hour (also when the new rows are
    elsewhere: earlier increments may have left them)."""
    lo = utc_datetime(hour, "hour")
    hi = lo + HOUR
    ts = pl.col("ts")
    own_new_readings = new_readings.filter(ts >= lo, ts < hi)
    own_new_activity = new_activity.filter(ts >= lo, ts < hi)
    sensor_minutes = minute_runs(own_new_readings["ts"], lo, hi)
    sliding_starts = minute_runs(
        new_readings.filter(ts >= lo, ts < hi + SLIDING_LOOKAHEAD)["ts"],
        lo,
        hi,
        reach_back=int(SLIDING_LOOKAHEAD / MINUTE),
    )
    user_minutes = minute_runs(own_new_activity["ts"], lo, hi)
    # Due roll-ups cover every row since they were last computed, not only the new ones.
    sensor_hour = [(lo, hi)] if rollups else []
    user_hour = [(lo, hi)] if rollups else []
    sliding_inputs = [(start, end + SLIDING_LOOKAHEAD) for start, end in sliding_starts]
    return IncrementScope(
        hour=lo,
        ranges={
            "sensor_1m": sensor_minutes,
            "sensor_1h": sensor_hour,
            "sensor_5m_sliding": sliding_starts,
            "user_1m": user_minutes,
            "user_1h": user_hour,
        },
        session_users=(
            new_activity.filter(ts >= lo - SESSION_GAP, ts < hi)["user_id"]
            .unique()
            .sort()
            .to_list()
        ),
        reading_ranges=_merged(sensor_minutes + sliding_inputs + sensor_hour),
        activity_ranges=_merged(user_minutes + user_hour),
        session_range=(lo - SESSION_GAP, hi),
        stats=partition_stats(own_new_readings, own_new_activity, [lo]),
    )


def window_increment(
    readings: pl.DataFrame, activity: pl.DataFrame, scope: IncrementScope
) -> WindowIncrement:
    """The rows of the scope's windows, from ``readings`` and ``activity`` holding (at
    least) every clean row of the ranges the scope names, in the window store's
    canonical order."""
    lo = scope.hour
    hi = lo + HOUR
    ts = pl.col("ts")
    own_readings = readings.filter(ts >= lo, ts < hi)
    own_activity = activity.filter(ts >= lo, ts < hi)
    ranges = scope.ranges
    sliding = [
        sensor_5m_sliding(readings, start, end) for start, end in ranges["sensor_5m_sliding"]
    ]
    session_lo, session_hi = scope.session_range
    tables = {
        "sensor_1m": sensor_1m(_within(own_readings, ranges["sensor_1m"])),
        "sensor_1h": sensor_1h(_within(own_readings, ranges["sensor_1h"])),
        "sensor_5m_sliding": (
            pl.concat(sliding) if sliding else sensor_5m_sliding(readings.clear(), lo, hi)
        ),
        "user_1m": user_1m(_within(own_activity, ranges["user_1m"])),
        "user_1h": user_1h(_within(own_activity, ranges["user_1h"])),
        "user_sessions": user_sessions(
            activity.filter(
                pl.col("user_id").is_in(scope.session_users), ts >= session_lo, ts < session_hi
            ),
            lo,
            hi,
        ),
    }
    return WindowIncrement(scope=scope, tables=tables)
