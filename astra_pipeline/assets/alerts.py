"""Group `scoring`: alerts, the readings whose anomaly score crossed the threshold.

Each alert is a row of ml.alerts and a message on the alerts topic (events_alerts), once.

**Table: exactly once.** alert_id is UUID-5(event_id | rule_version): the same reading
under the same rules always gives the same id, whatever the run, threshold or replay.
The asset inserts only alert_ids not yet in ml.alerts (primary key), in one transaction,
so re-materializing an hour, a backfill, or an overlapping refresh adds nothing twice. A
recorded alert is never rewritten or deleted: it happened, even if a late reading later
moves the baseline and the rescored reading no longer crosses.

**Topic: exactly once, by an outbox with a recorded starting point.** ml.alerts is the
outbox; published_at is set only once the broker has acknowledged the message:

1. settle attempts that died before recording their outcome (see below);
2. in one transaction: take every unpublished alert (this run's new ones and any left by
   an earlier failed run) and record a publication attempt: its id, the topic's
   end offsets *before* sending, and the attempt id on each alert;
3. produce them (idempotent producer: librdkafka's retries add no copies) and wait for
   every acknowledgement (a failed delivery fails the run);
4. in one transaction: set published_at and close the attempt.

A crash before 2 leaves the alerts unpublished: the next run sends them. A crash between 2
and 4 leaves an open attempt: the next run reads the topic from that attempt's recorded
offsets to its end, marks the alerts it finds there as published without sending them
again, and sends only the rest. So no alert is lost and none is sent twice, as long as
the topic still holds the messages since the open attempt started (retention) and no
other process publishes alerts concurrently (the asset is in the single-writer pool).
Consumers can still de-duplicate on the alert_id (message header and payload) should a
topic be rebuilt or the retention window be missed.

Message: key = device_id (one device's alerts stay in order, as the raw events keyed by
device do), header ``alert_id``, value = JSON with alert_id, event_id, device_id, ts,
score, driver, metric, reason, threshold, rule_version and the source reading's topic,
partition and offset.
"""

import datetime as dt
import json
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field

from astra_pipeline.assets.ingest import WRITER_POOL
from astra_pipeline.assets.scoring import ANOMALY_SCORES_KEY, hour_counts
from astra_pipeline.assets.windows import HOURLY
from astra_pipeline.transforms.anomaly import alerts_from_scores
from resources.kafka import KafkaResource
from resources.score_store import (
    alert_times,
    begin_publication,
    complete_publication,
    insert_new_alerts,
    load_alert_candidates,
    open_publications,
    record_partitions,
    unpublished_alerts,
)
from resources.warehouse import DuckDBWarehouseResource

warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

ALERTS_KEY = dg.AssetKey("alerts")
DEFAULT_THRESHOLD = 0.5
READ_BATCH = 50_000


class AlertsConfig(dg.Config):
    """Per-run overrides; unset fields take the deployment's values (build_alerts_asset)."""

    topic: str | None = Field(default=None, description="Topic the alerts go to.")
    threshold: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Readings with an anomaly score at or above this become alerts.",
    )


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_message(alert: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) of an ml.alerts row on the alerts topic."""
    value = {
        "alert_id": alert["alert_id"],
        "event_id": alert["event_id"],
        "device_id": alert["device_id"],
        "ts": _iso(alert["ts"]),
        "score": alert["score"],
        "driver": alert["driver"],
        "metric": alert["metric"],
        "reason": alert["reason"],
        "threshold": alert["threshold"],
        "rule_version": alert["rule_version"],
        "source": {
            "topic": alert["topic"],
            "partition": alert["partition"],
            "offset": alert["offset"],
        },
    }
    return str(alert["device_id"]).encode(), json.dumps(value, separators=(",", ":")).encode()


def alert_ids_in_log(
    kafka: KafkaResource, topic: str, start_offsets: Mapping[int, int]
) -> set[str]:
    """The alert_ids of the messages in ``topic`` from ``start_offsets`` to the end."""
    found: set[str] = set()
    if not start_offsets:
        return found
    offsets = dict(start_offsets)
    with kafka.reader(topic) as reader:
        while True:
            batch = reader.read(offsets, READ_BATCH)
            for value in batch.frame["value"]:
                try:
                    alert_id = json.loads(value).get("alert_id") if value else None
                except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                    alert_id = None  # not an alert of ours: nothing to settle
                if isinstance(alert_id, str):
                    found.add(alert_id)
            offsets = batch.end_offsets
            if batch.reached_eof:
                return found


@dataclass(frozen=True)
class Delivery:
    published: int
    """Alerts sent and acknowledged by this run."""
    settled_from_log: int
    """Alerts of earlier, interrupted attempts found on the topic (not sent again)."""
    interrupted_attempts: int


def publish_pending(
    kafka: KafkaResource,
    warehouse: DuckDBWarehouseResource,
    topic: str,
    log: dg.DagsterLogManager | None = None,
) -> Delivery:
    """Publish every unpublished alert exactly once (see the module docstring)."""
    with warehouse.transaction() as tx:
        interrupted = open_publications(tx)
    settled = 0
    for attempt_id, attempt_topic, start_offsets in interrupted:
        in_log = alert_ids_in_log(kafka, attempt_topic, start_offsets)
        with warehouse.transaction() as tx:
            settled += complete_publication(tx, attempt_id, sorted(in_log), dt.datetime.now(dt.UTC))
        if log:
            log.warning(
                f"publication {attempt_id} to {attempt_topic} was interrupted: "
                f"{len(in_log)} alerts found on the topic since its start"
            )
    with warehouse.transaction() as tx:
        pending = unpublished_alerts(tx)
    if pending.height == 0:
        return Delivery(0, settled, len(interrupted))
    # Where the topic ends before this attempt sends anything. A watermark that trails
    # the true end only makes a later check read a little more of the log.
    start_offsets = kafka.high_watermarks(topic)
    attempt_id = uuid.uuid4().hex
    with warehouse.transaction() as tx:
        pending = unpublished_alerts(tx)
        ids = pending["alert_id"].to_list()
        begin_publication(tx, attempt_id, topic, start_offsets, ids, dt.datetime.now(dt.UTC))
    with kafka.producer(**{"enable.idempotence": True}) as producer:
        for row in pending.iter_rows(named=True):
            key, value = alert_message(row)
            producer.send(topic, value=value, key=key, headers=[("alert_id", row["alert_id"])])
    with warehouse.transaction() as tx:
        published = complete_publication(tx, attempt_id, ids, dt.datetime.now(dt.UTC))
    return Delivery(published, settled, len(interrupted))


def build_alerts_asset(
    topic: str = "events_alerts", threshold: float = DEFAULT_THRESHOLD
) -> dg.AssetsDefinition:
    """The alerts asset for a deployment's topic (ASTRA_TOPIC_ALERTS) and threshold.

    Bound here rather than through a job's run config: Dagster applies a partitioned
    job's config to single-partition runs only, and the windows sensor also launches
    range runs, which would silently fall back to the defaults.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be within (0, 1]")

    @dg.asset(
        key=ALERTS_KEY,
        group_name="scoring",
        deps=[ANOMALY_SCORES_KEY],
        partitions_def=HOURLY,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WRITER_POOL,
        kinds={"kafka"},
        description=f"Readings whose anomaly score reaches {threshold} (by default): "
        f"ml.alerts and the {topic} topic, each alert exactly once under re-materialization.",
    )
    def alerts(
        context: dg.AssetExecutionContext,
        config: AlertsConfig,
        warehouse: DuckDBWarehouseResource,
        kafka: KafkaResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        started = time.monotonic()
        window = context.partition_time_window
        run_topic = config.topic or topic
        run_threshold = config.threshold or threshold
        warehouse.ensure_schema()
        now = dt.datetime.now(dt.UTC)
        with warehouse.transaction() as tx:
            tx.commit_message(context.run.run_id, f"alerts {window.start:%Y-%m-%d %H:%M}")
            candidates = load_alert_candidates(tx, window.start, window.end, run_threshold)
            found = alerts_from_scores(candidates, run_threshold)
            new = insert_new_alerts(tx, found, run_threshold, now, context.run.run_id)
            recorded = alert_times(tx, window.start, window.end)
            record_partitions(
                tx,
                ALERTS_KEY.to_user_string(),
                hour_counts(recorded, window.start, window.end),
                None,
                context.run.run_id,
                now,
            )
        delivery = publish_pending(kafka, warehouse, run_topic, context.log)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": recorded.height,
                "alerts_in_window": recorded.height,
                "crossing_now": found.height,
                "new_alerts": new,
                "already_recorded": found.height - new,
                "published": delivery.published,
                "settled_from_log": delivery.settled_from_log,
                "interrupted_attempts": delivery.interrupted_attempts,
                "threshold": run_threshold,
                "topic": run_topic,
                "seconds": round(time.monotonic() - started, 3),
            }
        )

    return alerts
