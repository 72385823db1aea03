"""An ingest run launched by hand (no partition, no run config: `dg launch`, the
launchpad, `dagster job execute`) succeeds, refreshes the live hour its rows touched and
checks it; and every check the run planned is evaluated for what it planned (no
"Skipped" twin beside each passed check). Issue 11, items 4 and 13: the job used to be
partitioned by its windows step, so such a run failed with an internal CheckError and
each unpartitioned check had a planned evaluation for the run's partition that never
came."""

from __future__ import annotations

import datetime as dt
import time

import dagster as dg

from astra_pipeline.assets.window_audit import AUDITS
from astra_pipeline.assets.window_refresh import partition_key
from astra_pipeline.assets.windows import WINDOWED_AGGREGATES
from astra_pipeline.definitions import build_definitions
from astra_pipeline.jobs import INGEST_JOB_NAME
from astra_pipeline_tests.helpers import sensor_reading, settings_for
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource

LIVE = 40
LATE = 7


def _live_hour() -> dt.datetime:
    """The current hour, at least 30 s before it ends (the run must still be in it)."""
    now = dt.datetime.now(dt.UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    if hour + dt.timedelta(hours=1) - now < dt.timedelta(seconds=30):
        time.sleep((hour + dt.timedelta(hours=1) - now).total_seconds() + 1)
        return _live_hour()
    return hour


def _checks_of(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> list:
    """(asset, check, partition) of the run's check events of ``kind``."""
    found = []
    for record in instance.get_records_for_run(run_id, of_type=kind).records:
        data = record.event_log_entry.dagster_event.event_specific_data
        partitions = getattr(data, "partitions_subset", None)
        keys = sorted(partitions.get_partition_keys()) if partitions is not None else [None]
        if kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            keys = [data.partition]
        found += [(data.asset_key, data.check_name, key) for key in keys]
    return sorted(found, key=str)


def test_an_ingest_run_launched_by_hand_succeeds_and_refreshes_its_live_hour(
    kafka: KafkaResource, topic: str, warehouse: DuckDBWarehouseResource
) -> None:
    live = _live_hour()
    earlier = live - dt.timedelta(hours=3)
    stamp = dt.datetime.now(dt.UTC).replace(microsecond=0)
    messages = [
        (b"dev-1", sensor_reading(f"live-{i}", (stamp - dt.timedelta(seconds=i)).isoformat()))
        for i in range(LIVE)
        if stamp - dt.timedelta(seconds=i) >= live
    ] + [
        (b"dev-1", sensor_reading(f"late-{i}", (earlier + dt.timedelta(minutes=i)).isoformat()))
        for i in range(LATE)
    ]
    live_count = len(messages) - LATE
    kafka.produce_all(topic, iter(messages))
    settings = settings_for(kafka, topic, warehouse)
    job = build_definitions(settings).resolve_job_def(INGEST_JOB_NAME)
    assert not job.partitions_def, "a partitioned ingest job fails when launched by hand"
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance)
        assert result.success
        run_id = result.run_id

        # The live hour is refreshed and recorded by this run, with that hour's figures.
        key = partition_key(live)
        event = instance.get_latest_materialization_event(WINDOWED_AGGREGATES)
        assert event is not None and event.run_id == run_id
        materialization = event.asset_materialization
        assert materialization is not None and materialization.partition == key
        assert materialization.metadata["cleaned_events"].value == live_count
        windows = warehouse.query(
            "SELECT sum(reading_count) AS n FROM agg.sensor_1m "
            "WHERE window_start >= ? AND window_start < ?",
            [live, live + dt.timedelta(hours=1)],
        ).item()
        assert windows == live_count
        # The earlier hour is left to cleaned_events_windows_sensor (not refreshed here).
        assert instance.get_materialized_partitions(WINDOWED_AGGREGATES) == {key}

        # Its checks ran once, for that partition, and passed.
        evaluated = _checks_of(instance, run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        window_checks = [e for e in evaluated if e[0] == WINDOWED_AGGREGATES]
        assert window_checks == sorted(
            ((WINDOWED_AGGREGATES, name, key) for name in AUDITS), key=str
        )
        failed = [
            data.check_name
            for record in instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            ).records
            if not (data := record.event_log_entry.dagster_event.event_specific_data).passed
        ]
        assert failed == []

        # Every planned check evaluation came, for what was planned: no skipped twins.
        planned = _checks_of(instance, run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED)
        assert planned, "the ingest assets' checks run in the ingest job"
        assert set(planned) <= set(evaluated), set(planned) - set(evaluated)
        assert len(evaluated) == len(set(evaluated)), "a check evaluated twice"
