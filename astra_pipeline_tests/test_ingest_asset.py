"""The ingest multi-asset against the real test broker and a fresh lake."""

import datetime as dt
import json
import uuid

import dagster as dg
import pytest

from astra_pipeline.assets import ingest as ingest_module
from astra_pipeline.assets.ingest import RAW_EVENTS, IngestConfig, drain, ingest_events
from astra_pipeline.checks.ingest import STATIC_CHECKS, make_dead_letter_rate_check
from astra_pipeline_tests.helpers import counts, produce, sensor_reading
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource


def test_materialize_ingests_every_message_exactly_once(kafka, topic, warehouse) -> None:
    sent = produce(kafka, topic, 5_000, malformed_fraction=0.02, duplicate_fraction=0.02)
    config = IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq", max_batch_size=1_500)
    checks = [*STATIC_CHECKS, make_dead_letter_rate_check(0.05)]
    result = dg.materialize(
        [ingest_events, *checks],
        resources={"kafka": kafka, "warehouse": warehouse},
        run_config=dg.RunConfig({"ingest_events": config}),
    )
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    got = counts(warehouse)
    assert got["raw"] == sent["total"] == got["ledger"]
    assert got["dead"] == sent["malformed"]
    assert got["dups"] == sent["duplicates"]
    assert got["clean"] == got["distinct_ids"] == sent["unique_valid"]
    # The group's committed offsets mirror the ledger: Kafka lag tools see zero lag.
    committed = kafka.committed_offsets(topic)
    assert sum(o or 0 for o in committed.values()) == sent["total"]
    # The dead letters were also produced to their topic, with the reason attached.
    with kafka.reader(f"{topic}_dlq") as reader:
        dlq = reader.read({0: 0}, 100_000)
    assert dlq.size == sent["malformed"]


def test_replay_inserts_nothing_and_new_data_continues(kafka, topic, warehouse) -> None:
    produce(kafka, topic, 2_000)
    config = IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq")
    drain(kafka, warehouse, config, run_id=None)
    before = counts(warehouse)
    # A second run with nothing new, and a reset consumer group: the ledger decides.
    kafka.commit_offsets(topic, {p: 0 for p in range(6)})
    drain(kafka, warehouse, config, run_id=None)
    assert counts(warehouse) == before
    produce(kafka, topic, 700, seed=2)
    drain(kafka, warehouse, config, run_id=None)
    after = counts(warehouse)
    assert after["raw"] == before["raw"] + 700 == after["ledger"]


def test_tail_of_topic_is_ingested_without_further_traffic(kafka, topic, warehouse) -> None:
    # The embedded broker reports a partition's end as its last batch's base offset + 1,
    # so the watermarks trail; reading to EOF must still take every message.
    sent = produce(kafka, topic, 30_000)
    reported = sum(kafka.high_watermarks(topic).values())
    totals = drain(
        kafka, warehouse, IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq"), None
    )
    assert totals.reached_eof
    assert totals.messages == sent["total"] == counts(warehouse)["raw"]
    assert reported <= sent["total"]


def test_malformed_message_reason_is_stored(kafka, topic, warehouse) -> None:
    doc = {
        "event_type": "user_activity",
        "event_id": "x",
        "user_id": "u",
        "session_id": "s",
        "ts": dt.datetime.now(dt.UTC).isoformat(),
        "action": "purchase",
        "amount": "lots",
    }
    kafka.produce_all(topic, [(b"u", json.dumps(doc).encode()), (b"u", b"\xff not json")])
    drain(kafka, warehouse, IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq"), None)
    reasons = warehouse.query("SELECT reason FROM clean.dead_letter_events ORDER BY reason")
    assert reasons["reason"].to_list()[0] == "amount: Input should be a valid number"
    assert reasons["reason"].to_list()[1].startswith("json: Invalid JSON")


def test_a_run_failing_after_a_commit_still_reports_what_it_committed(
    kafka, topic, warehouse, monkeypatch
) -> None:
    """The committed batches' touched hours must reach the windows sensor even when a
    later batch fails: the next run starts after them and would never report them."""
    import astra_pipeline.assets.ingest as ingest

    produce(kafka, topic, 3_000)
    calls = {"n": 0}
    original = ingest.write_batch

    def failing_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full (simulated)")
        return original(*args, **kwargs)

    monkeypatch.setattr(ingest, "write_batch", failing_second_batch)
    config = IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq", max_batch_size=1_000)
    result = dg.materialize(
        [ingest_events],
        resources={"kafka": kafka, "warehouse": warehouse},
        run_config=dg.RunConfig({"ingest_events": config}),
        raise_on_error=False,
    )
    assert not result.success
    by_key = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    committed = counts(warehouse)["raw"]
    assert 0 < committed < 3_000
    raw = by_key["raw_events"].materialization.metadata
    assert raw["dagster/row_count"].value == committed
    touched = by_key["cleaned_events"].materialization.metadata["touched_hours"].value
    assert touched


def run_checks(kafka, warehouse, run_id: str) -> dict[str, bool]:
    """The row-level ingest checks executed alone, as run ``run_id``."""
    ledger_wide = {"raw_events_offset_continuity", "raw_events_topic_not_recreated"}
    checks = [c for c in STATIC_CHECKS if c.check_key.name not in ledger_wide]
    defs = dg.Definitions(
        assets=[ingest_events],
        asset_checks=checks,
        jobs=[dg.define_asset_job("checks_only", selection=dg.AssetSelection.checks(*checks))],
        resources={"kafka": kafka, "warehouse": warehouse},
    )
    result = defs.resolve_job_def("checks_only").execute_in_process(
        run_id=run_id, raise_on_error=False
    )
    return {c.check_name: c.passed for c in result.get_asset_check_evaluations()}


def test_row_checks_look_at_the_run_batches_and_catch_damage(kafka, topic, warehouse) -> None:
    """In an ingest run the checks read that run's batches only (their cost follows the
    batch, not the history); run alone they read everything. Damage is caught either way
    by the checks that cover it."""
    config = IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    produce(kafka, topic, 2_000, malformed_fraction=0.02)
    drain(kafka, warehouse, config, run_id=first)
    produce(kafka, topic, 1_000, seed=2)
    drain(kafka, warehouse, config, run_id=second)
    assert set(run_checks(kafka, warehouse, second).values()) == {True}
    batches = f"(SELECT batch_id FROM ops.ingest_ledger WHERE run_id = '{first}')"
    with warehouse.transaction() as tx:
        # In the first run's rows: a message stored twice, an event id repeated, and a
        # dead letter lost (its offset now placed nowhere).
        tx.execute(
            f"INSERT INTO raw.events SELECT * FROM raw.events WHERE batch_id IN {batches} LIMIT 1"
        )
        tx.execute(
            "INSERT INTO clean.sensor_readings SELECT * FROM clean.sensor_readings "
            f"WHERE batch_id IN {batches} LIMIT 1"
        )
        tx.execute(
            'DELETE FROM clean.dead_letter_events WHERE "offset" = (SELECT min("offset") '
            f"FROM clean.dead_letter_events WHERE batch_id IN {batches})"
        )
    expected_failures = {
        "raw_events_unique_offsets": False,
        "cleaned_events_unique_event_id": False,
        "cleaned_events_offsets_accounted": False,
    }
    # The second run's checks: the damage is not in their rows.
    assert set(run_checks(kafka, warehouse, second).values()) == {True}
    # The first run's checks, and checks run alone (a run without batches), see it all.
    assert run_checks(kafka, warehouse, first) == expected_failures
    assert run_checks(kafka, warehouse, str(uuid.uuid4())) == expected_failures


def test_resends_of_stored_events_touch_no_hour(
    kafka: KafkaResource, topic: str, warehouse: DuckDBWarehouseResource
) -> None:
    """Touched hours come from the rows inserted: a resend of a stored event_id, even one
    whose ts moved to another hour, is a duplicate and changes no window."""

    def reading(event_id: str, ts: str) -> tuple[bytes, bytes]:
        return b"dev-1", sensor_reading(event_id, ts)

    config = IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq")
    kafka.produce_all(topic, [reading("a", "2026-11-23T07:10:00Z")])
    first = drain(kafka, warehouse, config, None)
    hour = dt.datetime(2026, 11, 23, 7, tzinfo=dt.UTC)
    assert hour in first.touched_hours
    # The same event again, claiming 03:10; and one new event at 05:10.
    kafka.produce_all(
        topic, [reading("a", "2026-11-23T03:10:00Z"), reading("b", "2026-11-23T05:10:00Z")]
    )
    second = drain(kafka, warehouse, config, None)
    assert second.duplicates == 1
    touched = {h.hour for h in second.touched_hours}
    assert 5 in touched
    assert 3 not in touched  # the resend's claimed hour: nothing was inserted there


def test_row_count_is_the_tables_and_the_runs_figures_have_their_own_keys(
    kafka: KafkaResource, topic: str, warehouse: DuckDBWarehouseResource
) -> None:
    config = IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq")
    run_config = dg.RunConfig({"ingest_events": config})
    first = produce(kafka, topic, 800, seed=31, malformed_fraction=0.05)
    dg.materialize(
        [ingest_events], resources={"kafka": kafka, "warehouse": warehouse}, run_config=run_config
    )
    second = produce(kafka, topic, 300, seed=32, malformed_fraction=0.05)
    result = dg.materialize(
        [ingest_events],
        resources={"kafka": kafka, "warehouse": warehouse},
        run_config=run_config,
    )
    meta = {
        m.asset_key.to_user_string(): {k: v.value for k, v in m.materialization.metadata.items()}
        for m in result.get_asset_materialization_events()
    }
    assert meta["raw_events"]["dagster/row_count"] == first["total"] + second["total"]
    assert meta["raw_events"]["messages"] == second["total"]
    clean = first["unique_valid"] + second["unique_valid"]
    assert meta["cleaned_events"]["dagster/row_count"] == clean
    assert meta["cleaned_events"]["inserted"] == second["unique_valid"]
    dead = first["malformed"] + second["malformed"]
    assert meta["dead_letter_events"]["dagster/row_count"] == dead
    assert meta["dead_letter_events"]["rejected"] == second["malformed"]


def test_a_batch_another_writer_committed_first_ends_the_run_cleanly(
    kafka: KafkaResource,
    topic: str,
    warehouse: DuckDBWarehouseResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`astra ingest` beside a running dev platform: when another writer commits the
    offsets a run has read, the run's batch is discarded (the ledger check) and the run
    ends successfully with what it committed, instead of failing; nothing is lost or
    stored twice."""
    config = IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq")
    produced = produce(kafka, topic, 600, seed=41)
    drain(kafka, warehouse, config, None)  # the other writer
    before = counts(warehouse)
    # This run read the ledger before the other writer committed (it starts at 0).
    monkeypatch.setattr(ingest_module, "next_offsets", lambda session, topic: {})
    result = dg.materialize(
        [ingest_events],
        resources={"kafka": kafka, "warehouse": warehouse},
        run_config=dg.RunConfig({"ingest_events": config}),
    )
    assert result.success
    raw = next(
        m for m in result.get_asset_materialization_events() if m.asset_key == RAW_EVENTS
    ).materialization.metadata
    assert raw["ledger_conflicts"].value == 1 and raw["batches"].value == 0
    assert counts(warehouse) == before
    assert before["raw"] == produced["total"]


def test_a_run_records_the_end_to_end_latency_of_the_events_it_committed(
    kafka: KafkaResource, topic: str, warehouse: DuckDBWarehouseResource
) -> None:
    """Readings stamped 30, 60 and 90 s before they are produced: the run's p50, p95 and
    max latency (event time to commit) are those plus the seconds it took, in the
    instance's event log."""
    now = dt.datetime.now(dt.UTC)
    ages = [30.0] * 10 + [60.0] * 9 + [90.0]  # p50 = 30, p95 = 60 (19th of 20), max = 90
    kafka.produce_all(
        topic,
        (
            (
                b"dev-1",
                sensor_reading(
                    f"lat-{i}", (now - dt.timedelta(seconds=age)).isoformat().replace("+00:00", "Z")
                ),
            )
            for i, age in enumerate(ages)
        ),
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [ingest_events],
            resources={"kafka": kafka, "warehouse": warehouse},
            run_config=dg.RunConfig(
                {"ingest_events": IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq")}
            ),
            instance=instance,
        )
        took = (dt.datetime.now(dt.UTC) - now).total_seconds()
        event = instance.get_latest_materialization_event(dg.AssetKey("cleaned_events"))
        assert event is not None and event.run_id == result.run_id
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}  # type: ignore[union-attr]
    for key, age in (("latency_p50_s", 30), ("latency_p95_s", 60), ("latency_max_s", 90)):
        assert age <= meta[key] <= age + took, (key, meta[key], took)
