"""lake_maintenance_schedule: the lake's maintenance on the deployment's cron (UTC)."""

import dagster as dg


def build_lake_maintenance_schedule(
    job_name: str, cron: str, running_by_default: bool
) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="lake_maintenance_schedule",
        job_name=job_name,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if running_by_default
            else dg.DefaultScheduleStatus.STOPPED
        ),
        description="Compacts the lake and expires snapshots past the retention "
        "(ASTRA_LAKE_MAINTENANCE_CRON).",
    )
