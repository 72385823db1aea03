"""Group `serving`: DuckDB output tables copied to Postgres, partition by partition.

Each serving asset copies the rows of one DuckDB table whose partition column falls in
the run's partition window into the Postgres table of the same `schema.table` name,
replacing that window's rows in one transaction. The assets are built by a factory from
`ServingTableSpec`s, so a new table is served by adding its spec and its upstream asset.
"""

import datetime as dt
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from astra_pipeline.assets.ingest import CLEANED_EVENTS, WRITER_POOL
from astra_pipeline.assets.windows import HOURLY
from resources.serving import (
    PgType,
    PostgresServingResource,
    ServingColumn,
    ServingTableSpec,
    col,
)
from resources.warehouse import DuckDBWarehouseResource

# backfill_policy is beta in Dagster 1.13; it is used knowingly, so its warning is noise
# in every CLI call and test run.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

SERVING_GROUP = "serving"

# What each Postgres type is read as from DuckDB: the cast makes the Parquet hand-over
# (and so the CSV sent to COPY) independent of how the DuckDB column happens to be typed.
_DUCKDB_TYPE: dict[PgType, str] = {
    "text": "VARCHAR",
    "boolean": "BOOLEAN",
    "smallint": "SMALLINT",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "real": "FLOAT",
    "double precision": "DOUBLE",
    "numeric": "VARCHAR",  # exact decimal text, parsed by Postgres
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMPTZ",
    "jsonb": "VARCHAR",
    "bytea": "BLOB",
}

# Re-copy a partition whenever its upstream partition is re-materialized, including past
# hours amended by late events (plain eager() only looks at the latest time window).
FOLLOW_UPSTREAM = dg.AutomationCondition.eager().without(
    dg.AutomationCondition.in_latest_time_window()
)

# The clean event tables, opt-in (ASTRA_PG_SERVING_SCHEMAS=...,clean): served by event
# time, one hour per partition (windowed_aggregates' HOURLY); event_id is unique per table
# (a blocking ingest check).

_DELIVERY = (
    col("topic", "text", nullable=False),
    col("partition", "integer", nullable=False),
    col("offset", "bigint", nullable=False),
    col("ingested_at", "timestamptz", nullable=False),
    col("batch_id", "text", nullable=False),
)

SENSOR_READINGS_SPEC = ServingTableSpec(
    table="clean.sensor_readings",
    columns=(
        col("event_id", "text", nullable=False),
        col("device_id", "text", nullable=False),
        col("ts", "timestamptz", nullable=False),
        col("temperature_c", "double precision", nullable=False),
        col("humidity_pct", "double precision", nullable=False),
        col("battery_pct", "double precision", nullable=False),
        col("lat", "double precision", nullable=False),
        col("lon", "double precision", nullable=False),
        col("status", "text", nullable=False),
        col("extra", "jsonb"),
        col("dew_point_c", "double precision"),
        col("heat_index_c", "double precision", nullable=False),
        col("event_date", "date", nullable=False),
        col("event_hour", "timestamptz", nullable=False),
        *_DELIVERY,
    ),
    primary_key=("event_id",),
    index_columns=("ts", "device_id"),
    partition_column="ts",
)

USER_ACTIVITY_SPEC = ServingTableSpec(
    table="clean.user_activity",
    columns=(
        col("event_id", "text", nullable=False),
        col("user_id", "text", nullable=False),
        col("session_id", "text", nullable=False),
        col("ts", "timestamptz", nullable=False),
        col("action", "text", nullable=False),
        col("amount", "double precision"),
        col("currency", "text"),
        col("extra", "jsonb"),
        col("revenue", "double precision", nullable=False),
        col("event_date", "date", nullable=False),
        col("event_hour", "timestamptz", nullable=False),
        *_DELIVERY,
    ),
    primary_key=("event_id",),
    index_columns=("ts", "user_id"),
    partition_column="ts",
)


Columns = tuple[ServingColumn, ...]


def _window(id_column: str, start: str = "window_start", end: str = "window_end") -> Columns:
    return (
        col(id_column, "text", nullable=False),
        col(start, "timestamptz", nullable=False),
        col(end, "timestamptz", nullable=False),
    )


def _numbers(type_: PgType, *names: str, nullable: tuple[str, ...] = ()) -> Columns:
    return tuple(col(name, type_, nullable=name in nullable) for name in names)


_SENSOR_STATS = (
    *_numbers("bigint", "reading_count"),
    *_numbers(
        "double precision",
        *(
            f"{metric}_{stat}"
            for metric in ("temperature_c", "humidity_pct")
            for stat in ("mean", "min", "max", "stddev", "p95")
        ),
        "battery_min",
        nullable=("temperature_c_stddev", "humidity_pct_stddev"),
    ),
    *_numbers("bigint", "count_ok", "count_degraded", "count_fault"),
)
_USER_COUNTS = (
    *_numbers("bigint", "event_count", "page_views", "carts", "purchases"),
    *_numbers("double precision", "revenue"),
)


def _agg(table: str, columns: Columns, id_column: str, time_column: str) -> ServingTableSpec:
    return ServingTableSpec(
        table=table,
        columns=columns,
        primary_key=(time_column, id_column),
        index_columns=(time_column, id_column),
        partition_column=time_column,
    )


# The aggregate tables of windowed_aggregates (hourly partitions on window_start, or
# session_start for sessions). Served once the lead wires them to that asset: see
# `ServedTable` and docs/serving.md.
AGG_SPECS = (
    _agg("agg.sensor_1m", (*_window("device_id"), *_SENSOR_STATS), "device_id", "window_start"),
    _agg("agg.sensor_1h", (*_window("device_id"), *_SENSOR_STATS), "device_id", "window_start"),
    _agg(
        "agg.sensor_5m_sliding",
        (
            *_window("device_id"),
            *_numbers("bigint", "reading_count"),
            *_numbers(
                "double precision",
                "temperature_c_mean",
                "temperature_c_max",
                "humidity_pct_mean",
                "humidity_pct_max",
            ),
        ),
        "device_id",
        "window_start",
    ),
    _agg("agg.user_1m", (*_window("user_id"), *_USER_COUNTS), "user_id", "window_start"),
    _agg("agg.user_1h", (*_window("user_id"), *_USER_COUNTS), "user_id", "window_start"),
    _agg(
        "agg.user_sessions",
        (
            *_window("user_id", "session_start", "session_end"),
            *_numbers("double precision", "duration_s"),
            *_numbers("bigint", "event_count", "purchase_count"),
            *_numbers("double precision", "revenue"),
            col("continues_previous", "boolean", nullable=False),
        ),
        "user_id",
        "session_start",
    ),
)


def _daily(table: str, id_column: str, columns: Columns) -> ServingTableSpec:
    return ServingTableSpec(
        table=table,
        columns=(col(id_column, "text", nullable=False), col("as_of_day", "date", nullable=False))
        + columns,
        primary_key=("as_of_day", id_column),
        index_columns=("as_of_day", id_column),
        partition_column="as_of_day",
    )


_READING_LINK = (
    col("event_id", "text", nullable=False),
    col("device_id", "text", nullable=False),
    col("ts", "timestamptz", nullable=False),
    col("topic", "text", nullable=False),
    col("partition", "integer", nullable=False),
    col("offset", "bigint", nullable=False),
)

# The tables of churn_features and churn_scores (daily partitions on as_of_day) and of
# anomaly_scores and alerts (hourly partitions on ts). ml.churn_models is not served: its
# payload is a pickle, to be loaded only by this pipeline from its own store.
USER_CHURN_SPEC = _daily(
    "features.user_churn",
    "user_id",
    (
        *_numbers("bigint", "days_since_last_event"),
        *_numbers(
            "bigint",
            "days_since_last_purchase",
            "days_since_last_cart",
            nullable=("days_since_last_purchase", "days_since_last_cart"),
        ),
        *_numbers(
            "bigint",
            "sessions_7d",
            "sessions_30d",
            "page_views_7d",
            "page_views_30d",
            "purchases_7d",
            "purchases_30d",
        ),
        *_numbers(
            "double precision",
            "revenue_7d",
            "revenue_30d",
            "aov_7d",
            "aov_30d",
            nullable=("aov_7d", "aov_30d"),
        ),
        *_numbers("bigint", "events_last7", "events_prev7"),
        *_numbers("double precision", "events_trend_ratio"),
        *_numbers("bigint", "events_trend_diff"),
        *_numbers("double precision", "cart_to_purchase_30d", nullable=("cart_to_purchase_30d",)),
        *_numbers("bigint", "tenure_days"),
        col("max_event_ts", "timestamptz", nullable=False),
    ),
)
DEVICE_HEALTH_SPEC = _daily(
    "features.device_health",
    "device_id",
    (
        *_numbers("bigint", "readings"),
        *_numbers(
            "double precision",
            "expected_readings",
            "reporting_rate",
            "longest_silence_s",
            "seconds_since_last_reading",
            "battery_slope_per_h",
            "share_degraded",
            "share_fault",
            nullable=("battery_slope_per_h", "share_degraded", "share_fault"),
        ),
    ),
)
CHURN_SCORES_SPEC = _daily(
    "ml.churn_scores",
    "user_id",
    (
        col("churn_probability", "double precision", nullable=False),
        col("churn_predicted", "boolean", nullable=False),
        col("model_version", "text", nullable=False),
    ),
)
ANOMALY_SCORES_SPEC = ServingTableSpec(
    table="ml.anomaly_scores",
    columns=(
        *_READING_LINK,
        col("score", "double precision", nullable=False),
        col("driver", "text", nullable=False),
        col("metric", "text"),
        *_numbers(
            "double precision",
            "value",
            "baseline_median",
            "baseline_scale",
            "robust_z",
            "ewma_deviation",
            "rate_per_min",
            nullable=(
                "value",
                "baseline_median",
                "baseline_scale",
                "robust_z",
                "ewma_deviation",
                "rate_per_min",
            ),
        ),
        col("rule_version", "text", nullable=False),
    ),
    primary_key=("event_id",),
    index_columns=("ts", "device_id"),
    partition_column="ts",
)
ALERTS_SPEC = ServingTableSpec(
    table="ml.alerts",
    columns=(
        col("alert_id", "text", nullable=False),
        *_READING_LINK[:3],
        col("score", "double precision", nullable=False),
        col("driver", "text", nullable=False),
        col("metric", "text"),
        col("reason", "text", nullable=False),
        *_READING_LINK[3:],
        col("rule_version", "text", nullable=False),
        col("threshold", "double precision", nullable=False),
        col("created_at", "timestamptz", nullable=False),
        col("run_id", "text"),
        col("publish_attempt", "text"),
        col("published_at", "timestamptz"),
    ),
    primary_key=("alert_id",),
    index_columns=("ts", "device_id"),
    partition_column="ts",
)


@dataclass(frozen=True)
class ServedTable:
    """One table to serve: its spec, the asset that writes it in DuckDB, its partitions.

    `automate`: follow the upstream's partitions automatically (when automation is on).
    Only for an upstream with the same partitions: an unpartitioned upstream (the clean
    tables, updated by every ingest run) would mark every hour as changed each time.
    """

    spec: ServingTableSpec
    upstream: dg.AssetKey
    partitions_def: dg.TimeWindowPartitionsDefinition
    automate: bool = True


# Materialized on demand or by a backfill (`--partition-range`), never automatically.
CLEAN_SERVED_TABLES = (
    ServedTable(SENSOR_READINGS_SPEC, CLEANED_EVENTS, HOURLY, automate=False),
    ServedTable(USER_ACTIVITY_SPEC, CLEANED_EVENTS, HOURLY, automate=False),
)


def serving_asset_key(spec: ServingTableSpec) -> dg.AssetKey:
    return dg.AssetKey(["serving", spec.schema_name, spec.table_name])


def select_served(tables: Iterable[ServedTable], schemas: Sequence[str]) -> list[ServedTable]:
    """The tables whose DuckDB schema is one of `schemas` (ASTRA_PG_SERVING_SCHEMAS)."""
    return [t for t in tables if t.spec.schema_name in schemas]


def _quoted(name: str) -> str:
    # Spec names are validated as [a-z_][a-z0-9_]*, so quoting cannot be escaped.
    return f'"{name}"'


def read_partition(
    warehouse: DuckDBWarehouseResource,
    spec: ServingTableSpec,
    start: dt.datetime,
    end: dt.datetime,
) -> pl.DataFrame:
    """The DuckDB rows of `spec.table` with the partition column in [start, end).

    DuckDB writes them to a Parquet file that polars reads back: about 15x faster than
    fetching Python rows through the session (5 s per million rows), and the read-only
    connection (shared file lock) is held only for the export.
    """
    select = ", ".join(
        f"CAST({_quoted(c.name)} AS {_DUCKDB_TYPE[c.type]}) AS {_quoted(c.name)}"
        for c in spec.columns
    )
    schema, table = (_quoted(part) for part in spec.table.split("."))
    where = _quoted(spec.partition_column)
    with tempfile.TemporaryDirectory(prefix="astra-serving-") as folder:
        path = Path(folder) / "partition.parquet"
        with warehouse.session(read_only=True) as session:
            # The target is a literal: DuckDB 1.5 takes no parameter there (a temporary
            # path of our own, with no quote in it).
            target = str(path).replace("'", "''")
            session.execute(
                f"COPY (SELECT {select} FROM {schema}.{table} "
                f"WHERE {where} >= ? AND {where} < ?) TO '{target}' (FORMAT parquet)",
                [start, end],
            )
        return pl.read_parquet(path)


def build_serving_asset(
    served: ServedTable,
    automation_condition: dg.AutomationCondition[dg.AssetKey] | None = None,
) -> dg.AssetsDefinition:
    """The asset copying `served.spec.table` from DuckDB to Postgres per time partition.

    It is in the DuckDB writer pool: its read-only connection takes a shared file lock
    that blocks the writer, and a backfill's many reads must not starve ingest.
    """
    spec = served.spec
    key = serving_asset_key(spec)
    check_name = f"{spec.schema_name}_{spec.table_name}_matches_warehouse"

    @dg.asset(
        key=key,
        group_name=SERVING_GROUP,
        deps=[served.upstream],
        partitions_def=served.partitions_def,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=24),
        pool=WRITER_POOL,
        automation_condition=automation_condition,
        kinds={"postgres"},
        check_specs=[
            dg.AssetCheckSpec(
                check_name,
                asset=key,
                description="After the commit, Postgres holds as many rows in the "
                "partition window as DuckDB did.",
            )
        ],
        description=f"Postgres serving copy of {spec.table}, replaced one partition "
        "window per transaction.",
    )
    def _serve(
        context: dg.AssetExecutionContext,
        warehouse: DuckDBWarehouseResource,
        serving_db: PostgresServingResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        window = context.partition_time_window
        started = time.monotonic()
        frame = read_partition(warehouse, spec, window.start, window.end)
        read_s = time.monotonic() - started
        serving_db.ensure_table(spec)
        result = serving_db.replace_partition(spec, frame, start=window.start, end=window.end)
        served_rows = serving_db.count_rows(spec, window.start, window.end)
        seconds = round(time.monotonic() - started, 3)
        context.log.info(
            f"{spec.table} [{window.start.isoformat()}, {window.end.isoformat()}): "
            f"{result.inserted} rows in, {result.deleted} replaced, {seconds}s"
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.inserted,
                "rows_replaced": result.deleted,
                "seconds": seconds,
                "read_seconds": round(read_s, 3),
                "load_seconds": result.seconds,
                "rows_per_second": round(result.inserted / seconds, 1) if seconds else 0.0,
                "table": spec.table,
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=check_name,
                    passed=served_rows == frame.height,
                    metadata={"warehouse_rows": frame.height, "serving_rows": served_rows},
                )
            ],
        )

    return _serve


def build_serving_assets(
    tables: Iterable[ServedTable], automate: bool = False
) -> list[dg.AssetsDefinition]:
    """The serving assets; with `automate` (ASTRA_PG_SERVING_AUTOMATION), those whose
    table allows it re-copy a partition whenever its upstream partition changes."""
    return [
        build_serving_asset(t, FOLLOW_UPSTREAM if automate and t.automate else None) for t in tables
    ]
