"""The warehouse as a DuckLake (issue 12): a Postgres catalog (the embedded server) and a
folder of Parquet files, written by several processes at once.

- Two `astra ingest` processes started at the same moment on one backlog: every event
  exactly once and the ledger contiguous per partition, although DuckLake lets two
  transactions that only append both commit (the ingest turn makes them conflict).
- A reader that keeps its connection open while ingest commits: it never waits for a
  lock and its counts only ever move by whole batches.
- `astra sql --at` reads a past snapshot, `astra snapshots` names the run of each commit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from confluent_kafka.admin import AdminClient

from astra_pipeline.assets import window_refresh
from astra_pipeline.assets.ingest import IngestConfig, drain
from astra_pipeline.assets.lake import build_lake_files
from astra_pipeline.transforms.ingest_batch import build_ingest_frames
from astra_pipeline_tests.helpers import lake_env, produce
from resources.broker import EmbeddedBroker
from resources.errors import CommitConflict
from resources.ingest_store import BatchRows, write_batch
from resources.kafka import KafkaResource
from resources.lake import open_lake
from resources.lake_maintenance import maintain
from resources.tables import TABLES
from resources.warehouse import DuckDBWarehouseResource

BIN = Path(sys.executable).parent
HOUR = dt.timedelta(hours=1)


def _lake_env(
    warehouse: DuckDBWarehouseResource, broker: EmbeddedBroker, topic: str
) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASTRA_")},
        **lake_env(warehouse),
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "ASTRA_TOPIC_RAW": topic,
        "ASTRA_TOPIC_DEADLETTER": f"{topic}_dlq",
        "ASTRA_CONSUMER_GROUP": f"g-{topic}",
        "ASTRA_MAX_BATCH_SIZE": "5000",
    }


def _astra(args: list[str], env: dict[str, str], returncode: int = 0) -> str:
    """The command's output (its stderr when it is expected to fail)."""
    done = subprocess.run(
        [str(BIN / "astra"), *args], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == returncode, done.stderr[-3000:]
    return done.stdout if returncode == 0 else done.stderr


def _ingest_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`astra ingest ARGS` started in the background (stdout: its JSON totals)."""
    return subprocess.Popen(
        [str(BIN / "astra"), "ingest", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_ingests(env: dict[str, str], *argument_lists: list[str]) -> list[dict[str, object]]:
    """`astra ingest` once per argument list, all started at the same moment; each must
    succeed. Returns their JSON totals."""
    ingests = [_ingest_process(env, *arguments) for arguments in argument_lists]
    outputs = [process.communicate(timeout=240) for process in ingests]
    for process, (_, err) in zip(ingests, outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
    return [json.loads(out) for out, _ in outputs]


def _raw_counts(warehouse: DuckDBWarehouseResource) -> dict[str, int]:
    """raw.events' rows and distinct (partition, offset) pairs."""
    return warehouse.query(
        'SELECT count(*) AS n, count(DISTINCT ("partition", "offset")) AS distinct_offsets '
        "FROM raw.events"
    ).row(0, named=True)


def _ledger_is_contiguous(warehouse: DuckDBWarehouseResource, topic: str) -> pl.DataFrame:
    ledger = warehouse.query(
        'SELECT "partition", start_offset, end_offset FROM ops.ingest_ledger '
        'WHERE topic = ? ORDER BY "partition", start_offset',
        [topic],
    )
    for (partition,), ranges in ledger.group_by(["partition"], maintain_order=True):
        starts, ends = ranges["start_offset"].to_list(), ranges["end_offset"].to_list()
        assert starts[0] == 0, f"partition {partition} starts at {starts[0]}"
        assert starts[1:] == ends[:-1], f"partition {partition}: gap or overlap {ranges}"
    return ledger


def test_two_ingest_processes_at_once_store_every_event_exactly_once(
    broker: EmbeddedBroker,
    topic: str,
    kafka: KafkaResource,
    lake_warehouse: DuckDBWarehouseResource,
) -> None:
    env = _lake_env(lake_warehouse, broker, topic)
    produce(kafka, topic, 30_000, seed=3)
    lake_warehouse.ensure_schema()  # both processes then find the tables
    totals = _run_ingests(env, ["--time-budget", "120"], ["--time-budget", "120"])
    # Whatever the interleaving, a third pass finds the rest (one that lost a commit race
    # stops there, as a run does) and then the tables hold each message once.
    drain(kafka, lake_warehouse, _config(topic), run_id=None)
    raw = _raw_counts(lake_warehouse)
    assert raw == {"n": 30_000, "distinct_offsets": 30_000}, totals
    clean = lake_warehouse.query(
        "SELECT (SELECT count(*) FROM clean.sensor_readings) + "
        "(SELECT count(*) FROM clean.user_activity) AS n"
    ).item()
    assert clean == 30_000
    ledger = _ledger_is_contiguous(lake_warehouse, topic)
    assert ledger.height >= 6


def test_concurrent_batches_of_the_same_offsets_cannot_both_commit(
    broker: EmbeddedBroker,
    topic: str,
    kafka: KafkaResource,
    lake_warehouse: DuckDBWarehouseResource,
) -> None:
    """The guarantee itself, without timing luck: two transactions that both checked the
    ledger before either committed. The second commit is refused; nothing of it lands."""
    produce(kafka, topic, 1000, seed=4)
    lake_warehouse.ensure_schema()
    with kafka.reader(topic) as reader:
        batch = reader.read({p: 0 for p in kafka.partitions(topic)}, 10_000)
    now = dt.datetime.now(dt.UTC)
    frames = build_ingest_frames(batch.frame, topic, "b", now)
    rows = BatchRows(
        raw_events=frames.raw_events,
        sensor_readings=frames.sensor_readings,
        user_activity=frames.user_activity,
        dead_letters=frames.dead_letters,
        duplicates=frames.duplicates,
    )
    first, second = lake_warehouse.transaction(), lake_warehouse.transaction()
    tx_a, tx_b = first.__enter__(), second.__enter__()
    for tx, batch_id in ((tx_a, "a"), (tx_b, "b")):
        write_batch(
            tx,
            topic=topic,
            batch_id=batch_id,
            run_id=None,
            start_offsets=batch.start_offsets,
            end_offsets=batch.end_offsets,
            rows=rows,
            committed_at=now,
        )
    first.__exit__(None, None, None)
    try:
        second.__exit__(None, None, None)
    except CommitConflict:
        pass
    else:
        raise AssertionError("both transactions committed the same offsets")
    assert lake_warehouse.query("SELECT count(*) FROM raw.events").item() == 1000
    assert lake_warehouse.query("SELECT DISTINCT batch_id FROM ops.ingest_ledger")[
        "batch_id"
    ].to_list() == ["a"]


def test_a_reader_never_blocks_ingest_and_sees_whole_batches(
    broker: EmbeddedBroker,
    topic: str,
    kafka: KafkaResource,
    lake_warehouse: DuckDBWarehouseResource,
) -> None:
    produce(kafka, topic, 10_000, seed=6)
    lake_warehouse.ensure_schema()
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def read() -> None:
        # One connection kept open for the whole ingest, one statement after another.
        with lake_warehouse.session(read_only=True) as reader:
            while not stop.is_set():
                seen.append(
                    reader.query(
                        "SELECT (SELECT count(*) FROM raw.events), "
                        "(SELECT coalesce(sum(message_count), 0) FROM ops.ingest_ledger)"
                    ).row(0)
                )

    thread = threading.Thread(target=read)
    thread.start()
    try:
        totals = drain(
            kafka,
            lake_warehouse,
            IngestConfig(
                topic=topic,
                deadletter_topic=f"{topic}_dlq",
                max_batch_size=500,
                time_budget_s=120,
            ),
            run_id="reader-test",
        )
    finally:
        stop.set()
        thread.join(timeout=60)
    assert totals.batches >= 20 and totals.messages == 10_000
    # Each read saw the rows and the ledger of the same commits: never a batch half-written.
    assert seen and all(rows == ledger for rows, ledger in seen), seen[:5]
    batch_ends = set(
        lake_warehouse.query(
            "SELECT sum(message_count) OVER (ORDER BY committed_at, batch_id) AS n FROM "
            "(SELECT batch_id, min(committed_at) AS committed_at, sum(message_count) AS "
            "message_count FROM ops.ingest_ledger GROUP BY batch_id)"
        )["n"].to_list()
    ) | {0}
    assert {rows for rows, _ in seen} <= batch_ends
    assert len({rows for rows, _ in seen}) > 2, "the reader saw ingest progress"


def test_a_query_running_through_the_whole_ingest_holds_up_no_commit(
    broker: EmbeddedBroker,
    topic: str,
    kafka: KafkaResource,
    lake_warehouse: DuckDBWarehouseResource,
) -> None:
    """A reader's statement that lasts as long as it likes (a notebook's long query) does
    not hold up ingest: all 20 batches commit while it is still running, and it answers
    from the one snapshot it started on. (Writers never wait for readers here: there is
    no lock between them for a timing to show.)"""
    produce(kafka, topic, 10_000, seed=7)
    lake_warehouse.ensure_schema()
    entered, release = threading.Event(), threading.Event()
    answer: list[tuple[int, int]] = []

    def wait(value: int) -> int:
        # The query stays in this function until ingest has finished (or 120 s).
        entered.set()
        release.wait(timeout=120)
        return value

    def long_query() -> None:
        con = open_lake(lake_warehouse.lake_location(), read_only=True)
        try:
            con.create_function("wait_for_ingest", wait, ["BIGINT"], "BIGINT")
            answer.append(
                con.execute(
                    "SELECT (SELECT count(*) FROM raw.events), max(wait_for_ingest(i)) "
                    "FROM range(1) AS t(i)"
                ).fetchone()
            )
        finally:
            con.close()

    reader = threading.Thread(target=long_query)
    reader.start()
    try:
        assert entered.wait(timeout=60), "the long query did not start"
        totals = drain(
            kafka,
            lake_warehouse,
            IngestConfig(
                topic=topic, deadletter_topic=f"{topic}_dlq", max_batch_size=500, time_budget_s=120
            ),
            run_id="long-query-test",
        )
        still_running = reader.is_alive() and not answer
    finally:
        release.set()
        reader.join(timeout=60)
    assert totals.batches >= 20 and totals.messages == 10_000
    assert still_running, "ingest waited for the reader's query to end"
    assert answer == [(0, 0)], "the query saw the snapshot it started on, before any batch"
    assert lake_warehouse.query("SELECT count(*) FROM raw.events").item() == 10_000


def test_sql_at_a_snapshot_and_the_snapshot_list(
    broker: EmbeddedBroker,
    topic: str,
    kafka: KafkaResource,
    lake_warehouse: DuckDBWarehouseResource,
) -> None:
    env = _lake_env(lake_warehouse, broker, topic)
    produce(kafka, topic, 3000, seed=7)
    drain(kafka, lake_warehouse, _config(topic), run_id=None)
    listed = json.loads(_astra(["snapshots", "--format", "json"], env))
    batches = [s for s in listed if (s["message"] or "").startswith("ingest batch")]
    assert batches and all(s["author"] == "astra ingest" for s in batches)
    before = min(s["snapshot"] for s in batches) - 1
    produce(kafka, topic, 500, seed=8)
    drain(kafka, lake_warehouse, _config(topic), run_id="run-2")
    count = "SELECT count(*) AS n FROM raw.events"
    now = json.loads(_astra(["sql", "--format", "json", count], env))
    then = json.loads(_astra(["sql", "--at", str(before), "--format", "json", count], env))
    assert now == [{"n": 3500}] and then == [{"n": 0}]
    bad = _astra(["sql", "--at", "yesterday", "SELECT 1"], env, returncode=2)
    assert "--at" in bad and bad.count("\n") <= 2
    # On a lake `astra sql` starts without Dagster (its import is most of the full CLI's
    # start-up): the same answer, and no dagster module loaded.
    probe = (
        "import sys; from astra_pipeline.entry import main; "
        f"sys.argv = ['astra', 'sql', '--format', 'json', {count!r}]; code = main(); "
        "sys.stderr.write(f'dagster loaded: {\"dagster\" in sys.modules}'); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [{"n": 3500}]
    assert done.stderr.endswith("dagster loaded: False")


def _config(topic: str, batch: int = 100_000) -> IngestConfig:
    return IngestConfig(
        topic=topic, deadletter_topic=f"{topic}_dlq", max_batch_size=batch, time_budget_s=120
    )


def test_maintenance_merges_small_files_and_keeps_every_row(
    topic: str, kafka: KafkaResource, lake_warehouse: DuckDBWarehouseResource
) -> None:
    """Micro-batches leave a file per batch and table; the maintenance job (the real
    asset, through Dagster) leaves fewer, and every query answers the same."""
    produce(kafka, topic, 6000, seed=12, duplicate_fraction=0.0)
    drain(
        kafka,
        lake_warehouse,
        IngestConfig(
            topic=topic, deadletter_topic=f"{topic}_dlq", max_batch_size=500, time_budget_s=120
        ),
        run_id="many-small-batches",
    )
    question = (
        "SELECT (SELECT count(*) FROM raw.events) AS raw, "
        "(SELECT sum(hash(event_id)) FROM clean.sensor_readings) AS sensor_ids, "
        "(SELECT round(sum(revenue), 6) FROM clean.user_activity) AS revenue"
    )
    answer = lake_warehouse.query(question).row(0)
    # A retention of a minute: the history of the batches just written is kept.
    result = dg.materialize(
        [build_lake_files(1 / 60)],
        resources={"warehouse": lake_warehouse},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("lake_files")[0].metadata
    before, after = metadata["files_before"].value, metadata["files_after"].value
    assert isinstance(before, int) and isinstance(after, int)
    assert before >= 12 and after < before / 3, (before, after)
    assert "raw.events" in str(metadata["files_per_table"].value)
    assert lake_warehouse.query(question).row(0) == answer
    on_disk = sum(1 for _ in Path(lake_warehouse.lake_data_path).rglob("*.parquet"))
    assert on_disk > after, "the replaced files stay while a snapshot in the retention needs them"
    # A retention of a second, past: the history goes, and with it the replaced files.
    time.sleep(1.5)
    again = dg.materialize([build_lake_files(1 / 3600)], resources={"warehouse": lake_warehouse})
    metadata = again.asset_materializations_for_node("lake_files")[0].metadata
    assert metadata["snapshots_expired"].value and metadata["files_deleted"].value
    reclaimed = metadata["bytes_reclaimed"].value
    assert isinstance(reclaimed, int) and reclaimed > 0
    live = metadata["files_after"].value
    left = sum(1 for _ in Path(lake_warehouse.lake_data_path).rglob("*.parquet"))
    # What this second pass itself replaced is younger than the retention: it may stay.
    assert isinstance(live, int) and live <= left < on_disk
    assert lake_warehouse.query(question).row(0) == answer


def test_a_window_refresh_refused_by_a_concurrent_commit_is_computed_again(
    topic: str,
    kafka: KafkaResource,
    lake_warehouse: DuckDBWarehouseResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a lake two refreshes (or a refresh and a compaction) can both run; the one
    whose commit is refused computes its chunk again and ends with the right windows."""
    produce(kafka, topic, 2000, seed=13)
    drain(kafka, lake_warehouse, _config(topic), run_id="ingest")
    hour = lake_warehouse.query(
        "SELECT date_trunc('hour', max(ts)) AS h FROM clean.sensor_readings"
    ).item()
    old = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    with lake_warehouse.transaction() as tx:  # a row the concurrent commit will delete
        tx.execute(
            "INSERT INTO agg.user_1m VALUES ('u-old', ?, ?, 1, 1, 0, 0, 0.0)",
            [old, old + dt.timedelta(minutes=1)],
        )
    calls = []
    original = window_refresh.record_partitions

    def record_after_a_concurrent_commit(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            with lake_warehouse.transaction() as other:
                other.execute("DELETE FROM agg.user_1m WHERE window_start < ?", [old + HOUR])
        return original(*args, **kwargs)

    monkeypatch.setattr(window_refresh, "record_partitions", record_after_a_concurrent_commit)
    refresh = window_refresh.refresh_hours(lake_warehouse, hour, hour, run_id="refresh")
    assert len(calls) == 2, "the first commit was refused and the chunk computed again"
    monkeypatch.setattr(window_refresh, "record_partitions", original)
    first = {
        name: lake_warehouse.query(f"SELECT count(*) FROM agg.{name}").item()
        for name in ("sensor_1m", "user_1m", "user_sessions")
    }
    window_refresh.refresh_hours(lake_warehouse, hour, hour, run_id="again")
    again = {
        name: lake_warehouse.query(f"SELECT count(*) FROM agg.{name}").item()
        for name in ("sensor_1m", "user_1m", "user_sessions")
    }
    assert first == again and first["sensor_1m"] > 0, (first, again, refresh)


def test_the_lake_is_the_archive_a_backfill_needs_no_kafka(
    broker: EmbeddedBroker,
    topic: str,
    kafka: KafkaResource,
    lake_warehouse: DuckDBWarehouseResource,
) -> None:
    """Kafka drops the messages (here: the topic is deleted); a windows backfill of their
    hours still works, from the lake's clean tables, and gives the same windows. The
    raw retention of maintenance then deletes old raw.events rows only."""
    produce(kafka, topic, 3000, seed=14)
    drain(kafka, lake_warehouse, _config(topic), run_id="ingest")
    hour = lake_warehouse.query(
        "SELECT date_trunc('hour', max(ts)) AS h FROM clean.sensor_readings"
    ).item()
    window_refresh.refresh_hours(lake_warehouse, hour - HOUR, hour, run_id="before")
    before = lake_warehouse.query("SELECT * FROM agg.sensor_1m ORDER BY ALL")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.delete_topics([topic])[topic].result(30)
    assert topic not in admin.list_topics(timeout=10).topics
    window_refresh.refresh_hours(lake_warehouse, hour - HOUR, hour, run_id="backfill")
    after = lake_warehouse.query("SELECT * FROM agg.sensor_1m ORDER BY ALL")
    assert after.height > 0 and after.equals(before)

    clean = _clean_count(lake_warehouse)
    time.sleep(1.0)
    report = maintain(
        lake_warehouse,
        dt.timedelta(hours=1),
        dt.datetime.now(dt.UTC),
        raw_retention=dt.timedelta(seconds=0.5),
    )
    assert report.raw_rows_expired == 3000
    assert lake_warehouse.query("SELECT count(*) FROM raw.events").item() == 0
    assert _clean_count(lake_warehouse) == clean


def _clean_count(warehouse: DuckDBWarehouseResource) -> int:
    return int(
        warehouse.query(
            "SELECT (SELECT count(*) FROM clean.sensor_readings) + "
            "(SELECT count(*) FROM clean.user_activity)"
        ).item()
    )


def test_a_catalog_serialization_failure_counts_as_a_commit_conflict() -> None:
    """Postgres' refusal of a concurrent update (SQLSTATE 40001), as DuckLake reports it
    from its catalog (seen in a dev session: maintenance's flush of inlined data while a
    refresh committed), is retried like DuckLake's own conflicts."""
    import duckdb

    from resources.lake import is_commit_conflict

    seen = duckdb.Error(
        "Failed to delete flushed inlined data in DuckLake from table ducklake_inlined_data_38_2"
        ': Failed to execute query "DELETE ...": ERROR:  could not serialize access due to '
        "concurrent update"
    )
    assert is_commit_conflict(seen)
    assert not is_commit_conflict(duckdb.Error("Catalog Error: Table with name x does not exist"))


def test_a_duckdb_file_warehouse_moves_into_a_lake_and_ingest_goes_on(
    broker: EmbeddedBroker,
    topic: str,
    kafka: KafkaResource,
    lake_warehouse: DuckDBWarehouseResource,
    new_lake: Callable[[], DuckDBWarehouseResource],
    tmp_path: Path,
) -> None:
    """`astra import-duckdb PATH`: a warehouse of the former single DuckDB file (every
    table, the ledger included) moves into an empty lake in one commit, and ingest goes on
    from the file's last batch, every event once."""
    first = produce(kafka, topic, 3_000, seed=31, malformed_fraction=0.02, duplicate_fraction=0.02)
    drain(kafka, lake_warehouse, _config(topic, batch=500), run_id=None)
    # The file as an older version of the storage path left it: the same rows, but
    # without a table that came later (ml.declining_users_truth) and without the ledger's
    # topic ids (a column that came later too).
    old = tmp_path / "astra.duckdb"
    with lake_warehouse.session() as session:
        session.execute(f"ATTACH '{old}' AS old_file")
        try:
            for table in TABLES:
                if table == "ml.declining_users_truth":
                    continue
                schema = table.split(".")[0]
                session.execute(f"CREATE SCHEMA IF NOT EXISTS old_file.{schema}")
                session.execute(f"CREATE TABLE old_file.{table} AS SELECT * FROM {table}")
            session.execute("ALTER TABLE old_file.ops.ingest_ledger DROP COLUMN topic_id")
        finally:
            session.execute("DETACH old_file")
    before = {t: lake_warehouse.query(f"SELECT count(*) FROM {t}").item() for t in TABLES}

    lake = new_lake()
    env = _lake_env(lake, broker, topic)
    imported = json.loads(_astra(["import-duckdb", str(old)], env))
    assert imported["rows"]["raw.events"] == first["total"] > 0
    for table, rows in imported["rows"].items():
        assert rows == before[table] == lake.query(f"SELECT count(*) FROM {table}").item(), table
    assert "ops.deadletter_replay_turns" not in imported["rows"], "the lake's turns stay its own"
    assert "ml.declining_users_truth" not in imported["rows"], "a table the file lacks"
    assert lake.query("SELECT count(topic_id) FROM ops.ingest_ledger").item() == 0
    assert any("import of" in str(m) for m in lake.snapshots(5)["message"].to_list())
    # Only an empty lake takes an import: one line, nothing copied twice.
    refused = _astra(["import-duckdb", str(old)], env, returncode=2)
    assert "already holds" in refused and refused.count("\n") == 1

    second = produce(kafka, topic, 2_000, seed=32, malformed_fraction=0.02)
    totals = json.loads(_astra(["ingest", "--no-progress"], env))
    assert totals["messages"] == second["total"], "ingest went on from the file's ledger"
    got = _raw_counts(lake)
    assert got["n"] == got["distinct_offsets"] == first["total"] + second["total"]
    _ledger_is_contiguous(lake, topic)
