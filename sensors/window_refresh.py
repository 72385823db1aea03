"""cleaned_events_windows_sensor: re-materializes the hourly partitions new events touched.

Each ingest run records, in its cleaned_events materialization, the event-time hours
its rows fall into (and the neighbours whose sliding windows or session flags they can
change). This sensor reads those materializations from the event log (never DuckDB),
after its cursor, and requests one run per contiguous range of touched hours: the
current hour and any past hour a late event reached, each once per trigger, and no
untouched history. Dagster's eager automation would only refresh the latest partition.
"""

import datetime as dt
from collections.abc import Callable

import dagster as dg
from dagster import EventLogRecord
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PRIORITY_TAG,
)
from pydantic import BaseModel

from astra_pipeline.assets.ingest import CLEANED_EVENTS
from astra_pipeline.assets.windows import (
    HOURLY,
    PARTITION_KEY_FORMAT,
    WINDOWED_AGGREGATES,
    partition_key,
)

HOUR = dt.timedelta(hours=1)
FETCH_LIMIT = 1_000


class WindowsCursor(BaseModel):
    after_storage_id: int | None = None
    """The last cleaned_events materialization already turned into run requests."""


def contiguous_ranges(hours: list[dt.datetime]) -> list[tuple[dt.datetime, dt.datetime]]:
    """Sorted hours grouped into runs of consecutive hours: (first, last) each."""
    ranges: list[tuple[dt.datetime, dt.datetime]] = []
    for hour in sorted(set(hours)):
        if ranges and hour - ranges[-1][1] == HOUR:
            ranges[-1] = (ranges[-1][0], hour)
        else:
            ranges.append((hour, hour))
    return ranges


def refresh_request(
    first: dt.datetime,
    last: dt.datetime,
    trigger: int,
    prefix: str = "windows",
    tags: dict[str, str] | None = None,
) -> dg.RunRequest:
    start, end = partition_key(first), partition_key(last)
    run_key = f"{prefix}-{trigger}-{start}-{end}"
    if first == last:
        return dg.RunRequest(run_key=run_key, partition_key=start, tags=tags or {})
    return dg.RunRequest(
        run_key=run_key,
        tags={
            **(tags or {}),
            ASSET_PARTITION_RANGE_START_TAG: start,
            ASSET_PARTITION_RANGE_END_TAG: end,
        },
    )


def existing_hours(hours: list[dt.datetime], now: dt.datetime) -> list[dt.datetime]:
    """Hours that are partitions today (not before the first, not in the future)."""
    first = HOURLY.start.astimezone(dt.UTC)
    current = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return [h for h in hours if first <= h <= current]


def _hour_ranges_sensor(
    *,
    name: str,
    description: str,
    job: UnresolvedAssetJobDefinition,
    running_by_default: bool,
    interval_s: int,
    source: dg.AssetKey,
    hours_of: Callable[[list[EventLogRecord]], list[dt.datetime]],
    prefix: str,
    tags: dict[str, str] | None = None,
) -> dg.SensorDefinition:
    """A sensor reading ``source``'s materializations after its cursor (the event log,
    never DuckDB) and requesting one run of ``job`` per contiguous range of the hours
    ``hours_of`` finds in them."""

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=interval_s,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if running_by_default else dg.DefaultSensorStatus.STOPPED
        ),
        description=description,
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        cursor = (
            WindowsCursor.model_validate_json(context.cursor) if context.cursor else WindowsCursor()
        )
        result = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=source, after_storage_id=cursor.after_storage_id),
            limit=FETCH_LIMIT,
            ascending=True,
        )
        if not result.records:
            return dg.SkipReason(f"no new {source.to_user_string()} materialization")
        trigger = result.records[-1].storage_id
        return dg.SensorResult(
            run_requests=[
                refresh_request(first, last, trigger, prefix=prefix, tags=tags)
                for first, last in contiguous_ranges(hours_of(list(result.records)))
            ],
            cursor=WindowsCursor(after_storage_id=trigger).model_dump_json(),
        )

    return _sensor


def _touched_hours(records: list[EventLogRecord]) -> list[dt.datetime]:
    """The existing hours named in cleaned_events materializations' touched_hours."""
    touched: list[dt.datetime] = []
    for record in records:
        materialization = record.asset_materialization
        value = materialization.metadata.get("touched_hours") if materialization else None
        if value is not None and isinstance(value.value, list):
            touched += [dt.datetime.fromisoformat(str(hour)) for hour in value.value]
    return existing_hours(touched, dt.datetime.now(dt.UTC))


def _materialized_hours(records: list[EventLogRecord]) -> list[dt.datetime]:
    return [
        dt.datetime.strptime(record.partition_key, PARTITION_KEY_FORMAT).replace(tzinfo=dt.UTC)
        for record in records
        if record.partition_key
    ]


def build_windows_sensor(
    job: UnresolvedAssetJobDefinition, running_by_default: bool, interval_s: int = 2
) -> dg.SensorDefinition:
    return _hour_ranges_sensor(
        name="cleaned_events_windows_sensor",
        description="Re-materializes the windowed_aggregates partitions each ingest touched.",
        job=job,
        running_by_default=running_by_default,
        interval_s=interval_s,
        source=CLEANED_EVENTS,
        hours_of=_touched_hours,
        prefix="windows",
    )


SCORING_PRIORITY = {PRIORITY_TAG: "-1"}
"""Scoring runs yield the DuckDB writer pool to waiting ingest and refresh runs."""


def build_scoring_sensor(
    job: UnresolvedAssetJobDefinition, running_by_default: bool, interval_s: int = 60
) -> dg.SensorDefinition:
    """Scores follow the aggregates: the hours whose windowed_aggregates were materialized
    since the cursor get anomaly scores and alerts, one run per contiguous range. A
    separate, slower trigger than the windows refresh, at a lower priority: scoring holds
    the DuckDB writer pool for seconds, and on every refresh it delayed the next ingest
    (freshness p50 12.4 s without it, 17.4 s scoring every 30 s, bench/freshness.py)."""
    return _hour_ranges_sensor(
        name="windowed_aggregates_scoring_sensor",
        description="Scores and alerts the hours whose windowed_aggregates were refreshed.",
        job=job,
        running_by_default=running_by_default,
        interval_s=interval_s,
        source=WINDOWED_AGGREGATES,
        hours_of=_materialized_hours,
        prefix="scores",
        tags=SCORING_PRIORITY,
    )
