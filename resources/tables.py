"""Table identifiers and DDL of the warehouse (a DuckLake), in one place.

SQL elsewhere refers to these constants for identifiers and binds values as parameters.
"""

from __future__ import annotations

import re

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
WINDOW_ROLLUPS = "ops.window_rollups"
ANOMALY_GROUND_TRUTH = "ml.anomaly_ground_truth"
DECLINING_USERS_TRUTH = "ml.declining_users_truth"
USER_CHURN = "features.user_churn"
DEVICE_HEALTH = "features.device_health"
CHURN_SCORES = "ml.churn_scores"
CHURN_MODELS = "ml.churn_models"
ANOMALY_SCORES = "ml.anomaly_scores"
ALERTS = "ml.alerts"
ALERT_PUBLICATIONS = "ops.alert_publications"
SCORING_PARTITIONS = "ops.scoring_partitions"
DEADLETTER_REPLAYS = "ops.deadletter_replays"
DEADLETTER_REPLAY_TURNS = "ops.deadletter_replay_turns"

SCHEMAS = ("raw", "clean", "agg", "features", "ml", "ops")

# The 1-minute and hourly tables of one kind have the same columns (the same window
# functions, astra_pipeline.transforms.windows, at two lengths).
_SENSOR_WINDOW_COLUMNS = """
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
"""
_USER_WINDOW_COLUMNS = """
        user_id VARCHAR NOT NULL,
        window_start TIMESTAMPTZ NOT NULL,
        window_end TIMESTAMPTZ NOT NULL,
        event_count BIGINT NOT NULL,
        page_views BIGINT NOT NULL,
        carts BIGINT NOT NULL,
        purchases BIGINT NOT NULL,
        revenue DOUBLE NOT NULL
"""

_DDL = (
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
        batch_id VARCHAR NOT NULL,
        published_at TIMESTAMPTZ,
        publish_from JSON
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
        committed_at TIMESTAMPTZ NOT NULL,
        -- the id of the topic the batch was read from: a topic created again has
        -- another (resources.ingest_store.check_topic)
        topic_id VARCHAR
    )""",
    # Aggregates (astra_pipeline.transforms.windows): one hourly partition's rows are those
    # with window_start (session_start for sessions) in [hour, hour + 1h). Columns match
    # the frames the window functions return; stddev is null for a one-reading window.
    f"CREATE TABLE IF NOT EXISTS {AGG_SENSOR_1M} ({_SENSOR_WINDOW_COLUMNS})",
    f"CREATE TABLE IF NOT EXISTS {AGG_SENSOR_1H} ({_SENSOR_WINDOW_COLUMNS})",
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
    f"CREATE TABLE IF NOT EXISTS {AGG_USER_1M} ({_USER_WINDOW_COLUMNS})",
    f"CREATE TABLE IF NOT EXISTS {AGG_USER_1H} ({_USER_WINDOW_COLUMNS})",
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
    # When each partition's hourly roll-ups (agg.sensor_1h, agg.user_1h) were last
    # computed: an incremental refresh of the live hour recomputes them at most once a
    # minute (windowed_aggregates, ROLLUP_EVERY).
    f"""
    CREATE TABLE IF NOT EXISTS {WINDOW_ROLLUPS} (
        partition_start TIMESTAMPTZ PRIMARY KEY,
        seen_until TIMESTAMPTZ,
        seen_snapshot BIGINT,
        refreshed_at TIMESTAMPTZ NOT NULL
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
        seen_snapshot BIGINT,
        run_id VARCHAR,
        materialized_at TIMESTAMPTZ NOT NULL
    )""",
    # Churn features (astra_pipeline.transforms.churn), one row per user or device and
    # as-of day; a daily partition's rows are those with its as_of_day. max_event_ts is
    # the latest event the row was computed from (before the end of as_of_day).
    f"""
    CREATE TABLE IF NOT EXISTS {USER_CHURN} (
        user_id VARCHAR NOT NULL,
        as_of_day DATE NOT NULL,
        days_since_last_event BIGINT NOT NULL,
        days_since_last_purchase BIGINT,
        days_since_last_cart BIGINT,
        sessions_7d BIGINT NOT NULL,
        sessions_30d BIGINT NOT NULL,
        page_views_7d BIGINT NOT NULL,
        page_views_30d BIGINT NOT NULL,
        purchases_7d BIGINT NOT NULL,
        purchases_30d BIGINT NOT NULL,
        revenue_7d DOUBLE NOT NULL,
        revenue_30d DOUBLE NOT NULL,
        aov_7d DOUBLE,
        aov_30d DOUBLE,
        events_last7 BIGINT NOT NULL,
        events_prev7 BIGINT NOT NULL,
        events_trend_ratio DOUBLE NOT NULL,
        events_trend_diff BIGINT NOT NULL,
        cart_to_purchase_30d DOUBLE,
        tenure_days BIGINT NOT NULL,
        max_event_ts TIMESTAMPTZ NOT NULL
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS {DEVICE_HEALTH} (
        device_id VARCHAR NOT NULL,
        as_of_day DATE NOT NULL,
        readings BIGINT NOT NULL,
        expected_readings DOUBLE NOT NULL,
        reporting_rate DOUBLE NOT NULL,
        longest_silence_s DOUBLE NOT NULL,
        seconds_since_last_reading DOUBLE NOT NULL,
        battery_slope_per_h DOUBLE,
        share_degraded DOUBLE,
        share_fault DOUBLE
    )""",
    # Churn probabilities of one as-of day, from the model version that scored them.
    f"""
    CREATE TABLE IF NOT EXISTS {CHURN_SCORES} (
        user_id VARCHAR NOT NULL,
        as_of_day DATE NOT NULL,
        churn_probability DOUBLE NOT NULL,
        churn_predicted BOOLEAN NOT NULL,
        model_version VARCHAR NOT NULL
    )""",
    # Model artifacts, one per content version (churn-<sha256 prefix of payload>): the
    # pickled model, its out-of-time evaluation and the partition whose run trained it.
    f"""
    CREATE TABLE IF NOT EXISTS {CHURN_MODELS} (
        version VARCHAR PRIMARY KEY,
        trained_at TIMESTAMPTZ NOT NULL,
        trained_for_day DATE NOT NULL,
        trained_through DATE NOT NULL,
        threshold DOUBLE NOT NULL,
        metrics JSON NOT NULL,
        payload BLOB NOT NULL,
        run_id VARCHAR
    )""",
    # One score per clean sensor reading (hourly partitions on ts); the columns after
    # score describe the driving component (null when the score is 0).
    f"""
    CREATE TABLE IF NOT EXISTS {ANOMALY_SCORES} (
        event_id VARCHAR NOT NULL,
        device_id VARCHAR NOT NULL,
        ts TIMESTAMPTZ NOT NULL,
        topic VARCHAR NOT NULL,
        "partition" INTEGER NOT NULL,
        "offset" BIGINT NOT NULL,
        score DOUBLE NOT NULL,
        driver VARCHAR NOT NULL,
        metric VARCHAR,
        "value" DOUBLE,
        baseline_median DOUBLE,
        baseline_scale DOUBLE,
        robust_z DOUBLE,
        ewma_deviation DOUBLE,
        rate_per_min DOUBLE,
        rule_version VARCHAR NOT NULL
    )""",
    # Alerts are inserted once per alert_id and never replaced; the table is also the
    # outbox of the events_alerts topic: publish_attempt names the attempt that sent an
    # alert, published_at is set once the broker acknowledged it.
    f"""
    CREATE TABLE IF NOT EXISTS {ALERTS} (
        alert_id VARCHAR PRIMARY KEY,
        event_id VARCHAR NOT NULL,
        device_id VARCHAR NOT NULL,
        ts TIMESTAMPTZ NOT NULL,
        score DOUBLE NOT NULL,
        driver VARCHAR NOT NULL,
        metric VARCHAR,
        reason VARCHAR NOT NULL,
        topic VARCHAR NOT NULL,
        "partition" INTEGER NOT NULL,
        "offset" BIGINT NOT NULL,
        rule_version VARCHAR NOT NULL,
        threshold DOUBLE NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        run_id VARCHAR,
        publish_attempt VARCHAR,
        published_at TIMESTAMPTZ
    )""",
    # One row per attempt to publish alerts: the topic's offsets before it sent anything,
    # so an attempt that died before recording its outcome can be checked against the log.
    f"""
    CREATE TABLE IF NOT EXISTS {ALERT_PUBLICATIONS} (
        attempt_id VARCHAR PRIMARY KEY,
        topic VARCHAR NOT NULL,
        start_offsets JSON NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        completed_at TIMESTAMPTZ
    )""",
    # Per (asset, partition start) of the scoring layer (churn_features, churn_scores:
    # midnight UTC of the day; anomaly_scores, alerts: the hour): the last run that wrote
    # it, its row count and the latest ingestion time it could see; the checks read it.
    f"""
    CREATE TABLE IF NOT EXISTS {SCORING_PARTITIONS} (
        asset VARCHAR NOT NULL,
        partition_start TIMESTAMPTZ NOT NULL,
        materializations BIGINT NOT NULL,
        row_count BIGINT NOT NULL,
        seen_until TIMESTAMPTZ,
        seen_snapshot BIGINT,
        run_id VARCHAR,
        materialized_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (asset, partition_start)
    )""",
    # Ground truth of a simulation (`astra simulate --truth`): one row per reading an
    # injected anomaly changed (silent anomalies: one row with no event_id), and the
    # users made to decline. Lets checks measure scores against what was injected.
    f"""
    CREATE TABLE IF NOT EXISTS {ANOMALY_GROUND_TRUTH} (
        device_id VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        anomaly_start TIMESTAMPTZ NOT NULL,
        anomaly_end TIMESTAMPTZ NOT NULL,
        event_id VARCHAR,
        simulation VARCHAR NOT NULL
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS {DECLINING_USERS_TRUTH} (
        user_id VARCHAR NOT NULL,
        decline_start TIMESTAMPTZ NOT NULL,
        stop TIMESTAMPTZ NOT NULL,
        simulation VARCHAR NOT NULL
    )""",
    # Dead letters sent again (`astra deadletter replay`): one row per dead letter, so a
    # dead letter is replayed at most once (the key); the row is claimed with the message
    # it will publish before anything is sent, and gets where the message landed once the
    # broker acknowledged it. A replay that dies in between is settled by finding its
    # replay_id header on the target topic from search_from (the topic's ends before
    # sending). The replayed message's own outcome (clean, or a dead letter again) is
    # found by its coordinates: target_topic/target_partition/target_offset.
    f"""
    CREATE TABLE IF NOT EXISTS {DEADLETTER_REPLAYS} (
        source_topic VARCHAR NOT NULL,
        source_partition INTEGER NOT NULL,
        source_offset BIGINT NOT NULL,
        replay_id VARCHAR NOT NULL,
        attempt_id VARCHAR NOT NULL,
        target_topic VARCHAR NOT NULL,
        "key" BLOB,
        "value" BLOB NOT NULL,
        reason VARCHAR NOT NULL,
        transform VARCHAR,
        search_from JSON NOT NULL,
        claimed_at TIMESTAMPTZ NOT NULL,
        target_partition INTEGER,
        target_offset BIGINT,
        published_at TIMESTAMPTZ,
        PRIMARY KEY (source_topic, source_partition, source_offset)
    )""",
)

# Columns added after tables were first created: the DuckLake snapshot a window or
# scoring computation read (its watermark: concurrent ingest shards commit in another
# order than they stamp ingested_at).
_MIGRATIONS = tuple(
    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS seen_snapshot BIGINT"
    for table in (WINDOW_ROLLUPS, WINDOW_PARTITIONS, SCORING_PARTITIONS)
)
MIGRATED_COLUMNS = tuple(
    (m.group(1), m.group(2))
    for statement in _MIGRATIONS
    if (m := re.search(r"ALTER TABLE (\S+) ADD COLUMN IF NOT EXISTS (\S+)", statement))
)
"""(table, column) of every migration: a lake that has them all needs no DDL."""

# Turns: one-row tables that writers of one kind update in every transaction, so that
# two such transactions running at once cannot both commit. A DuckLake checks for
# conflicts at commit and lets two transactions that only append commit both, even when
# each checked first that the other's rows were not there; two updates of the same row
# conflict, and so does an update with any other change of the same table, while changes
# of two different tables never do. So ingest has a turn table per Kafka partition
# (ingest_turns_table): two batches conflict exactly when they share a partition, and
# shards of disjoint partitions commit side by side.
TURN_TABLES = (DEADLETTER_REPLAY_TURNS,)
INGEST_TURNS_PREFIX = "ops.ingest_turns_p"


def ingest_turns_table(partition: int) -> str:
    """The turn table of one partition of the raw topic (created by the first batch)."""
    return f"{INGEST_TURNS_PREFIX}{int(partition)}"


def turn_ddl(table: str) -> tuple[str, str]:
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (turns BIGINT NOT NULL)",
        f"INSERT INTO {table} SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM {table})",
    )


_TURNS = tuple(statement for table in TURN_TABLES for statement in turn_ddl(table))

_COLUMN_KEY = re.compile(r" PRIMARY KEY(?= *,| *\n)")
_TABLE_KEY = re.compile(r",\s*PRIMARY KEY \([^)]*\)")


def ddl() -> tuple[str, ...]:
    """The statements that create what is missing. A DuckLake has no PRIMARY KEY or
    UNIQUE constraints: the keys written in the table definitions above document the
    tables' keys, which the writers keep (MERGE, NOT EXISTS inside the transaction, and a
    turn where concurrent writers could both pass the check); the lake gets NOT NULL."""
    keyless = tuple(_TABLE_KEY.sub("", _COLUMN_KEY.sub(" NOT NULL", s)) for s in _DDL)
    return keyless + _MIGRATIONS + _TURNS


TABLES = tuple(
    match.group(1)
    for statement in _DDL + _TURNS
    if (match := re.search(r"CREATE TABLE IF NOT EXISTS (\S+)", statement))
)
"""Every table the DDL creates, schema-qualified."""
