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
)
