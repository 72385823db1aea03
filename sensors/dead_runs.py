"""dead_run_watchdog: fails a STARTED run whose worker process is gone.

A worker that dies alone is reported by the code server that launched it, within a
second. One that dies together with its code server (an OOM kill or crash of the server,
a container restart) was reported by nobody: the run stayed STARTED, kept its pool slot,
and kafka_events_sensor, which waits for the running ingest run, never asked for another.

This sensor looks at every STARTED run: its worker's pid is in its RUN_START event, and
a worker whose process is gone (or whose number now belongs to a younger process) means
a dead run, which it reports failed through the instance. Run monitoring then frees the
run's pool slots (dagster.yaml, `free_slots_after_run_end_seconds`). It lives in its own
code location (astra_pipeline/watchdog.py), so the death of the main code server does
not stop it, and it must run on the machine (or in the PID namespace) of the workers.
Only public Dagster API: the instance's runs, event log and report_run_failed.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from resources.worker_processes import worker_alive

GRACE_S = 5.0
"""A run younger than this is left alone: its worker may not have logged RUN_START."""


def dead_runs(instance: dg.DagsterInstance, now: dt.datetime) -> list[tuple[dg.DagsterRun, int]]:
    """STARTED runs whose worker process is gone, each with that worker's pid."""
    dead = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        records = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
        start = next((r for r in records if r.dagster_event and r.dagster_event.pid), None)
        if start is None or start.dagster_event is None:
            continue
        started_at = dt.datetime.fromtimestamp(start.timestamp, dt.UTC)
        if (now - started_at).total_seconds() < GRACE_S:
            continue
        pid = int(start.dagster_event.pid or 0)
        if not worker_alive(pid, started_at):
            dead.append((run, pid))
    return dead


def build_dead_run_watchdog(interval_s: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="dead_run_watchdog",
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Fails STARTED runs whose worker process is gone (a worker that died "
        "with its code server), so their pool slots are freed and the next run starts.",
    )
    def dead_run_watchdog(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        found = dead_runs(context.instance, dt.datetime.now(dt.UTC))
        for run, pid in found:
            context.instance.report_run_failed(
                run,
                message=f"its worker process {pid} is gone (it died, with its code server "
                "or alone, without reporting the run's end); failed by dead_run_watchdog",
            )
        names = ", ".join(run.run_id[:8] for run, _ in found)
        return dg.SkipReason(f"failed {len(found)} dead run(s): {names}" if found else "none")

    return dead_run_watchdog
