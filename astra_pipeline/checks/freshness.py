"""Freshness of the windows on event time: how long ago the newest complete 1-minute
window ended, not when a run last ran.

Each refresh of windowed_aggregates records the end of the newest complete window of
the hours it refreshed (metadata ``newest_window_end``); the check takes the latest of
the recent materializations and compares it with now. It reads only the instance, so
kafka_events_sensor reports it every tick (sensors/kafka_events.py): the UI shows the
windows going stale while nothing runs, not only after the next run.
"""

import datetime as dt
from typing import Any

import dagster as dg

from astra_pipeline.assets.windows import WINDOWED_AGGREGATES

CHECK_NAME = "windowed_aggregates_fresh_on_event_time"
WARN_AFTER = dt.timedelta(minutes=2)
FAIL_AFTER = dt.timedelta(minutes=10)
RECENT = 50
"""Materializations looked at: a backfill of old hours must not hide the live one."""


def newest_window_end(instance: dg.DagsterInstance) -> dt.datetime | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=WINDOWED_AGGREGATES), limit=RECENT, ascending=False
    ).records
    ends = [
        dt.datetime.fromisoformat(str(meta["newest_window_end"].value))
        for record in records
        if record.asset_materialization is not None
        and "newest_window_end" in (meta := record.asset_materialization.metadata)
    ]
    return max(ends, default=None)


def judge(
    newest: dt.datetime | None, now: dt.datetime
) -> tuple[bool, dg.AssetCheckSeverity, dict[str, Any]]:
    """(passed, severity, metadata): passed within WARN_AFTER; a WARN failure up to
    FAIL_AFTER, an ERROR beyond it or without any complete window."""
    limits = {
        "warn_after_s": WARN_AFTER.total_seconds(),
        "fail_after_s": FAIL_AFTER.total_seconds(),
    }
    if newest is None:
        return False, dg.AssetCheckSeverity.ERROR, {**limits, "newest_window_end": "none yet"}
    age = now - newest
    metadata = {**limits, "newest_window_end": newest.isoformat(), "age_s": age.total_seconds()}
    if age <= WARN_AFTER:
        return True, dg.AssetCheckSeverity.WARN, metadata
    severity = dg.AssetCheckSeverity.WARN if age <= FAIL_AFTER else dg.AssetCheckSeverity.ERROR
    return False, severity, metadata


def freshness_evaluation(instance: dg.DagsterInstance, now: dt.datetime) -> dg.AssetCheckEvaluation:
    passed, severity, metadata = judge(newest_window_end(instance), now)
    return dg.AssetCheckEvaluation(
        asset_key=WINDOWED_AGGREGATES,
        check_name=CHECK_NAME,
        passed=passed,
        severity=severity,
        metadata=metadata,
    )


@dg.asset_check(
    asset=WINDOWED_AGGREGATES,
    name=CHECK_NAME,
    description="The newest complete 1-minute window (event time) ended at most 2 minutes "
    "ago (warn) or 10 minutes ago (fail). Also reported by kafka_events_sensor every tick.",
)
def windowed_aggregates_fresh_on_event_time(
    context: dg.AssetCheckExecutionContext,
) -> dg.AssetCheckResult:
    evaluation = freshness_evaluation(context.instance, dt.datetime.now(dt.UTC))
    return dg.AssetCheckResult(
        passed=evaluation.passed,
        severity=evaluation.severity,
        metadata=evaluation.metadata,
    )
