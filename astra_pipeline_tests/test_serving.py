"""Postgres serving copy against a real Postgres (conftest.postgres_server: the local one
on 127.0.0.1:5432, else the embedded one; database `test`).

Each test session works in a fresh, uniquely named schema, dropped at the end; the lake
side is a fresh lake with a table of the same `schema.table` name.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator

import dagster as dg
import polars as pl
import psycopg
import pytest

from astra_pipeline.assets.serving import (
    AGG_SPECS,
    CLEAN_SERVED_TABLES,
    FOLLOW_UPSTREAM,
    ServedTable,
    build_serving_asset,
    build_serving_assets,
    read_partition,
    select_served,
    serving_asset_key,
)
from astra_pipeline_tests.helpers import PostgresServer
from resources.serving import (
    PostgresServingResource,
    ServingDataError,
    ServingSchemaMismatch,
    ServingTableSpec,
    ServingUnavailable,
    col,
    serving_resource_from_settings,
)
from resources.settings import AstraSettings
from resources.warehouse import DuckDBWarehouseResource

HOUR = dt.timedelta(hours=1)
T0 = dt.datetime(2026, 11, 23, 7, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def pg_schema(pg: str) -> Iterator[str]:
    name = f"astra_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture
def serving_db(postgres_server: PostgresServer) -> PostgresServingResource:
    server = postgres_server
    return PostgresServingResource(
        host=server.host, port=server.port, user=server.user, database="test"
    )


def agg_spec(schema: str, table: str) -> ServingTableSpec:
    """Shaped like agg.sensor_1m: a 1-minute window per device with its statistics."""
    return ServingTableSpec(
        table=f"{schema}.{table}",
        columns=(
            col("window_start", "timestamptz", nullable=False),
            col("device_id", "text", nullable=False),
            col("readings", "bigint", nullable=False),
            col("temperature_mean", "double precision"),
            col("temperature_p95", "double precision"),
            col("degraded", "integer"),
            col("window_date", "date", nullable=False),
        ),
        primary_key=("window_start", "device_id"),
        index_columns=("window_start", "device_id"),
        partition_column="window_start",
    )


def agg_rows(hour: dt.datetime, devices: int, minutes: int = 60, seed: int = 0) -> pl.DataFrame:
    """Windows of one hour; values depend on seed, so two loads can be told apart."""
    starts = [hour + dt.timedelta(minutes=m) for m in range(minutes)]
    return pl.DataFrame(
        {
            "window_start": [s for s in starts for _ in range(devices)],
            "device_id": [f"dev-{d:05d}" for _ in starts for d in range(devices)],
            "readings": [
                (m * devices + d + seed) % 13 for m in range(minutes) for d in range(devices)
            ],
            "temperature_mean": [20.0 + seed + d / 8 for _ in starts for d in range(devices)],
            "temperature_p95": [
                None if d % 7 == 0 else 30.5 for _ in starts for d in range(devices)
            ],
            "degraded": [d % 3 for _ in starts for d in range(devices)],
            "window_date": [hour.date() for _ in starts for _ in range(devices)],
        },
        schema_overrides={"window_start": pl.Datetime("us", "UTC")},
    )


def pg_rows(pg: str, table: str, start: dt.datetime, end: dt.datetime) -> list[tuple]:
    with psycopg.connect(pg) as conn:
        return conn.execute(
            f"SELECT window_start, device_id, readings, temperature_mean, temperature_p95, "
            f"degraded, window_date FROM {table} WHERE window_start >= %s AND window_start < %s "
            "ORDER BY window_start, device_id",
            (start, end),
        ).fetchall()


def as_tuples(frame: pl.DataFrame) -> list[tuple]:
    return sorted(frame.rows(), key=lambda r: (r[0], r[1]))


def test_table_created_with_types_primary_key_and_indexes(
    serving_db: PostgresServingResource, pg_schema: str, pg: str
) -> None:
    spec = agg_spec(pg_schema, "types")
    serving_db.ensure_table(spec)
    serving_db.ensure_table(spec)  # idempotent
    with psycopg.connect(pg) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'types' ORDER BY ordinal_position",
            (pg_schema,),
        ).fetchall()
        key = conn.execute(
            "SELECT k.column_name FROM information_schema.table_constraints c "
            "JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name) "
            "WHERE c.table_schema = %s AND c.table_name = 'types' "
            "AND c.constraint_type = 'PRIMARY KEY' ORDER BY k.ordinal_position",
            (pg_schema,),
        ).fetchall()
        indexes = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
                "AND tablename = 'types'",
                (pg_schema,),
            ).fetchall()
        )
    assert columns == [
        ("window_start", "timestamp with time zone", "NO"),
        ("device_id", "text", "NO"),
        ("readings", "bigint", "NO"),
        ("temperature_mean", "double precision", "YES"),
        ("temperature_p95", "double precision", "YES"),
        ("degraded", "integer", "YES"),
        ("window_date", "date", "NO"),
    ]
    assert key == [("window_start",), ("device_id",)]
    # Time is served by the primary key's index (window_start leads it), device_id by its own.
    assert set(indexes) == {"types_pkey", "types_device_id_idx"}
    assert indexes["types_pkey"].startswith("CREATE UNIQUE INDEX")
    assert indexes["types_pkey"].endswith("USING btree (window_start, device_id)")
    assert indexes["types_device_id_idx"].endswith("USING btree (device_id)")


def test_existing_table_with_other_columns_is_reported(
    serving_db: PostgresServingResource, pg_schema: str
) -> None:
    spec = agg_spec(pg_schema, "drift")
    serving_db.ensure_table(spec)
    changed = spec.model_copy(
        update={"columns": (*spec.columns[:-1], col("window_date", "timestamptz"))}
    )
    with pytest.raises(ServingSchemaMismatch, match="window_date"):
        serving_db.ensure_table(changed)


def test_spec_rejects_unknown_key_columns_and_types() -> None:
    with pytest.raises(ValueError, match="primary_key names unknown columns"):
        ServingTableSpec(
            table="agg.x",
            columns=(col("a", "text"),),
            primary_key=("b",),
            partition_column="a",
        )
    with pytest.raises(ValueError):
        col("a", "text; DROP TABLE x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ServingTableSpec(
            table='agg."x"', columns=(col("a", "text"),), primary_key=("a",), partition_column="a"
        )


def test_replace_is_idempotent_and_leaves_other_partitions_alone(
    serving_db: PostgresServingResource, pg_schema: str, pg: str
) -> None:
    spec = agg_spec(pg_schema, "replace")
    serving_db.ensure_table(spec)
    first, second = agg_rows(T0, devices=20), agg_rows(T0 + HOUR, devices=20, seed=1)
    serving_db.replace_partition(spec, first, start=T0, end=T0 + HOUR)
    serving_db.replace_partition(spec, second, start=T0 + HOUR, end=T0 + 2 * HOUR)
    second_before = pg_rows(pg, spec.table, T0 + HOUR, T0 + 2 * HOUR)
    assert second_before == as_tuples(second)

    again = serving_db.replace_partition(spec, first, start=T0, end=T0 + HOUR)
    assert (again.deleted, again.inserted) == (1200, 1200)
    assert pg_rows(pg, spec.table, T0, T0 + HOUR) == as_tuples(first)

    amended = agg_rows(T0, devices=15, minutes=50, seed=5)
    result = serving_db.replace_partition(spec, amended.to_arrow(), start=T0, end=T0 + HOUR)
    assert (result.deleted, result.inserted) == (1200, 750)
    assert pg_rows(pg, spec.table, T0, T0 + HOUR) == as_tuples(amended)
    assert pg_rows(pg, spec.table, T0 + HOUR, T0 + 2 * HOUR) == second_before

    emptied = serving_db.replace_partition(spec, amended.clear(), start=T0, end=T0 + HOUR)
    assert (emptied.deleted, emptied.inserted) == (750, 0)
    assert pg_rows(pg, spec.table, T0, T0 + 2 * HOUR) == second_before


def test_failed_replace_rolls_back_to_the_old_partition(
    serving_db: PostgresServingResource, pg_schema: str, pg: str
) -> None:
    spec = agg_spec(pg_schema, "rollback")
    serving_db.ensure_table(spec)
    old = agg_rows(T0, devices=5)
    serving_db.replace_partition(spec, old, start=T0, end=T0 + HOUR)
    duplicated = pl.concat([agg_rows(T0, devices=5, seed=3), agg_rows(T0, devices=1, seed=3)])
    with pytest.raises(ServingDataError, match="duplicate key"):
        serving_db.replace_partition(spec, duplicated, start=T0, end=T0 + HOUR)
    assert pg_rows(pg, spec.table, T0, T0 + HOUR) == as_tuples(old)

    outside = agg_rows(T0 + HOUR, devices=2)
    with pytest.raises(ServingDataError, match="120 rows have window_start outside"):
        serving_db.replace_partition(spec, outside, start=T0, end=T0 + HOUR)
    with pytest.raises(ServingDataError, match="missing columns"):
        serving_db.replace_partition(spec, old.drop("degraded"), start=T0, end=T0 + HOUR)
    assert pg_rows(pg, spec.table, T0, T0 + HOUR) == as_tuples(old)


def test_concurrent_reader_never_sees_a_partial_partition(
    serving_db: PostgresServingResource, pg_schema: str, pg: str
) -> None:
    spec = agg_spec(pg_schema, "concurrent")
    serving_db.ensure_table(spec)
    old, new = agg_rows(T0, devices=2_500), agg_rows(T0, devices=4_000, seed=1)
    neighbour = agg_rows(T0 + HOUR, devices=10)
    serving_db.replace_partition(spec, old, start=T0, end=T0 + HOUR)
    serving_db.replace_partition(spec, neighbour, start=T0 + HOUR, end=T0 + 2 * HOUR)
    seen: list[tuple[float, int, int]] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            with psycopg.connect(pg, autocommit=True) as conn:  # READ COMMITTED per statement
                while not stop.is_set():
                    in_hour, total = conn.execute(
                        f"SELECT count(*) FILTER (WHERE window_start < %s), count(*) "
                        f"FROM {spec.table}",
                        (T0 + HOUR,),
                    ).fetchone()
                    seen.append((time.monotonic(), in_hour, total))
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    while not seen:
        time.sleep(0.01)
    began = time.monotonic()
    result = serving_db.replace_partition(spec, new, start=T0, end=T0 + HOUR)
    ended = time.monotonic()
    time.sleep(0.2)
    stop.set()
    reader.join(timeout=30)
    assert not errors
    assert (result.deleted, result.inserted) == (150_000, 240_000)
    during = [s for s in seen if began <= s[0] <= ended]
    assert len(during) >= 3, f"reader polled only {len(during)} times during the replace"
    assert {(n, total) for _, n, total in seen} <= {(150_000, 150_600), (240_000, 240_600)}
    assert seen[0][1] == 150_000 and seen[-1][1] == 240_000


def test_connection_errors_are_translated_and_never_show_the_password(pg_schema: str) -> None:
    secret = "s3cret-" + uuid.uuid4().hex
    unreachable = PostgresServingResource(
        host="127.0.0.1", port=1, user="postgres", database="test", password=secret
    )
    assert secret not in repr(unreachable)
    with pytest.raises(ServingUnavailable) as caught:
        unreachable.ensure_table(agg_spec(pg_schema, "never"))
    assert "postgres@127.0.0.1:1/test" in str(caught.value)
    assert secret not in str(caught.value) and "\n" not in str(caught.value)


def test_resource_from_settings_prefers_the_url_and_takes_the_password_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ASTRA_PG_PASSWORD", "from-env")
    by_url = serving_resource_from_settings(
        AstraSettings(pg_url="postgresql://reader@db.internal:6432/serving")
    )
    assert by_url.describe() == "reader@db.internal:6432/serving"
    by_parts = serving_resource_from_settings(
        AstraSettings(pg_host="pg", pg_port=5433, pg_user="astra", pg_database="serve")
    )
    assert by_parts.describe() == "astra@pg:5433/serve"
    assert isinstance(by_parts.password, dg.EnvVar)
    assert by_parts.password.env_var_name == "ASTRA_PG_PASSWORD"
    with dg.build_resources({"serving_db": by_parts}) as built:
        assert built.serving_db.password == "from-env"  # resolved only at run time
        assert "from-env" not in repr(built.serving_db)
    monkeypatch.delenv("ASTRA_PG_PASSWORD")
    assert serving_resource_from_settings(AstraSettings()).password is None


def test_clean_tables_are_opt_in_by_schema() -> None:
    assert select_served(CLEAN_SERVED_TABLES, AstraSettings().serving_schemas()) == []
    opted = AstraSettings(pg_serving_schemas="agg,clean").serving_schemas()
    assert [
        serving_asset_key(t.spec).to_user_string()
        for t in select_served(CLEAN_SERVED_TABLES, opted)
    ] == ["serving/clean/sensor_readings", "serving/clean/user_activity"]


def test_serving_asset_copies_one_lake_partition(
    serving_db: PostgresServingResource, pg_schema: str, warehouse: DuckDBWarehouseResource, pg: str
) -> None:
    spec = agg_spec(pg_schema, "sensor_1m")
    hours = [agg_rows(T0 + i * HOUR, devices=30, seed=i) for i in range(3)]
    with warehouse.transaction() as tx:
        tx.execute(f"CREATE SCHEMA {pg_schema}")
        tx.execute(
            f"CREATE TABLE {spec.table} (window_start TIMESTAMPTZ NOT NULL, device_id VARCHAR, "
            "readings BIGINT, temperature_mean DOUBLE, temperature_p95 DOUBLE, "
            "degraded INTEGER, window_date DATE, late_events INTEGER)"
        )
        for frame in hours:
            tx.append(spec.table, frame.with_columns(pl.lit(0).alias("late_events")))
    partitions = dg.HourlyPartitionsDefinition(start_date="2026-11-23-00:00", timezone="UTC")
    asset = build_serving_asset(ServedTable(spec, dg.AssetKey("sensor_aggregates"), partitions))
    resources = {
        "warehouse": warehouse,
        "serving_db": serving_db,
    }

    for _ in range(2):  # the second materialization replaces, never appends
        result = dg.materialize([asset], partition_key="2026-11-23-08:00", resources=resources)
        assert result.success
        assert pg_rows(pg, spec.table, T0, T0 + 3 * HOUR) == as_tuples(hours[1])

    materialization = result.asset_materializations_for_node(asset.node_def.name)[0]
    assert materialization.metadata["dagster/row_count"].value == 1800
    assert materialization.metadata["rows_replaced"].value == 1800
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    assert check.metadata["serving_rows"].value == 1800

    ranged = dg.materialize(
        [asset],
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": "2026-11-23-07:00",
            "dagster/asset_partition_range_end": "2026-11-23-09:00",
        },
    )
    assert ranged.success
    expected = sorted((row for frame in hours for row in frame.rows()), key=lambda r: (r[0], r[1]))
    assert pg_rows(pg, spec.table, T0, T0 + 3 * HOUR) == expected


DUCKDB_TO_PG = {
    "VARCHAR": "text",
    "JSON": "jsonb",
    "BOOLEAN": "boolean",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "DOUBLE": "double precision",
    "DATE": "date",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
}


@pytest.mark.parametrize(
    "spec", [*(t.spec for t in CLEAN_SERVED_TABLES), *AGG_SPECS], ids=lambda s: s.table
)
def test_spec_matches_the_warehouse_ddl(
    spec: ServingTableSpec, warehouse: DuckDBWarehouseResource
) -> None:
    warehouse.ensure_schema()
    with warehouse.session(read_only=True) as session:
        tables = session.query("SELECT schema_name || '.' || table_name AS t FROM duckdb_tables()")[
            "t"
        ].to_list()
        if spec.table not in tables:
            pytest.skip(f"{spec.table} is not in resources/tables.py's DDL (yet)")
        described = session.query(f"DESCRIBE {spec.table}")
    assert described["column_name"].to_list() == spec.column_names
    assert [DUCKDB_TO_PG[t] for t in described["column_type"]] == [c.type for c in spec.columns]
    not_null = described.filter(pl.col("null") == "NO")["column_name"].to_list()
    assert not_null == [c.name for c in spec.columns if not c.nullable]


@pytest.mark.parametrize("served", CLEAN_SERVED_TABLES, ids=lambda t: t.spec.table)
def test_clean_tables_round_trip_through_the_serving_copy(
    served: ServedTable,
    serving_db: PostgresServingResource,
    pg_schema: str,
    warehouse: DuckDBWarehouseResource,
    pg: str,
) -> None:
    warehouse.ensure_schema()

    # The same columns under the test schema, one row inside the hour and one outside.
    spec = served.spec.model_copy(
        update={"table": f"{pg_schema}.{served.spec.table.replace('.', '_')}"}
    )
    id_column = "device_id" if "device_id" in spec.column_names else "user_id"
    with warehouse.transaction() as tx:
        tx.execute(f"CREATE SCHEMA IF NOT EXISTS {pg_schema}")
        tx.execute(f"CREATE TABLE {spec.table} AS SELECT * FROM {served.spec.table} LIMIT 0")
        values = {
            "text": "'x'",
            "double precision": "1.25",
            "integer": "3",
            "bigint": "42",
            "date": "DATE '2026-11-23'",
            "timestamptz": "TIMESTAMPTZ '2026-11-23 07:30:00+00'",
            "jsonb": """'{"firmware": "1.2"}'""",
        }
        for event_id, ts in (("e-in", "07:30:00"), ("e-out", "08:00:00")):
            row = ", ".join(
                f"'{event_id}'"
                if c.name == "event_id"
                else f"TIMESTAMPTZ '2026-11-23 {ts}+00'"
                if c.name == "ts"
                else values[c.type]
                for c in spec.columns
            )
            tx.execute(f"INSERT INTO {spec.table} VALUES ({row})")
    frame = read_partition(warehouse, spec, T0, T0 + HOUR)
    serving_db.ensure_table(spec)
    serving_db.replace_partition(spec, frame, start=T0, end=T0 + HOUR)
    with psycopg.connect(pg) as conn:
        got = conn.execute(f"SELECT event_id, extra, {id_column} FROM {spec.table}").fetchall()
        indexes = {
            name
            for (name,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                (spec.schema_name, spec.table_name),
            ).fetchall()
        }
    assert got == [("e-in", {"firmware": "1.2"}, "x")]
    table = spec.table_name
    assert indexes == {f"{table}_pkey", f"{table}_ts_idx", f"{table}_{id_column}_idx"}


def test_automation_only_follows_partitioned_upstreams() -> None:
    hourly = dg.HourlyPartitionsDefinition(start_date="2026-11-23-00:00")
    agg = ServedTable(AGG_SPECS[0], dg.AssetKey("windowed_aggregates"), hourly)
    tables = [CLEAN_SERVED_TABLES[0], agg]
    clean_asset, agg_asset = build_serving_assets(tables, automate=True)
    assert clean_asset.automation_conditions_by_key.get(clean_asset.key) is None
    assert agg_asset.automation_conditions_by_key[agg_asset.key] == FOLLOW_UPSTREAM
    for asset in build_serving_assets(tables, automate=False):
        assert asset.automation_conditions_by_key.get(asset.key) is None
    assert agg_asset.key == dg.AssetKey(["serving", "agg", "sensor_1m"])
    assert agg_asset.group_names_by_key[agg_asset.key] == "serving"
    assert agg_asset.op.pool == "duckdb_writer"
