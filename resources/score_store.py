"""The warehouse side of the feature and scoring assets.

Reads what the churn features, the churn model and the anomaly scores need from the clean
tables, replaces a partition's rows (DELETE, then append, inside the caller's
transaction), keeps per-partition bookkeeping for the checks, stores model artifacts, and
keeps ml.alerts, which is also the outbox of the alerts topic (see
``astra_pipeline.assets.alerts``).

Values are bound as parameters; identifiers come from ``resources.tables``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from resources.tables import (
    ALERT_PUBLICATIONS,
    ALERTS,
    ANOMALY_SCORES,
    CHURN_MODELS,
    SCORING_PARTITIONS,
    SENSOR_READINGS,
    USER_ACTIVITY,
    USER_CHURN,
)
from resources.warehouse import WarehouseSession
from resources.watermark import Watermark, clean_watermark

READING_KEY_COLUMNS = ("event_id", "device_id", "ts", "topic", "partition", "offset")
"""The columns linking a score or an alert back to its clean reading and Kafka message."""


def _quoted(columns: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in columns)


def _one(session: WarehouseSession, sql: str, params: Sequence[object] | None = None) -> Any:
    """The single value of a one-row, one-column query. (Not ``session.scalar``: under
    DuckDB 2 its half-fetched result blocks the next statement on the connection.)"""
    return session.query(sql, params).item()


def latest_ingestion(session: WarehouseSession) -> Watermark:
    """The watermark of the clean rows this transaction can see (resources.watermark)."""
    return clean_watermark(session)


# --- churn features ------------------------------------------------------------------------


def load_feature_activity(
    session: WarehouseSession, end: dt.datetime, detail: dt.timedelta
) -> pl.DataFrame:
    """User activity before ``end`` as the churn features need it: every event of the last
    ``detail`` (the longest feature window) and, of each user's older events, only those
    that can still change a feature: the first (tenure), the last (recency), the last
    purchase and the last add_to_cart. The features computed from this equal those
    computed from the whole history, at the cost of a few rows per user.
    """
    start = end - detail
    return session.frame(
        f"""
        SELECT user_id, session_id, ts, "action", revenue FROM {USER_ACTIVITY}
        WHERE ts >= ? AND ts < ?
        UNION ALL
        SELECT user_id, session_id, ts, "action", revenue FROM {USER_ACTIVITY}
        WHERE ts < ?
        QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY ts, event_id) = 1
            OR row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, event_id DESC) = 1
            OR ("action" IN ('purchase', 'add_to_cart') AND row_number() OVER (
                PARTITION BY user_id, "action" ORDER BY ts DESC, event_id DESC) = 1)
        ORDER BY user_id, ts
        """,
        [start, end, start],
    )


def load_health_readings(
    session: WarehouseSession, start: dt.datetime, end: dt.datetime
) -> pl.DataFrame:
    """Sensor readings of [start, end) for device health, plus one row per device with
    its latest reading before ``start`` (only its time matters: time since last reading
    of a device silent all day)."""
    return session.frame(
        f"""
        SELECT device_id, ts, battery_pct, status FROM {SENSOR_READINGS}
        WHERE ts >= ? AND ts < ?
        UNION ALL
        SELECT device_id, max(ts), CAST(NULL AS DOUBLE), CAST(NULL AS VARCHAR)
        FROM {SENSOR_READINGS} WHERE ts < ? GROUP BY device_id
        ORDER BY device_id, ts
        """,
        [start, end, start],
    )


def replace_day(session: WarehouseSession, table: str, day: dt.date, frame: pl.DataFrame) -> int:
    """Replace the rows of ``table`` with as_of_day = ``day`` by ``frame``."""
    session.execute(f"DELETE FROM {table} WHERE as_of_day = ?", [day])
    return session.append(table, frame)


def replace_range(
    session: WarehouseSession,
    table: str,
    start: dt.datetime,
    end: dt.datetime,
    frame: pl.DataFrame,
) -> int:
    """Replace the rows of ``table`` with ts in [start, end) by ``frame``."""
    session.execute(f"DELETE FROM {table} WHERE ts >= ? AND ts < ?", [start, end])
    return session.append(table, frame)


def newer_hours(
    session: WarehouseSession,
    asset: str,
    start: dt.datetime,
    end: dt.datetime,
    seen: Watermark,
) -> list[dt.datetime]:
    """The partitions of ``asset`` in [start, end) already recorded as computed from a
    later snapshot of the clean rows than ``seen`` (by another run)."""
    mark: object
    if seen.snapshot is not None:
        later, mark = "seen_snapshot > ?", seen.snapshot
    elif seen.until is not None:
        later, mark = "seen_until > ?", seen.until
    else:
        return []
    found = session.query(
        f"SELECT partition_start FROM {SCORING_PARTITIONS} WHERE asset = ? "
        f"AND partition_start >= ? AND partition_start < ? AND {later} "
        "ORDER BY partition_start",
        [asset, start, end, mark],
    )
    return list(found["partition_start"])


def record_partitions(
    session: WarehouseSession,
    asset: str,
    stats: pl.DataFrame,
    seen: Watermark | None,
    run_id: str | None,
    now: dt.datetime,
) -> None:
    """Count one more materialization of ``asset`` for each partition in ``stats``
    (columns partition_start, row_count)."""
    if stats.height == 0:
        return
    with session.with_frame("_scoring_stats", stats):
        session.execute(
            f"MERGE INTO {SCORING_PARTITIONS} AS p USING (SELECT ?::VARCHAR AS asset, "
            "partition_start, row_count, ?::TIMESTAMPTZ AS seen_until, "
            "?::BIGINT AS seen_snapshot, ?::VARCHAR AS run_id, "
            "?::TIMESTAMPTZ AS materialized_at FROM _scoring_stats) AS s "
            "ON p.asset = s.asset AND p.partition_start = s.partition_start "
            "WHEN MATCHED THEN UPDATE SET materializations = p.materializations + 1, "
            "row_count = s.row_count, seen_until = s.seen_until, "
            "seen_snapshot = s.seen_snapshot, run_id = s.run_id, "
            "materialized_at = s.materialized_at "
            "WHEN NOT MATCHED THEN INSERT (asset, partition_start, materializations, row_count, "
            "seen_until, seen_snapshot, run_id, materialized_at) VALUES (s.asset, "
            "s.partition_start, 1, s.row_count, s.seen_until, s.seen_snapshot, s.run_id, "
            "s.materialized_at)",
            [
                asset,
                seen.until if seen else None,
                seen.snapshot if seen else None,
                run_id,
                now,
            ],
        )


# --- churn model and scores ----------------------------------------------------------------


def load_user_features(
    session: WarehouseSession, first_day: dt.date, last_day: dt.date, active_within_days: int
) -> pl.DataFrame:
    """Stored user churn features of the as-of days in [first_day, last_day], of users
    whose last event is fewer than ``active_within_days`` days before the as-of day."""
    return session.frame(
        f"SELECT * EXCLUDE (max_event_ts) FROM {USER_CHURN} "
        "WHERE as_of_day >= ? AND as_of_day <= ? AND days_since_last_event < ? "
        "ORDER BY as_of_day, user_id",
        [first_day, last_day, active_within_days],
    )


def load_label_activity(
    session: WarehouseSession, start: dt.datetime, end: dt.datetime
) -> pl.DataFrame:
    """What churn labels need: every event of [start, end), plus each user's first event
    if it is before ``start`` (that one event makes the user "seen" on every later day)."""
    return session.frame(
        f"""
        SELECT user_id, session_id, ts, "action", revenue FROM {USER_ACTIVITY}
        WHERE ts >= ? AND ts < ?
        UNION ALL
        SELECT user_id, session_id, ts, "action", revenue FROM {USER_ACTIVITY}
        WHERE ts < ?
        QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY ts, event_id) = 1
        ORDER BY user_id, ts
        """,
        [start, end, start],
    )


def store_model(
    session: WarehouseSession,
    *,
    version: str,
    payload: bytes,
    trained_for_day: dt.date,
    trained_through: dt.date,
    threshold: float,
    metrics: Mapping[str, object],
    trained_at: dt.datetime,
    run_id: str | None,
) -> bool:
    """Keep a model artifact under its content version; False when that version was
    already stored (the same bytes: re-training on the same data)."""
    known = _one(session, f"SELECT count(*) FROM {CHURN_MODELS} WHERE version = ?", [version])
    if known:
        return False
    session.execute(
        f"INSERT INTO {CHURN_MODELS} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            version,
            trained_at,
            trained_for_day,
            trained_through,
            threshold,
            json.dumps(dict(metrics), sort_keys=True),
            payload,
            run_id,
        ],
    )
    return True


# --- anomaly scores ------------------------------------------------------------------------


def load_readings(
    session: WarehouseSession, start: dt.datetime, end: dt.datetime, metrics: Sequence[str]
) -> pl.DataFrame:
    """Clean sensor readings with ts in [start, end): their keys and the scored metrics."""
    return session.frame(
        f"SELECT {_quoted([*READING_KEY_COLUMNS, *metrics])} FROM {SENSOR_READINGS} "
        "WHERE ts >= ? AND ts < ? ORDER BY device_id, ts, event_id",
        [start, end],
    )


def load_alert_candidates(
    session: WarehouseSession, start: dt.datetime, end: dt.datetime, threshold: float
) -> pl.DataFrame:
    """Stored anomaly scores of readings in [start, end) at or above ``threshold``."""
    return session.frame(
        f"SELECT * FROM {ANOMALY_SCORES} WHERE ts >= ? AND ts < ? AND score >= ? "
        "ORDER BY device_id, ts, event_id",
        [start, end, threshold],
    )


# --- alerts and their outbox ---------------------------------------------------------------


def insert_new_alerts(
    session: WarehouseSession,
    alerts: pl.DataFrame,
    threshold: float,
    created_at: dt.datetime,
    run_id: str | None,
) -> int:
    """Insert the alerts whose alert_id is not in ml.alerts yet; returns how many.

    An alert already recorded is left as it is (its first score, reason and delivery
    state): an alert is an event that happened, not a value to overwrite.
    """
    if alerts.height == 0:
        return 0
    rows = alerts.unique("alert_id", keep="first", maintain_order=True).with_columns(
        pl.lit(threshold, dtype=pl.Float64).alias("threshold"),
        pl.lit(created_at, dtype=pl.Datetime("us", "UTC")).alias("created_at"),
        pl.lit(run_id, dtype=pl.String).alias("run_id"),
        pl.lit(None, dtype=pl.String).alias("publish_attempt"),
        pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("published_at"),
    )
    with session.with_frame("_new_alerts", rows):
        before = int(_one(session, f"SELECT count(*) FROM {ALERTS}"))
        session.execute(
            f"INSERT INTO {ALERTS} BY NAME SELECT * FROM _new_alerts AS n "
            f"WHERE NOT EXISTS (SELECT 1 FROM {ALERTS} AS a WHERE a.alert_id = n.alert_id)"
        )
        return int(_one(session, f"SELECT count(*) FROM {ALERTS}")) - before


def alert_times(session: WarehouseSession, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    """The ts of every recorded alert in [start, end)."""
    return session.frame(f"SELECT ts FROM {ALERTS} WHERE ts >= ? AND ts < ?", [start, end])


def unpublished_alerts(session: WarehouseSession) -> pl.DataFrame:
    """Every alert not yet acknowledged by the broker, oldest first."""
    return session.frame(f"SELECT * FROM {ALERTS} WHERE published_at IS NULL ORDER BY ts, alert_id")


def open_publications(session: WarehouseSession) -> list[tuple[str, str, dict[int, int]]]:
    """Attempts that never recorded their outcome and still have unacknowledged alerts:
    (attempt_id, topic, start offsets per partition)."""
    frame = session.query(
        f"SELECT p.attempt_id, p.topic, CAST(p.start_offsets AS VARCHAR) AS start_offsets "
        f"FROM {ALERT_PUBLICATIONS} AS p WHERE p.completed_at IS NULL AND EXISTS ("
        f"SELECT 1 FROM {ALERTS} AS a WHERE a.publish_attempt = p.attempt_id "
        "AND a.published_at IS NULL) ORDER BY p.started_at"
    )
    return [
        (attempt, topic, {int(p): int(o) for p, o in json.loads(offsets).items()})
        for attempt, topic, offsets in frame.rows()
    ]


def begin_publication(
    session: WarehouseSession,
    attempt_id: str,
    topic: str,
    start_offsets: Mapping[int, int],
    alert_ids: Sequence[str],
    now: dt.datetime,
) -> None:
    """Record, before anything is sent, which alerts an attempt sends and where the topic
    ended before it."""
    session.execute(
        f"INSERT INTO {ALERT_PUBLICATIONS} VALUES (?, ?, ?, ?, NULL)",
        [attempt_id, topic, json.dumps({str(p): o for p, o in start_offsets.items()}), now],
    )
    ids = pl.DataFrame({"alert_id": list(alert_ids)}, schema={"alert_id": pl.String})
    with session.with_frame("_attempt_ids", ids):
        session.execute(
            f"UPDATE {ALERTS} SET publish_attempt = ? "
            "WHERE alert_id IN (SELECT alert_id FROM _attempt_ids)",
            [attempt_id],
        )


def complete_publication(
    session: WarehouseSession, attempt_id: str, delivered: Sequence[str], now: dt.datetime
) -> int:
    """Mark the alerts of ``delivered`` as published and close the attempt; returns how
    many alerts changed state."""
    ids = pl.DataFrame({"alert_id": list(delivered)}, schema={"alert_id": pl.String})
    with session.with_frame("_delivered_ids", ids):
        pending = int(
            _one(
                session,
                f"SELECT count(*) FROM {ALERTS} WHERE published_at IS NULL "
                "AND alert_id IN (SELECT alert_id FROM _delivered_ids)",
            )
        )
        session.execute(
            f"UPDATE {ALERTS} SET published_at = ? WHERE published_at IS NULL "
            "AND alert_id IN (SELECT alert_id FROM _delivered_ids)",
            [now],
        )
    session.execute(
        f"UPDATE {ALERT_PUBLICATIONS} SET completed_at = ? WHERE attempt_id = ?",
        [now, attempt_id],
    )
    return pending
