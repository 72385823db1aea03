"""From validated events to the clean tables: derived fields and de-duplication.

Pure polars: no I/O, no Dagster, no Kafka, no DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

# Magnus-formula constants over water (Alduchov & Eskridge 1996), valid -45..60 C.
MAGNUS_A = 17.62
MAGNUS_B = 243.12


def dew_point_c(temperature_c: pl.Expr, humidity_pct: pl.Expr) -> pl.Expr:
    """Dew point by the Magnus formula; null at 0 % humidity, where it is undefined."""
    gamma = (humidity_pct / 100.0).log() + MAGNUS_A * temperature_c / (MAGNUS_B + temperature_c)
    return pl.when(humidity_pct > 0).then(MAGNUS_B * gamma / (MAGNUS_A - gamma)).otherwise(None)


def heat_index_c(temperature_c: pl.Expr, humidity_pct: pl.Expr) -> pl.Expr:
    """Apparent temperature by the US National Weather Service's algorithm.

    Steadman's simple formula, and the Rothfusz regression with its two adjustments
    where the simple result is 80 F or more; computed in Fahrenheit as the NWS defines
    it, returned in Celsius.
    """
    t = temperature_c * 9.0 / 5.0 + 32.0
    rh = humidity_pct
    simple = 0.5 * (t + 61.0 + (t - 68.0) * 1.2 + rh * 0.094)
    rothfusz = (
        -42.379
        + 2.04901523 * t
        + 10.14333127 * rh
        - 0.22475541 * t * rh
        - 0.00683783 * t * t
        - 0.05481717 * rh * rh
        + 0.00122874 * t * t * rh
        + 0.00085282 * t * rh * rh
        - 0.00000199 * t * t * rh * rh
    )
    dry = ((13.0 - rh) / 4.0) * ((17.0 - (t - 95.0).abs()) / 17.0).clip(lower_bound=0).sqrt()
    humid = ((rh - 85.0) / 10.0) * ((87.0 - t) / 5.0)
    adjusted = (
        pl.when((rh < 13) & (t >= 80) & (t <= 112))
        .then(rothfusz - dry)
        .when((rh > 85) & (t >= 80) & (t <= 87))
        .then(rothfusz + humid)
        .otherwise(rothfusz)
    )
    fahrenheit = pl.when((simple + t) / 2.0 >= 80.0).then(adjusted).otherwise(simple)
    return (fahrenheit - 32.0) * 5.0 / 9.0


def _time_parts() -> list[pl.Expr]:
    return [
        pl.col("ts").dt.date().alias("event_date"),
        pl.col("ts").dt.truncate("1h").alias("event_hour"),
    ]


def enrich_sensor_readings(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        dew_point_c(pl.col("temperature_c"), pl.col("humidity_pct")).alias("dew_point_c"),
        heat_index_c(pl.col("temperature_c"), pl.col("humidity_pct")).alias("heat_index_c"),
        *_time_parts(),
    )


def enrich_user_activity(frame: pl.DataFrame) -> pl.DataFrame:
    revenue = (
        pl.when(pl.col("action") == "purchase").then(pl.col("amount")).otherwise(0.0).fill_null(0.0)
    )
    return frame.with_columns(revenue.alias("revenue"), *_time_parts())


@dataclass(frozen=True)
class Deduplicated:
    kept: pl.DataFrame
    duplicates: pl.DataFrame
    """Later copies of an event_id seen earlier in the same batch."""


def deduplicate(frame: pl.DataFrame, order_by: list[str]) -> Deduplicated:
    """Keep the first occurrence of each event_id in ``order_by`` order."""
    ordered = frame.sort(order_by)
    first = ordered.select(pl.col("event_id").is_first_distinct()).to_series()
    return Deduplicated(kept=ordered.filter(first), duplicates=ordered.filter(~first))
