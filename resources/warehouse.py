"""DuckDB warehouse: one file, one writing process at a time, short connections.

DuckDB takes an exclusive file lock for a read-write connection (and a shared one for
read-only). Connections are short: one transaction, except the ingest's batch writer,
which keeps one for at most 4 transactions or 5 s and then leaves the file free for a
moment (closing a file checkpoints it, which costs as much as the writes). When another
process holds the lock we back off and retry for a bounded time, then fail with an error
that names the holder.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
from pydantic import Field

from resources.errors import WarehouseError, WarehouseLocked
from resources.tables import DDL

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


class WarehouseSession:
    """One open DuckDB connection; the only way callers outside `resources/` touch SQL."""

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self._con = connection

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        try:
            self._con.execute(sql, params)
        except duckdb.Error as error:
            raise WarehouseError(f"{error} -- while running: {sql.strip()[:200]}") from error

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        try:
            rows = self._con.execute(sql, params)
            if rows is None or rows.description is None:  # no statement, or no result set
                return pl.DataFrame()
            names = [d[0] for d in rows.description]
            return pl.DataFrame(rows.fetchall(), schema=names, orient="row")
        except duckdb.Error as error:
            raise WarehouseError(f"{error} -- while running: {sql.strip()[:200]}") from error

    def frame(self, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Like ``query`` but through Arrow, column-wise: for results of many rows."""
        try:
            table = self._con.sql(sql, params=params).to_arrow_table()
        except duckdb.Error as error:
            raise WarehouseError(f"{error} -- while running: {sql.strip()[:200]}") from error
        frame: pl.DataFrame = pl.from_arrow(table)  # type: ignore[assignment]
        # DuckDB tags TIMESTAMPTZ as Etc/UTC; the rest of the code says UTC.
        return frame.with_columns(
            pl.col(name).dt.convert_time_zone("UTC")
            for name, dtype in frame.schema.items()
            if isinstance(dtype, pl.Datetime) and dtype.time_zone not in (None, "UTC")
        )

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        try:
            # fetchall, not fetchone: a result left half-read blocks the next statement.
            rows = self._con.execute(sql, params).fetchall()
        except duckdb.Error as error:
            raise WarehouseError(f"{error} -- while running: {sql.strip()[:200]}") from error
        return rows[0][0] if rows else None

    def append(self, table: str, frame: pl.DataFrame) -> int:
        """Insert a frame's columns by name; returns the number of rows inserted."""
        if frame.height == 0:
            return 0
        view = f"_frame_{id(frame)}"
        self._con.register(view, frame.to_arrow())
        try:
            self.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {view}")
        finally:
            self._con.unregister(view)
        return frame.height

    def with_frame(self, name: str, frame: pl.DataFrame) -> contextlib.AbstractContextManager[None]:
        """Expose a frame as a temporary view for a statement that joins against it."""

        @contextlib.contextmanager
        def registered() -> Iterator[None]:
            self._con.register(name, frame.to_arrow())
            try:
                yield
            finally:
                self._con.unregister(name)

        return registered()


@contextlib.contextmanager
def _transaction(session: WarehouseSession) -> Iterator[WarehouseSession]:
    session.execute("BEGIN TRANSACTION")
    try:
        yield session
    except BaseException:
        with contextlib.suppress(WarehouseError):
            session.execute("ROLLBACK")
        raise
    session.execute("COMMIT")


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
        if self._con is not None and (
            time.monotonic() - self._opened_at >= self._hold_s
            or self._transactions >= WRITER_HOLD_TRANSACTIONS
        ):
            self.close()
            # Leave the file free for a moment: readers waiting on the lock retry every
            # 20 ms to 1 s, and an immediate reopen would take it back before they do.
            time.sleep(WRITER_GAP_S)
        if self._con is None:
            self._con = self._resource._connect(read_only=False)
            self._opened_at = time.monotonic()
            self._transactions = 0
            WarehouseSession(self._con).execute(
                f"SET checkpoint_threshold = '{_WRITER_CHECKPOINT_THRESHOLD}'"
            )
        self._transactions += 1
        with _transaction(WarehouseSession(self._con)) as session:
            yield session

    def close(self) -> None:
        if self._con is not None:
            con, self._con = self._con, None
            try:
                con.close()
            except duckdb.Error as error:
                raise WarehouseError(f"closing {self._resource.path}: {error}") from error


class DuckDBWarehouseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The DuckDB file holding the raw, clean, agg, features, ml and ops schemas."""

    path: str = Field(description="Path of the DuckDB file; its folder is created.")
    lock_timeout_s: float = Field(
        default=30.0, description="How long to wait for another process's file lock."
    )

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        path = Path(self.path)
        if read_only and not path.exists():
            raise WarehouseError(
                f"no warehouse at {path}: nothing has been ingested yet "
                "(or ASTRA_DUCKDB_PATH points elsewhere)"
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
            yield WarehouseSession(con)
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
        with self.transaction() as tx:
            for statement in DDL:
                tx.execute(statement)

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Run one read-only query; the file is opened read-only and closed again."""
        with self.session(read_only=True) as session:
            return session.query(sql, params)
