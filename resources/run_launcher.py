"""Dagster's default run launcher, plus the run-worker health check it lacks.

Run monitoring (dagster.yaml, `run_monitoring`) asks the run launcher whether a STARTED
run's worker is still alive; the default launcher cannot say, so a run whose worker died
together with its code server (a crash or OOM kill of the server, a container restart)
stayed STARTED forever: it kept its place, and kafka_events_sensor, which waits for the
running ingest run, never asked for another. (A worker that dies alone is reported by its
code server within a second; this covers the server.)

This launcher answers from the code server that launched the run: the server lists the
runs whose processes it still has. A server that answers without the run means its
worker is gone; a server that does not answer is asked about through the worker's
process id when the server was on this machine (a worker can outlive its server).

Dagster has no public API for the health check's parts (the launcher's gRPC client, the
request types, the result type): they come from resources/dagster_internals.py.
"""

from __future__ import annotations

import json
import os
from typing import Any

import dagster as dg

from resources.dagster_internals import (
    GRPC_INFO_TAG,
    CanCancelExecutionRequest,
    CanCancelExecutionResult,
    CheckRunHealthResult,
    DagsterGrpcClient,
    DagsterUserCodeUnreachableError,
    WorkerStatus,
    deserialize_value,
)

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
_ASK_TIMEOUT_S = 10


class HealthCheckedRunLauncher(dg.DefaultRunLauncher):
    """Launches runs on the code servers, as the default launcher does, and tells run
    monitoring whether a run's worker still lives."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        info = run.tags.get(GRPC_INFO_TAG)
        if not info:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the run has no code server tag")
        server: dict[str, Any] = json.loads(info)
        client = DagsterGrpcClient(
            port=server.get("port"),
            socket=server.get("socket"),
            host=server.get("host", "localhost"),
            use_ssl=bool(server.get("use_ssl", False)),
        )
        try:
            answer = deserialize_value(
                client.can_cancel_execution(
                    CanCancelExecutionRequest(run_id=run.run_id), timeout=_ASK_TIMEOUT_S
                ),
                CanCancelExecutionResult,
            )
        except DagsterUserCodeUnreachableError as error:
            return self._by_process(run, server, error)
        if answer.can_cancel:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            "the code server that launched the run no longer has its process "
            "(the worker died, or the server was restarted)",
        )

    def _by_process(
        self, run: dg.DagsterRun, server: dict[str, Any], error: Exception
    ) -> CheckRunHealthResult:
        local = "socket" in server or server.get("host") in _LOCAL_HOSTS
        pid = self._worker_pid(run) if local else None
        if pid is None:
            return CheckRunHealthResult(
                WorkerStatus.UNKNOWN,
                f"its code server does not answer ({type(error).__name__})",
                transient=True,
            )
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"its code server does not answer and its worker process {pid} is gone",
            )
        except PermissionError:
            pass  # the process exists under another user
        return CheckRunHealthResult(WorkerStatus.RUNNING)

    def _worker_pid(self, run: dg.DagsterRun) -> int | None:
        records = self._instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
        for record in records:
            if record.dagster_event is not None and record.dagster_event.pid:
                return int(record.dagster_event.pid)
        return None
