"""Group `ingest`: Kafka micro-batches into raw_events, cleaned_events, dead_letter_events.

The three tables and the ledger are written in one DuckDB transaction per batch, so they
are one multi-asset: read a range from Kafka, transform (pure), write, commit offsets.
"""

import contextlib
import datetime as dt
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import dagster as dg
import polars as pl
from pydantic import Field

from astra_pipeline.assets.window_audit import AUDITS
from astra_pipeline.assets.window_refresh import (
    WINDOWED_AGGREGATES,
    hour_of,
    partition_key,
    refresh_hours,
)
from astra_pipeline.transforms.ingest_batch import build_ingest_frames
from astra_pipeline.transforms.latency import LatencySample
from astra_pipeline.transforms.shards import shard_partitions
from astra_pipeline.transforms.windows import touched_hours
from resources.deadletter_store import (
    mark_dead_letters_published,
    publish_starts,
    unpublished_dead_letters,
)
from resources.errors import CommitConflict, TopicRecreated, WarehouseError
from resources.ingest_store import (
    BatchRows,
    LedgerConflict,
    check_topic,
    next_offsets,
    table_rows,
    write_batch,
)
from resources.kafka import (
    DeadLetter,
    DeadLetterPublisher,
    KafkaBatch,
    KafkaRangeReader,
    KafkaResource,
)
from resources.kafka_range import ProcessRangeReader
from resources.tables import DEAD_LETTER_EVENTS as DEAD_LETTER_TABLE
from resources.warehouse import DuckDBWarehouseResource

RAW_EVENTS = dg.AssetKey("raw_events")
CLEANED_EVENTS = dg.AssetKey("cleaned_events")
DEAD_LETTER_EVENTS = dg.AssetKey("dead_letter_events")
WRITER_POOL = "duckdb_writer"
COMMIT_ATTEMPTS = 6

TOPIC_CHECK = "raw_events_topic_not_recreated"
"""The blocking check that a topic is the one the ledger was read from
(checks/ingest.py); an ingest run that finds otherwise reports it failed, then fails."""


IngestEvent = dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation  # type: ignore[type-arg]
"""What an ingest run yields: its assets' results, the live hour's windows and checks."""


class IngestConfig(dg.Config):
    topic: str = Field(default="events_raw", description="Kafka topic to ingest.")
    deadletter_topic: str = Field(
        default="events_deadletter", description="Topic malformed messages are sent to."
    )
    max_batch_size: int = Field(default=100_000, description="Messages per transaction.")
    time_budget_s: float = Field(
        default=60.0, description="Stop reading new batches after this many seconds."
    )
    shards: int = Field(
        default=1, ge=1, description="Ingest shards the topic's partitions are split into."
    )
    shard: int = Field(
        default=0,
        ge=0,
        description="The shard this run ingests: partitions p with p % shards == shard.",
    )


@dataclass
class IngestTotals:
    batches: int = 0
    messages: int = 0
    sensor_readings: int = 0
    user_activity: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    fast_path_rows: int = 0
    ledger_conflicts: int = 0
    """Batches discarded because another writer had committed their offsets first."""
    commit_retries: int = 0
    """Batch commits a lake refused for a concurrent change, written again."""
    reached_eof: bool = False
    end_offsets: dict[int, int] = field(default_factory=dict)
    touched_hours: set[dt.datetime] = field(default_factory=set)
    """Hourly event-time partitions whose windows the new clean rows may change."""
    latency: LatencySample = field(default_factory=LatencySample)
    """Event time to commit of every event this run stored."""


def drain(
    kafka: KafkaResource,
    warehouse: DuckDBWarehouseResource,
    config: IngestConfig,
    run_id: str | None,
    log: dg.DagsterLogManager | None = None,
    totals: IngestTotals | None = None,
    after_batch: Callable[[IngestTotals], None] | None = None,
) -> IngestTotals:
    """Ingest batches from the ledger's next offsets until EOF or the time budget.

    ``totals`` (if given) is filled batch by batch, so after an error the caller still
    knows what was committed; ``after_batch`` is told after each committed batch (the
    CLI's progress)."""
    warehouse.ensure_schema()
    totals = IngestTotals() if totals is None else totals
    deadline = time.monotonic() + config.time_budget_s
    partitions = shard_partitions(kafka.partitions(config.topic), config.shards, config.shard)
    if not partitions:
        # More shards than partitions: this shard has none (nothing to do, not an error).
        totals.reached_eof = True
        return totals
    # The topic's id now: a topic created again since the ledger's batches (new id,
    # offsets from 0) stops the run here, loudly (TopicRecreated), never silently.
    topic_id = kafka.topic_id(config.topic)
    with warehouse.session() as session:
        check_topic(session, config.topic, topic_id)
        recorded = next_offsets(session, config.topic)
    # Where the dead-letter topic ends before this run publishes anything: a run that
    # dies between a batch's commit and its dead letters' acknowledgement leaves them
    # unpublished, and the next run looks for them from here before sending them again.
    kafka.create_topics({config.deadletter_topic: 1})
    publish_from = json.dumps(
        {str(p): o for p, o in kafka.high_watermarks(config.deadletter_topic).items()}
    )
    # Read the ledger once; each batch then starts where the last one ended. write_batch
    # re-checks the ledger inside its transaction, so a concurrent writer is still caught.
    starts = {p: recorded.get(p, 0) for p in partitions}
    # The next batch is read while this one is transformed and written: the read is
    # mostly librdkafka and the write mostly DuckDB, both release the GIL, so on two
    # cores the two overlap. A prefetched batch is only a read: nothing is committed
    # until its own turn, so dropping it (budget spent, or an error) loses nothing.
    # Under a backlog (a full first batch) further batches are read by a helper process:
    # in this one, turning messages into Python objects competes for the GIL with the
    # validation (measured: 82k vs 100k events/s on 2 cores, docs/performance.md).
    with contextlib.ExitStack() as stack:
        reader: KafkaRangeReader | ProcessRangeReader = stack.enter_context(
            kafka.reader(config.topic)
        )
        deadletters = stack.enter_context(
            kafka.dead_letter_publisher(config.topic, config.deadletter_topic, DEAD_LETTER_TABLE)
        )
        settled = _settle_dead_letters(
            kafka, warehouse, deadletters, config.topic, partitions if config.shards > 1 else None
        )
        if settled and log:
            log.warning(f"dead letters an earlier run left unpublished: {settled}")
        prefetch = stack.enter_context(ThreadPoolExecutor(1))
        pending = prefetch.submit(reader.read, starts, config.max_batch_size)
        backlog = False
        while True:
            batch = pending.result()
            last = batch.reached_eof or time.monotonic() >= deadline
            if not last:
                if not backlog and batch.size >= config.max_batch_size:
                    backlog = True
                    reader = stack.enter_context(kafka.process_reader(config.topic))
                pending = prefetch.submit(reader.read, batch.end_offsets, config.max_batch_size)
            if batch.size:
                try:
                    _ingest_one(
                        kafka,
                        warehouse,
                        deadletters,
                        config,
                        run_id,
                        batch,
                        publish_from,
                        totals,
                        topic_id,
                    )
                except (LedgerConflict, CommitConflict) as conflict:
                    # Another writer (`astra ingest`, a run launched by hand) committed
                    # these offsets first. Nothing of this batch was written: stop here,
                    # and the next run starts where the ledger now ends.
                    if log:
                        log.warning(f"{conflict}; the next run goes on from the ledger")
                    totals.ledger_conflicts += 1
                    pending.exception()
                    totals.reached_eof = False
                    return totals
                if log:
                    log.info(
                        f"batch {totals.batches}: {batch.size} messages, eof={batch.reached_eof}"
                    )
                if after_batch:
                    after_batch(totals)
            else:
                # Mirror the ledger in the consumer group when there was nothing new: after
                # a crash between the lake's and the Kafka commit this repairs the group.
                kafka.commit_offsets(
                    config.topic, {p: o for p, o in batch.end_offsets.items() if o}
                )
            totals.end_offsets = batch.end_offsets
            totals.reached_eof = batch.reached_eof
            if last:
                return totals
            if time.monotonic() >= deadline:
                # The prefetched batch is dropped; the next run reads it again. Waiting
                # for it (not its result): a failed read of it changes nothing here.
                pending.exception()
                totals.reached_eof = False
                return totals
    raise AssertionError("unreachable: the loop returns")


def _ingest_one(
    kafka: KafkaResource,
    warehouse: DuckDBWarehouseResource,
    deadletters: DeadLetterPublisher,
    config: IngestConfig,
    run_id: str | None,
    batch: KafkaBatch,
    publish_from: str,
    totals: IngestTotals,
    topic_id: str | None,
) -> None:
    batch_id = uuid.uuid4().hex
    now = dt.datetime.now(dt.UTC)
    frames = build_ingest_frames(batch.frame, config.topic, batch_id, now)
    publish = pl.lit(publish_from).alias("publish_from")
    # A commit can be refused for a concurrent change of the same tables that
    # is not another ingest of these partitions (a dead-letter mark, the raw retention's
    # delete): the batch is then written again in a new transaction, which re-checks the
    # ledger (a LedgerConflict, not a retry, when another writer took the range).
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            with warehouse.transaction() as tx:
                # Stamped again now that the transaction is open, so ingested_at is as
                # close to the commit as it can be (the refreshes go by snapshot).
                stamped = frames.stamped(dt.datetime.now(dt.UTC))
                written = write_batch(
                    tx,
                    topic=config.topic,
                    batch_id=batch_id,
                    run_id=run_id,
                    start_offsets=batch.start_offsets,
                    end_offsets=batch.end_offsets,
                    rows=BatchRows(
                        raw_events=stamped.raw_events,
                        sensor_readings=stamped.sensor_readings,
                        user_activity=stamped.user_activity,
                        dead_letters=stamped.dead_letters.with_columns(publish),
                        duplicates=stamped.duplicates,
                    ),
                    committed_at=dt.datetime.now(dt.UTC),
                    topic_id=topic_id,
                )
            committed_at = dt.datetime.now(dt.UTC)
            break
        except CommitConflict:
            if attempt == COMMIT_ATTEMPTS - 1:
                raise
            totals.commit_retries += 1
            time.sleep(0.02 * 2**attempt * (0.5 + random.random()))
    # Dead letters go to their topic once committed, and are marked when acknowledged:
    # a crash in between is settled by the next run (_settle_dead_letters), so each
    # reaches the topic once. One too large for the topic goes as a pointer to its row.
    if frames.dead_letters.height:
        deadletters.publish(_letters(frames.dead_letters))
        _mark_published(warehouse, frames.dead_letters)
    kafka.commit_offsets(config.topic, batch.end_offsets)
    totals.batches += 1
    totals.messages += batch.size
    totals.sensor_readings += written.sensor_readings
    totals.user_activity += written.user_activity
    totals.dead_letters += written.dead_letters
    totals.duplicates += written.duplicates
    totals.fast_path_rows += frames.fast_path_rows
    # From what was inserted: a resend of a stored event (even with another ts) is
    # dropped as a duplicate and changes no window.
    totals.touched_hours.update(touched_hours(written.inserted_ts))
    totals.latency.add(written.inserted_ts, committed_at)


def _mark_published(warehouse: DuckDBWarehouseResource, dead_letters: pl.DataFrame) -> None:
    """Mark the batch's dead letters published; again when the lake refuses the commit for
    a concurrent writer's rows (marking is idempotent)."""
    warehouse.retrying(
        lambda tx: mark_dead_letters_published(tx, dead_letters, dt.datetime.now(dt.UTC)),
        attempts=COMMIT_ATTEMPTS,
    )


def _letters(rows: pl.DataFrame) -> Iterator[DeadLetter]:
    for row in rows.iter_rows(named=True):
        yield DeadLetter(
            topic=row["topic"],
            partition=row["partition"],
            offset=row["offset"],
            key=row["key"],
            value=row["value"],
            reason=row["reason"],
        )


def _settle_dead_letters(
    kafka: KafkaResource,
    warehouse: DuckDBWarehouseResource,
    deadletters: DeadLetterPublisher,
    topic: str,
    partitions: list[int] | None,
) -> int:
    """Publish the dead letters an earlier run committed but did not see acknowledged:
    those found on the topic (by their `source` header, from where the topic ended when
    that run started) are only marked, the others sent. Returns how many there were."""
    with warehouse.session() as session:
        pending = unpublished_dead_letters(session, topic, partitions)
    if pending.height == 0:
        return 0
    sources = pending.select(
        pl.concat_str(
            [
                pl.col("topic"),
                pl.col("partition").cast(pl.String),
                pl.col("offset").cast(pl.String),
            ],
            separator="/",
        ).alias("source")
    )["source"]
    starts = publish_starts([t for t in pending["publish_from"].to_list() if t])
    found = kafka.find_header_values(deadletters.topic, starts, "source", set(sources))
    missing = pending.filter(~sources.is_in(list(found)))
    if missing.height:
        deadletters.publish(_letters(missing))
    with warehouse.transaction() as tx:
        mark_dead_letters_published(tx, pending, dt.datetime.now(dt.UTC))
    return pending.height


def build_ingest_events(defaults: IngestConfig) -> dg.AssetsDefinition:
    """The ingest multi-asset whose config defaults are the deployment's settings.

    Defaults in the config schema itself, not in a job's run config: Dagster applies a
    partitioned job's run config to the runs its sensors request, not to a run launched
    by hand (`dg launch`, the launchpad, "Materialize"), which would otherwise read the
    class defaults (topic events_raw) whatever ASTRA_TOPIC_RAW says. The launchpad shows
    these defaults, and a run may still override any of them."""
    schema = {
        name: dg.Field(type(value), default_value=value, description=info.description)
        for name, info in IngestConfig.model_fields.items()
        if (value := getattr(defaults, name)) is not None
    }

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                RAW_EVENTS,
                group_name="ingest",
                description=f"Every Kafka message of {defaults.topic} with its coordinates "
                "(raw.events).",
            ),
            dg.AssetSpec(
                CLEANED_EVENTS,
                group_name="ingest",
                deps=[RAW_EVENTS],
                description="Validated, de-duplicated, enriched events "
                "(clean.sensor_readings, clean.user_activity).",
            ),
            dg.AssetSpec(
                DEAD_LETTER_EVENTS,
                group_name="ingest",
                deps=[RAW_EVENTS],
                description="Messages that broke the contract, with the reason "
                f"(clean.dead_letter_events and the {defaults.deadletter_topic} topic).",
            ),
        ],
        name="ingest_events",
        # One shard: in the writer pool with every other writer, and the run refreshes
        # the live hour's windows itself. Several: the shards run side by
        # side, one run per shard at a time (the run queue's limit on SHARD_TAG), and
        # the windows are refreshed by windowed_aggregates runs, which keep the pool's
        # serialization (their deletes would conflict with each other on a lake).
        pool=WRITER_POOL if defaults.shards == 1 else None,
        can_subset=False,
        config_schema=schema,
    )
    def ingest_events(
        context: dg.AssetExecutionContext,
        kafka: KafkaResource,
        warehouse: DuckDBWarehouseResource,
    ) -> Iterator[IngestEvent]:
        config = IngestConfig(**context.op_execution_context.op_config)
        started = time.monotonic()
        totals = IngestTotals()
        try:
            drain(kafka, warehouse, config, context.run.run_id, context.log, totals)
        except TopicRecreated as error:
            yield dg.AssetCheckEvaluation(
                asset_key=RAW_EVENTS,
                check_name=TOPIC_CHECK,
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"topic": config.topic, "problem": str(error)},
            )
            raise dg.Failure(description=str(error)) from None
        except Exception:
            # Batches committed before the error are in the tables: report them (their
            # touched hours drive the windows refresh, and the next run starts after
            # them), then fail.
            if totals.batches:
                seconds = round(time.monotonic() - started, 3)
                yield from _results(totals, seconds, _table_rows(warehouse, context.log), config)
            raise
        seconds = round(time.monotonic() - started, 3)
        yield from _results(totals, seconds, _table_rows(warehouse, context.log), config)
        if config.shards == 1:
            yield from refresh_live_hour(warehouse, totals, context.run.run_id)

    return ingest_events


ingest_events = build_ingest_events(IngestConfig())
"""With the class defaults: for tests that pass their own run config."""


def refresh_live_hour(
    warehouse: DuckDBWarehouseResource, totals: IngestTotals, run_id: str
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """Refresh the windows of the live hour (the clock's) when the run's new rows touched
    it, incrementally (only the windows those rows fall in), and record that
    windowed_aggregates partition's materialization and its checks' evaluations.

    Here and not as a windowed_aggregates step of the ingest job: such a job would be
    partitioned, so a run launched without a partition (`dg launch`, the launchpad)
    failed, and the ingest assets' checks got a planned twin per partition that never
    ran. The other hours the run touched (late events, the hour before when the run
    crossed the hour) are refreshed by cleaned_events_windows_sensor, and the live hour
    too when this refresh did not happen (a failed run)."""
    hour = hour_of(dt.datetime.now(dt.UTC))
    if hour not in totals.touched_hours:
        return
    refresh = refresh_hours(warehouse, hour, hour, run_id, since_last_refresh=True)
    key = partition_key(hour)
    yield dg.AssetMaterialization(WINDOWED_AGGREGATES, partition=key, metadata=refresh.metadata)
    for name, audit in AUDITS.items():
        result = audit(warehouse, (hour, hour))
        yield dg.AssetCheckEvaluation(
            asset_key=WINDOWED_AGGREGATES,
            check_name=name,
            passed=result.passed,
            metadata=result.metadata,
            partition=key,
        )


def _table_rows(
    warehouse: DuckDBWarehouseResource, log: dg.DagsterLogManager
) -> dict[str, int] | None:
    """The tables' row counts after the run, or None (and a warning) if the warehouse
    cannot be read now: better no row count in the UI than a wrong one."""
    try:
        with warehouse.session() as session:
            return table_rows(session)
    except WarehouseError as error:
        log.warning(f"row counts not recorded: {error}")
        return None


def _results(
    totals: IngestTotals, seconds: float, tables: dict[str, int] | None, config: IngestConfig
) -> Iterator[dg.MaterializeResult]:  # type: ignore[type-arg]
    """The run's figures per asset. ``dagster/row_count`` is the table's (what the UI
    calls "Row count"); what this run added is under its own keys."""

    def row_count(name: str) -> dict[str, int]:
        return {"dagster/row_count": tables[name]} if tables is not None else {}

    rate = round(totals.messages / seconds, 1) if seconds else 0.0
    yield dg.MaterializeResult(
        asset_key=RAW_EVENTS,
        metadata={
            **row_count("raw_events"),
            "messages": totals.messages,
            "batches": totals.batches,
            "seconds": seconds,
            "events_per_second": rate,
            "reached_eof": totals.reached_eof,
            "ledger_conflicts": totals.ledger_conflicts,
            "commit_retries": totals.commit_retries,
            "shard": config.shard,
            "shards": config.shards,
            "end_offsets": dg.MetadataValue.json(
                {str(k): v for k, v in totals.end_offsets.items()}
            ),
        },
    )
    yield dg.MaterializeResult(
        asset_key=CLEANED_EVENTS,
        metadata={
            **row_count("cleaned_events"),
            "inserted": totals.sensor_readings + totals.user_activity,
            "sensor_readings": totals.sensor_readings,
            "user_activity": totals.user_activity,
            "duplicates": totals.duplicates,
            "fast_path_rows": totals.fast_path_rows,
            # Event time to commit of the events this run stored (plotted in the UI).
            **totals.latency.summary(),
            # Read by the windows sensor to refresh exactly these hourly partitions.
            "touched_hours": dg.MetadataValue.json(
                [hour.isoformat() for hour in sorted(totals.touched_hours)]
            ),
        },
    )
    yield dg.MaterializeResult(
        asset_key=DEAD_LETTER_EVENTS,
        metadata={**row_count("dead_letter_events"), "rejected": totals.dead_letters},
    )
