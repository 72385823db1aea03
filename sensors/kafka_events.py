"""kafka_events_sensor: requests an ingest run when Kafka holds messages not yet ingested.

It only looks: the partitions' high watermarks against the consumer group's committed
offsets (which an ingest run commits right after its ledger transaction). It never opens
the DuckDB file, so it can never wait on, or fail because of, the writer lock. A run has
no partition; it refreshes the live hour's windows after its drain (see
jobs.build_ingest_job).
"""

import hashlib
import time

import dagster as dg
from pydantic import BaseModel

from astra_pipeline.assets.ingest import RAW_EVENTS
from astra_pipeline.jobs import INGEST_JOB_NAME
from resources.kafka import KafkaResource

# Record the lag for the UI at most this often while it does not change.
OBSERVE_EVERY_S = 60.0
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


class SensorCursor(BaseModel):
    last_lag: int = -1
    last_observed_at: float = 0.0


def compute_lag(watermarks: dict[int, int], committed: dict[int, int | None]) -> dict[int, int]:
    """Per partition, reported end minus committed next offset (never negative)."""
    return {p: max(0, hi - (committed.get(p) or 0)) for p, hi in watermarks.items()}


def run_key_for(watermarks: dict[int, int], committed: dict[int, int | None]) -> str:
    state = ",".join(f"{p}:{watermarks[p]}:{committed.get(p)}" for p in sorted(watermarks))
    return "ingest-" + hashlib.sha256(state.encode()).hexdigest()[:16]


def _last_run_stopped_early(context: dg.SensorEvaluationContext) -> bool:
    """The last ingest stopped on its time budget before EOF: its tail may be unseen
    by the watermarks (the embedded broker reports a batch's base offset as the end)."""
    event = context.instance.get_latest_materialization_event(RAW_EVENTS)
    if event is None or event.asset_materialization is None:
        return False
    value = event.asset_materialization.metadata.get("reached_eof")
    return value is not None and value.value is False


def build_kafka_events_sensor(
    topic: str,
    interval_s: int,
    running_by_default: bool,
    job_name: str = INGEST_JOB_NAME,
) -> dg.SensorDefinition:
    @dg.sensor(
        name="kafka_events_sensor",
        job_name=job_name,
        minimum_interval_seconds=interval_s,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if running_by_default else dg.DefaultSensorStatus.STOPPED
        ),
        description=f"Launches {INGEST_JOB_NAME} when {topic} has messages not yet ingested.",
    )
    def kafka_events_sensor(
        context: dg.SensorEvaluationContext, kafka: KafkaResource
    ) -> dg.SensorResult | dg.SkipReason:
        cursor = (
            SensorCursor.model_validate_json(context.cursor) if context.cursor else SensorCursor()
        )
        watermarks = kafka.high_watermarks(topic)
        committed = kafka.committed_offsets(topic)
        lag = sum(compute_lag(watermarks, committed).values())
        now = time.time()
        observations = []
        if lag != cursor.last_lag or now - cursor.last_observed_at >= OBSERVE_EVERY_S:
            observations.append(
                dg.AssetObservation(asset_key=RAW_EVENTS, metadata={"kafka_lag": lag})
            )
            cursor = SensorCursor(last_lag=lag, last_observed_at=now)
        active = context.instance.get_runs(
            filters=dg.RunsFilter(job_name=INGEST_JOB_NAME, statuses=_ACTIVE), limit=1
        )
        run_requests = []
        if not active and (lag > 0 or _last_run_stopped_early(context)):
            run_requests.append(
                dg.RunRequest(
                    run_key=run_key_for(watermarks, committed),
                    tags={"astra/kafka_lag": str(lag)},
                )
            )
        if not run_requests and not observations:
            reason = "an ingest run is in progress" if active else "no lag"
            return dg.SkipReason(f"{reason} (lag {lag} messages)")
        return dg.SensorResult(
            run_requests=run_requests, asset_events=observations, cursor=cursor.model_dump_json()
        )

    return kafka_events_sensor
