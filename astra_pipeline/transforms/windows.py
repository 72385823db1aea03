"""Event-time windows over the clean tables: tumbling, hopping and session windows.

Pure polars: no I/O, no Dagster, no Kafka, no DuckDB. The same functions serve a live
micro-batch and a backfill: they see only the rows they are given, so a partition's
tables are a function of the clean rows in (a slightly widened) partition and nothing
else. That is what makes re-materializing a partition idempotent.

Conventions shared by every function here:

- Time is UTC, microseconds. A time-zone-aware timestamp column in another zone (DuckDB
  exports ``Etc/UTC``) is converted; a naive one is rejected.
- A window ``[start, end)`` contains the events with ``start <= ts < end``. Window starts
  are aligned to multiples of the window's length (tumbling) or step (hopping) counted
  from the Unix epoch, so 1-minute windows start on the minute and hourly ones on the
  hour.
- Only windows that contain at least one event produce a row: a minute without events
  has no row (not a row of zeros).
- Rows come back sorted by key, then window start, so two computations of the same
  partition compare equal row for row.
- ``p95`` is the 0.95 quantile with linear interpolation between closest ranks
  (Hyndman & Fan type 7, numpy's default, ``statistics.quantiles(method="inclusive")``):
  with the window's n values sorted as x[0] <= ... <= x[n-1], h = 0.95 * (n - 1),
  p95 = x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)]); for n = 1 it is
  the value itself.
- ``stddev`` is the sample standard deviation (n - 1 in the denominator); null for a
  window with a single value.
- Floating sums depend on the order in which values are added, in the last bits. Every
  sum here adds a window's values in row order (see :func:`_ordered_sum`), so callers
  that need bit-identical floats across two computations feed the rows in one
  canonical order (the window store reads them ordered by ts, event_id). The functions
  do not sort their input: that would cost more than the aggregation itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from astra_pipeline.events import SENSOR_STATUSES

UTC = "UTC"
TIMESTAMP = pl.Datetime("us", UTC)

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
SLIDING_SIZE = dt.timedelta(minutes=5)
SLIDING_STEP = dt.timedelta(minutes=1)
SLIDING_LOOKAHEAD = SLIDING_SIZE - SLIDING_STEP
"""The last sliding window of a partition starts one step before the partition's end and
reaches this far past it: computing a partition needs readings up to end + 4 minutes."""
SESSION_GAP = dt.timedelta(minutes=30)
P95 = 0.95

SENSOR_METRICS = ("temperature_c", "humidity_pct")
SENSOR_STATS = ("mean", "min", "max", "stddev", "p95")

SENSOR_WINDOW_SCHEMA = pl.Schema(
    {
        "device_id": pl.String(),
        "window_start": TIMESTAMP,
        "window_end": TIMESTAMP,
        "reading_count": pl.Int64(),
        **{f"{m}_{s}": pl.Float64() for m in SENSOR_METRICS for s in SENSOR_STATS},
        "battery_min": pl.Float64(),
        **{f"count_{status}": pl.Int64() for status in SENSOR_STATUSES},
    }
)
"""Columns of ``agg.sensor_1m`` and ``agg.sensor_1h``."""

SENSOR_SLIDING_SCHEMA = pl.Schema(
    {
        "device_id": pl.String(),
        "window_start": TIMESTAMP,
        "window_end": TIMESTAMP,
        "reading_count": pl.Int64(),
        **{f"{m}_{s}": pl.Float64() for m in SENSOR_METRICS for s in ("mean", "max")},
    }
)
"""Columns of ``agg.sensor_5m_sliding``."""

USER_WINDOW_SCHEMA = pl.Schema(
    {
        "user_id": pl.String(),
        "window_start": TIMESTAMP,
        "window_end": TIMESTAMP,
        "event_count": pl.Int64(),
        "page_views": pl.Int64(),
        "carts": pl.Int64(),
        "purchases": pl.Int64(),
        "revenue": pl.Float64(),
    }
)
"""Columns of ``agg.user_1m`` and ``agg.user_1h``."""

USER_SESSIONS_SCHEMA = pl.Schema(
    {
        "user_id": pl.String(),
        "session_start": TIMESTAMP,
        "session_end": TIMESTAMP,
        "duration_s": pl.Float64(),
        "event_count": pl.Int64(),
        "purchase_count": pl.Int64(),
        "revenue": pl.Float64(),
        "continues_previous": pl.Boolean(),
    }
)
"""Columns of ``agg.user_sessions``."""


# --- helpers --------------------------------------------------------------------------


def utc_datetime(value: dt.datetime, name: str = "value") -> dt.datetime:
    """``value`` in UTC; a naive datetime is an error, not a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be time-zone aware, got naive {value!r}")
    return value.astimezone(dt.UTC)


def _utc_column(frame: pl.DataFrame, time_col: str) -> pl.DataFrame:
    """``frame`` with ``time_col`` as Datetime("us", "UTC") (a no-op when it already is)."""
    dtype = frame.schema[time_col]
    if not isinstance(dtype, pl.Datetime):
        raise TypeError(f"column {time_col!r} must be a Datetime, got {dtype}")
    if dtype.time_zone is None:
        raise ValueError(f"column {time_col!r} must be time-zone aware (TIMESTAMPTZ)")
    if dtype == TIMESTAMP:
        return frame
    return frame.with_columns(pl.col(time_col).dt.convert_time_zone(UTC).dt.cast_time_unit("us"))


def _positive(value: dt.timedelta, name: str) -> None:
    if value <= dt.timedelta(0):
        raise ValueError(f"{name} must be positive, got {value}")


def _conform(frame: pl.DataFrame, schema: pl.Schema, sort_by: Sequence[str]) -> pl.DataFrame:
    """Exactly the table's columns, in its order and types, sorted deterministically."""
    return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items()).sort(sort_by)


# --- generic building blocks ----------------------------------------------------------


def tumbling(
    frame: pl.DataFrame,
    *,
    key: str,
    every: dt.timedelta,
    aggs: Sequence[pl.Expr],
    time_col: str = "ts",
) -> pl.DataFrame:
    """Tumbling windows of length ``every`` per ``key``.

    Returns ``key, window_start, window_end`` and one column per aggregation, one row per
    (key, window) that holds at least one event, sorted by key and window_start. Every
    event falls in exactly one window: the one starting at ``ts`` truncated to ``every``.
    """
    _positive(every, "every")
    frame = _utc_column(frame, time_col)
    every_us = every // _MICROSECOND
    if every_us * _MICROSECOND != every:
        raise ValueError(f"every must be a whole number of microseconds, got {every}")
    index = pl.col(time_col).dt.epoch("us") // every_us
    packed = _packed_key_and_window(frame, key, index)
    if packed is None:
        rows = frame.group_by(key, index.alias("_window")).agg(aggs)
    else:
        rows = (
            frame.with_columns(packed.alias("_group"))
            .group_by("_group")
            .agg(pl.col(key).first(), index.first().alias("_window"), *aggs)
            .drop("_group")
        )
    start = (pl.col("_window") * every_us).cast(TIMESTAMP)
    return (
        rows.with_columns(start.alias("window_start"), (start + every).alias("window_end"))
        .select(key, "window_start", "window_end", pl.exclude(key, "window_start", "window_end"))
        .drop("_window")
        .sort(key, "window_start")
    )


_MICROSECOND = dt.timedelta(microseconds=1)
_CODE_SHIFT = 2**32


def _packed_key_and_window(frame: pl.DataFrame, key: str, index: pl.Expr) -> pl.Expr | None:
    """One Int64 packing (the key's category code, the window index), or None when the
    key is not a string or the frame's windows span 2**32 indexes or more.

    Why: polars groups on one integer column about twice as fast as on (string,
    datetime), and grouping is a large part of ``sensor_1m``'s cost. Casting the key to
    Categorical hashes each string once (the category codes are process-wide).
    """
    if frame.schema[key] != pl.String:
        return None
    lo, hi = frame.select(index.min().alias("lo"), index.max().alias("hi")).row(0)
    if lo is None or hi - lo >= _CODE_SHIFT:
        return None
    code = pl.col(key).cast(pl.Categorical).to_physical().cast(pl.Int64)
    packed: pl.Expr = code * _CODE_SHIFT + (index - lo)
    return packed


def hopping(
    frame: pl.DataFrame,
    *,
    key: str,
    size: dt.timedelta,
    step: dt.timedelta,
    aggs: Sequence[pl.Expr],
    window_start_from: dt.datetime,
    window_start_to: dt.datetime,
    time_col: str = "ts",
) -> pl.DataFrame:
    """Hopping (sliding) windows ``[s, s + size)`` starting every ``step`` per ``key``.

    Window starts are the multiples of ``step`` since the epoch; only windows whose start
    lies in ``[window_start_from, window_start_to)`` are returned. An event belongs to
    every window with ``s <= ts < s + size`` (``ceil(size / step)`` of them at most), so
    the rows needed are those with ``window_start_from <= ts < window_start_to - step +
    size``; rows outside that range are ignored. Columns and order as :func:`tumbling`.
    """
    _positive(size, "size")
    _positive(step, "step")
    lo = utc_datetime(window_start_from, "window_start_from")
    hi = utc_datetime(window_start_to, "window_start_to")
    frame = _utc_column(frame, time_col)
    ts = pl.col(time_col)
    start = pl.col("window_start")
    latest = ts.dt.truncate(step)
    relevant = frame.filter(ts >= lo, ts < hi + size)
    # One copy of the rows per window an event can fall in; the k-th copy is assigned to
    # the window starting k steps before the event's own step. (One concat of narrow
    # copies is far cheaper than building a list column and exploding it.)
    copies = [
        relevant.with_columns((latest - k * step).alias("window_start"))
        for k in range(-(-size // step))
    ]
    return (
        pl.concat(copies)
        .filter(start > ts - size, start >= lo, start < hi)
        .group_by(key, "window_start")
        .agg(aggs)
        .with_columns((start + size).alias("window_end"))
        .select(key, "window_start", "window_end", pl.exclude(key, "window_start", "window_end"))
        .sort(key, "window_start")
    )


def sessions(
    frame: pl.DataFrame,
    *,
    key: str,
    gap: dt.timedelta,
    aggs: Sequence[pl.Expr],
    clip_start: dt.datetime,
    clip_end: dt.datetime,
    time_col: str = "ts",
) -> pl.DataFrame:
    """Session windows per ``key``, clipped to ``[clip_start, clip_end)``.

    A session is a maximal run of one key's events inside the clip range in which each
    event follows the previous one by strictly less than ``gap``; a pause of exactly
    ``gap`` (or more) starts a new session. Events outside the clip range are ignored, so
    a session that crosses a clip boundary is cut there. Returns ``key, session_start``
    (first event), ``session_end`` (last event) and one column per aggregation, sorted by
    key and session_start. Events with equal timestamps are always in one session.
    """
    _positive(gap, "gap")
    lo = utc_datetime(clip_start, "clip_start")
    hi = utc_datetime(clip_end, "clip_end")
    frame = _utc_column(frame, time_col)
    ts = pl.col(time_col)
    new_session = ((pl.col(key) != pl.col(key).shift(1)) | (ts - ts.shift(1) >= gap)).fill_null(
        True
    )
    return (
        frame.filter(ts >= lo, ts < hi)
        .sort(key, time_col)
        .with_columns(new_session.cum_sum().alias("_session"))
        .group_by(key, "_session")
        .agg(ts.min().alias("session_start"), ts.max().alias("session_end"), *aggs)
        .drop("_session")
        .sort(key, "session_start")
    )


# --- the agg tables -------------------------------------------------------------------


def _ordered_sum(column: str) -> pl.Expr:
    """The sum of a group's values added in row order.

    A plain ``sum()`` is not: when every aggregation of a group-by is a plain sum, count
    or maximum, polars may add per-thread partial sums together, and it chooses to from
    a random sample of the keys, so the same input gave sliding means that differed in
    the last bit from one run to the next. Gathering the group's values (polars keeps
    row order within a group) and summing the list costs about the same.
    """
    return pl.col(column).implode().list.sum()


def _seconds(microseconds: pl.Expr) -> pl.Expr:
    """Whole microseconds as seconds, with the same bits however long the column is.
    (Polars divides a column of ten or more values by a constant as a multiplication by
    its reciprocal, one of fewer exactly: ``x / 1e6`` gave a session's duration_s two
    different last bits in a full refresh and in an incremental one.)"""
    whole = (microseconds // 1_000_000).cast(pl.Float64)
    return whole + (microseconds % 1_000_000).cast(pl.Float64) * 1e-6


def _count(condition: pl.Expr, name: str) -> pl.Expr:
    return condition.sum().cast(pl.Int64).alias(name)


def _sensor_aggs() -> list[pl.Expr]:
    aggs = [pl.len().cast(pl.Int64).alias("reading_count")]
    for metric in SENSOR_METRICS:
        value = pl.col(metric)
        aggs += [
            value.mean().alias(f"{metric}_mean"),
            value.min().alias(f"{metric}_min"),
            value.max().alias(f"{metric}_max"),
            value.std(ddof=1).alias(f"{metric}_stddev"),
            value.quantile(P95, interpolation="linear").alias(f"{metric}_p95"),
        ]
    aggs.append(pl.col("battery_pct").min().alias("battery_min"))
    aggs += [_count(pl.col("status") == s, f"count_{s}") for s in SENSOR_STATUSES]
    return aggs


def _user_aggs() -> list[pl.Expr]:
    action = pl.col("action")
    return [
        pl.len().cast(pl.Int64).alias("event_count"),
        _count(action == "page_view", "page_views"),
        _count(action == "add_to_cart", "carts"),
        _count(action == "purchase", "purchases"),
        _ordered_sum("revenue").alias("revenue"),
    ]


def _sensor_windows(readings: pl.DataFrame, every: dt.timedelta) -> pl.DataFrame:
    rows = tumbling(readings, key="device_id", every=every, aggs=_sensor_aggs())
    return _conform(rows, SENSOR_WINDOW_SCHEMA, ("device_id", "window_start"))


def _user_windows(activity: pl.DataFrame, every: dt.timedelta) -> pl.DataFrame:
    rows = tumbling(activity, key="user_id", every=every, aggs=_user_aggs())
    return _conform(rows, USER_WINDOW_SCHEMA, ("user_id", "window_start"))


def sensor_1m(readings: pl.DataFrame) -> pl.DataFrame:
    """``agg.sensor_1m``: per device and 1-minute tumbling window.

    ``readings`` are the ``clean.sensor_readings`` rows of one hourly partition
    ``[hour, hour + 1h)``; every row lands in the window of its own minute, so the output
    has exactly the partition's rows. Columns: :data:`SENSOR_WINDOW_SCHEMA` —
    reading_count; for temperature_c and humidity_pct the mean, min, max, stddev (sample,
    null for one reading) and p95 (linear interpolation, see the module docstring);
    battery_min; count_ok, count_degraded, count_fault.
    """
    return _sensor_windows(readings, MINUTE)


def sensor_1h(readings: pl.DataFrame) -> pl.DataFrame:
    """``agg.sensor_1h``: as :func:`sensor_1m` per device and hour, computed from the
    readings themselves (p95 and stddev do not roll up from the 1-minute rows)."""
    return _sensor_windows(readings, HOUR)


def sensor_5m_sliding(
    readings: pl.DataFrame, partition_start: dt.datetime, partition_end: dt.datetime
) -> pl.DataFrame:
    """``agg.sensor_5m_sliding``: per device, 5-minute windows starting every minute.

    A window belongs to the partition its start falls in: the rows for ``[partition_start,
    partition_end)`` are the windows starting at partition_start, +1 min, ..., and the
    last one (starting at partition_end - 1 min) reaches 4 minutes into the next hour. So
    ``readings`` must hold ``[partition_start, partition_end + 4 min)``; readings outside
    that range are ignored. Columns: :data:`SENSOR_SLIDING_SCHEMA` — reading_count and
    the mean and max of temperature_c and humidity_pct.
    """
    lo = utc_datetime(partition_start, "partition_start")
    hi = utc_datetime(partition_end, "partition_end")
    readings = _utc_column(readings, "ts")
    ts = pl.col("ts")
    # Count, sum and max roll up exactly, so the 5-minute windows are slid over 1-minute
    # partials (one row per device and minute) instead of five copies of every reading.
    partial_aggs = [pl.len().alias("n")]
    rollup_aggs = [pl.col("n").sum().alias("reading_count")]
    for metric in SENSOR_METRICS:
        partial_aggs += [
            _ordered_sum(metric).alias(f"{metric}_sum"),
            pl.col(metric).max().alias(f"{metric}_max"),
        ]
        rollup_aggs += [
            _ordered_sum(f"{metric}_sum").alias(f"{metric}_sum"),
            pl.col(f"{metric}_max").max().alias(f"{metric}_max"),
        ]
    minutes = (
        tumbling(
            readings.filter(ts >= lo, ts < hi + SLIDING_LOOKAHEAD),
            key="device_id",
            every=SLIDING_STEP,
            aggs=partial_aggs,
        )
        .drop("window_end")
        .rename({"window_start": "minute"})
    )
    rows = hopping(
        minutes,
        key="device_id",
        size=SLIDING_SIZE,
        step=SLIDING_STEP,
        aggs=rollup_aggs,
        window_start_from=lo,
        window_start_to=hi,
        time_col="minute",
    ).with_columns(
        (pl.col(f"{metric}_sum") / pl.col("reading_count")).alias(f"{metric}_mean")
        for metric in SENSOR_METRICS
    )
    return _conform(rows, SENSOR_SLIDING_SCHEMA, ("device_id", "window_start"))


def user_1m(activity: pl.DataFrame) -> pl.DataFrame:
    """``agg.user_1m``: per user and minute, from the ``clean.user_activity`` rows of one
    partition. Columns: :data:`USER_WINDOW_SCHEMA` — event_count, page_views, carts
    (add_to_cart), purchases and revenue (the sum of the clean ``revenue`` column)."""
    return _user_windows(activity, MINUTE)


def user_1h(activity: pl.DataFrame) -> pl.DataFrame:
    """``agg.user_1h``: as :func:`user_1m` per user and hour."""
    return _user_windows(activity, HOUR)


def user_sessions(
    activity: pl.DataFrame,
    partition_start: dt.datetime,
    partition_end: dt.datetime,
    gap: dt.timedelta = SESSION_GAP,
) -> pl.DataFrame:
    """``agg.user_sessions``: sessions by inactivity gap, clipped to the partition.

    A session is a maximal run of one user's events inside ``[partition_start,
    partition_end)`` in which each event follows the previous one by strictly less than
    ``gap`` (a pause of exactly 30 minutes splits). Clipping makes a partition's rows
    depend on that partition alone: re-materializing it replaces exactly its rows, and
    a session that spans an hour boundary appears as one row in each hour.

    ``continues_previous`` is true for a user's first session of the partition when the
    user's last event before ``partition_start`` is less than ``gap`` before that
    session's first event (so the session is the continuation of one cut at the
    boundary); false for every other session. ``activity`` must therefore hold
    ``[partition_start - gap, partition_end)``; rows outside are ignored.
    ``continues_next`` is not computed: it would need the next hour's events.

    Columns: :data:`USER_SESSIONS_SCHEMA` — user_id, session_start (first event),
    session_end (last event), duration_s (end - start in seconds, 0 for a single event),
    event_count, purchase_count, revenue, continues_previous.
    """
    lo = utc_datetime(partition_start, "partition_start")
    hi = utc_datetime(partition_end, "partition_end")
    activity = _utc_column(activity, "ts")
    found = sessions(
        activity,
        key="user_id",
        gap=gap,
        aggs=[
            pl.len().alias("event_count"),
            (pl.col("action") == "purchase").sum().alias("purchase_count"),
            _ordered_sum("revenue").alias("revenue"),
        ],
        clip_start=lo,
        clip_end=hi,
    )
    ts = pl.col("ts")
    previous = (
        activity.filter(ts >= lo - gap, ts < lo)
        .group_by("user_id")
        .agg(ts.max().alias("_previous_ts"))
    )
    start = pl.col("session_start")
    # Only a user's first session of the hour can pass this test: any later one starts
    # at least ``gap`` after an event of the hour, so after every event before it.
    continues = (start - pl.col("_previous_ts") < gap).fill_null(False)
    rows = found.join(previous, on="user_id", how="left").with_columns(
        _seconds((pl.col("session_end") - start).dt.total_microseconds()).alias("duration_s"),
        continues.alias("continues_previous"),
    )
    return _conform(rows, USER_SESSIONS_SCHEMA, ("user_id", "session_start"))


def touched_hours(
    ts: pl.Series,
    *,
    sliding_lookahead: dt.timedelta = SLIDING_LOOKAHEAD,
    session_gap: dt.timedelta = SESSION_GAP,
) -> list[dt.datetime]:
    """The hourly partitions whose agg rows may change when events at ``ts`` arrive.

    For an event at ``ts``: its own hour (tumbling windows, sessions); the hour of
    ``ts - sliding_lookahead`` (a sliding window starting in the previous hour's last 4
    minutes contains ``ts``); the hour of ``ts + session_gap`` (the next hour's
    ``continues_previous`` flag may flip), and every hour in between. Sorted, unique,
    tz-aware UTC datetimes; an empty series gives an empty list.
    """
    series = _utc_column(ts.to_frame("ts"), "ts").get_column("ts").drop_nulls()
    bounds = pl.DataFrame(
        {
            "lo": (series - sliding_lookahead).dt.truncate(HOUR),
            "hi": (series + session_gap).dt.truncate(HOUR),
        }
    ).unique()
    hours: set[dt.datetime] = set()
    for lo, hi in bounds.iter_rows():
        hour = lo.astimezone(dt.UTC)
        last = hi.astimezone(dt.UTC)
        while hour <= last:
            hours.add(hour)
            hour += HOUR
    return sorted(hours)
