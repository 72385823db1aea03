"""Table identifiers and DDL of the DuckDB warehouse, in one place.

SQL elsewhere refers to these constants for identifiers and binds values as parameters.
"""

from __future__ import annotations

RAW_EVENTS = "raw.events"
SENSOR_READINGS = "clean.sensor_readings"
USER_ACTIVITY = "clean.user_activity"
DEAD_LETTER_EVENTS = "clean.dead_letter_events"
DUPLICATE_EVENTS = "clean.duplicate_events"
INGEST_LEDGER = "ops.ingest_ledger"
AGG_SENSOR_1M = "agg.sensor_1m"
AGG_SENSOR_1H = "agg.sensor_1h"
AGG_SENSOR_5M_SLIDING = "agg.sensor_5m_sliding"
AGG_USER_1M = "agg.user_1m"
AGG_USER_1H = "agg.user_1h"
AGG_USER_SESSIONS = "agg.user_sessions"
WINDOW_PARTITIONS = "ops.window_partitions"

SCHEMAS = ("raw", "clean", "agg", "features", "ml", "ops")

DDL = (
    *(f"CREATE SCHEMA IF NOT EXISTS {schema}" for schema in SCHEMAS),
    f"""
    CREATE TABLE IF NOT EXISTS {RAW_EVENTS} (
        topic VARCHAR NOT NULL,
        "partition" INTEGER NOT NULL,
        "offset" BIGINT NOT NULL,
        "key" BLOB,
        "value" BLOB,
        kafka_ts TIMESTAMPTZ,
        ingested_at TIMESTAMPTZ NOT NULL,
        batch_id VARCHAR NOT NULL
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS {SENSOR_READINGS} (
        event_id VARCHAR NOT NULL,
        device_id VARCHAR NOT NULL,
        ts TIMESTAMPTZ NOT NULL,
        temperature_c DOUBLE NOT NULL,
        humidity_pct DOUBLE NOT NULL,
        battery_pct DOUBLE NOT NULL,
        lat DOUBLE NOT NULL,
        lon DOUBLE NOT NULL,
        status VARCHAR NOT NULL,
        extra JSON,
        dew_point_c DOUBLE,
        heat_index_c DOUBLE NOT NULL,
        event_date DATE NOT NULL,
        event_hour TIMESTAMPTZ NOT NULL,
        topic VARCHAR NOT NULL,
        "partition" INTEGER NOT NULL,
        "offset" BIGINT NOT NULL,
        ingested_at TIMESTAMPTZ NOT NULL,
        batch_id VARCHAR NOT NULL
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS {USER_ACTIVITY} (
        event_id VARCHAR NOT NULL,
        user_id VARCHAR NOT NULL,
        session_id VARCHAR NOT NULL,
        ts TIMESTAMPTZ NOT NULL,
        "action" VARCHAR NOT NULL,
        amount DOUBLE,
        currency VARCHAR,
        extra JSON,
        revenue DOUBLE NOT NULL,
        event_date DATE NOT NULL,
        event_hour TIMESTAMPTZ NOT NULL,
        topic VARCHAR NOT NULL,
        "partition" INTEGER NOT NULL,
        "offset" BIGINT NOT NULL,
        ingested_at TIMESTAMPTZ NOT NULL,
        batch_id VARCHAR NOT NULL
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS {DEAD_LETTER_EVENTS} (
        topic VARCHAR NOT NULL,
        "partition" INTEGER NOT NULL,
        "offset" BIGINT NOT NULL,
        "key" BLOB,
        "value" BLOB,
        reason VARCHAR NOT NULL,
        kafka_ts TIMESTAMPTZ,
        ingested_at TIMESTAMPTZ NOT NULL,
        batch_id VARCHAR NOT NULL
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS {DUPLICATE_EVENTS} (
        event_id VARCHAR NOT NULL,
        event_type VARCHAR NOT NULL,
        topic VARCHAR NOT NULL,
        "partition" INTEGER NOT NULL,
        "offset" BIGINT NOT NULL,
        ingested_at TIMESTAMPTZ NOT NULL,
        batch_id VARCHAR NOT NULL
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS {INGEST_LEDGER} (
        batch_id VARCHAR NOT NULL,
        run_id VARCHAR,
        topic VARCHAR NOT NULL,
        "partition" INTEGER NOT NULL,
        start_offset BIGINT NOT NULL,
        end_offset BIGINT NOT NULL,
        message_count BIGINT NOT NULL,
        committed_at TIMESTAMPTZ NOT NULL
    )""",
    # Aggregates (astra_pipeline.transforms.windows): one hourly partition's rows are those
    # with window_start (session_start for sessions) in [hour, hour + 1h). Columns match
    # the frames the window functions return; stddev is null for a one-reading window.
    f"""
    CREATE TABLE IF NOT EXISTS {AGG_SENSOR_1M} (
        device_id VARCHAR NOT NULL,
        window_start TIMESTAMPTZ NOT NULL,
        window_end TIMESTAMPTZ NOT NULL,
        reading_count BIGINT NOT NULL,
        temperature_c_mean DOUBLE NOT NULL,
        temperature_c_min DOUBLE NOT NULL,
        temperature_c_max DOUBLE NOT NULL,
        temperature_c_stddev DOUBLE,
        temperature_c_p95 DOUBLE NOT NULL,
        humidity_pct_mean DOUBLE NOT NULL,
        humidity_pct_min DOUBLE NOT NULL,
        humidity_pct_max DOUBLE NOT NULL,
        humidity_pct_stddev DOUBLE,
        humidity_pct_p95 DOUBLE NOT NULL,
        battery_min DOUBLE NOT NULL,
        count_ok BIGINT NOT NULL,
        count_degraded BIGINT NOT NULL,
        count_fault BIGINT NOT NULL
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS {AGG_SENSOR_1H} (
        device_id VARCHAR NOT NULL,
        window_start TIMESTAMPTZ NOT NULL,
        window_end TIMESTAMPTZ NOT NULL,
        reading_count BIGINT NOT NULL,
        temperature_c_mean DOUBLE NOT NULL,
        temperature_c_min DOUBLE NOT NULL,
        temperature_c_max DOUBLE NOT NULL,
        temperature_c_stddev DOUBLE,
        temperature_c_p95 DOUBLE NOT NULL,
        humidity_pct_mean DOUBLE NOT NULL,
        humidity_pct_min DOUBLE NOT NULL,
        humidity_pct_max DOUBLE NOT NULL,
        humidity_pct_stddev DOUBLE,
        humidity_pct_p95 DOUBLE NOT NULL,
        battery_min DOUBLE NOT NULL,
        count_ok BIGINT NOT NULL,
        count_degraded BIGINT NOT NULL,
        count_fault BIGINT NOT NULL
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS {AGG_SENSOR_5M_SLIDING} (
        device_id VARCHAR NOT NULL,
        window_start TIMESTAMPTZ NOT NULL,
        window_end TIMESTAMPTZ NOT NULL,
        reading_count BIGINT NOT NULL,
        temperature_c_mean DOUBLE NOT NULL,
        temperature_c_max DOUBLE NOT NULL,
        humidity_pct_mean DOUBLE NOT NULL,
        humidity_pct_max DOUBLE NOT NULL
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS {AGG_USER_1M} (
        user_id VARCHAR NOT NULL,
        window_start TIMESTAMPTZ NOT NULL,
        window_end TIMESTAMPTZ NOT NULL,
        event_count BIGINT NOT NULL,
        page_views BIGINT NOT NULL,
        carts BIGINT NOT NULL,
        purchases BIGINT NOT NULL,
        revenue DOUBLE NOT NULL
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS {AGG_USER_1H} (
        user_id VARCHAR NOT NULL,
        window_start TIMESTAMPTZ NOT NULL,
        window_end TIMESTAMPTZ NOT NULL,
        event_count BIGINT NOT NULL,
        page_views BIGINT NOT NULL,
        carts BIGINT NOT NULL,
        purchases BIGINT NOT NULL,
        revenue DOUBLE NOT NULL
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS {AGG_USER_SESSIONS} (
        user_id VARCHAR NOT NULL,
        session_start TIMESTAMPTZ NOT NULL,
        session_end TIMESTAMPTZ NOT NULL,
        duration_s DOUBLE NOT NULL,
        event_count BIGINT NOT NULL,
        purchase_count BIGINT NOT NULL,
        revenue DOUBLE NOT NULL,
        continues_previous BOOLEAN NOT NULL
    )""",
    # One row per hourly partition of windowed_aggregates: how often it was materialized
    # (amendments = materializations - 1), its event counts when last computed, and the
    # latest ingestion time the computation could see (for the completeness check).
    f"""
    CREATE TABLE IF NOT EXISTS {WINDOW_PARTITIONS} (
        partition_start TIMESTAMPTZ PRIMARY KEY,
        materializations BIGINT NOT NULL,
        cleaned_events BIGINT NOT NULL,
        late_events BIGINT NOT NULL,
        seen_until TIMESTAMPTZ,
        run_id VARCHAR,
        materialized_at TIMESTAMPTZ NOT NULL
    )""",
)
