"""Finished Dagster runs per job and status, for `/metrics`, read from the instance
(DAGSTER_HOME) incrementally: the first refresh reads every finished run once, later
ones only the runs updated since."""

from __future__ import annotations

import datetime as dt
import threading

import dagster as dg

FINISHED = [
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
]


class RunTallies:
    def __init__(self, instance: dg.DagsterInstance) -> None:
        self._instance = instance
        self._counts: dict[tuple[str, str], int] = {}
        self._counted: dict[str, str] = {}
        self._since: dt.datetime | None = None
        self._lock = threading.Lock()

    def refresh(self) -> dict[tuple[str, str], int]:
        """{(job, status): finished runs}, status lower case (success, failure, canceled)."""
        with self._lock:
            started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
            records = self._instance.get_run_records(
                filters=dg.RunsFilter(statuses=FINISHED, updated_after=self._since)
            )
            for record in records:
                run = record.dagster_run
                status = run.status.value.lower()
                if self._counted.get(run.run_id) == status:
                    continue  # seen in the overlap of two refreshes
                previous = self._counted.get(run.run_id)
                if previous is not None:  # re-marked (a run reported failed after success)
                    self._counts[(run.job_name, previous)] -= 1
                self._counted[run.run_id] = status
                key = (run.job_name, status)
                self._counts[key] = self._counts.get(key, 0) + 1
            # A little overlap: runs updated while this refresh read are read again.
            self._since = started
            return dict(self._counts)
