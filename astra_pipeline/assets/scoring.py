"""Group `scoring`: churn_scores (daily) and anomaly_scores (hourly, like the aggregates).

churn_scores, partition D: trains a model on the stored features of the
``training_days`` as-of days up to D - 14, labelled by churn_label with the data observed
until the end of D (each label's 14-day horizon ends at the end of D at the latest), and
scores D's users. Everything it uses is known at the end of D: re-materializing D later
trains on the same rows (late events aside) and gives the same model version. The
artifact is stored under its content version in ml.churn_models; every score row names
the version that produced it. Without enough labelled rows (a fresh system has none for
its first two weeks) the partition is materialized empty with ``status: skipped`` and
the reason in its metadata, rather than failing.

anomaly_scores, an hour (or a range): every clean sensor reading of the hour scored
against its device's trailing baseline, with ``history_span`` (2 h) of earlier readings
as context, replacing the hour's rows. It runs in score_anomalies_job, which
windowed_aggregates_scoring_sensor requests for the hours whose aggregates were
refreshed (every 60 s, at a lower run priority than ingest and refresh runs). Scores of
a reading depend on the readings before it: a late reading rescored in its own hour can
also move the baselines of the next two hours, which are rescored only when they are
touched themselves (or backfilled).
"""

import datetime as dt
import time
import warnings
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from astra_pipeline.assets.features import CHURN_FEATURES, DAILY, day_start, days_of
from astra_pipeline.assets.ingest import CLEANED_EVENTS, WRITER_POOL
from astra_pipeline.assets.run_priority import lower_cpu_priority
from astra_pipeline.assets.windows import HOURLY, WINDOWED_AGGREGATES
from astra_pipeline.transforms.anomaly import AnomalyConfig, score_readings
from astra_pipeline.transforms.churn import CHURN_HORIZON_DAYS, DAY, churn_label, day_end
from astra_pipeline.transforms.churn_model import (
    ACTIVE_WITHIN_DAYS,
    ChurnMetrics,
    score_churn,
    serialize_model,
    train_churn_model,
)
from astra_pipeline.transforms.partition_windows import contiguous_ranges
from astra_pipeline.transforms.windows import HOUR
from resources.score_store import (
    latest_ingestion,
    load_label_activity,
    load_readings,
    load_user_features,
    newer_hours,
    record_partitions,
    replace_day,
    replace_range,
    store_model,
)
from resources.tables import ANOMALY_SCORES, CHURN_SCORES
from resources.warehouse import DuckDBWarehouseResource, WarehouseSession
from resources.watermark import Watermark

warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
# churn_scores' partition mapping needs it for its first 41 days (no upstream that early).
warnings.filterwarnings(
    "ignore", message="Parameter `allow_nonexistent_upstream_partitions`", category=dg.BetaWarning
)

CHURN_SCORES_KEY = dg.AssetKey("churn_scores")
ANOMALY_SCORES_KEY = dg.AssetKey("anomaly_scores")

TRAINING_DAYS = 28
"""Labelled as-of days a model is trained on by default: D - 41 .. D - 14."""

ANOMALY_RULES = AnomalyConfig()
"""The scoring rules; their hash is part of every score's rule_version and alert id."""

ANOMALY_CHUNK = dt.timedelta(hours=6)
"""A range run scores and writes this much per transaction (plus its history): bounded
memory at 500,000 readings an hour, and the history is re-read once per chunk only."""


def hour_counts(frame: pl.DataFrame, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    """Rows per hour of [start, end) (hours without rows count 0): partition bookkeeping."""
    hours = pl.DataFrame(
        {
            "partition_start": pl.datetime_range(
                start, end, "1h", closed="left", time_zone="UTC", eager=True
            ).dt.cast_time_unit("us")
        }
    )
    counts = frame.group_by(pl.col("ts").dt.truncate("1h").alias("partition_start")).agg(
        pl.len().cast(pl.Int64).alias("row_count")
    )
    return hours.join(counts, on="partition_start", how="left").with_columns(
        pl.col("row_count").fill_null(0)
    )


# --- churn scores --------------------------------------------------------------------------


class ChurnScoresConfig(dg.Config):
    training_days: int = Field(
        default=TRAINING_DAYS,
        ge=2,
        description="Labelled as-of days to train on (D - 13 - training_days .. D - 14). "
        "The lineage to churn_features assumes the default 28.",
    )
    min_training_rows: int = Field(
        default=200,
        ge=1,
        description="Below this many labelled rows (of users active in the last 7 days) "
        "the day is not scored.",
    )
    min_class_rows: int = Field(
        default=10, ge=1, description="Churned and retained rows each needed to train."
    )
    seed: int = 0


def _training_rows(
    tx: WarehouseSession, day: dt.date, config: ChurnScoresConfig
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, str | None]:
    """(training features, labels, day D's features, reason not to train or None)."""
    last = day - CHURN_HORIZON_DAYS * DAY
    first = last - (config.training_days - 1) * DAY
    # Only the model's population (users active in the last 7 days) is trained and scored.
    train = load_user_features(tx, first, last, ACTIVE_WITHIN_DAYS)
    today = load_user_features(tx, day, day, ACTIVE_WITHIN_DAYS)
    train_days = train["as_of_day"].unique().sort().to_list()
    if not train_days:
        return train, train.head(0), today, f"no stored features for {first} .. {last}"
    activity = load_label_activity(tx, day_end(train_days[0]), day_end(day))
    labels = pl.concat([churn_label(activity, d, observed_until=day_end(day)) for d in train_days])
    labelled = train.join(labels, on=["user_id", "as_of_day"], how="inner").filter(
        pl.col("churned").is_not_null()
    )
    churned = int(labelled["churned"].sum() or 0)
    retained = labelled.height - churned
    reason = None
    if labelled["as_of_day"].n_unique() < 2:
        reason = "labelled rows on fewer than two days (need two for an out-of-time split)"
    elif labelled.height < config.min_training_rows:
        reason = f"{labelled.height} labelled rows, fewer than {config.min_training_rows}"
    elif min(churned, retained) < config.min_class_rows:
        reason = (
            f"{churned} churned and {retained} retained rows; need {config.min_class_rows} of each"
        )
    return train, labels, today, reason


def _metrics_metadata(metrics: ChurnMetrics) -> dict[str, Any]:
    values = metrics.as_dict()
    out: dict[str, Any] = {
        "precision": round(metrics.precision, 4),
        "recall": round(metrics.recall, 4),
        "threshold": round(metrics.threshold, 4),
        "training_rows": metrics.training_rows,
        "evaluation_rows": metrics.evaluation_rows,
        "evaluation": dg.MetadataValue.json(values),
    }
    if metrics.auc is not None:
        out["auc"] = round(metrics.auc, 4)
    return out


@dg.asset(
    key=CHURN_SCORES_KEY,
    group_name="scoring",
    deps=[
        dg.AssetDep(
            CHURN_FEATURES,
            # D is scored with D's features and trained on D - 41 .. D - 14.
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-(CHURN_HORIZON_DAYS + TRAINING_DAYS - 1),
                end_offset=0,
                allow_nonexistent_upstream_partitions=True,
            ),
        ),
        CLEANED_EVENTS,
    ],
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WRITER_POOL,
    description="Churn probability per active user and day (ml.churn_scores) from a "
    "logistic regression trained on past days' features; artifacts in ml.churn_models.",
)
def churn_scores(
    context: dg.AssetExecutionContext,
    config: ChurnScoresConfig,
    warehouse: DuckDBWarehouseResource,
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    started = time.monotonic()
    warehouse.ensure_schema()
    per_day: dict[str, dict[str, object]] = {}
    last_metadata: dict[str, Any] = {}
    scored_total = 0
    for day in days_of(context.partition_time_window):
        with warehouse.transaction() as tx:
            tx.commit_message(context.run.run_id, f"churn_scores {day}")
            seen_until = latest_ingestion(tx)
            train, labels, today, reason = _training_rows(tx, day, config)
            if reason is None:
                model, metrics = train_churn_model(train, labels, seed=config.seed)
                artifact = serialize_model(model)
                new_model = store_model(
                    tx,
                    version=artifact.version,
                    payload=artifact.payload,
                    trained_for_day=day,
                    trained_through=model.trained_through,
                    threshold=model.threshold,
                    metrics=metrics.as_dict(),
                    trained_at=dt.datetime.now(dt.UTC),
                    run_id=context.run.run_id,
                )
                scores = score_churn(model, today).with_columns(
                    pl.lit(artifact.version).alias("model_version")
                )
            else:
                scores = pl.DataFrame()
            written = replace_day(tx, CHURN_SCORES, day, scores)
            record_partitions(
                tx,
                CHURN_SCORES_KEY.to_user_string(),
                pl.DataFrame({"partition_start": [day_start(day)], "row_count": [written]}),
                seen_until,
                context.run.run_id,
                dt.datetime.now(dt.UTC),
            )
        scored_total += written
        if reason is None:
            predicted = int(scores["churn_predicted"].sum())
            last_metadata = {
                "status": "trained",
                "model_version": artifact.version,
                "new_model_version": new_model,
                "scored_users": written,
                "predicted_churners": predicted,
                **_metrics_metadata(metrics),
            }
            per_day[day.isoformat()] = {
                "status": "trained",
                "model_version": artifact.version,
                "auc": metrics.auc,
                "scored_users": written,
                "predicted_churners": predicted,
            }
            context.log.info(f"{day}: {artifact.version} scored {written} users")
        else:
            last_metadata = {"status": "skipped", "skip_reason": reason, "scored_users": 0}
            per_day[day.isoformat()] = {"status": "skipped", "skip_reason": reason}
            context.log.warning(f"{day}: not scored: {reason}")
    metadata: dict[str, Any] = {
        "dagster/row_count": scored_total,
        "days": len(per_day),
        "days_skipped": sum(d["status"] == "skipped" for d in per_day.values()),
        "seconds": round(time.monotonic() - started, 3),
        # The evaluation of the last day's model (one day per scheduled run).
        **last_metadata,
    }
    if len(per_day) > 1:
        metadata["per_day"] = dg.MetadataValue.json(per_day)
    return dg.MaterializeResult(metadata=metadata)


# --- anomaly scores ------------------------------------------------------------------------


@dg.asset(
    key=ANOMALY_SCORES_KEY,
    group_name="scoring",
    # It reads the clean readings; the dependency on the same hours of the aggregates
    # orders the refresh run (windows first: they are what freshness is measured on)
    # and shows the lineage of ARCHITECTURE.md.
    deps=[CLEANED_EVENTS, WINDOWED_AGGREGATES],
    partitions_def=HOURLY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    # Not in the writer pool: it reads a snapshot and writes each chunk in a short
    # transaction, redone when the lake refuses the commit (see below).
    description="One anomaly score per clean sensor reading against its device's "
    "trailing baseline (ml.anomaly_scores); a partition is one hour of event time.",
)
def anomaly_scores(
    context: dg.AssetExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    started = time.monotonic()
    lower_cpu_priority(context)
    window = context.partition_time_window
    rules = ANOMALY_RULES
    metrics = [m.column for m in rules.metrics]
    warehouse.ensure_schema()
    asset = ANOMALY_SCORES_KEY.to_user_string()
    scored: list[pl.DataFrame] = []
    history_rows = 0
    superseded = 0
    chunk_start = window.start
    while chunk_start < window.end:
        chunk_end = min(chunk_start + ANOMALY_CHUNK, window.end)
        # Read, then score with no lock held (seconds to tens of seconds for a busy hour),
        # then replace in a short transaction: ingest and refresh runs are not held up.
        with warehouse.session(read_only=True) as rx:
            seen_until = latest_ingestion(rx)
            readings = load_readings(rx, chunk_start - rules.history_span, chunk_end, metrics)
        target = pl.col("ts") >= chunk_start
        history = readings.filter(~target)
        scores = score_readings(history, readings.filter(target), rules)

        def replace(
            tx: WarehouseSession,
            scores: pl.DataFrame = scores,
            chunk_start: dt.datetime = chunk_start,
            chunk_end: dt.datetime = chunk_end,
            seen_until: Watermark = seen_until,
        ) -> tuple[list[dt.datetime], pl.DataFrame]:
            tx.commit_message(context.run.run_id, f"anomaly_scores {chunk_start:%Y-%m-%d %H:%M}")
            # A run that read later clean rows may have written some of these hours while
            # this one scored: its scores stay (replaced only by ones at least as fresh).
            newer = newer_hours(tx, asset, chunk_start, chunk_end, seen_until)
            counts = hour_counts(scores, chunk_start, chunk_end)
            if newer:
                counts = counts.filter(~pl.col("partition_start").is_in(newer))
                scores = scores.filter(~pl.col("ts").dt.truncate("1h").is_in(newer))
            for first, last in contiguous_ranges(counts["partition_start"].to_list()):
                replace_range(
                    tx,
                    ANOMALY_SCORES,
                    first,
                    last + HOUR,
                    scores.filter(pl.col("ts").is_between(first, last + HOUR, closed="left")),
                )
            record_partitions(
                tx, asset, counts, seen_until, context.run.run_id, dt.datetime.now(dt.UTC)
            )
            return newer, scores

        # Not in the writer pool: on a lake a concurrent writer of the same tables (the
        # alerts step's partition records) can refuse this commit; it is then redone.
        newer, scores = warehouse.retrying(replace)
        history_rows += history.height
        superseded += len(newer)
        scored.append(scores.select("score", "driver"))
        chunk_start = chunk_end
    if superseded:
        context.log.info(f"{superseded} hour(s) left as written by a run that read later rows")
    frame = pl.concat(scored)
    drivers = frame.group_by("driver").len().sort("driver")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "readings_scored": frame.height,
            "history_readings": history_rows,
            "hours": int((window.end - window.start) / HOUR),
            "hours_superseded": superseded,
            "max_score": round(frame.select(pl.col("score").max().fill_null(0.0)).item(), 4),
            "readings_at_or_over_0_5": frame.filter(pl.col("score") >= 0.5).height,
            "drivers": dg.MetadataValue.json(dict(drivers.rows())),
            "rule_version": rules.rule_version,
            "seconds": round(time.monotonic() - started, 3),
        }
    )
