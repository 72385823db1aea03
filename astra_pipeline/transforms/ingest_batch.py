"""One Kafka batch in, the rows of every ingest table out.

Every message of the batch lands in exactly one place: a clean table (first time its
event_id is seen in this batch), the in-batch duplicates, or the dead letters. The
cross-batch de-duplication is a join against the stored tables and happens where they
are, in the warehouse transaction.

Pure: no I/O, no Dagster, no Kafka, no DuckDB.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from astra_pipeline.transforms.clean import (
    deduplicate,
    enrich_sensor_readings,
    enrich_user_activity,
)
from astra_pipeline.transforms.validate import validate_messages

_COORDINATES = ["topic", "partition", "offset"]


@dataclass(frozen=True)
class IngestFrames:
    raw_events: pl.DataFrame
    sensor_readings: pl.DataFrame
    user_activity: pl.DataFrame
    dead_letters: pl.DataFrame
    duplicates: pl.DataFrame
    fast_path_rows: int

    def stamped(self, ingested_at: dt.datetime) -> IngestFrames:
        """The same rows with ``ingested_at`` set to the given time."""
        stamp = pl.lit(ingested_at.astimezone(dt.UTC), dtype=pl.Datetime("us", "UTC"))
        frames = {
            name: getattr(self, name).with_columns(stamp.alias("ingested_at"))
            for name in (
                "raw_events",
                "sensor_readings",
                "user_activity",
                "dead_letters",
                "duplicates",
            )
        }
        return IngestFrames(**frames, fast_path_rows=self.fast_path_rows)

    @property
    def accounted(self) -> int:
        return (
            self.sensor_readings.height
            + self.user_activity.height
            + self.dead_letters.height
            + self.duplicates.height
        )


def build_ingest_frames(
    messages: pl.DataFrame,
    topic: str,
    batch_id: str,
    ingested_at: dt.datetime,
) -> IngestFrames:
    """``messages`` has columns partition, offset, key, value, kafka_ts (one row each)."""
    ingested = ingested_at.astimezone(dt.UTC)
    stamp = [
        pl.lit(topic).alias("topic"),
        pl.lit(ingested, dtype=pl.Datetime("us", "UTC")).alias("ingested_at"),
        pl.lit(batch_id).alias("batch_id"),
    ]
    raw = (
        messages.with_columns(*stamp)
        .with_row_index("row")
        .with_columns(pl.col("row").cast(pl.Int64))
    )
    verdict = validate_messages(raw["value"].to_list(), now=ingested)
    coordinates = raw.select("row", *_COORDINATES, "ingested_at", "batch_id")

    sensors = enrich_sensor_readings(verdict.sensor_readings).join(coordinates, on="row")
    users = enrich_user_activity(verdict.user_activity).join(coordinates, on="row")
    sensor_dedup = deduplicate(sensors, ["partition", "offset"])
    user_dedup = deduplicate(users, ["partition", "offset"])
    duplicates = pl.concat(
        [
            sensor_dedup.duplicates.select(
                "event_id",
                pl.lit("sensor_reading").alias("event_type"),
                *_COORDINATES,
                "ingested_at",
                "batch_id",
            ),
            user_dedup.duplicates.select(
                "event_id",
                pl.lit("user_activity").alias("event_type"),
                *_COORDINATES,
                "ingested_at",
                "batch_id",
            ),
        ]
    )
    dead_letters = verdict.rejected.join(raw, on="row").select(
        *_COORDINATES, "key", "value", "reason", "kafka_ts", "ingested_at", "batch_id"
    )
    return IngestFrames(
        raw_events=raw.select(*_COORDINATES, "key", "value", "kafka_ts", "ingested_at", "batch_id"),
        sensor_readings=sensor_dedup.kept.drop("row"),
        user_activity=user_dedup.kept.drop("row"),
        dead_letters=dead_letters.sort("partition", "offset"),
        duplicates=duplicates,
        fast_path_rows=verdict.fast_path_rows,
    )
