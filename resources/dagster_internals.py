"""The one place the project reaches into Dagster's private modules (``dagster._...``).

Everything else uses the public API (``import dagster as dg``). Dagster 1.13 exports no
public name for what is imported here, so a Dagster release may move or change any of
it without notice; when one does, this module is what to fix:

- What the health-checked run launcher needs (resources/run_launcher.py): the launcher's
  result types, the gRPC client and request types, and the tag naming the code server
  that launched a run.
"""

from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
from dagster._serdes import deserialize_value

__all__ = [
    "GRPC_INFO_TAG",
    "CanCancelExecutionRequest",
    "CanCancelExecutionResult",
    "CheckRunHealthResult",
    "DagsterGrpcClient",
    "DagsterUserCodeUnreachableError",
    "WorkerStatus",
    "deserialize_value",
]
