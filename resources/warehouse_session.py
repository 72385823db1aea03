"""A connection to the warehouse as the rest of the code sees it: statements, frames in
and out, and commit messages. Kept apart from the resource (warehouse.py) so
that a command can read the lake without importing Dagster (astra_pipeline.quick_sql)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import polars as pl

from resources.errors import WarehouseError
from resources.lake import set_commit_message


class WarehouseSession:
    """One open DuckDB connection; the only way callers outside `resources/` touch SQL."""

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self._con = connection

    def commit_message(self, author: str, message: str) -> None:
        """Name this transaction's commit in the lake's snapshot list (`astra snapshots`)."""
        try:
            set_commit_message(self._con, author, message)
        except duckdb.Error as error:
            raise WarehouseError(f"setting the commit message: {error}") from error

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
