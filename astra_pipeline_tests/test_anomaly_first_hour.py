"""A device's first readings must not alert more often than its later ones (issue 11,
item 15).

A new device is scored as soon as its baseline holds ``min_baseline`` (20) readings. A
MAD from so few readings is often far too small, and without a correction those
readings alerted about ten times as often as readings with a full 60-reading baseline.

The data here is pure normal noise with a known mean and standard deviation, so every
alert is a false one and the expectations come from the noise law, not from the scorer:

- given a reading's baseline median ``m`` and scale ``s`` (as reported), the chance that
  a fresh reading of the same noise has ``|z| >= z_half`` (an alert at the default
  threshold 0.5) is ``P(x >= m + z_half s) + P(x <= m - z_half s)``, computed exactly
  with the normal law; averaged over many baselines this is the false-alert chance at
  that baseline size, which must not depend on the size;
- counted directly: the alert rate of the readings scored in a device's first hour (a
  reading a minute: baselines of 20 to 59 readings) against that of its later hours
  (full baselines), with ``z_half`` lowered to 3 so that a few hundred alerts are seen.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl

from astra_pipeline.transforms.anomaly import (
    AnomalyConfig,
    MetricLimits,
    alerts_from_scores,
    score_readings,
)

T0 = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
MEAN, SIGMA = 20.0, 0.5
QUIET = MetricLimits("temperature_c", scale_floor=0.05, rate_limit_per_min=1e9, physics_jump=1e9)
"""Temperature only, with the two jump rules out of reach: only the z and EWMA scores
can alert (the stuck rule never fires on continuous noise)."""


def noise(devices: int, readings: int, seed: int) -> pl.DataFrame:
    """``readings`` normal readings per device, a minute apart, plus each one's age
    (0 = the device's first reading)."""
    values = np.random.default_rng(seed).normal(MEAN, SIGMA, size=devices * readings)
    frame = pl.DataFrame(
        {
            "device": np.repeat(np.arange(devices), readings),
            "age": np.tile(np.arange(readings), devices),
            "temperature_c": values,
        }
    )
    return frame.select(
        pl.format("dev-{}-{}", "device", "age").alias("event_id"),
        pl.format("dev-{}", "device").alias("device_id"),
        (pl.lit(T0) + pl.duration(minutes=pl.col("age"))).dt.cast_time_unit("us").alias("ts"),
        pl.lit("events_raw").alias("topic"),
        pl.lit(0, dtype=pl.Int32).alias("partition"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("offset"),
        "temperature_c",
        "age",
    )


def scored(frame: pl.DataFrame, config: AnomalyConfig) -> pl.DataFrame:
    scores = score_readings(frame.head(0), frame, config)
    alerted = alerts_from_scores(scores)["event_id"]
    return scores.join(frame.select("event_id", "age"), on="event_id").with_columns(
        pl.col("event_id").is_in(alerted.implode()).alias("alert")
    )


def chance_of_a_false_alert(baselines: pl.DataFrame, z_half: float) -> float:
    """Mean over the baselines of P(|x - m| >= z_half * s) for x ~ N(MEAN, SIGMA)."""

    def above(x: float) -> float:
        return 0.5 * math.erfc((x - MEAN) / (SIGMA * math.sqrt(2.0)))

    chances = [
        above(m + z_half * s) + above(2 * MEAN - (m - z_half * s))
        for m, s in baselines.select("baseline_median", "baseline_scale").iter_rows()
    ]
    return sum(chances) / len(chances)


def test_the_chance_of_a_false_alert_does_not_depend_on_the_baseline_size() -> None:
    config = AnomalyConfig(metrics=(QUIET,))  # default window 60, min_baseline 20, z_half 6
    out = scored(noise(devices=2000, readings=81, seed=7), config)
    assert out["baseline_scale"].null_count() == 20 * 2000  # ages 0-19: no baseline yet
    young = out.filter(pl.col("age").is_between(20, 39))  # baselines of 20-39 readings
    full = out.filter(pl.col("age") >= 60)  # full baselines of 60 readings
    p_young = chance_of_a_false_alert(young, config.z_half)
    p_full = chance_of_a_false_alert(full, config.z_half)
    # Normal noise, full baseline: the MAD's own scatter makes |z| >= 6 far likelier than
    # the 2e-9 of a known sigma, but still rare.
    assert 1e-7 < p_full < 1e-4
    # Uncorrected, baselines of 20-39 readings made it about 25 times as likely. The
    # ratio must be near 1: not above 2, and not below 0.2 either (that would be
    # scoring young devices with a blunter threshold than the issue asks for).
    assert 0.2 <= p_young / p_full <= 2.0, (p_young, p_full)


def test_a_device_s_first_hour_alerts_as_often_as_its_later_hours() -> None:
    # z_half 3: the default threshold 0.5 is |z| >= 3, so a few hundred false alerts show;
    # the EWMA deviation is put out of reach to count the z alone.
    config = AnomalyConfig(metrics=(QUIET,), z_half=3.0, ewma_half=1e9)
    out = scored(noise(devices=1500, readings=180, seed=11), config)
    assert out.filter(pl.col("age") < 20)["alert"].sum() == 0
    first = out.filter(pl.col("age").is_between(20, 59))["alert"]  # scored, first hour
    later = out.filter(pl.col("age") >= 60)["alert"]  # hours 2 and 3
    assert first.sum() >= 200 and later.sum() >= 600
    ratio = first.mean() / later.mean()  # type: ignore[operator]
    # Poisson counts of this size put the ratio within +-0.2 of its mean at 3 standard
    # errors; uncorrected it is about 1.7.
    assert 0.75 <= ratio <= 1.3, (int(first.sum()), int(later.sum()), ratio)
