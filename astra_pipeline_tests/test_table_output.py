"""`astra sql` prints every table in every format (binary as hex, nested values as JSON
in CSV), and a blank query is a one-line usage error."""

from __future__ import annotations

import csv
import io
import json

import polars as pl
import pytest

from astra_pipeline import cli
from astra_pipeline.assets.ingest import IngestConfig, drain
from astra_pipeline.table_output import FORMATS, render
from astra_pipeline_tests.helpers import lake_env, produce
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource


def test_binary_is_hex_and_nested_is_json_in_csv() -> None:
    frame = pl.DataFrame(
        {"b": [b"\x00\xff{", None], "l": [[1, 2], None], "s": [{"a": 1}, None]},
        schema={"b": pl.Binary, "l": pl.List(pl.Int64), "s": pl.Struct({"a": pl.Int64})},
    )
    rows = list(csv.DictReader(io.StringIO(render(frame, "csv", 10))))
    assert rows[0] == {"b": "00ff7b", "l": "[1, 2]", "s": '{"a": 1}'}
    assert rows[1] == {"b": "", "l": "", "s": ""}
    assert json.loads(render(frame, "json", 10))[0]["b"] == b"\x00\xff{".hex()
    vertical = render(frame, "vertical", 1)
    assert "b | 00ff7b" in vertical and "(1 more rows: --max-rows)" in vertical


def test_a_wide_table_is_one_line_per_row_or_vertical_on_a_narrow_terminal() -> None:
    frame = pl.DataFrame({f"column_{i}": [f"device-{i:04d}", None] for i in range(18)})
    piped = render(frame, "table", 10).splitlines()
    # Into a pipe: no width limit, so each value stays whole on its row's one line.
    rows = [line for line in piped if line.startswith("│ device-0000")]
    assert len(rows) == 1 and all(f"device-{i:04d}" in rows[0] for i in range(18))
    wide_terminal = render(frame, "table", 10, width=len(max(piped, key=len)))
    assert wide_terminal.splitlines() == piped
    narrow = render(frame, "table", 10, width=120)
    assert narrow.startswith("-[ RECORD 1 ]") and "column_17 | device-0017" in narrow


def test_every_table_prints_in_every_format(
    kafka: KafkaResource,
    topic: str,
    warehouse: DuckDBWarehouseResource,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    produce(kafka, topic, 300, seed=3, malformed_fraction=0.1, duplicate_fraction=0.05)
    drain(kafka, warehouse, IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq"), None)
    tables = warehouse.query(
        "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables "
        "WHERE table_schema IN ('raw', 'clean', 'agg', 'features', 'ml', 'ops')"
    )["t"].to_list()
    assert "clean.dead_letter_events" in tables and len(tables) > 15
    for name, value in lake_env(warehouse).items():
        monkeypatch.setenv(name, value)
    for table in tables:
        for fmt in FORMATS:
            code = cli.main(["sql", "--format", fmt, f"SELECT * FROM {table} LIMIT 5"])
            out, err = capsys.readouterr()
            assert code == 0, (table, fmt, err)
    cli.main(["sql", "--format", "csv", "SELECT * FROM clean.dead_letter_events"])
    printed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    stored = warehouse.query('SELECT "value" FROM clean.dead_letter_events')["value"]
    assert sorted(r["value"] for r in printed) == sorted(v.hex() for v in stored)


def test_a_blank_query_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sql", "  "]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give a query" in err
