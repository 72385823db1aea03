import datetime as dt

import dagster as dg

from astra_pipeline.assets.ingest import IngestConfig, drain
from astra_pipeline_tests.helpers import counts, produce
from resources.kafka import KafkaResource
from sensors.kafka_events import build_kafka_events_sensor, compute_lag


def test_compute_lag_by_hand() -> None:
    assert compute_lag({0: 10, 1: 5, 2: 0}, {0: 4, 1: None, 2: None}) == {0: 6, 1: 5, 2: 0}
    assert compute_lag({0: 3}, {0: 7}) == {0: 0}


def evaluate(sensor: dg.SensorDefinition, kafka, instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"kafka": kafka})
    return sensor(context)


def test_sensor_requests_run_on_lag_and_skips_when_caught_up(kafka, topic, warehouse) -> None:
    sensor = build_kafka_events_sensor(topic, interval_s=5, running_by_default=True)
    kafka.produce_all(topic, ((f"k{i % 7}".encode(), b"{}") for i in range(500)))
    with dg.instance_for_test() as instance:
        first = evaluate(sensor, kafka, instance)
        assert isinstance(first, dg.SensorResult)
        assert len(first.run_requests) == 1
        # No partition: a run is the same however it is launched (issue 11, item 4).
        assert first.run_requests[0].partition_key is None
        # Lag in messages and in seconds, observed every tick (the UI plots them).
        observed = first.asset_events[0].metadata
        assert observed["kafka_lag"].value == 500
        assert observed["kafka_lag_seconds"].value >= 0
        # The same state gives the same run key: one state never launches two runs.
        again = evaluate(sensor, kafka, instance)
        assert again.run_requests[0].run_key == first.run_requests[0].run_key
        drain(kafka, warehouse, IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq"), None)
        caught_up = evaluate(sensor, kafka, instance, cursor=first.cursor)
        assert caught_up.run_requests == []
        assert caught_up.asset_events[0].metadata["kafka_lag"].value == 0
        assert caught_up.asset_events[0].metadata["kafka_lag_seconds"].value == 0


def _requests(result) -> list[dg.RunRequest]:
    return list(result.run_requests) if isinstance(result, dg.SensorResult) else []


def test_a_reset_cursor_neither_skips_nor_repeats_a_range(kafka, topic, warehouse) -> None:
    """The cursor only de-duplicates ticks; lag comes from the broker and the ledger."""
    sensor = build_kafka_events_sensor(topic, interval_s=5, running_by_default=True)
    sent = produce(kafka, topic, 3_000)
    one_batch = IngestConfig(
        topic=topic, deadletter_topic=f"{topic}_dlq", max_batch_size=1_000, time_budget_s=0
    )
    with dg.instance_for_test() as instance:
        first = evaluate(sensor, kafka, instance)
        drain(kafka, warehouse, one_batch, None)
        # Cursor lost (sensor reset in the UI, instance wiped): the outstanding range is
        # still requested, because the lag is read again from Kafka.
        reset = evaluate(sensor, kafka, instance, cursor=None)
        assert len(_requests(reset)) == 1
        assert _requests(reset)[0].run_key != _requests(first)[0].run_key
        drain(kafka, warehouse, IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq"), None)
        assert _requests(evaluate(sensor, kafka, instance, cursor=None)) == []
    got = counts(warehouse)
    assert got["raw"] == got["ledger"] == sent["total"]


def test_the_duckdb_file_alone_is_enough_state(broker, kafka, topic, warehouse) -> None:
    """Consumer group and sensor cursor both gone: the ledger in DuckDB decides."""
    sent = produce(kafka, topic, 2_000)
    config = IngestConfig(topic=topic, deadletter_topic=f"{topic}_dlq")
    drain(kafka, warehouse, config, None)
    before = counts(warehouse)
    # A new group id stands for a group deleted on the broker: nothing committed.
    fresh = KafkaResource(bootstrap_servers=broker.bootstrap_servers, consumer_group="g-new")
    assert set(fresh.committed_offsets(topic).values()) == {None}
    sensor = build_kafka_events_sensor(topic, interval_s=5, running_by_default=True)
    with dg.instance_for_test() as instance:
        # The sensor cannot know the group is behind only on paper: it asks for a run...
        assert len(_requests(evaluate(sensor, fresh, instance))) == 1
        totals = drain(fresh, warehouse, config, None)
        # ...which reads from the ledger's offsets: nothing again, nothing skipped.
        assert totals.messages == 0
        assert counts(warehouse) == before
        # The run repaired the group from the ledger, so the sensor is quiet again.
        assert fresh.committed_offsets(topic) == kafka.committed_offsets(topic)
        assert _requests(evaluate(sensor, fresh, instance)) == []
    produce(kafka, topic, 500, seed=9)
    drain(fresh, warehouse, config, None)
    after = counts(warehouse)
    assert after["raw"] == after["ledger"] == sent["total"] + 500


def test_window_freshness_is_judged_on_event_time_by_hand() -> None:
    from astra_pipeline.checks.freshness import judge

    now = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
    ok, _, meta = judge(now - dt.timedelta(seconds=90), now)
    assert ok and meta["age_s"] == 90
    late, severity, _ = judge(now - dt.timedelta(minutes=5), now)
    assert not late and severity == dg.AssetCheckSeverity.WARN
    stale, severity, _ = judge(now - dt.timedelta(minutes=11), now)
    assert not stale and severity == dg.AssetCheckSeverity.ERROR
    never, severity, meta = judge(None, now)
    assert not never and severity == dg.AssetCheckSeverity.ERROR


def test_the_sensor_reports_window_freshness_from_the_windows_event_time(kafka, topic) -> None:
    """Every tick, from the newest complete window the last refreshes recorded: fresh
    after a refresh that saw a window end a minute ago, failing once it is 11 minutes."""
    sensor = build_kafka_events_sensor(topic, interval_s=5, running_by_default=True)
    with dg.instance_for_test() as instance:
        first = evaluate(sensor, kafka, instance)
        none_yet = first.asset_events[1]
        assert none_yet.check_name == "windowed_aggregates_fresh_on_event_time"
        assert not none_yet.passed
        for minutes_ago in (30, 1):  # an old backfilled hour, then the live one
            end = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    "windowed_aggregates",
                    partition=None,
                    metadata={"newest_window_end": end.isoformat()},
                )
            )
        fresh = evaluate(sensor, kafka, instance).asset_events[1]
        assert fresh.passed, fresh.metadata
        assert 60 <= fresh.metadata["age_s"].value < 90
