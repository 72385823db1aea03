"""Read-only queries on the Postgres serving copy for `astra api`: a small pool of
connections kept open (a connection costs milliseconds; a point lookup, well under one),
each query with a statement timeout, errors as ServingUnavailable / ServingError.

The read API's questions are point lookups and short ranges on the serving tables' keys;
`ensure_read_indexes` adds the (id, time) indexes they need beside the serving copy's own
(time, id) primary keys.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from resources.errors import AstraResourceError


class ReadUnavailable(AstraResourceError):
    """The serving database did not answer (in time)."""


READ_INDEXES = (
    ("agg", "sensor_1m", ("device_id", "window_start")),
    ("agg", "sensor_5m_sliding", ("device_id", "window_start")),
    ("agg", "sensor_1h", ("device_id", "window_start")),
    ("agg", "user_sessions", ("user_id", "session_start")),
    ("ml", "alerts", ("ts", "alert_id")),
    ("ml", "alerts", ("device_id", "ts", "alert_id")),
    ("ml", "churn_scores", ("user_id", "as_of_day")),
    ("features", "user_churn", ("user_id", "as_of_day")),
)


class ServingReader:
    def __init__(self, conninfo: str, *, timeout_s: float = 5.0, max_size: int = 8) -> None:
        self._timeout_s = timeout_s
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=timeout_s,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "application_name": "astra-api",
                "options": f"-c TimeZone=UTC -c statement_timeout={int(timeout_s * 1000)}",
                "connect_timeout": max(1, int(timeout_s)),
            },
        )

    def open(self) -> None:
        self._pool.open(wait=False)

    def close(self) -> None:
        self._pool.close()

    def rows(self, query: str | sql.Composed, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        try:
            with self._pool.connection() as conn:
                rows: list[dict[str, Any]] = conn.execute(query, params).fetchall()  # type: ignore[assignment]
                return rows
        except PoolTimeout:
            raise ReadUnavailable(
                f"no serving database connection within {self._timeout_s:.0f}s"
            ) from None
        except psycopg.errors.UndefinedTable:
            return []  # nothing served yet: no rows
        except psycopg.Error as error:
            raise ReadUnavailable(f"serving database: {' '.join(str(error).split())}") from None

    def execute(self, statement: str | sql.Composed) -> None:
        """A statement without rows (DDL), in its own autocommit transaction."""
        try:
            with self._pool.connection() as conn:
                conn.execute(statement)
        except PoolTimeout:
            raise ReadUnavailable(
                f"no serving database connection within {self._timeout_s:.0f}s"
            ) from None
        except psycopg.Error as error:
            raise ReadUnavailable(f"serving database: {' '.join(str(error).split())}") from None

    def ping(self) -> None:
        self.rows("SELECT 1")

    def ensure_read_indexes(self) -> list[str]:
        """Create the read API's indexes on the serving tables that exist (idempotent);
        the tables not served yet are skipped and tried again at the next start."""
        made = []
        for schema, table, columns in READ_INDEXES:
            name = f"api_{table}_{'_'.join(columns)}"
            exists = self.rows("SELECT to_regclass(%s) AS t", (f"{schema}.{table}",))
            if not exists or exists[0]["t"] is None:
                continue
            self.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                    sql.Identifier(name),
                    sql.Identifier(schema, table),
                    sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                )
            )
            made.append(f"{schema}.{table}({', '.join(columns)})")
        return made
