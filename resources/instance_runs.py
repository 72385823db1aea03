"""Letting a local Dagster instance's runs end before its processes stop (astra dev).

Stopping `dg dev` while a run is in flight kills the run's process: the run is
left failed, with a traceback, although nothing was wrong. On the way out, `astra dev`
first stops every sensor and schedule (through the webserver's GraphQL API, before
calling this: the daemon launches nothing new, where a sensor's next tick would have
queued a run that the stop then killed), waits for the runs in progress to finish (with
the simulator stopped, an ingest run drains what is left and ends), then terminates what
still runs (it ends as canceled) and cancels what is only queued.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

STOP_GRACE_S = 3.0
"""How long a sensor tick that began before the stop may still take to queue its run."""

_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclass(frozen=True)
class SettledRuns:
    finished: int
    """Runs that were in flight and ended by themselves."""
    canceled: int
    """Runs terminated or canceled because they did not end in time (whatever status
    the termination left them in)."""
    failed: tuple[str, ...]
    """One line per run of the instance that failed (the session's whole history: a dev
    instance lives as long as its session): its id, job and first error line."""


def settle_runs(home: Path, finish_s: float = 30.0, cancel_s: float = 20.0) -> SettledRuns:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        time.sleep(STOP_GRACE_S)  # a tick that began before the stop may still queue a run
        waiting = {run.run_id for run in _in_flight(instance)}
        deadline = time.monotonic() + finish_s
        while _in_flight(instance) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _in_flight(instance)
        for run in left:
            if run.status == dg.DagsterRunStatus.QUEUED:
                instance.report_run_canceled(run, message="astra dev is stopping")
            elif run.status != dg.DagsterRunStatus.CANCELING:
                instance.run_launcher.terminate(run.run_id)
        deadline = time.monotonic() + cancel_s
        while _in_flight(instance) and time.monotonic() < deadline:
            time.sleep(0.5)
        canceled = {run.run_id for run in left}
        # A run this stop terminated can end as failed rather than canceled (its worker
        # killed before it reported: "marked as failed from outside the execution
        # context"): it is one of the `canceled`, ended by the stop, not a failure of
        # the session's work.
        failed = tuple(
            _failure_line(instance, run)
            for run in instance.get_runs(
                filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])
            )
            if run.run_id not in canceled
        )
        return SettledRuns(finished=len(waiting - canceled), canceled=len(canceled), failed=failed)


def _failure_line(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """``run``'s id, job and its first error: the root cause's first line when the error
    event carries one (a step failure), else the event's message."""
    reason = "no error event recorded"
    for entry in instance.all_logs(run.run_id):
        if _level(entry.level) < logging.ERROR:
            continue
        error = getattr(getattr(entry.dagster_event, "event_specific_data", None), "error", None)
        while error is not None and error.cause is not None:
            error = error.cause
        text = (error.message if error is not None else entry.message) or entry.message
        reason = (text.strip().splitlines() or [entry.message])[0][:300]
        break
    return f"run {run.run_id[:8]} of {run.job_name}: {reason}"


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    named = logging.getLevelName(level.upper())
    return named if isinstance(named, int) else logging.INFO


def _in_flight(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(statuses=_IN_FLIGHT)))
