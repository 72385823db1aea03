"""DuckDB's extensions come from their PyPI wheels (this machine, like CI, cannot download
them), a DuckLake with a Postgres catalog and a folder of Parquet files works with them,
and a missing extension is one error naming the package to install."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import psycopg
import pytest

from resources import duckdb_extensions
from resources.duckdb_extensions import PACKAGES, ExtensionMissing, connect, load_extension
from resources.embedded_postgres import EmbeddedPostgres


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_each_extension_loads_from_its_wheel(name: str) -> None:
    with duckdb.connect() as connection:
        source = load_extension(connection, name)
        loaded = connection.execute(
            "SELECT loaded FROM duckdb_extensions() WHERE extension_name = ?", [name]
        ).fetchone()
    assert source.endswith(f"v{duckdb.__version__}/{name}.duckdb_extension"), source
    assert loaded == (True,)


def test_a_missing_extension_names_its_package() -> None:
    with duckdb.connect() as connection:
        connection.execute("SET custom_extension_repository = '/nonexistent'")
        with pytest.raises(ExtensionMissing, match="pip install 'duckdb-extension-nosuch=="):
            load_extension(connection, "nosuch")


def test_the_signature_check_is_skipped_only_for_extensions_all_from_wheels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with connect(("ducklake", "postgres_scanner")) as connection:
        skipped = connection.execute(
            "SELECT current_setting('allow_unsigned_extensions')"
        ).fetchone()
        loaded = connection.execute(
            "SELECT count(*) FROM duckdb_extensions() WHERE loaded AND extension_name IN "
            "('ducklake', 'postgres_scanner')"
        ).fetchone()
    assert skipped == (True,) and loaded == (2,)
    # One of them not from a wheel (it would come through INSTALL): the check stays on.
    configs: list[dict[str, str]] = []
    real = duckdb.connect

    def recording(*args: object, config: dict[str, str] | None = None) -> object:
        configs.append(dict(config or {}))
        return real(*args, config=config or {})

    monkeypatch.setattr(duckdb_extensions.duckdb, "connect", recording)
    monkeypatch.setattr(
        duckdb_extensions,
        "wheel_extension",
        lambda name, version=None: None if name == "nosuch" else Path("/x"),
    )
    with pytest.raises(ExtensionMissing):
        connect(("nosuch",))
    assert configs == [{}]


def test_a_ducklake_on_postgres_and_a_folder(
    tmp_path: Path, embedded_postgres: EmbeddedPostgres
) -> None:
    """Two commits, read back now and as of the first (time travel), by a second
    connection; the catalog is in Postgres (the embedded server) and the bulk of the rows
    in Parquet files of the folder."""
    catalog = embedded_postgres.create_database("lake_test")
    schema = f"lake_{os.getpid()}"
    with psycopg.connect(catalog, autocommit=True) as pg:
        pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        pg.execute(f"CREATE SCHEMA {schema}")
    attach = (
        f"ATTACH 'ducklake:postgres:{_libpq(catalog)}' AS lake "
        f"(DATA_PATH '{tmp_path}/', METADATA_SCHEMA '{schema}')"
    )
    try:
        with duckdb.connect() as writer:
            for name in ("ducklake", "postgres_scanner"):
                load_extension(writer, name)
            writer.execute(attach)
            writer.execute("CREATE TABLE lake.events (id BIGINT, body BLOB)")
            writer.execute("INSERT INTO lake.events VALUES (1, 'a'::BLOB), (2, 'b'::BLOB)")
            first = writer.execute(
                "SELECT max(snapshot_id) FROM ducklake_snapshots('lake')"
            ).fetchone()
            # A bulk insert: past the catalog's inlining limit, so it goes to Parquet (the
            # few rows before are inlined in the catalog, DuckLake's default).
            writer.execute("INSERT INTO lake.events SELECT i, 'x'::BLOB FROM range(3, 100003) t(i)")
        with duckdb.connect() as reader:
            for name in ("ducklake", "postgres_scanner"):
                load_extension(reader, name)
            reader.execute(attach)
            assert reader.execute("SELECT count(*) FROM lake.events").fetchone() == (100_002,)
            assert first is not None
            past = reader.execute(
                f"SELECT count(*) FROM lake.events AT (VERSION => {first[0]})"
            ).fetchone()
            assert past == (2,)
        assert list(tmp_path.rglob("*.parquet")), "the rows are Parquet files in the folder"
    finally:
        with psycopg.connect(catalog, autocommit=True) as pg:
            pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _libpq(url: str) -> str:
    """A postgresql:// URL as the key=value string DuckDB's postgres extension takes."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    return " ".join(f"{key}={value}" for key, value in info.items())
