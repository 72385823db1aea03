"""Rows for the serving tables the read API and the Grafana dashboards read, loaded
through the serving copy's own replace (synthetic: the tests compare what is read with SQL
on the same tables)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import polars as pl

from astra_pipeline.assets.serving import (
    AGG_SPECS,
    ALERTS_SPEC,
    CHURN_SCORES_SPEC,
    USER_CHURN_SPEC,
)
from resources.serving import PostgresServingResource, ServingTableSpec

T0 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
DEVICES = ("dev-a", "dev-b", "dev-c")
USERS = ("user-1", "user-2")


def serve_tables(serving: PostgresServingResource, t0: dt.datetime = T0) -> None:
    """The serving tables the read API reads, loaded through the serving copy's own
    replace (synthetic rows: the API's answers are compared with SQL on them)."""
    rng = random.Random(7)
    specs = {spec.table: spec for spec in AGG_SPECS}
    minutes = [t0 + dt.timedelta(minutes=m) for m in range(180)]
    stats = {
        "temperature_c_mean": 20.0,
        "temperature_c_min": 18.0,
        "temperature_c_max": 22.0,
        "temperature_c_stddev": 1.0,
        "temperature_c_p95": 21.5,
        "humidity_pct_mean": 40.0,
        "humidity_pct_min": 38.0,
        "humidity_pct_max": 42.0,
        "humidity_pct_stddev": 1.0,
        "humidity_pct_p95": 41.0,
        "battery_min": 80.0,
        "count_ok": 5,
        "count_degraded": 0,
        "count_fault": 0,
    }

    def windows(spec: ServingTableSpec, starts: list[dt.datetime], width: dt.timedelta) -> None:
        rows = [
            {
                "device_id": device,
                "window_start": start,
                "window_end": start + width,
                "reading_count": rng.randint(1, 60),
                **{
                    k: v + rng.random() if isinstance(v, float) else v
                    for k, v in stats.items()
                    if k in spec.column_names
                },
            }
            for device in DEVICES
            for start in starts
        ]
        frame = pl.DataFrame(rows).select(spec.column_names)
        serving.ensure_table(spec)
        serving.replace_partition(
            spec, frame, start=starts[0], end=starts[-1] + dt.timedelta(hours=1)
        )

    windows(specs["agg.sensor_1m"], minutes, dt.timedelta(minutes=1))
    windows(specs["agg.sensor_5m_sliding"], minutes, dt.timedelta(minutes=5))
    windows(
        specs["agg.sensor_1h"],
        [t0 + dt.timedelta(hours=h) for h in range(3)],
        dt.timedelta(hours=1),
    )
    sessions = specs["agg.user_sessions"]
    serving.ensure_table(sessions)
    serving.replace_partition(
        sessions,
        pl.DataFrame(
            [
                {
                    "user_id": user,
                    "session_start": t0 + dt.timedelta(minutes=10 * i),
                    "session_end": t0 + dt.timedelta(minutes=10 * i + 5),
                    "duration_s": 300.0,
                    "event_count": i + 1,
                    "purchase_count": i % 2,
                    "revenue": 9.5 * (i % 2),
                    "continues_previous": False,
                }
                for user in USERS
                for i in range(12)
            ]
        ).select(sessions.column_names),
        start=t0,
        end=t0 + dt.timedelta(hours=2),
    )
    user_1h = specs["agg.user_1h"]
    serving.ensure_table(user_1h)
    serving.replace_partition(
        user_1h,
        pl.DataFrame(
            [
                {
                    "user_id": user,
                    "window_start": t0 + dt.timedelta(hours=h),
                    "window_end": t0 + dt.timedelta(hours=h + 1),
                    "event_count": 10 + h,
                    "page_views": 6 + h,
                    "carts": 2,
                    "purchases": 1,
                    "revenue": 19.0,
                }
                for user in USERS
                for h in range(3)
            ]
        ).select(user_1h.column_names),
        start=t0,
        end=t0 + dt.timedelta(hours=3),
    )
    days = [dt.date(2026, 11, 26), dt.date(2026, 11, 27)]
    day_start = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    serving.ensure_table(CHURN_SCORES_SPEC)
    serving.replace_partition(
        CHURN_SCORES_SPEC,
        pl.DataFrame(
            [
                {
                    "user_id": user,
                    "as_of_day": day,
                    "churn_probability": rng.random(),
                    "churn_predicted": False,
                    "model_version": "m1",
                }
                for user in USERS[:1]
                for day in days
            ]
        ).select(CHURN_SCORES_SPEC.column_names),
        start=day_start,
        end=day_start + dt.timedelta(days=2),
    )
    features = {
        c.name: (1 if c.type == "bigint" else 0.5)
        for c in USER_CHURN_SPEC.columns
        if c.name not in ("user_id", "as_of_day", "max_event_ts")
    }
    serving.ensure_table(USER_CHURN_SPEC)
    serving.replace_partition(
        USER_CHURN_SPEC,
        pl.DataFrame(
            [
                {"user_id": USERS[0], "as_of_day": day, **features, "max_event_ts": t0}
                for day in days
            ]
        ).select(USER_CHURN_SPEC.column_names),
        start=day_start,
        end=day_start + dt.timedelta(days=2),
    )
    serving.ensure_table(ALERTS_SPEC)
    serving.replace_partition(
        ALERTS_SPEC,
        pl.DataFrame([alert_row(i, t0) for i in range(45)]).select(ALERTS_SPEC.column_names),
        start=t0,
        end=t0 + dt.timedelta(hours=1),
    )


def alert_row(i: int, base: dt.datetime = T0) -> dict[str, Any]:
    return {
        "alert_id": f"alert-{base:%H%M}-{i:04d}",
        "event_id": f"ev-{base:%H%M}-{i}",
        "device_id": DEVICES[i % 3],
        "ts": base + dt.timedelta(seconds=20 * (i // 2)),  # pairs share a ts: ties by id
        "score": 5.0 + i,
        "driver": "robust_z",
        "metric": "temperature_c",
        "reason": "hot",
        "topic": "events_raw",
        "partition": 0,
        "offset": i,
        "rule_version": "r1",
        "threshold": 4.0,
        "created_at": base,
        "run_id": None,
        "publish_attempt": None,
        "published_at": None,
    }
