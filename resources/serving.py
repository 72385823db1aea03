"""Postgres serving copy: DuckDB outputs replaced partition by partition for many readers.

DuckDB lets one process write at a time; dashboards, services and analysts read the
Postgres copy instead. A partition is replaced in one transaction (lock the table against
other writers, DELETE the partition's time range, bulk COPY the new rows, COMMIT), so a
reader at READ COMMITTED sees the old partition or the new one, never a mix, and a
re-materialized partition replaces exactly its rows.

The password never enters a log or an error message: it comes from `dg.EnvVar` (see
`resources.settings.pg_password_source`), is masked in the resource's repr, and connection
errors are described by host, port, database and user only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import re
import time
from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg
import polars as pl
import psycopg
import psycopg.conninfo
import pyarrow as pa
from psycopg import errors as pg_errors
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, model_validator

from resources.errors import AstraResourceError
from resources.settings import PG_PASSWORD_ENV, AstraSettings, pg_password_source


class ServingError(AstraResourceError):
    """Postgres rejected a statement of the serving copy."""


class ServingUnavailable(ServingError):
    """The serving database could not be reached or refused the connection."""


class ServingLocked(ServingError):
    """Another writer held the serving table for longer than lock_timeout_s."""


class ServingSchemaMismatch(ServingError):
    """The Postgres table exists with other columns or types than its spec."""


class ServingDataError(ServingError):
    """The rows to load do not fit the spec (columns, partition range, keys, values)."""


# The types a spec may name: a closed set, so a spec can never smuggle SQL into DDL.
PgType = Literal[
    "text",
    "boolean",
    "smallint",
    "integer",
    "bigint",
    "real",
    "double precision",
    "numeric",
    "date",
    "timestamp",
    "timestamptz",
    "jsonb",
    "bytea",
]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_MAX_IDENTIFIER = 63  # Postgres truncates longer names (NAMEDATALEN - 1)
# information_schema.columns.data_type spells some types out in full.
_INFORMATION_SCHEMA_TYPE = {
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
}


class ServingColumn(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=_IDENTIFIER.pattern, max_length=_MAX_IDENTIFIER)
    type: PgType
    nullable: bool = True


class ServingTableSpec(BaseModel):
    """One serving table: the same `schema.table` name as in DuckDB, its columns and keys.

    `partition_column` is the time column a Dagster partition's window is applied to;
    `index_columns` each get a btree index (time, device or user id) for readers, except
    the primary key's leading column, which the primary key's own index already serves
    (a second index on it would only slow every load down).
    """

    model_config = ConfigDict(frozen=True)

    table: str = Field(pattern=r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
    columns: tuple[ServingColumn, ...] = Field(min_length=1)
    primary_key: tuple[str, ...] = Field(min_length=1)
    index_columns: tuple[str, ...] = ()
    partition_column: str

    @model_validator(mode="after")
    def _keys_are_columns(self) -> ServingTableSpec:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.table}: duplicate column names {names}")
        for role, wanted in (
            ("primary_key", self.primary_key),
            ("index_columns", self.index_columns),
            ("partition_column", (self.partition_column,)),
        ):
            unknown = [c for c in wanted if c not in names]
            if unknown:
                raise ValueError(f"{self.table}: {role} names unknown columns {unknown}")
        for column in self.index_columns:
            if len(self.index_name(column)) > _MAX_IDENTIFIER:
                raise ValueError(f"{self.table}: index name for {column} exceeds 63 characters")
        return self

    @property
    def schema_name(self) -> str:
        return self.table.split(".")[0]

    @property
    def table_name(self) -> str:
        return self.table.split(".")[1]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def secondary_index_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.index_columns if c != self.primary_key[0])

    def index_name(self, column: str) -> str:
        return f"{self.table_name}_{column}_idx"

    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema_name, self.table_name)


def col(name: str, type_: PgType, nullable: bool = True) -> ServingColumn:
    """Shorthand for spec literals: ``col("window_start", "timestamptz", nullable=False)``."""
    return ServingColumn(name=name, type=type_, nullable=nullable)


@dataclasses.dataclass(frozen=True)
class ReplaceResult:
    deleted: int
    inserted: int
    seconds: float


def _create_table_sql(spec: ServingTableSpec) -> sql.Composed:
    primary = set(spec.primary_key)
    columns = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name),
            sql.SQL(c.type),  # a PgType literal, validated above
            sql.SQL(" NOT NULL" if (not c.nullable or c.name in primary) else ""),
        )
        for c in spec.columns
    ]
    key = sql.SQL("CONSTRAINT {} PRIMARY KEY ({})").format(
        sql.Identifier(f"{spec.table_name}_pkey"),
        sql.SQL(", ").join(sql.Identifier(c) for c in spec.primary_key),
    )
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        spec.identifier(), sql.SQL(", ").join([*columns, key])
    )


def _csv_ready(frame: pl.DataFrame, spec: ServingTableSpec) -> pl.DataFrame:
    """The frame in spec column order, with types Postgres reads from CSV unambiguously."""
    missing = [c for c in spec.column_names if c not in frame.columns]
    extra = [c for c in frame.columns if c not in spec.column_names]
    if missing or extra:
        raise ServingDataError(
            f"{spec.table}: rows do not match the spec (missing columns {missing}, "
            f"unexpected columns {extra})"
        )
    frame = frame.select(spec.column_names)
    casts: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        if dtype in (pl.Binary,):
            # bytea's hex input form; CSV has no binary values.
            casts.append(pl.concat_str(pl.lit("\\x"), pl.col(name).bin.encode("hex")).alias(name))
        elif isinstance(dtype, pl.List | pl.Array | pl.Struct | pl.Object):
            raise ServingDataError(f"{spec.table}.{name}: nested type {dtype} cannot be served")
    return frame.with_columns(casts) if casts else frame


def _bounds(dtype: pl.DataType, start: dt.datetime, end: dt.datetime) -> tuple[Any, Any]:
    """start and end as values comparable with a column of `dtype` (for the range check)."""
    if dtype == pl.Date:
        return start.date(), end.date()
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return (
            start.astimezone(dt.UTC).replace(tzinfo=None),
            end.astimezone(dt.UTC).replace(tzinfo=None),
        )
    return start, end


class PostgresServingResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Postgres database holding the serving copy (schemas agg, features, ml, ...).

    Give either `url` (a libpq URL or key=value string, without the password) or the
    parts; `password` should be `dg.EnvVar("ASTRA_PG_PASSWORD")`, or None for trust,
    peer or .pgpass authentication.
    """

    url: str | None = Field(default=None, description="libpq URL or conninfo, no password.")
    host: str | None = None
    port: int | None = None
    user: str | None = None
    database: str | None = None
    password: str | None = Field(
        default=None, description="Set through dg.EnvVar; never logged or shown."
    )
    connect_timeout_s: int = Field(default=10, description="Seconds to wait for a connection.")
    lock_timeout_s: float = Field(
        default=60.0, description="How long a replace waits for another writer of the table."
    )
    copy_chunk_rows: int = Field(
        default=100_000, description="Rows per CSV chunk sent to COPY (bounds memory)."
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "password" and value is not None else value)

    def describe(self) -> str:
        """user@host:port/database, from the configuration, without the password."""
        params = psycopg.conninfo.conninfo_to_dict(self._conninfo(with_password=False))
        return (
            f"{params.get('user', '?')}@{params.get('host', 'localhost')}:"
            f"{params.get('port', 5432)}/{params.get('dbname', '?')}"
        )

    def conninfo(self) -> str:
        """libpq connection string with the password (for a pool of its own: `astra api`)."""
        return self._conninfo()

    def _conninfo(self, with_password: bool = True) -> str:
        parts = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.database,
            "password": self.password if with_password else None,
        }
        return psycopg.conninfo.make_conninfo(
            self.url or "", **{k: v for k, v in parts.items() if v is not None}
        )

    def _scrub(self, message: str) -> str:
        """One line, and never the password (libpq does not echo it; belt and braces)."""
        line = " ".join(message.split())
        return line.replace(self.password, "***") if self.password else line

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A short-lived connection in UTC (timestamps without a zone are UTC), closed on
        exit. psycopg errors escaping the block are translated into ServingError types."""
        try:
            conn = psycopg.connect(
                self._conninfo(),
                connect_timeout=self.connect_timeout_s,
                application_name="astra-serving",
                options="-c TimeZone=UTC",
            )
        except psycopg.Error as error:
            raise ServingUnavailable(
                f"cannot connect to the serving database {self.describe()}: "
                f"{self._scrub(str(error))}"
            ) from None
        try:
            with conn:
                yield conn
        except psycopg.Error as error:
            raise self._translate(error) from error

    def _translate(self, error: psycopg.Error) -> ServingError:
        message = self._scrub(str(error))
        where = f"{self.describe()} [{error.sqlstate or 'no sqlstate'}]"
        if isinstance(error, pg_errors.LockNotAvailable):
            return ServingLocked(
                f"gave up after {self.lock_timeout_s:.0f}s waiting for another writer: "
                f"{message} ({where})"
            )
        if isinstance(error, psycopg.OperationalError):
            return ServingUnavailable(f"serving database connection failed: {message} ({where})")
        if isinstance(error, psycopg.IntegrityError | psycopg.DataError):
            return ServingDataError(f"rows rejected: {message} ({where})")
        return ServingError(f"{message} ({where})")

    def ensure_table(self, spec: ServingTableSpec) -> None:
        """Create the schema, table, primary key and indexes if missing; raise
        ServingSchemaMismatch if the table exists with other columns or types."""
        with self.connection() as conn, conn.transaction():
            # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog:
            # serialize DDL of the serving copy on one advisory lock.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('astra_serving_ddl'))")
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(spec.schema_name))
            )
            conn.execute(_create_table_sql(spec))
            for column in spec.secondary_index_columns:
                conn.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                        sql.Identifier(spec.index_name(column)),
                        spec.identifier(),
                        sql.Identifier(column),
                    )
                )
            found = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                (spec.schema_name, spec.table_name),
            ).fetchall()
        expected = [(c.name, _INFORMATION_SCHEMA_TYPE.get(c.type, c.type)) for c in spec.columns]
        if [tuple(row) for row in found] != expected:
            raise ServingSchemaMismatch(
                f"{spec.table} in {self.describe()} has columns {found}, the spec wants "
                f"{expected}: migrate or drop the table, then re-materialize its partitions"
            )

    def replace_partition(
        self,
        spec: ServingTableSpec,
        rows: pl.DataFrame | pa.Table,
        *,
        start: dt.datetime,
        end: dt.datetime,
        where_column: str | None = None,
    ) -> ReplaceResult:
        """Replace the rows with `where_column` (default: the spec's partition column) in
        [start, end) by `rows`, in one transaction: DELETE, then COPY, then COMMIT.

        Every row must fall inside [start, end), so a later replace of a neighbouring
        partition can never duplicate or drop it.
        """
        began = time.monotonic()
        column = where_column or spec.partition_column
        if column not in spec.column_names:
            raise ServingDataError(f"{spec.table}: no column {column} to replace by")
        frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(pl.from_arrow(rows))
        frame = _csv_ready(frame, spec)
        low, high = _bounds(frame.schema[column], start, end)
        outside = frame.filter(
            pl.col(column).is_null() | (pl.col(column) < low) | (pl.col(column) >= high)
        )
        if outside.height:
            raise ServingDataError(
                f"{spec.table}: {outside.height} rows have {column} outside "
                f"[{start.isoformat()}, {end.isoformat()}), e.g. {outside.row(0)}"
            )
        # In primary-key order the key's btree grows at its right edge instead of at
        # random pages: a third less time for an unordered million-row load.
        frame = frame.sort(list(spec.primary_key))
        target = spec.identifier()
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
        with self.connection() as conn, conn.transaction():
            conn.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(
                    sql.Literal(f"{int(self.lock_timeout_s * 1000)}ms")
                )
            )
            # Self-conflicting (one writer per table) but compatible with readers' ACCESS
            # SHARE: SELECTs go on against the last committed version during the replace.
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(target))
            deleted = conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} >= %s AND {} < %s").format(
                    target, sql.Identifier(column), sql.Identifier(column)
                ),
                (start, end),
            ).rowcount
            with (
                conn.cursor() as cursor,
                cursor.copy(
                    sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(target, columns)
                ) as copy,
            ):
                for offset in range(0, frame.height, self.copy_chunk_rows):
                    chunk = frame.slice(offset, self.copy_chunk_rows)
                    copy.write(chunk.write_csv(include_header=False))
        return ReplaceResult(
            deleted=deleted, inserted=frame.height, seconds=round(time.monotonic() - began, 3)
        )

    def count_rows(self, spec: ServingTableSpec, start: dt.datetime, end: dt.datetime) -> int:
        """Rows of the table with the partition column in [start, end)."""
        column = sql.Identifier(spec.partition_column)
        with self.connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE {} >= %s AND {} < %s").format(
                    spec.identifier(), column, column
                ),
                (start, end),
            ).fetchone()
        return int(row[0]) if row else 0


def serving_resource_from_settings(
    settings: AstraSettings, *, resolve_secrets: bool = False
) -> PostgresServingResource:
    """The resource as configured by ASTRA_PG_*: the URL when given, else the parts; the
    password through dg.EnvVar (resolved at run time) when ASTRA_PG_PASSWORD is set, or
    its value with ``resolve_secrets`` (outside Dagster: `astra api`)."""
    password: Any = pg_password_source()
    if resolve_secrets and password is not None:
        password = os.environ.get(PG_PASSWORD_ENV)
    common: dict[str, Any] = {
        "connect_timeout_s": settings.pg_connect_timeout_s,
        "lock_timeout_s": settings.pg_lock_timeout_s,
        "password": password,
    }
    if settings.pg_url:
        return PostgresServingResource(url=settings.pg_url, **common)
    return PostgresServingResource(
        host=settings.pg_host,
        port=settings.pg_port,
        user=settings.pg_user,
        database=settings.pg_database,
        **common,
    )
