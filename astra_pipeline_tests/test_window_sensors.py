"""The windows refresh and scoring sensors, with build_sensor_context on a test instance."""

import datetime as dt

import dagster as dg

from astra_pipeline.assets.ingest import CLEANED_EVENTS
from astra_pipeline.assets.windows import WINDOWED_AGGREGATES
from astra_pipeline.jobs import build_anomaly_job, build_windows_job
from sensors.window_refresh import (
    build_scoring_sensor,
    build_windows_sensor,
    contiguous_ranges,
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
    sensor = build_windows_sensor(build_windows_job(), running_by_default=True)
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
    sensor = build_scoring_sensor(build_anomaly_job(), running_by_default=True)
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
        # Scoring yields the writer pool to ingest and refresh runs.
        assert {r.tags["dagster/priority"] for r in got} == {"-1"}
        assert requests(sensor, instance, cursor)[0] == []
