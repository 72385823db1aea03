"""The windows refresh and scoring sensors, with build_sensor_context on a test instance."""

import datetime as dt
import time

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry

from astra_pipeline.assets.ingest import CLEANED_EVENTS
from astra_pipeline.assets.windows import WINDOWED_AGGREGATES
from astra_pipeline.jobs import ANOMALY_JOB_NAME, INGEST_JOB_NAME, WINDOWS_JOB_NAME
from astra_pipeline.transforms.partition_windows import contiguous_ranges
from sensors.window_refresh import (
    ROLLUP_WAIT_S,
    RUN_WAIT_S,
    build_scoring_sensor,
    build_windows_sensor,
)

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def hour(h: int) -> dt.datetime:
    return dt.datetime(2026, 11, 23, h, tzinfo=dt.UTC)


def test_contiguous_ranges_by_hand() -> None:
    assert contiguous_ranges([hour(5), hour(3), hour(4), hour(9), hour(4)]) == [
        (hour(3), hour(5)),
        (hour(9), hour(9)),
    ]
    assert contiguous_ranges([]) == []


def requests(sensor: dg.SensorDefinition, instance, cursor=None):
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    if isinstance(result, dg.SkipReason):
        return [], cursor
    return list(result.run_requests), result.cursor


def test_windows_sensor_refreshes_touched_hours_once_per_trigger() -> None:
    sensor = build_windows_sensor(WINDOWS_JOB_NAME, running_by_default=True)
    with dg.instance_for_test() as instance:
        assert requests(sensor, instance)[0] == []
        # Two ingest runs: one touched 10:00-11:00, the other 11:00 and a late 07:00.
        for touched in ([hour(10), hour(11)], [hour(11), hour(7)]):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    CLEANED_EVENTS,
                    metadata={
                        "touched_hours": dg.MetadataValue.json([h.isoformat() for h in touched])
                    },
                )
            )
        got, cursor = requests(sensor, instance)
        by_range = sorted(
            (r.partition_key or r.tags[RANGE_START], r.partition_key or r.tags[RANGE_END])
            for r in got
        )
        assert by_range == [
            ("2026-11-23-07:00", "2026-11-23-07:00"),
            ("2026-11-23-10:00", "2026-11-23-11:00"),
        ]
        # Nothing new since the cursor: nothing again.
        assert requests(sensor, instance, cursor)[0] == []


def test_scoring_sensor_follows_materialized_window_partitions() -> None:
    sensor = build_scoring_sensor(ANOMALY_JOB_NAME, running_by_default=True)
    with dg.instance_for_test() as instance:
        for h in (8, 9, 12):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(WINDOWED_AGGREGATES, partition=f"2026-11-23-{h:02d}:00")
            )
        got, cursor = requests(sensor, instance)
        assert sorted((r.partition_key or r.tags[RANGE_START]) for r in got) == [
            "2026-11-23-08:00",
            "2026-11-23-12:00",
        ]
        ranged = next(r for r in got if not r.partition_key)
        assert ranged.tags[RANGE_END] == "2026-11-23-09:00"
        # Scoring yields the queue to ingest and refresh runs, and the CPU.
        assert {r.tags["dagster/priority"] for r in got} == {"-1"}
        assert {r.tags["astra/cpu_niceness"] for r in got} == {"10"}
        assert requests(sensor, instance, cursor)[0] == []


def ingest_run(
    instance: dg.DagsterInstance,
    own_hour: dt.datetime,
    touched: list[dt.datetime],
    seconds_ago: float = 0.0,
) -> str:
    """An ingest run (started, no partition) whose cleaned_events materialization,
    ``seconds_ago``, names ``touched``; ``own_hour`` is the live hour it may refresh
    (windows_refreshed records that)."""
    run = instance.add_run(
        dg.DagsterRun(job_name=INGEST_JOB_NAME, status=dg.DagsterRunStatus.STARTED)
    )
    materialization = dg.AssetMaterialization(
        CLEANED_EVENTS,
        metadata={"touched_hours": dg.MetadataValue.json([h.isoformat() for h in touched])},
    )
    store(instance, run.run_id, materialization, time.time() - seconds_ago)
    return run.run_id


def store(
    instance: dg.DagsterInstance,
    run_id: str,
    materialization: dg.AssetMaterialization,
    timestamp: float | None = None,
) -> None:
    """``materialization`` recorded in the event log as one of run ``run_id``'s."""
    instance.store_event(
        EventLogEntry(
            error_info=None,
            level="debug",
            user_message="",
            run_id=run_id,
            timestamp=time.time() if timestamp is None else timestamp,
            dagster_event=DagsterEvent(
                DagsterEventType.ASSET_MATERIALIZATION.value,
                INGEST_JOB_NAME,
                event_specific_data=StepMaterializationData(materialization),
            ),
        )
    )


def windows_refreshed(
    instance: dg.DagsterInstance, run_id: str, own_hour: dt.datetime, rollups: str = "current"
) -> None:
    """The run's windows step: windowed_aggregates materialized for its own hour."""
    key = own_hour.strftime("%Y-%m-%d-%H:00")
    materialization = dg.AssetMaterialization(
        WINDOWED_AGGREGATES, partition=key, metadata={"rollups": rollups}
    )
    store(instance, run_id, materialization)


def finish(instance: dg.DagsterInstance, run_id: str, status: dg.DagsterRunStatus) -> None:
    event = (
        DagsterEventType.RUN_SUCCESS
        if status == dg.DagsterRunStatus.SUCCESS
        else DagsterEventType.RUN_FAILURE
    )
    instance.handle_run_event(run_id, DagsterEvent(event.value, INGEST_JOB_NAME))


def keys(got: list[dg.RunRequest]) -> list[tuple[str, str]]:
    return sorted(
        (r.partition_key or r.tags[RANGE_START], r.partition_key or r.tags[RANGE_END]) for r in got
    )


def test_windows_sensor_leaves_the_hour_an_ingest_run_refreshed_itself() -> None:
    """The ingest run refreshes the live hour after its drain: the sensor requests the
    other touched hours, waits while the run is going, and requests the live hour too
    when the run failed (its refresh may not have happened)."""
    sensor = build_windows_sensor(WINDOWS_JOB_NAME, running_by_default=True)
    with dg.instance_for_test() as instance:
        ok = ingest_run(instance, hour(11), [hour(10), hour(11)])
        # The run has not ended: its materialization waits, the cursor stays before it.
        got, cursor = requests(sensor, instance)
        assert got == [] and cursor is None
        windows_refreshed(instance, ok, hour(11))
        finish(instance, ok, dg.DagsterRunStatus.SUCCESS)
        failed = ingest_run(instance, hour(11), [hour(11), hour(7)])
        # The finished run's hours are consumed; the running one still waits.
        got, cursor = requests(sensor, instance)
        assert keys(got) == [("2026-11-23-10:00", "2026-11-23-10:00")]
        assert requests(sensor, instance, cursor)[0] == []
        finish(instance, failed, dg.DagsterRunStatus.FAILURE)
        got, cursor = requests(sensor, instance, cursor)
        assert keys(got) == [
            ("2026-11-23-07:00", "2026-11-23-07:00"),
            ("2026-11-23-11:00", "2026-11-23-11:00"),
        ]
        assert requests(sensor, instance, cursor)[0] == []


def test_windows_sensor_stops_waiting_for_an_ingest_run_that_never_ends() -> None:
    """A run whose process died unrecorded must not hold back every later refresh: after
    RUN_WAIT_S its hours, its own included, are requested as for a failed run."""
    sensor = build_windows_sensor(WINDOWS_JOB_NAME, running_by_default=True)
    with dg.instance_for_test() as instance:
        ingest_run(instance, hour(9), [hour(9)], seconds_ago=RUN_WAIT_S + 5)
        got, _ = requests(sensor, instance)
        assert keys(got) == [("2026-11-23-09:00", "2026-11-23-09:00")]


def test_windows_sensor_requests_the_own_hour_of_a_run_without_its_windows_step() -> None:
    """A successful ingest run that recorded no windows materialization (its rows did
    not touch the live hour, or it was launched before this version) leaves every hour
    it touched to the sensor."""
    sensor = build_windows_sensor(WINDOWS_JOB_NAME, running_by_default=True)
    with dg.instance_for_test() as instance:
        run_id = ingest_run(instance, hour(12), [hour(12)])
        finish(instance, run_id, dg.DagsterRunStatus.SUCCESS)
        got, _ = requests(sensor, instance)
        assert keys(got) == [("2026-11-23-12:00", "2026-11-23-12:00")]


def test_windows_sensor_completes_the_roll_ups_an_ingest_run_left_behind() -> None:
    """A live-hour refresh may leave the hourly roll-ups for later. The next ingest run
    of the hour catches up; when none comes (the stream stopped) the sensor requests the
    hour after ROLLUP_WAIT_S, and at once when the hour has ended."""
    sensor = build_windows_sensor(WINDOWS_JOB_NAME, running_by_default=True)
    live = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    live_key = live.strftime("%Y-%m-%d-%H:00")
    with dg.instance_for_test() as instance:
        first = ingest_run(instance, live, [live])
        windows_refreshed(instance, first, live, rollups="deferred")
        finish(instance, first, dg.DagsterRunStatus.SUCCESS)
        # No later run of the hour yet: the sensor waits on it.
        got, cursor = requests(sensor, instance)
        assert got == [] and cursor is None
        # A later ingest run of the hour: it will refresh the hour again.
        second = ingest_run(instance, live, [live])
        windows_refreshed(instance, second, live, rollups="deferred")
        finish(instance, second, dg.DagsterRunStatus.SUCCESS)
        got, cursor = requests(sensor, instance)
        assert got == [] and cursor is not None  # the first consumed, the second waits
    with dg.instance_for_test() as instance:
        stopped = ingest_run(instance, live, [live], seconds_ago=ROLLUP_WAIT_S + 5)
        windows_refreshed(instance, stopped, live, rollups="deferred")
        finish(instance, stopped, dg.DagsterRunStatus.SUCCESS)
        got, _ = requests(sensor, instance)
        assert keys(got) == [(live_key, live_key)]
    with dg.instance_for_test() as instance:
        ended = ingest_run(instance, hour(8), [hour(8)])
        windows_refreshed(instance, ended, hour(8), rollups="deferred")
        finish(instance, ended, dg.DagsterRunStatus.SUCCESS)
        got, _ = requests(sensor, instance)
        assert keys(got) == [("2026-11-23-08:00", "2026-11-23-08:00")]
