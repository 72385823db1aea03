"""Every entry point reads the same settings: the CLI's warehouse commands say in one line
that no lake is configured (and that the DuckDB file's variables are retired), and an
ingest run launched by hand (no run config) ingests ASTRA_TOPIC_RAW, not the config
class's default topic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from astra_pipeline.assets.ingest import RAW_EVENTS
from astra_pipeline.definitions import build_definitions
from astra_pipeline_tests.helpers import counts, produce, settings_for
from resources.kafka import KafkaResource
from resources.settings import (
    DEV_LAKE_POINTER,
    AstraSettings,
    SettingsError,
    partitions_start,
)
from resources.warehouse import DuckDBWarehouseResource

ASTRA = str(Path(sys.executable).parent / "astra")


@pytest.mark.parametrize("command", [["sql", "SELECT 1"], ["ingest", "--time-budget", "5"]])
def test_a_warehouse_command_without_a_lake_says_so_in_one_line(
    tmp_path: Path, command: list[str], broker
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASTRA_")},
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
    }
    # In a folder with no dev session (no data/dev/lake.json) and no ASTRA_LAKE_CATALOG.
    done = subprocess.run(
        [ASTRA, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "ASTRA_LAKE_CATALOG is not set" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # The single DuckDB file's variables are refused by name, not silently ignored.
    env["ASTRA_DUCKDB_PATH"] = str(tmp_path / "astra.duckdb")
    done = subprocess.run(
        [ASTRA, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "ASTRA_DUCKDB_PATH is no longer read" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_ingest_launched_without_run_config_ingests_the_settings_topic(
    kafka: KafkaResource, topic: str, warehouse: DuckDBWarehouseResource
) -> None:
    produced = produce(kafka, topic, 500, seed=5)
    settings = settings_for(kafka, topic, warehouse)
    defs = build_definitions(settings)
    ingest = defs.get_assets_def(RAW_EVENTS)
    result = dg.materialize([ingest], resources={"kafka": kafka, "warehouse": warehouse})
    assert result.success
    assert counts(warehouse)["raw"] == produced["total"]
    topics = warehouse.query("SELECT DISTINCT topic FROM raw.events")["topic"].to_list()
    assert topics == [topic]


def test_partitions_start_where_the_setting_says() -> None:
    """ASTRA_PARTITIONS_START is the first hour and day of the partitions (read as the
    asset modules are imported, so in a fresh interpreter), and a bad value is refused
    naming the variable."""
    code = (
        "from astra_pipeline.assets.windows import HOURLY\n"
        "from astra_pipeline.assets.features import DAILY\n"
        "print(HOURLY.start.isoformat(), DAILY.start.isoformat())"
    )
    env = {**os.environ, "ASTRA_PARTITIONS_START": "2026-11-20"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["2026-11-20T00:00:00+00:00"] * 2, done.stderr
    with pytest.raises(SettingsError, match="ASTRA_PARTITIONS_START"):
        partitions_start({"ASTRA_PARTITIONS_START": "yesterday"})
    assert partitions_start({}).isoformat() == "2026-01-01"


def test_a_running_dev_sessions_lake_is_the_default_unless_a_lake_is_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`astra dev` writes data/dev/lake.json while it runs; a command of another shell in
    the same folder reads that lake, unless its environment names a lake."""
    for name in ("ASTRA_LAKE_CATALOG", "ASTRA_LAKE_DATA_PATH", "ASTRA_DUCKDB_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert AstraSettings.from_env().lake_catalog == ""  # no session: no lake
    (tmp_path / DEV_LAKE_POINTER).parent.mkdir(parents=True)
    (tmp_path / DEV_LAKE_POINTER).write_text(
        '{"lake_catalog": "postgresql://postgres@127.0.0.1:1/lake", "lake_data_path": "/x/"}'
    )
    found = AstraSettings.from_env()
    assert (found.lake_catalog, found.lake_data_path) == (
        "postgresql://postgres@127.0.0.1:1/lake",
        "/x/",
    )
    monkeypatch.setenv("ASTRA_LAKE_CATALOG", "postgresql://postgres@127.0.0.1:2/other")
    assert AstraSettings.from_env().lake_catalog.endswith(":2/other")
    # An explicit environment (tests, compose) is never mixed with the session's file.
    assert AstraSettings.from_env({}).lake_catalog == ""
