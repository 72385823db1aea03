"""A small client for the running Dagster instance's GraphQL API (the webserver's).

Used by `astra backfill`: a backfill submitted here is the instance's own asset backfill,
listed on the UI's backfills page, executed by the daemon under the same pools as every
other run, and resumable. Standard library only (urllib): one POST per call.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from resources.errors import AstraResourceError

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""

RESUME = """
mutation Resume($id: String!) {
  resumePartitionBackfill(backfillId: $id) {
    __typename
    ... on ResumeBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""

STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status numPartitions
      assetBackfillData { assetBackfillStatuses {
        ... on AssetPartitionsStatusCounts {
          numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized
          numPartitionsFailed
        }
      } }
    }
    ... on Error { message }
  }
}
"""

INSTIGATORS = """
{ repositoriesOrError { ... on RepositoryConnection { nodes {
    sensors { id sensorState { status } }
    schedules { id scheduleState { status } } } } } }
"""

STOP_SENSOR = """
mutation StopSensor($id: String!) {
  stopSensor(id: $id) { __typename ... on Error { message } }
}
"""

STOP_SCHEDULE = """
mutation StopSchedule($id: String!) {
  stopRunningSchedule(id: $id) { __typename ... on Error { message } }
}
"""

FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
"""Backfill statuses after which nothing more happens unless it is resumed."""


class DagsterApiError(AstraResourceError):
    """The Dagster webserver could not be reached or refused the request."""


@dataclass(frozen=True)
class BackfillStatus:
    backfill_id: str
    status: str
    partitions: int
    done: int = 0
    """Partitions materialized (summed over the backfill's assets, per partition)."""
    failed: int = 0
    in_progress: int = 0

    def progress_note(self) -> str:
        return f"{self.in_progress} in progress, {self.failed} failed ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class DagsterGraphQL:
    url: str
    """The webserver's base URL, e.g. http://127.0.0.1:3000."""
    timeout_s: float = 30.0

    def launch_partition_backfill(
        self, asset_path: list[str], start: str, end: str, title: str
    ) -> str:
        """Submit an asset backfill of the partition range [start, end] (keys, inclusive)."""
        return self.launch_backfill([asset_path], start, end, title)

    def launch_backfill(
        self, asset_paths: list[list[str]], start: str, end: str, title: str
    ) -> str:
        """An asset backfill of the same partition range of several assets (in lineage
        order, as the daemon runs them)."""
        params = {
            "partitionsByAssets": [
                {
                    "assetKey": {"path": path},
                    "partitions": {"range": {"start": start, "end": end}},
                }
                for path in asset_paths
            ],
            "title": title,
        }
        answer = self._call(LAUNCH, {"params": params})["launchPartitionBackfill"]
        return str(self._success(answer, "LaunchBackfillSuccess")["backfillId"])

    def resume_backfill(self, backfill_id: str) -> str:
        try:
            self.backfill_status(backfill_id)
        except DagsterApiError as error:
            if "BackfillNotFound" in str(error):
                raise DagsterApiError(f"no backfill {backfill_id!r} on {self.url}") from None
            raise
        answer = self._call(RESUME, {"id": backfill_id})["resumePartitionBackfill"]
        return str(self._success(answer, "ResumeBackfillSuccess")["backfillId"])

    def backfill_status(self, backfill_id: str) -> BackfillStatus:
        answer = self._call(STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        found = self._success(answer, "PartitionBackfill")
        counts = [
            c
            for c in ((found.get("assetBackfillData") or {}).get("assetBackfillStatuses") or [])
            if "numPartitionsTargeted" in c
        ]
        # One asset here (windowed_aggregates): its counts are the backfill's partitions.
        first = counts[0] if counts else {}
        return BackfillStatus(
            backfill_id=str(found["id"]),
            status=str(found["status"]),
            partitions=int(found["numPartitions"] or first.get("numPartitionsTargeted") or 0),
            done=int(first.get("numPartitionsMaterialized") or 0),
            failed=int(first.get("numPartitionsFailed") or 0),
            in_progress=int(first.get("numPartitionsInProgress") or 0),
        )

    def up(self) -> bool:
        """Whether the webserver answers (its /server_info)."""
        try:
            with urllib.request.urlopen(f"{self.url.rstrip('/')}/server_info", timeout=2):
                return True
        except (OSError, ValueError):
            return False

    def stop_instigators(self) -> int:
        """Stop every running sensor and schedule of the instance (the daemon then
        requests no new run); how many were stopped."""
        answer = self._call(INSTIGATORS, {})["repositoriesOrError"]
        stopped = 0
        for repository in answer.get("nodes", []):
            for sensor in repository["sensors"]:
                if sensor["sensorState"]["status"] == "RUNNING":
                    self._call(STOP_SENSOR, {"id": sensor["id"]})
                    stopped += 1
            for schedule in repository["schedules"]:
                if schedule["scheduleState"]["status"] == "RUNNING":
                    self._call(STOP_SCHEDULE, {"id": schedule["id"]})
                    stopped += 1
        return stopped

    def backfill_page(self, backfill_id: str) -> str:
        return f"{self.url.rstrip('/')}/runs/b/{backfill_id}"

    @staticmethod
    def _success(answer: dict[str, Any], expected: str) -> dict[str, Any]:
        if answer.get("__typename") != expected:
            message = answer.get("message") or "no message"
            raise DagsterApiError(f"Dagster answered {answer.get('__typename')}: {message}")
        return answer

    def _call(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        endpoint = f"{self.url.rstrip('/')}/graphql"
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(
            endpoint, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:
                detail = json.loads(detail)["errors"][0]["message"]
            except (ValueError, KeyError, IndexError, TypeError):
                detail = detail.strip().splitlines()[0] if detail.strip() else ""
            raise DagsterApiError(
                f"{endpoint} answered HTTP {error.code}: {detail[:300]}".rstrip(": ")
            ) from error
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise DagsterApiError(
                f"cannot reach the Dagster webserver at {endpoint} ({reason}); is `astra dev` "
                "or `dg dev` running? (--url / ASTRA_DAGSTER_URL)"
            ) from error
        if payload.get("errors"):
            raise DagsterApiError(f"{endpoint}: {payload['errors'][0].get('message')}")
        data: dict[str, Any] = payload["data"]
        return data
