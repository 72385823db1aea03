"""churn_daily_schedule: yesterday's churn features and scores, shortly after midnight UTC.

The daily partitions run up to today (end_offset=1, so today's partial day can be
materialized on demand); Dagster's schedule built from a partitioned job would pick that
latest partition, today, which has barely begun. This schedule asks for the day that
has just ended instead, once its late events have had a quarter of an hour to arrive.
"""

import datetime as dt

import dagster as dg

CRON = "15 0 * * *"
"""00:15 UTC every day."""


def previous_day_key(scheduled: dt.datetime) -> str:
    """The daily partition key of the UTC day before the tick's."""
    return (scheduled.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def build_churn_schedule(job_name: str, running_by_default: bool) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="churn_daily_schedule",
        job_name=job_name,
        cron_schedule=CRON,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if running_by_default
            else dg.DefaultScheduleStatus.STOPPED
        ),
        description="Computes and scores the previous UTC day's churn features at 00:15 UTC.",
    )
    def churn_daily_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        scheduled = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        key = previous_day_key(scheduled)
        return dg.RunRequest(run_key=key, partition_key=key)

    return churn_daily_schedule
