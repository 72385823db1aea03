"""Daily churn features per user, device-health features per device, and the churn label.

Pure polars: no I/O, no Dagster, no Kafka, no DuckDB.

Point in time: the features of day ``D`` ("as of D") use only events with
``ts < end of D``, where the end of D is midnight UTC starting day D + 1. An event at
``D 23:59:59.999999`` counts for D; one at ``D+1 00:00:00`` does not. Adding events after
the end of D never changes D's features (the leakage test pins this).

Windows are calendar days ending with D: "7d" is days D-6 .. D (``ts >= end - 7 days``),
"30d" is days D-29 .. D, "prev7" is days D-13 .. D-7. Recency is in whole calendar days:
``D - date(last event)``, so 0 means "active on D itself".

User features (one row per user with at least one event before the end of D):

- ``days_since_last_event``, ``days_since_last_purchase``, ``days_since_last_cart``
  (``add_to_cart``); null when the user never did it;
- ``sessions_7d/30d`` distinct ``session_id``; ``page_views_7d/30d``,
  ``purchases_7d/30d`` event counts; ``revenue_7d/30d`` sum of ``revenue`` (the
  purchase amount, 0 for other actions);
- ``aov_7d/30d`` = revenue / purchases, null when there were no purchases;
- ``events_last7``, ``events_prev7`` event counts; ``events_trend_ratio`` =
  ``(events_last7 + 1) / (events_prev7 + 1)`` (add-one smoothing: always defined, 1.0 for
  "no change" including 0 vs 0, below 1 for a decline); ``events_trend_diff`` =
  ``events_last7 - events_prev7``;
- ``cart_to_purchase_30d`` = purchases_30d / add_to_cart_30d, null with no carts in the
  30 days (conversion is undefined without a cart); it can exceed 1 when carts filled
  before the window were bought inside it;
- ``tenure_days`` = ``D - date(first event)``.

The churn label of (user, D) is 1 when the user has no event on days D+1 .. D+horizon
(``end of D <= ts < end of D + horizon days``), else 0; it is defined only when that
whole horizon has been observed, and null otherwise.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

UTC = "UTC"
TIMESTAMP = pl.Datetime("us", UTC)
DAY = dt.timedelta(days=1)
CHURN_HORIZON_DAYS = 14

USER_CHURN_SCHEMA = pl.Schema(
    {
        "user_id": pl.String(),
        "as_of_day": pl.Date(),
        "days_since_last_event": pl.Int64(),
        "days_since_last_purchase": pl.Int64(),
        "days_since_last_cart": pl.Int64(),
        "sessions_7d": pl.Int64(),
        "sessions_30d": pl.Int64(),
        "page_views_7d": pl.Int64(),
        "page_views_30d": pl.Int64(),
        "purchases_7d": pl.Int64(),
        "purchases_30d": pl.Int64(),
        "revenue_7d": pl.Float64(),
        "revenue_30d": pl.Float64(),
        "aov_7d": pl.Float64(),
        "aov_30d": pl.Float64(),
        "events_last7": pl.Int64(),
        "events_prev7": pl.Int64(),
        "events_trend_ratio": pl.Float64(),
        "events_trend_diff": pl.Int64(),
        "cart_to_purchase_30d": pl.Float64(),
        "tenure_days": pl.Int64(),
    }
)

CHURN_LABEL_SCHEMA = pl.Schema(
    {"user_id": pl.String(), "as_of_day": pl.Date(), "churned": pl.Int8()}
)

DEVICE_HEALTH_SCHEMA = pl.Schema(
    {
        "device_id": pl.String(),
        "as_of_day": pl.Date(),
        "readings": pl.Int64(),
        "expected_readings": pl.Float64(),
        "reporting_rate": pl.Float64(),
        "longest_silence_s": pl.Float64(),
        "seconds_since_last_reading": pl.Float64(),
        "battery_slope_per_h": pl.Float64(),
        "share_degraded": pl.Float64(),
        "share_fault": pl.Float64(),
    }
)


def day_end(day: dt.date) -> dt.datetime:
    """The first instant after ``day``: midnight UTC at the start of the next day."""
    return dt.datetime.combine(day + DAY, dt.time(), tzinfo=dt.UTC)


def user_churn_features(activity: pl.DataFrame, as_of_day: dt.date) -> pl.DataFrame:
    """One row per user seen before the end of ``as_of_day`` (schema
    :data:`USER_CHURN_SCHEMA`, sorted by user_id).

    ``activity`` has the clean.user_activity columns user_id, session_id, ts, action and
    revenue (or amount, from which revenue is derived). For tenure and recency to be
    right it must reach back to each user's first event (or at least as far as those
    features are meant to see); the windows need the last 30 days.
    """
    end = day_end(as_of_day)
    events = _user_events(activity).filter(pl.col("ts") < end)
    ts, action = pl.col("ts"), pl.col("action")
    last7 = ts >= end - 7 * DAY
    last30 = ts >= end - 30 * DAY
    prev7 = (ts >= end - 14 * DAY) & ~last7
    is_view, is_cart, is_purchase = (
        action == "page_view",
        action == "add_to_cart",
        action == "purchase",
    )

    def count(condition: pl.Expr) -> pl.Expr:
        return condition.sum().cast(pl.Int64)

    def days_since(moment: pl.Expr) -> pl.Expr:
        return (pl.lit(as_of_day) - moment.dt.date()).dt.total_days().cast(pl.Int64)

    per_user = events.group_by("user_id").agg(
        ts.min().alias("_first"),
        ts.max().alias("_last"),
        ts.filter(is_purchase).max().alias("_last_purchase"),
        ts.filter(is_cart).max().alias("_last_cart"),
        pl.col("session_id").filter(last7).n_unique().cast(pl.Int64).alias("sessions_7d"),
        pl.col("session_id").filter(last30).n_unique().cast(pl.Int64).alias("sessions_30d"),
        count(last7 & is_view).alias("page_views_7d"),
        count(last30 & is_view).alias("page_views_30d"),
        count(last7 & is_purchase).alias("purchases_7d"),
        count(last30 & is_purchase).alias("purchases_30d"),
        pl.col("revenue").filter(last7).sum().alias("revenue_7d"),
        pl.col("revenue").filter(last30).sum().alias("revenue_30d"),
        count(last7).alias("events_last7"),
        count(prev7).alias("events_prev7"),
        count(last30 & is_cart).alias("_carts_30d"),
    )

    def ratio(numerator: str, denominator: str) -> pl.Expr:
        return (
            pl.when(pl.col(denominator) > 0)
            .then(pl.col(numerator) / pl.col(denominator))
            .otherwise(None)
        )

    return (
        per_user.with_columns(
            pl.lit(as_of_day).alias("as_of_day"),
            days_since(pl.col("_last")).alias("days_since_last_event"),
            days_since(pl.col("_last_purchase")).alias("days_since_last_purchase"),
            days_since(pl.col("_last_cart")).alias("days_since_last_cart"),
            ratio("revenue_7d", "purchases_7d").alias("aov_7d"),
            ratio("revenue_30d", "purchases_30d").alias("aov_30d"),
            ((pl.col("events_last7") + 1) / (pl.col("events_prev7") + 1)).alias(
                "events_trend_ratio"
            ),
            (pl.col("events_last7") - pl.col("events_prev7")).alias("events_trend_diff"),
            ratio("purchases_30d", "_carts_30d").alias("cart_to_purchase_30d"),
            days_since(pl.col("_first")).alias("tenure_days"),
        )
        .select(USER_CHURN_SCHEMA.names())
        .cast(USER_CHURN_SCHEMA)
        .sort("user_id")
    )


def churn_label(
    activity: pl.DataFrame,
    as_of_day: dt.date,
    horizon_days: int = CHURN_HORIZON_DAYS,
    observed_until: dt.datetime | None = None,
) -> pl.DataFrame:
    """The churn label of every user seen before the end of ``as_of_day`` (schema
    :data:`CHURN_LABEL_SCHEMA`, sorted by user_id).

    ``churned`` is 1 when the user has no event in ``[end of D, end of D + horizon)``,
    0 when they have one, and null when the horizon is not fully observed yet:
    ``observed_until`` (the instant up to which the data is complete) is before the
    horizon's end. It defaults to the latest event in ``activity``: the data then proves
    it reaches the horizon's end only with an event at or after it.
    """
    if horizon_days < 1:
        raise ValueError("horizon_days must be >= 1")
    end = day_end(as_of_day)
    horizon_end = end + horizon_days * DAY
    events = _user_events(activity)
    if observed_until is None:
        latest = events["ts"].max()
        observed = isinstance(latest, dt.datetime) and latest >= horizon_end
    else:
        observed = observed_until >= horizon_end
    users = events.filter(pl.col("ts") < end).select("user_id").unique()
    returning = (
        events.filter((pl.col("ts") >= end) & (pl.col("ts") < horizon_end))
        .select("user_id")
        .unique()
        .with_columns(pl.lit(0, dtype=pl.Int8).alias("_returned"))
    )
    label = pl.col("_returned").fill_null(1) if observed else pl.lit(None)
    return (
        users.join(returning, on="user_id", how="left")
        .with_columns(pl.lit(as_of_day).alias("as_of_day"), label.alias("churned"))
        .select(CHURN_LABEL_SCHEMA.names())
        .cast(CHURN_LABEL_SCHEMA)
        .sort("user_id")
    )


def device_health_features(
    readings: pl.DataFrame, as_of_day: dt.date, expected_interval_s: float
) -> pl.DataFrame:
    """One row per device seen before the end of ``as_of_day`` (schema
    :data:`DEVICE_HEALTH_SCHEMA`, sorted by device_id), about day D = ``as_of_day``:

    - ``readings`` on D; ``expected_readings`` = 86,400 / ``expected_interval_s``;
      ``reporting_rate`` = readings / expected (1.0 = on schedule; above 1 is possible);
    - ``longest_silence_s``: the longest stretch of D without a reading, counting from
      the start of D to the first reading and from the last reading to the end of D
      (86,400 for a device silent all day);
    - ``seconds_since_last_reading``: from the device's latest reading (on D or before)
      to the end of D;
    - ``battery_slope_per_h``: least-squares slope of battery_pct over time in hours on
      D; null with fewer than two distinct reading times;
    - ``share_degraded``, ``share_fault``: shares of D's readings with that status; null
      without readings.

    ``readings`` needs device_id, ts, battery_pct and status, on D and (for devices
    silent on D) before it.
    """
    if expected_interval_s <= 0:
        raise ValueError("expected_interval_s must be positive")
    end = day_end(as_of_day)
    start = end - DAY
    frame = _utc(readings.select("device_id", "ts", "battery_pct", "status")).filter(
        pl.col("ts") < end
    )
    seen = frame.group_by("device_id").agg(pl.col("ts").max().alias("_latest"))
    hours = (pl.col("ts") - pl.lit(start)).dt.total_microseconds() / 3.6e9
    x_dev = hours - hours.mean()
    y_dev = pl.col("battery_pct") - pl.col("battery_pct").mean()
    spread = (x_dev * x_dev).sum()
    on_day = (
        frame.filter(pl.col("ts") >= start)
        .sort("device_id", "ts")
        .group_by("device_id")
        .agg(
            pl.len().cast(pl.Int64).alias("readings"),
            pl.col("ts").min().alias("_first"),
            pl.col("ts").max().alias("_last"),
            pl.col("ts").diff().max().alias("_max_gap"),
            pl.when(spread > 0)
            .then((x_dev * y_dev).sum() / spread)
            .otherwise(None)
            .alias("battery_slope_per_h"),
            (pl.col("status") == "degraded").mean().alias("share_degraded"),
            (pl.col("status") == "fault").mean().alias("share_fault"),
        )
    )

    def seconds(duration: pl.Expr) -> pl.Expr:
        return duration.dt.total_microseconds() / 1e6

    expected = 86_400.0 / expected_interval_s
    silence = pl.max_horizontal(
        seconds(pl.col("_first") - pl.lit(start)),
        seconds(pl.col("_max_gap")),
        seconds(pl.lit(end) - pl.col("_last")),
    )
    return (
        seen.join(on_day, on="device_id", how="left")
        .with_columns(
            pl.lit(as_of_day).alias("as_of_day"),
            pl.col("readings").fill_null(0),
            pl.lit(expected).alias("expected_readings"),
            (pl.col("readings").fill_null(0) / expected).alias("reporting_rate"),
            silence.fill_null(DAY.total_seconds()).alias("longest_silence_s"),
            seconds(pl.lit(end) - pl.col("_latest")).alias("seconds_since_last_reading"),
        )
        .select(DEVICE_HEALTH_SCHEMA.names())
        .cast(DEVICE_HEALTH_SCHEMA)
        .sort("device_id")
    )


def _utc(frame: pl.DataFrame) -> pl.DataFrame:
    dtype = frame.schema["ts"]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise ValueError(f"ts must be a time-zone-aware Datetime, got {dtype}")
    return frame.with_columns(pl.col("ts").dt.convert_time_zone(UTC).dt.cast_time_unit("us"))


def _user_events(activity: pl.DataFrame) -> pl.DataFrame:
    """The columns the user features need, with revenue derived when it is absent."""
    if "revenue" in activity.columns:
        revenue = pl.col("revenue").cast(pl.Float64).fill_null(0.0)
    else:
        revenue = (
            pl.when(pl.col("action") == "purchase")
            .then(pl.col("amount").cast(pl.Float64))
            .otherwise(0.0)
            .fill_null(0.0)
        )
    return _utc(activity.select("user_id", "session_id", "ts", "action", revenue.alias("revenue")))
