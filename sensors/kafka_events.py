"""kafka_events_sensor: requests an ingest run when Kafka holds messages not yet ingested.

It only looks: the partitions' high watermarks against the consumer group's committed
offsets (which an ingest run commits right after its ledger transaction). It never opens
the warehouse, so it can never wait on, or fail because of, a writer. A run has no
partition; it refreshes the live hour's windows after its drain (see
jobs.build_ingest_job).

With ingest shards (ASTRA_INGEST_SHARDS > 1) it requests one run per shard whose
partitions have lag and that has no run queued or in progress, tagged with the shard
(INGEST_SHARD_TAG): the run queue lets one run per shard tag go at a time.
"""

import datetime as dt
import hashlib

import dagster as dg

from astra_pipeline.assets.ingest import RAW_EVENTS
from astra_pipeline.checks.freshness import freshness_evaluation
from astra_pipeline.jobs import INGEST_JOB_NAME
from astra_pipeline.run_tags import INGEST_SHARD_TAG
from astra_pipeline.transforms.shards import shard_of
from resources.kafka import KafkaResource
from resources.lag_probe import LagProbe

_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def compute_lag(watermarks: dict[int, int], committed: dict[int, int | None]) -> dict[int, int]:
    """Per partition, reported end minus committed next offset (never negative)."""
    return {p: max(0, hi - (committed.get(p) or 0)) for p, hi in watermarks.items()}


def run_key_for(watermarks: dict[int, int], committed: dict[int, int | None]) -> str:
    state = ",".join(f"{p}:{watermarks[p]}:{committed.get(p)}" for p in sorted(watermarks))
    return "ingest-" + hashlib.sha256(state.encode()).hexdigest()[:16]


def _shards_stopped_early(context: dg.SensorEvaluationContext, shards: int) -> set[int]:
    """The shards whose last ingest stopped on its time budget before EOF: their tail may
    be unseen by the watermarks (the embedded broker reports a batch's base offset as the
    end)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_EVENTS), limit=4 * shards, ascending=False
    ).records
    latest: dict[int, bool] = {}
    for record in records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        metadata = materialization.metadata
        shard = metadata.get("shard")
        recorded_shards = metadata.get("shards")
        of = int(recorded_shards.value) if recorded_shards is not None else 1  # type: ignore[arg-type]
        if of != shards:
            continue
        key = int(shard.value) if shard is not None else 0  # type: ignore[arg-type]
        eof = metadata.get("reached_eof")
        latest.setdefault(key, eof is not None and eof.value is False)
    return {shard for shard, early in latest.items() if early}


def lag_observation(kafka: KafkaResource, topic: str) -> dict[str, float | int]:
    """The lag as the sensor records it: messages, and the oldest one's age in seconds."""
    probe = LagProbe(kafka.bootstrap_servers, kafka.consumer_group, topic, kafka.timeout_s)
    try:
        partitions = probe.lag()
    finally:
        probe.close()
    return {
        "kafka_lag": sum(p.messages for p in partitions),
        "kafka_lag_seconds": round(max((p.oldest_age_s for p in partitions), default=0.0), 3),
    }


def shard_lags(lag: dict[int, int], shards: int) -> dict[int, int]:
    """Messages not yet ingested per shard."""
    totals = dict.fromkeys(range(shards), 0)
    for partition, messages in lag.items():
        totals[shard_of(partition, shards)] += messages
    return totals


def build_kafka_events_sensor(
    topic: str,
    interval_s: int,
    running_by_default: bool,
    job_name: str = INGEST_JOB_NAME,
    shards: int = 1,
) -> dg.SensorDefinition:
    @dg.sensor(
        name="kafka_events_sensor",
        job_name=job_name,
        minimum_interval_seconds=interval_s,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if running_by_default else dg.DefaultSensorStatus.STOPPED
        ),
        description=f"Launches {INGEST_JOB_NAME} when {topic} has messages not yet ingested"
        + (f", one run per shard ({shards} shards)." if shards > 1 else "."),
    )
    def kafka_events_sensor(
        context: dg.SensorEvaluationContext, kafka: KafkaResource
    ) -> dg.SensorResult:
        watermarks = kafka.high_watermarks(topic)
        committed = kafka.committed_offsets(topic)
        per_partition = compute_lag(watermarks, committed)
        # Every tick, for the UI's plots of raw_events (no run needed): messages not yet
        # ingested and the age of the oldest (read past the dev broker's trailing high
        # watermark, resources/lag_probe.py).
        observations: list[dg.AssetObservation | dg.AssetCheckEvaluation] = [
            dg.AssetObservation(asset_key=RAW_EVENTS, metadata=lag_observation(kafka, topic)),
            # The windows' freshness on event time, judged every tick from the instance.
            freshness_evaluation(context.instance, dt.datetime.now(dt.UTC)),
        ]
        run_requests = []
        if shards == 1:
            active = context.instance.get_runs(
                filters=dg.RunsFilter(job_name=INGEST_JOB_NAME, statuses=_ACTIVE), limit=1
            )
            busy = {0} if active else set()
        else:
            busy = {
                shard
                for shard in range(shards)
                if context.instance.get_runs(
                    filters=dg.RunsFilter(
                        job_name=INGEST_JOB_NAME,
                        statuses=_ACTIVE,
                        tags={INGEST_SHARD_TAG: str(shard)},
                    ),
                    limit=1,
                )
            }
        early: set[int] | None = None
        for shard, shard_lag in shard_lags(per_partition, shards).items():
            if shard in busy:
                continue
            if shard_lag == 0:
                if early is None:
                    early = _shards_stopped_early(context, shards)
                if shard not in early:
                    continue
            run_requests.append(_request(shard, shards, shard_lag, watermarks, committed))
        return dg.SensorResult(run_requests=run_requests, asset_events=observations)

    return kafka_events_sensor


def _request(
    shard: int,
    shards: int,
    lag: int,
    watermarks: dict[int, int],
    committed: dict[int, int | None],
) -> dg.RunRequest:
    mine = {p: o for p, o in watermarks.items() if shard_of(p, shards) == shard}
    tags = {"astra/kafka_lag": str(lag), INGEST_SHARD_TAG: str(shard)}
    if shards == 1:
        return dg.RunRequest(run_key=run_key_for(mine, committed), tags=tags)
    return dg.RunRequest(
        run_key=f"{run_key_for(mine, committed)}-shard{shard}",
        tags=tags,
        run_config={"ops": {"ingest_events": {"config": {"shard": shard, "shards": shards}}}},
    )
