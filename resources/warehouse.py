"""The warehouse: a DuckLake (``resources.lake``), or one DuckDB file.

With ``lake_catalog`` set, every connection is an in-memory DuckDB with the lake attached:
any number of processes read and write at once, readers see committed snapshots and
never wait, and a writer's commit can fail with ``CommitConflict``. Without it, the
tables live in one DuckDB file, which the rest of this docstring is about.

DuckDB takes an exclusive file lock for a read-write connection (and a shared one for
read-only). Connections are short: one transaction, except the ingest's batch writer,
which keeps one for at most 4 transactions or 5 s and then leaves the file free for a
moment (closing a file checkpoints it, which costs as much as the writes). When another
process holds the lock we back off and retry for a bounded time, then fail with an error
that names the holder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import duckdb
import polars as pl
from pydantic import Field

from resources.errors import CommitConflict, WarehouseError, WarehouseLocked
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

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


def describe_lock_holder(message: str) -> str:
    """Name the process behind DuckDB's lock error: its PID and command line."""
    match = _LOCK_HOLDER.search(message)
    if not match:
        return "an unknown process"
    pid = match.group("pid")
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        return f"PID {pid} ({cmdline.strip()[:200]})"
    except OSError:
        return f"PID {pid} ({match.group('exe')})"


def _is_lock_error(error: duckdb.Error) -> bool:
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


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


WRITER_HOLD_S = 5.0
"""How long a batch writer keeps the file open before letting other processes in."""

WRITER_HOLD_TRANSACTIONS = 4
"""...and for at most this many transactions: what DuckDB keeps in memory until the
checkpoint at close grows with the rows written in one hold, so this bounds it by the
batch size rather than by how fast batches come."""

WRITER_GAP_S = 0.2
"""Pause between two holds of a batch writer, so that waiting readers get in."""

_WRITER_CHECKPOINT_THRESHOLD = "1GB"
"""Within one hold the WAL only grows: the checkpoint happens once, when it closes."""


class BatchWriter:
    """See ``DuckDBWarehouseResource.batch_writer``."""

    def __init__(self, resource: DuckDBWarehouseResource, hold_s: float) -> None:
        self._resource = resource
        self._hold_s = hold_s
        self._con: duckdb.DuckDBPyConnection | None = None
        self._opened_at = 0.0
        self._transactions = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[WarehouseSession]:
        """All of the block commits, or none of it."""
        if (
            self._con is not None
            and not self._resource.is_lake
            and (
                time.monotonic() - self._opened_at >= self._hold_s
                or self._transactions >= WRITER_HOLD_TRANSACTIONS
            )
        ):
            self.close()
            # Leave the file free for a moment: readers waiting on the lock retry every
            # 20 ms to 1 s, and an immediate reopen would take it back before they do.
            time.sleep(WRITER_GAP_S)
        if self._con is None:
            self._con = self._resource._connect(read_only=False)
            self._opened_at = time.monotonic()
            self._transactions = 0
            if not self._resource.is_lake:
                WarehouseSession(self._con).execute(
                    f"SET checkpoint_threshold = '{_WRITER_CHECKPOINT_THRESHOLD}'"
                )
        self._transactions += 1
        with _transaction(WarehouseSession(self._con, self._resource.is_lake)) as session:
            yield session

    def close(self) -> None:
        if self._con is not None:
            con, self._con = self._con, None
            try:
                con.close()
            except duckdb.Error as error:
                raise WarehouseError(f"closing {self._resource.path}: {error}") from error


class DuckDBWarehouseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the raw, clean, agg, features, ml and ops schemas live: a DuckLake when
    ``lake_catalog`` is set, else the DuckDB file at ``path``."""

    path: str = Field(
        default="", description="Path of the DuckDB file (without a lake); its folder is created."
    )
    lock_timeout_s: float = Field(
        default=30.0, description="How long to wait for another process's file lock."
    )
    lake_catalog: str = Field(
        default="",
        description="The DuckLake's catalog: a postgresql:// URL (or libpq string) of an "
        "existing database. Empty: the DuckDB file at path.",
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

    @property
    def is_lake(self) -> bool:
        return bool(self.lake_catalog)

    def lake_location(self) -> LakeLocation:
        if not self.is_lake:
            raise WarehouseError("this warehouse is a DuckDB file, not a lake (no catalog set)")
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
        return self.lake_location().describe() if self.is_lake else f"DuckDB file {self.path}"

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if self.is_lake:
            return open_lake(self.lake_location(), read_only=read_only)
        path = Path(self.path)
        if read_only and not path.exists():
            raise WarehouseError(
                f"no warehouse at {path}: nothing has been ingested yet (or "
                "ASTRA_DUCKDB_PATH or ASTRA_LAKE_CATALOG points elsewhere; a `make dev` "
                "session's lake is found while the session runs)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.02
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only)
                # Day and hour boundaries (date_trunc, casts to DATE) in UTC whatever the
                # host's zone, as the partitions and the polars code define them.
                con.execute("SET TimeZone = 'UTC'")
                return con
            except duckdb.Error as error:
                if not _is_lock_error(error):
                    raise WarehouseError(f"cannot open {path}: {error}") from error
                if time.monotonic() + delay > deadline:
                    raise WarehouseLocked(
                        f"{path} is locked by {describe_lock_holder(str(error))}; gave up "
                        f"after {self.lock_timeout_s:.0f}s (DuckDB allows one writing "
                        "process: stop that process or wait for its run to finish)"
                    ) from error
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    @contextlib.contextmanager
    def session(self, read_only: bool = False) -> Iterator[WarehouseSession]:
        """A short-lived connection, closed on exit."""
        con = self._connect(read_only)
        try:
            yield WarehouseSession(con, self.is_lake)
        finally:
            con.close()

    @contextlib.contextmanager
    def session_at(self, snapshot: int | str) -> Iterator[WarehouseSession]:
        """A read-only connection to the lake as it was at ``snapshot`` (a snapshot id, or
        a time: the snapshot current then). DuckLake time travel; a file has no past."""
        if not self.is_lake:
            raise WarehouseError(
                "a DuckDB file keeps no snapshots: reading the past needs the lake "
                "(ASTRA_LAKE_CATALOG, docs/lake.md)"
            )
        location = dataclasses.replace(self.lake_location(), at=snapshot)
        con = open_lake(location, read_only=True)
        try:
            yield WarehouseSession(con, True)
        finally:
            con.close()

    def snapshots(self, limit: int = 20) -> pl.DataFrame:
        """The lake's most recent commits, newest first (see ``resources.lake.snapshots``)."""
        if not self.is_lake:
            raise WarehouseError(
                "a DuckDB file keeps no snapshots: the commit history needs the lake "
                "(ASTRA_LAKE_CATALOG, docs/lake.md)"
            )
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

    @contextlib.contextmanager
    def batch_writer(self, hold_s: float = WRITER_HOLD_S) -> Iterator[BatchWriter]:
        """One read-write connection reused for a run's batches, each in its own
        transaction, and reopened once it has been held ``hold_s`` or for
        WRITER_HOLD_TRANSACTIONS transactions.

        Closing a DuckDB file checkpoints it (compresses the new rows into the file),
        which costs about as much as writing them; a connection per batch pays that on
        every batch. Holding one connection pays it once per ``hold_s``, while other
        processes (``astra sql``) still get the file between two holds.
        """
        writer = BatchWriter(self, hold_s)
        try:
            yield writer
        finally:
            writer.close()

    def ensure_schema(self) -> None:
        """Create what is missing. On a new lake two processes may race to create the
        tables; the loser's commit conflicts and it tries again (then finds them)."""
        key = (os.getpid(), self.lake_location()) if self.is_lake else None
        if key is not None and (key in _LAKES_ENSURED or self._lake_complete()):
            # The DDL is about 35 round trips to the catalog: once per process at most,
            # and not at all when one look at the catalog finds every table.
            _LAKES_ENSURED.add(key)
            return
        for attempt in range(3):
            try:
                with self.transaction() as tx:
                    for statement in ddl(lake=self.is_lake):
                        tx.execute(statement)
                if key is not None:
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
        """Run one read-only query; the file is opened read-only and closed again."""
        with self.session(read_only=True) as session:
            return session.query(sql, params)


def warehouse_from_settings(
    settings: AstraSettings, *, path: str | None = None, resolve_secrets: bool = False
) -> DuckDBWarehouseResource:
    """The warehouse as the settings configure it: the lake when ASTRA_LAKE_CATALOG is
    set, else the DuckDB file (``path`` overrides ASTRA_DUCKDB_PATH). Secrets through
    dg.EnvVar, or resolved from the environment with ``resolve_secrets`` (the CLI)."""
    return DuckDBWarehouseResource(
        path=path or str(settings.duckdb_path),
        lock_timeout_s=settings.duckdb_lock_timeout_s,
        lake_catalog=settings.lake_catalog,
        lake_data_path=settings.lake_data_path,
        lake_metadata_schema=settings.lake_metadata_schema,
        lake_s3_endpoint=settings.lake_s3_endpoint,
        lake_s3_region=settings.lake_s3_region,
        lake_s3_url_style=settings.lake_s3_url_style,
        lake_s3_use_ssl=settings.lake_s3_use_ssl,
        **lake_secret_sources(resolve=resolve_secrets),
    )
