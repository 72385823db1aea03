"""cleaned_events_windows_sensor: re-materializes the hourly partitions new events touched.

Each ingest run records, in its cleaned_events materialization, the event-time hours
its rows fall into (and the neighbours whose sliding windows or session flags they can
change). This sensor reads those materializations from the event log (never DuckDB),
after its cursor, and requests one run per contiguous range of the touched hours other
than those the ingest runs refreshed themselves (below): hours late events reached,
neighbours whose windows they change, the new hour when a run was for the one before,
each once per trigger, and no untouched history. Dagster's eager automation would only
refresh the latest partition.

The ingest run refreshes the live hour itself, after its drain, when its rows touched
it (assets.ingest.refresh_live_hour). So the sensor leaves out the hour a run succeeded
in materializing, requests it otherwise (a failed run), and waits while the run is still
going: a
materialization of an unfinished run is not consumed (the cursor stops before it), for
at most RUN_WAIT_S, after which the hour is requested as for a failed run.
"""

import datetime as dt
import time
from collections.abc import Callable

import dagster as dg
from dagster import DagsterInstance, EventLogRecord
from pydantic import BaseModel

from astra_pipeline.assets.ingest import CLEANED_EVENTS
from astra_pipeline.assets.run_priority import NICENESS_TAG
from astra_pipeline.assets.window_refresh import partition_hour, partition_key
from astra_pipeline.assets.windows import HOURLY, WINDOWED_AGGREGATES
from astra_pipeline.jobs import INGEST_JOB_NAME
from astra_pipeline.run_tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PRIORITY_TAG,
)
from astra_pipeline.transforms.partition_windows import contiguous_ranges

HOUR = dt.timedelta(hours=1)
FETCH_LIMIT = 1_000
RUN_WAIT_S = 300.0
"""How long the sensor waits for an ingest run to end before it refreshes that run's own
hour itself (an ingest run takes seconds; a backlog drain is bounded by its time budget)."""


class WindowsCursor(BaseModel):
    after_storage_id: int | None = None
    """The last cleaned_events materialization already turned into run requests."""


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
    job_name: str,
    running_by_default: bool,
    interval_s: int,
    source: dg.AssetKey,
    hours_of: Callable[[list[EventLogRecord], DagsterInstance], tuple[list[dt.datetime], int]],
    prefix: str,
    tags: dict[str, str] | None = None,
) -> dg.SensorDefinition:
    """A sensor reading ``source``'s materializations after its cursor (the event log,
    never DuckDB) and requesting one run of ``job`` per contiguous range of the hours
    ``hours_of`` finds in them. ``hours_of`` also says how many of the records (in order)
    it consumed; the rest wait for a later tick (the cursor stops before them)."""

    @dg.sensor(
        name=name,
        job_name=job_name,
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
        hours, consumed = hours_of(list(result.records), context.instance)
        if consumed == 0:
            return dg.SkipReason("waiting for the run of the next materialization to end")
        trigger = result.records[consumed - 1].storage_id
        return dg.SensorResult(
            run_requests=[
                refresh_request(first, last, trigger, prefix=prefix, tags=tags)
                for first, last in contiguous_ranges(hours)
            ],
            cursor=WindowsCursor(after_storage_id=trigger).model_dump_json(),
        )

    return _sensor


def _ingest_run(record: EventLogRecord, instance: DagsterInstance) -> dg.DagsterRun | None:
    """The ingest run that wrote ``record``, when it is one (also refreshing its hour)."""
    if not record.run_id:
        return None
    run = instance.get_run_by_id(record.run_id)
    if run is None or run.job_name != INGEST_JOB_NAME:
        return None
    return run


ROLLUP_WAIT_S = 90
"""An ingest run that left its hour's roll-ups for later (windowed_aggregates refreshes
them at most once a minute) is normally followed by another ingest run of the hour
within seconds. When none has come after this long (the stream stopped), or the hour has
ended, the sensor requests a full refresh of the hour, so its roll-ups do not stay
behind."""


def _touched_hours(
    records: list[EventLogRecord], instance: DagsterInstance
) -> tuple[list[dt.datetime], int]:
    """The existing hours named in cleaned_events materializations' touched_hours, less
    the hour a successful ingest run refreshed itself; and how many records that covers.
    It stops at the first record whose ingest run has not ended (it may still refresh its
    own hour), unless that materialization is older than RUN_WAIT_S (a run whose process
    died without a record of it must not hold back every later refresh); and at one whose
    run left its hour's roll-ups for later while no later ingest run of that hour exists,
    for up to ROLLUP_WAIT_S, after which it requests that hour too."""
    touched: list[dt.datetime] = []
    consumed = 0
    for record in records:
        run = _ingest_run(record, instance)
        running = run is not None and not run.is_finished
        if running and time.time() - record.timestamp <= RUN_WAIT_S:
            break
        materialization = record.asset_materialization
        value = materialization.metadata.get("touched_hours") if materialization else None
        if value is not None and isinstance(value.value, list):
            own, rollups_deferred = _refreshed_by_the_run(record, run, instance)
            if (
                own is not None
                and rollups_deferred
                and not _refreshed_again(record, own, record.run_id, instance)
            ):
                if _may_still_be_refreshed(record, own):
                    break
                own = None  # a full refresh of the hour computes its roll-ups
            touched += [
                hour
                for hour in (dt.datetime.fromisoformat(str(h)) for h in value.value)
                if hour != own
            ]
        consumed += 1
    return existing_hours(touched, dt.datetime.now(dt.UTC)), consumed


def _refreshed_by_the_run(
    record: EventLogRecord, run: dg.DagsterRun | None, instance: DagsterInstance
) -> tuple[dt.datetime | None, bool]:
    """The hour ingest ``run`` (behind ``record``) refreshed itself: it succeeded and
    recorded a windowed_aggregates materialization after ``record`` (a run whose rows did
    not touch the live hour recorded none); None otherwise. And whether that refresh
    left the hour's roll-ups for later (``rollups: deferred``)."""
    if run is None or run.status != dg.DagsterRunStatus.SUCCESS:
        return None, False
    later = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=WINDOWED_AGGREGATES, after_storage_id=record.storage_id),
        limit=FETCH_LIMIT,
        ascending=True,
    )
    mine = [r for r in later.records if r.run_id == run.run_id and r.partition_key]
    if not mine:
        return None, False
    materialization = mine[-1].asset_materialization
    rollups = materialization.metadata.get("rollups") if materialization else None
    return partition_hour(str(mine[-1].partition_key)), (
        rollups is not None and rollups.value == "deferred"
    )


def _may_still_be_refreshed(record: EventLogRecord, own: dt.datetime) -> bool:
    """Whether another ingest run may yet refresh hour ``own``, whose roll-ups the run
    behind ``record`` left for later: the hour goes on and the record is not older than
    ROLLUP_WAIT_S (the stream may only be between two runs)."""
    ongoing = own + HOUR > dt.datetime.now(dt.UTC)
    return ongoing and time.time() - record.timestamp <= ROLLUP_WAIT_S


def _refreshed_again(
    record: EventLogRecord, own: dt.datetime, run_id: str | None, instance: DagsterInstance
) -> bool:
    """Whether another run materialized hour ``own`` after ``record`` (a later ingest run
    of the live hour: it computes the roll-ups when they are due, or defers them again
    and its own record is judged the same way; or a full refresh)."""
    later = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=WINDOWED_AGGREGATES,
            asset_partitions=[partition_key(own)],
            after_storage_id=record.storage_id,
        ),
        limit=FETCH_LIMIT,
        ascending=True,
    )
    return any(r.run_id != run_id for r in later.records)


def _materialized_hours(
    records: list[EventLogRecord], instance: DagsterInstance
) -> tuple[list[dt.datetime], int]:
    hours = [partition_hour(r.partition_key) for r in records if r.partition_key]
    return hours, len(records)


def build_windows_sensor(
    job_name: str, running_by_default: bool, interval_s: int = 2
) -> dg.SensorDefinition:
    return _hour_ranges_sensor(
        name="cleaned_events_windows_sensor",
        description="Re-materializes the windowed_aggregates partitions each ingest touched.",
        job_name=job_name,
        running_by_default=running_by_default,
        interval_s=interval_s,
        source=CLEANED_EVENTS,
        hours_of=_touched_hours,
        prefix="windows",
    )


SCORING_PRIORITY = {PRIORITY_TAG: "-1", NICENESS_TAG: "10"}
"""Scoring runs yield to waiting ingest and refresh runs (queue and writer pool), and
run at a lower CPU priority (niceness 10) so that ingest runs get the cores first."""


def build_scoring_sensor(
    job_name: str, running_by_default: bool, interval_s: int = 60
) -> dg.SensorDefinition:
    """Scores follow the aggregates: the hours whose windowed_aggregates were materialized
    since the cursor get anomaly scores and alerts, one run per contiguous range. A
    separate, slower trigger than the windows refresh, at a lower priority: scoring an
    hour costs seconds of CPU (tens of seconds for a busy hour), and on every refresh it
    delayed the next ingest (measured with bench/freshness.py in an earlier version of
    the chain)."""
    return _hour_ranges_sensor(
        name="windowed_aggregates_scoring_sensor",
        description="Scores and alerts the hours whose windowed_aggregates were refreshed.",
        job_name=job_name,
        running_by_default=running_by_default,
        interval_s=interval_s,
        source=WINDOWED_AGGREGATES,
        hours_of=_materialized_hours,
        prefix="scores",
        tags=SCORING_PRIORITY,
    )
