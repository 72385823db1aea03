"""Group `features`: churn_features, daily partitions "as of" the end of each day.

A partition D holds one row per user (features.user_churn) and per device
(features.device_health) computed only from clean events with ts before the end of D
(midnight UTC starting D + 1): point in time, so a model trained on past partitions sees
exactly what it would have seen that day, and events arriving later never change D
unless D is re-materialized (and then only events *of* D or before count).

A run covers one day (the daily schedule) or a range (a backfill, single run); each day
is read, computed and replaced (DELETE where as_of_day = D, append) in one DuckDB
transaction, so readers see a day before or after, never half of it.
"""

import datetime as dt
import time
import warnings

import dagster as dg
import polars as pl
from pydantic import Field

from astra_pipeline.assets.ingest import CLEANED_EVENTS, WRITER_POOL
from astra_pipeline.transforms.churn import (
    DAY,
    day_end,
    device_health_features,
    user_churn_features,
)
from resources.score_store import (
    latest_ingestion,
    load_feature_activity,
    load_health_readings,
    record_partitions,
    replace_day,
)
from resources.settings import partitions_start
from resources.tables import DEVICE_HEALTH, USER_CHURN
from resources.warehouse import DuckDBWarehouseResource

warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

CHURN_FEATURES = dg.AssetKey("churn_features")
DAILY = dg.DailyPartitionsDefinition(start_date=partitions_start().isoformat(), end_offset=1)
"""Daily partitions (UTC days) from ASTRA_PARTITIONS_START up to and including today (a
partial day until it ends)."""

EXPECTED_INTERVAL_S = 60.0
"""How often a device is meant to report, for device health's reporting rate (1.0 = on
schedule). Assumed once a minute; set the asset's config (expected_interval_s) to the
fleet's real interval. The simulator has none: its devices report at the traffic rate."""

DETAIL_WINDOW = dt.timedelta(days=30)
"""The longest window of user_churn_features: older events are read only where they can
still change a feature (first, last, last purchase, last cart per user)."""


class ChurnFeaturesConfig(dg.Config):
    expected_interval_s: float = Field(
        default=EXPECTED_INTERVAL_S,
        gt=0,
        description="Seconds between two readings of a device on schedule.",
    )


def days_of(window: dg.TimeWindow) -> list[dt.date]:
    """The UTC days a daily partition window (one day or a range) covers."""
    first = window.start.astimezone(dt.UTC).date()
    last = window.end.astimezone(dt.UTC).date()
    return [first + n * DAY for n in range((last - first).days)]


def day_start(day: dt.date) -> dt.datetime:
    return day_end(day) - DAY


@dg.asset(
    key=CHURN_FEATURES,
    group_name="features",
    deps=[CLEANED_EVENTS],
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WRITER_POOL,
    description="Per user (features.user_churn) and per device (features.device_health) "
    "features as of the end of each UTC day, from events before that end only.",
)
def churn_features(
    context: dg.AssetExecutionContext,
    config: ChurnFeaturesConfig,
    warehouse: DuckDBWarehouseResource,
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    started = time.monotonic()
    warehouse.ensure_schema()
    per_day: dict[str, dict[str, int]] = {}
    for day in days_of(context.partition_time_window):
        end = day_end(day)
        with warehouse.transaction() as tx:
            tx.commit_message(context.run.run_id, f"churn_features {day}")
            seen_until = latest_ingestion(tx)
            activity = load_feature_activity(tx, end, DETAIL_WINDOW)
            latest = activity.group_by("user_id").agg(pl.col("ts").max().alias("max_event_ts"))
            users = user_churn_features(activity, day).join(latest, on="user_id", how="left")
            devices = device_health_features(
                load_health_readings(tx, end - DAY, end), day, config.expected_interval_s
            )
            replace_day(tx, USER_CHURN, day, users)
            replace_day(tx, DEVICE_HEALTH, day, devices)
            record_partitions(
                tx,
                CHURN_FEATURES.to_user_string(),
                pl.DataFrame(
                    {
                        "partition_start": [day_start(day)],
                        "row_count": [users.height + devices.height],
                    }
                ),
                seen_until,
                context.run.run_id,
                dt.datetime.now(dt.UTC),
            )
        per_day[day.isoformat()] = {
            "users": users.height,
            "devices": devices.height,
            "silent_devices": devices.filter(pl.col("readings") == 0).height,
        }
    totals = {key: sum(d[key] for d in per_day.values()) for key in ("users", "devices")}
    metadata: dict[str, dg.RawMetadataValue] = {
        "dagster/row_count": totals["users"] + totals["devices"],
        "days": len(per_day),
        "users": totals["users"],
        "devices": totals["devices"],
        "silent_devices": sum(d["silent_devices"] for d in per_day.values()),
        "expected_interval_s": config.expected_interval_s,
        "seconds": round(time.monotonic() - started, 3),
    }
    if len(per_day) > 1:
        metadata["per_day"] = dg.MetadataValue.json(per_day)
    return dg.MaterializeResult(metadata=metadata)
