"""The one place the project reaches into Dagster's private modules (``dagster._...``).

Everything else uses the public API (``import dagster as dg``). Dagster 1.13 exports no
public name for what is imported here, so a Dagster release may move or change any of
it without notice; when one does, this module is what to fix:

- ``AssetJob``: the type ``dg.define_asset_job`` returns (sensors and schedules take it).
- What the health-checked run launcher needs (resources/run_launcher.py): the launcher's
  result types, the gRPC client and request types, and the tag naming the code server
  that launched a run.
- ``InstigatorStatus``: the stored status of a sensor or schedule, which `astra dev`
  sets to stopped before it lets the runs in flight end (resources/instance_runs.py).
"""

from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition as AssetJob,
)
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.scheduler.instigation import InstigatorStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
from dagster._serdes import deserialize_value

__all__ = [
    "GRPC_INFO_TAG",
    "AssetJob",
    "CanCancelExecutionRequest",
    "CanCancelExecutionResult",
    "CheckRunHealthResult",
    "DagsterGrpcClient",
    "DagsterUserCodeUnreachableError",
    "InstigatorStatus",
    "WorkerStatus",
    "deserialize_value",
]
