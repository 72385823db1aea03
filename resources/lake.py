"""Opening the DuckLake that holds the warehouse's tables (issue 12).

A DuckLake is a catalog database (here Postgres: it takes concurrent writers and readers,
where a SQLite catalog locked readers out and deadlocked two writers) plus a folder or an
S3-compatible bucket of Parquet files. Every process opens its own in-memory DuckDB,
loads the extensions (from their PyPI wheels when installed) and attaches the lake as
``lake``, then makes it the default database, so that the schema-qualified names of
``resources.tables`` (``raw.events``, ``ops.ingest_ledger``) mean the lake's tables.

Any number of processes attach the same lake at once. A reader sees the snapshot that was
current when its statement began: never a batch half-written, and it holds no lock that
a writer waits for. Writers are optimistic: DuckLake checks for conflicts at commit
(``CommitConflict``), see ``resources.ingest_store`` for what makes two ingest writers of
the same partitions conflict.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import psycopg

from resources.duckdb_extensions import connect
from resources.errors import WarehouseError

if TYPE_CHECKING:
    from resources.settings import AstraSettings

LAKE = "lake"
"""The name the lake is attached under in every connection."""


# DuckLake's own conflicts, and the catalog's: Postgres refuses a serializable change
# of a row another transaction changed ("could not serialize access", SQLSTATE 40001;
# seen when maintenance flushed inlined data while a refresh committed). Nothing of the
# transaction was kept either way: it is run again.
_CONFLICT = re.compile(r"conflict|could not serialize access", re.IGNORECASE)


def is_commit_conflict(error: duckdb.Error) -> bool:
    return isinstance(error, duckdb.TransactionException) or bool(_CONFLICT.search(str(error)))


@dataclass(frozen=True)
class S3Location:
    """Where and how to reach an S3-compatible bucket (AWS, MinIO, moto)."""

    endpoint: str = ""
    """host:port of an S3-compatible server; empty for AWS."""
    region: str = "us-east-1"
    url_style: str = "path"
    """"path" (MinIO, moto) or "vhost" (AWS)."""
    use_ssl: bool = True
    access_key_id: str = ""
    secret_access_key: str = ""


@dataclass(frozen=True)
class LakeLocation:
    catalog: str
    """The catalog database: a postgresql:// URL or a libpq key=value string."""
    data_path: str
    """A folder, or s3://bucket/prefix/ (then ``s3`` says how to reach it)."""
    metadata_schema: str = ""
    """The catalog's Postgres schema (empty: DuckLake's default): several lakes can share
    one database, each in its own schema."""
    s3: S3Location | None = None
    at: int | str | None = None
    """A past snapshot to read (its id, or a time: the snapshot current then); read-only."""

    @property
    def on_s3(self) -> bool:
        return self.data_path.startswith("s3://")

    def attach_sql(self, read_only: bool) -> str:
        options = [f"DATA_PATH {sql_literal(self.data_path)}"]
        if self.metadata_schema:
            options.append(f"METADATA_SCHEMA {sql_literal(self.metadata_schema)}")
        if isinstance(self.at, int):
            options.append(f"SNAPSHOT_VERSION {self.at}")
        elif self.at is not None:
            options.append(f"SNAPSHOT_TIME {sql_literal(self.at)}")
        if read_only or self.at is not None:
            options.append("READ_ONLY")
        source = f"ducklake:postgres:{libpq(self.catalog)}"
        return f"ATTACH {sql_literal(source)} AS {LAKE} ({', '.join(options)})"

    def describe(self) -> str:
        """The lake without secrets: the catalog's host, port and database, the data path."""
        info = psycopg.conninfo.conninfo_to_dict(self.catalog)
        where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname')}"
        schema = f" schema {self.metadata_schema}" if self.metadata_schema else ""
        return f"DuckLake (catalog postgres {where}{schema}, data {self.data_path})"


def build_location(
    *, catalog: str, password: str, data_path: str, metadata_schema: str, s3: S3Location
) -> LakeLocation:
    """A lake's location: a folder data path made absolute (and created), an S3 one
    ending in a slash, the catalog's password added."""
    data_path = data_path or str(Path("data", "lake").resolve())
    if not data_path.startswith("s3://"):
        Path(data_path).mkdir(parents=True, exist_ok=True)
        data_path = str(Path(data_path).resolve()) + "/"
    elif not data_path.endswith("/"):
        data_path += "/"
    if password:
        catalog = with_password(catalog, password)
    return LakeLocation(
        catalog=catalog, data_path=data_path, metadata_schema=metadata_schema, s3=s3
    )


def lake_location(settings: AstraSettings, secrets: Mapping[str, str]) -> LakeLocation:
    """The settings' lake, with its secrets (``settings.lake_secret_sources`` resolved)."""
    return build_location(
        catalog=settings.lake_catalog,
        password=secrets.get("lake_catalog_password", ""),
        data_path=settings.lake_data_path,
        metadata_schema=settings.lake_metadata_schema,
        s3=S3Location(
            endpoint=settings.lake_s3_endpoint,
            region=settings.lake_s3_region,
            url_style=settings.lake_s3_url_style,
            use_ssl=settings.lake_s3_use_ssl,
            access_key_id=secrets.get("lake_s3_access_key_id", ""),
            secret_access_key=secrets.get("lake_s3_secret_access_key", ""),
        ),
    )


def snapshots(con: duckdb.DuckDBPyConnection, limit: int) -> duckdb.DuckDBPyRelation:
    """The lake's most recent commits, newest first: id, time, author (the run or
    command that made it), message and the tables changed."""
    return con.sql(
        "SELECT snapshot_id AS snapshot, snapshot_time AS committed_at, author, "
        "commit_message AS message, map_keys(changes) AS changes "
        f"FROM ducklake_snapshots('{LAKE}') ORDER BY snapshot_id DESC LIMIT {int(limit)}"
    )


def set_commit_message(con: duckdb.DuckDBPyConnection, author: str, message: str) -> None:
    """Name the current transaction's snapshot: who made it and what it is."""
    con.execute(f"CALL {LAKE}.set_commit_message(?, ?)", [author, message])


def libpq(catalog: str) -> str:
    """A postgresql:// URL (or a key=value string) as the key=value string DuckDB's
    postgres extension takes."""
    return _conninfo(_parts(catalog))


def with_password(catalog: str, password: str) -> str:
    """``catalog`` (URL or key=value string) with ``password`` added."""
    return _conninfo({**_parts(catalog), "password": password})


def _parts(catalog: str) -> dict[str, object]:
    try:
        return dict(psycopg.conninfo.conninfo_to_dict(catalog))
    except psycopg.ProgrammingError as error:
        raise WarehouseError(
            f"the lake catalog {catalog!r} is not a Postgres URL: {error}"
        ) from None


def _conninfo(parts: dict[str, object]) -> str:
    return " ".join(f"{key}={_libpq_value(str(value))}" for key, value in parts.items())


def _libpq_value(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_ATTACHED: dict[tuple[int, LakeLocation, bool], duckdb.DuckDBPyConnection] = {}
_ATTACHING = threading.Lock()


def open_lake(location: LakeLocation, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A connection whose default database is the lake (close it when done).

    Loading the extensions and a first read of the catalog take about a second, so each
    process attaches a lake once, to an in-memory DuckDB it keeps, and hands out cursors
    of it: each its own connection and transactions, each transaction on the catalog's
    latest snapshot."""
    key = (os.getpid(), location, read_only)
    with _ATTACHING:
        # A process that has attached the lake to write reads through that attach too
        # (a run writes, then its checks read): a second, read-only attach would load
        # the extensions and read the catalog again (about 0.4 s). A process that only
        # reads attaches read-only, so a lake that does not exist is reported, not made.
        base = _ATTACHED.get(key) or (_ATTACHED.get(key[:2] + (False,)) if read_only else None)
        if base is None:
            base = _ATTACHED[key] = _attach(location, read_only)
    con = base.cursor()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"USE {LAKE}")
    return con


def _attach(location: LakeLocation, read_only: bool) -> duckdb.DuckDBPyConnection:
    extensions = ("ducklake", "postgres_scanner") + (("httpfs",) if location.on_s3 else ())
    con = connect(extensions)
    try:
        if location.on_s3:
            _s3_secret(con, location.s3 or S3Location())
        try:
            con.execute(location.attach_sql(read_only))
        except duckdb.Error as error:
            if read_only and "creating a new DuckLake is explicitly disabled" in str(error):
                raise WarehouseError(
                    f"no lake at {location.describe()}: nothing has been ingested yet "
                    "(or ASTRA_LAKE_CATALOG or ASTRA_LAKE_METADATA_SCHEMA points elsewhere)"
                ) from None
            raise WarehouseError(
                f"cannot attach {location.describe()}: {str(error).splitlines()[0]}"
            ) from None
    except BaseException:
        con.close()
        raise
    return con


def _s3_secret(con: duckdb.DuckDBPyConnection, s3: S3Location) -> None:
    """The bucket's credentials as a DuckDB secret of this connection only (never
    persisted, never logged)."""
    parts = [
        "TYPE s3",
        f"REGION {sql_literal(s3.region)}",
        f"URL_STYLE {sql_literal(s3.url_style)}",
        f"USE_SSL {'true' if s3.use_ssl else 'false'}",
    ]
    if s3.endpoint:
        parts.append(f"ENDPOINT {sql_literal(s3.endpoint)}")
    if s3.access_key_id:
        parts.append(f"KEY_ID {sql_literal(s3.access_key_id)}")
        parts.append(f"SECRET {sql_literal(s3.secret_access_key)}")
    con.execute(f"CREATE OR REPLACE SECRET astra_lake_s3 ({', '.join(parts)})")
