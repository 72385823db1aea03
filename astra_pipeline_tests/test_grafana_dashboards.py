"""The Grafana dashboards' SQL panels, executed against a serving database holding rows
(Grafana's macros expanded as Grafana does), and the dashboards' wiring to the provisioned
data sources. (Their PromQL panels run against a real Prometheus in
test_metrics_prometheus.py.)"""

from __future__ import annotations

import datetime as dt
import numbers

import psycopg
import pytest
import yaml

from astra_pipeline_tests.grafana_dashboards import (
    GRAFANA,
    dashboard_targets,
    dashboards,
    expand,
)
from astra_pipeline_tests.serving_rows import DEVICES, T0, serve_tables
from resources.embedded_postgres import EmbeddedPostgres
from resources.serving import PostgresServingResource


@pytest.fixture(scope="module")
def serving_db(embedded_postgres: EmbeddedPostgres) -> str:
    url = embedded_postgres.create_database("grafana_panels")
    serve_tables(PostgresServingResource(url=url))
    return url


def test_dashboards_use_only_the_provisioned_data_sources() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/astra.yml").read_text())
    uids = {source["uid"]: source["type"] for source in provisioned["datasources"]}
    assert set(dashboards()) == {"pipeline", "devices", "users"}
    for name, board in dashboards().items():
        assert board["uid"].startswith("astra-"), name
        assert board["panels"], name
        for panel in board["panels"]:
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                source = target["datasource"]
                assert uids.get(source["uid"]) == source["type"], (name, panel["title"])
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/astra.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_sql_panel_returns_the_columns_its_panel_uses(serving_db: str) -> None:
    start, end = T0 - dt.timedelta(hours=1), T0 + dt.timedelta(hours=4)
    with psycopg.connect(serving_db, options="-c TimeZone=UTC") as conn:
        variables = {}
        for board in dashboards().values():
            for variable in board["templating"]["list"]:
                query = expand(variable["query"], start, end, {})
                values = [row[0] for row in conn.execute(query).fetchall()]  # type: ignore[call-overload]
                variables[variable["name"]] = values
        assert variables == {"device": list(DEVICES)}
        checked = 0
        for target in dashboard_targets("serving"):
            cursor = conn.execute(expand(target["rawSql"], start, end, variables))  # type: ignore[arg-type]
            columns = [c.name for c in cursor.description or ()]
            rows = cursor.fetchall()
            assert rows, f"{target['panel']}: no rows"
            if target["format"] == "time_series":
                assert columns[0] == "time", (target["panel"], columns)
                values = [c for c in columns[1:] if c != "metric"]
                assert values and all(
                    row[columns.index(c)] is None
                    or isinstance(row[columns.index(c)], numbers.Number)
                    for row in rows
                    for c in values
                ), (target["panel"], columns)
            else:
                assert len(columns) >= 1, target["panel"]
            checked += 1
        assert checked == 9


def test_macros_expand_like_grafana() -> None:
    start = dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC)
    end = start + dt.timedelta(hours=1)
    sql = expand(
        "SELECT $__timeGroupAlias(ts, '5m'), n FROM t WHERE $__timeFilter(ts) AND d IN ($d)",
        start,
        end,
        {"d": ["a", "b'c"]},
    )
    assert sql == (
        'SELECT floor(extract(epoch from ts)/300)*300 AS "time", n FROM t WHERE ts BETWEEN '
        "'2026-11-29T10:00:00Z' AND '2026-11-29T11:00:00Z' AND d IN ('a','b''c')"
    )
