"""The warehouse: a DuckLake (``resources.lake``) whose catalog is a Postgres database and
whose Parquet files are in a folder or an S3-compatible bucket.

Every connection is a cursor of an in-memory DuckDB with the lake attached: any number of
processes read and write at once, readers see committed snapshots and never wait, and a
writer's commit can fail with ``CommitConflict`` (nothing of it kept). There is no other
storage path: the single DuckDB file, its lock back-off and its writer's hold/gap are gone
(issue 12).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import dagster as dg
import duckdb
import polars as pl
from pydantic import Field

from resources.errors import CommitConflict, WarehouseError
from resources.lake import (
    LakeLocation,
    S3Location,
    build_location,
    is_commit_conflict,
    open_lake,
    snapshots,
)
from resources.settings import AstraSettings, lake_secret_sources
from resources.tables import MIGRATED_COLUMNS, TABLES, ddl
from resources.warehouse_session import WarehouseSession as WarehouseSession

T = TypeVar("T")

_LAKES_ENSURED: set[tuple[int, LakeLocation]] = set()
"""The lakes whose tables this process has created or found."""

NO_LAKE = (
    "no warehouse: ASTRA_LAKE_CATALOG is not set and no `make dev` session is running in "
    "this folder (its data/dev/lake.json names its lake); set ASTRA_LAKE_CATALOG to a "
    "Postgres database for the lake's catalog (docs/lake.md)"
)


@contextlib.contextmanager
def _transaction(session: WarehouseSession) -> Iterator[WarehouseSession]:
    session.execute("BEGIN TRANSACTION")
    try:
        yield session
    except BaseException:
        with contextlib.suppress(WarehouseError):
            session.execute("ROLLBACK")
        raise
    try:
        session._con.execute("COMMIT")
    except duckdb.Error as error:
        with contextlib.suppress(duckdb.Error):
            session._con.execute("ROLLBACK")
        if is_commit_conflict(error):
            raise CommitConflict(
                f"commit refused, a concurrent transaction changed the same data: "
                f"{str(error).splitlines()[-1]}"
            ) from error
        raise WarehouseError(f"{error} -- while running: COMMIT") from error


class DuckDBWarehouseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the raw, clean, agg, features, ml and ops schemas live: a DuckLake, its catalog
    the Postgres database ``lake_catalog``, its files under ``lake_data_path``."""

    lake_catalog: str = Field(
        default="",
        description="The DuckLake's catalog: a postgresql:// URL (or libpq string) of an "
        "existing database.",
    )
    lake_data_path: str = Field(
        default="", description="The lake's Parquet files: a folder, or s3://bucket/prefix/."
    )
    lake_metadata_schema: str = Field(
        default="", description="The catalog's Postgres schema (empty: DuckLake's default)."
    )
    lake_s3_endpoint: str = Field(default="", description="host:port of an S3-compatible server.")
    lake_s3_region: str = "us-east-1"
    lake_s3_url_style: str = "path"
    lake_s3_use_ssl: bool = True
    lake_catalog_password: str = Field(default="", description="Through dg.EnvVar.")
    lake_s3_access_key_id: str = Field(default="", description="Through dg.EnvVar.")
    lake_s3_secret_access_key: str = Field(default="", description="Through dg.EnvVar.")

    def lake_location(self) -> LakeLocation:
        if not self.lake_catalog:
            raise WarehouseError(NO_LAKE)
        return build_location(
            catalog=self.lake_catalog,
            password=self.lake_catalog_password or "",
            data_path=self.lake_data_path,
            metadata_schema=self.lake_metadata_schema,
            s3=S3Location(
                endpoint=self.lake_s3_endpoint,
                region=self.lake_s3_region,
                url_style=self.lake_s3_url_style,
                use_ssl=self.lake_s3_use_ssl,
                access_key_id=self.lake_s3_access_key_id,
                secret_access_key=self.lake_s3_secret_access_key,
            ),
        )

    def describe(self) -> str:
        """Where the tables are, without secrets (for messages and the UI)."""
        return self.lake_location().describe() if self.lake_catalog else "no lake configured"

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        return open_lake(self.lake_location(), read_only=read_only)

    @contextlib.contextmanager
    def session(self, read_only: bool = False) -> Iterator[WarehouseSession]:
        """A connection of its own (a cursor of the process's attach), closed on exit."""
        con = self._connect(read_only)
        try:
            yield WarehouseSession(con)
        finally:
            con.close()

    @contextlib.contextmanager
    def session_at(self, snapshot: int | str) -> Iterator[WarehouseSession]:
        """A read-only connection to the lake as it was at ``snapshot`` (a snapshot id, or
        a time: the snapshot current then): DuckLake time travel."""
        location = dataclasses.replace(self.lake_location(), at=snapshot)
        con = open_lake(location, read_only=True)
        try:
            yield WarehouseSession(con)
        finally:
            con.close()

    def snapshots(self, limit: int = 20) -> pl.DataFrame:
        """The lake's most recent commits, newest first (see ``resources.lake.snapshots``)."""
        con = self._connect(read_only=True)
        try:
            frame: pl.DataFrame = snapshots(con, limit).pl()
            return frame
        except duckdb.Error as error:
            raise WarehouseError(f"listing the lake's snapshots: {error}") from error
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[WarehouseSession]:
        """A read-write connection inside one transaction: all of it commits, or none."""
        with self.session() as session, _transaction(session):
            yield session

    def ensure_schema(self) -> None:
        """Create what is missing. On a new lake two processes may race to create the
        tables; the loser's commit conflicts and it tries again (then finds them)."""
        key = (os.getpid(), self.lake_location())
        if key in _LAKES_ENSURED or self._lake_complete():
            # The DDL is about 35 round trips to the catalog: once per process at most,
            # and not at all when one look at the catalog finds every table.
            _LAKES_ENSURED.add(key)
            return
        for attempt in range(3):
            try:
                with self.transaction() as tx:
                    for statement in ddl():
                        tx.execute(statement)
                _LAKES_ENSURED.add(key)
                return
            except CommitConflict:
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _lake_complete(self) -> bool:
        columns = [f"{table}.{column}" for table, column in MIGRATED_COLUMNS]
        with self.session() as session:
            tables, migrated = session.query(
                "SELECT (SELECT count(*) FROM duckdb_tables() WHERE database_name = "
                "current_database() AND list_contains(?, schema_name || '.' || table_name)), "
                "(SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() "
                "AND list_contains(?, schema_name || '.' || table_name || '.' || column_name))",
                [list(TABLES), columns],
            ).row(0)
        return int(tables) == len(TABLES) and int(migrated) == len(columns)

    def retrying(self, write: Callable[[WarehouseSession], T], attempts: int = 5) -> T:
        """Run ``write`` in a transaction, again from the start when the lake refuses the
        commit for a concurrent change (for writes that are correct to recompute: they
        read what they replace inside the same transaction)."""
        for attempt in range(attempts):
            try:
                with self.transaction() as tx:
                    return write(tx)
            except CommitConflict:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.05 * 2**attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Run one read-only query on the latest snapshot."""
        with self.session(read_only=True) as session:
            return session.query(sql, params)


def warehouse_from_settings(
    settings: AstraSettings, *, resolve_secrets: bool = False
) -> DuckDBWarehouseResource:
    """The lake the settings configure (ASTRA_LAKE_*, or the running dev session's).
    Secrets through dg.EnvVar, or resolved from the environment with ``resolve_secrets``
    (the CLI)."""
    return DuckDBWarehouseResource(
        lake_catalog=settings.lake_catalog,
        lake_data_path=settings.lake_data_path,
        lake_metadata_schema=settings.lake_metadata_schema,
        lake_s3_endpoint=settings.lake_s3_endpoint,
        lake_s3_region=settings.lake_s3_region,
        lake_s3_url_style=settings.lake_s3_url_style,
        lake_s3_use_ssl=settings.lake_s3_use_ssl,
        **lake_secret_sources(resolve=resolve_secrets),
    )
