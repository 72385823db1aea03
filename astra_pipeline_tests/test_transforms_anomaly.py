"""Tests for the anomaly scores and alerts.

Small fixtures with medians, MADs and EWMAs worked out by hand (the arithmetic is in the
comments), properties that partitioned scoring relies on, and the quality target on a
seeded simulation with injected anomalies (ground truth from the simulator).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import statistics
import uuid
from collections.abc import Sequence

import polars as pl
import pytest

from astra_pipeline.simulator import SimulatorConfig, simulate
from astra_pipeline.transforms.anomaly import (
    ALERT_NAMESPACE,
    ALERT_SCHEMA,
    SCORE_SCHEMA,
    AnomalyConfig,
    MetricLimits,
    alerts_from_scores,
    score_readings,
)

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
TEMPERATURE = MetricLimits(
    "temperature_c", scale_floor=0.05, rate_limit_per_min=3.0, physics_jump=20.0
)
SMALL = AnomalyConfig(metrics=(TEMPERATURE,), window=5, min_baseline=3, stuck_readings=3)
"""Temperature only, a 5-reading baseline: small enough to compute by hand."""


def readings(
    values: Sequence[float],
    step_s: float = 60.0,
    device: str = "dev-00001",
    start: dt.datetime = T0,
    first_offset: int = 0,
) -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame(
        {
            "event_id": [f"{device}-e{first_offset + i:04d}" for i in range(n)],
            "device_id": [device] * n,
            "ts": [start + dt.timedelta(seconds=step_s * i) for i in range(n)],
            "temperature_c": list(values),
            "humidity_pct": [50.0 + 0.7 * (i % 5) for i in range(n)],
            "topic": ["events_raw"] * n,
            "partition": [3] * n,
            "offset": [1000 + first_offset + i for i in range(n)],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC"), "partition": pl.Int32},
    )


def score(frame: pl.DataFrame, config: AnomalyConfig = SMALL) -> pl.DataFrame:
    return score_readings(frame.head(0), frame, config)


def ewma_by_hand(values: Sequence[float], gap_minutes: float, half_life_minutes: float) -> float:
    """Time-weighted EWMA: e = e + (1 - 0.5 ** (gap / half_life)) * (x - e)."""
    weight = 1.0 - 0.5 ** (gap_minutes / half_life_minutes)
    mean = values[0]
    for value in values[1:]:
        mean += weight * (value - mean)
    return mean


# --- robust z, scale fallbacks, EWMA, score mapping ---------------------------------------


def raw_rule(window: int, min_baseline: int) -> AnomalyConfig:
    """Temperature only, stuck after 3 equal values, and the plain MAD scale: no
    small-sample widening, so hand computations and the brute force apply as written
    (test_anomaly_first_hour.py covers the widening)."""
    return AnomalyConfig(
        metrics=(TEMPERATURE,),
        window=window,
        min_baseline=min_baseline,
        stuck_readings=3,
        small_sample_correction=False,
    )


def test_robust_z_against_median_and_mad_by_hand() -> None:
    out = score(readings([20.0, 20.4, 19.8, 20.2, 21.0, 26.0]))
    last = out.row(5, named=True)
    # Baseline of the last reading: 20.0 20.4 19.8 20.2 21.0 -> sorted 19.8 20.0 20.2 20.4
    # 21.0, median 20.2; |deviations| 0.2 0.2 0.4 0.0 0.8 -> sorted 0 .2 .2 .4 .8, MAD 0.2.
    scale = 1.4826 * 0.2
    z = (26.0 - 20.2) / scale  # 19.5606
    assert last["baseline_median"] == pytest.approx(20.2)
    assert last["baseline_scale"] == pytest.approx(scale)
    assert last["robust_z"] == pytest.approx(z)
    # No value of the baseline is clipped (each is within its own median +- 6 scales), so
    # the EWMA is the plain one of 20.0 .. 21.0, one minute apart, half-life 10 minutes.
    ewma = ewma_by_hand([20.0, 20.4, 19.8, 20.2, 21.0], 1.0, 10.0)
    assert ewma == pytest.approx(20.08956, abs=1e-5)
    deviation = (26.0 - ewma) / scale
    assert last["ewma_deviation"] == pytest.approx(deviation)
    assert last["rate_per_min"] == pytest.approx(5.0)
    # Components: z 19.56/25.56 = 0.7653, EWMA 19.93/25.93 = 0.7686, rate flag 0.6.
    assert last["score"] == pytest.approx(deviation / (deviation + 6.0))
    assert last["driver"] == "ewma"
    assert last["metric"] == "temperature_c"
    assert last["value"] == 26.0


def test_too_short_a_baseline_gives_no_z() -> None:
    out = score(readings([20.0, 20.1, 20.2]))
    assert out["robust_z"].null_count() == 3
    assert out["score"].to_list() == [0.0, 0.0, 0.0]
    assert out["driver"].to_list() == ["none"] * 3
    assert out["metric"].null_count() == 3


def test_mad_zero_falls_back_to_mean_absolute_deviation() -> None:
    out = score(readings([20.0, 20.6, 20.0, 19.4, 20.0, 21.0]))
    last = out.row(5, named=True)
    # Baseline 20.0 20.6 20.0 19.4 20.0: median 20.0, |dev| 0 .6 0 .6 0 -> MAD 0;
    # mean absolute deviation 1.2 / 5 = 0.24; scale 1.2533 * 0.24 = 0.300792.
    assert last["baseline_scale"] == pytest.approx(1.2533 * 0.24)
    assert last["robust_z"] == pytest.approx(1.0 / 0.300792)


def test_constant_baseline_falls_back_to_the_floor() -> None:
    # stuck_readings above the series length, so the equal values stay in the baseline.
    config = AnomalyConfig(metrics=(TEMPERATURE,), window=5, min_baseline=3, stuck_readings=10)
    out = score(readings([20.0] * 5 + [20.3]), config)
    last = out.row(5, named=True)
    # MAD 0 and mean absolute deviation 0: the floor, 0.05. z = 0.3 / 0.05 = 6; the EWMA
    # of five 20.0s is 20.0, so its deviation is 6 too; |z| = z_half maps to exactly 0.5.
    assert last["baseline_scale"] == pytest.approx(0.05)
    assert last["robust_z"] == pytest.approx(6.0)
    assert last["ewma_deviation"] == pytest.approx(6.0)
    assert last["score"] == pytest.approx(0.5)


def test_the_floor_bounds_a_tiny_scale() -> None:
    # MAD 0.01 -> 1.4826 * 0.01 = 0.0148 < floor 0.05.
    out = score(readings([20.00, 20.01, 19.99, 20.01, 19.99, 20.20]))
    assert out.row(5, named=True)["baseline_scale"] == pytest.approx(0.05)


def test_a_spike_is_clipped_out_of_the_ewma() -> None:
    values = [20.0, 20.1, 19.9, 20.0, 20.1, 24.0, 20.0]
    out = score(readings(values, step_s=30.0))
    # The 24.0 enters the EWMA clipped to its own baseline (20.0 20.1 19.9 20.0 20.1:
    # median 20.0, MAD 0.1) plus 6 scales: 20.0 + 6 * 1.4826 * 0.1 = 20.88956.
    clipped = 20.0 + 6 * 1.4826 * 0.1
    ewma = ewma_by_hand([20.0, 20.1, 19.9, 20.0, 20.1, clipped], 0.5, 10.0)
    back = out.row(6, named=True)
    # Baseline of the last reading: 20.1 19.9 20.0 20.1 24.0 -> median 20.1, |dev| 0 .2
    # .1 0 3.9 -> MAD 0.1: the spike barely moves median and MAD.
    assert back["baseline_median"] == pytest.approx(20.1)
    assert back["baseline_scale"] == pytest.approx(0.14826)
    assert back["robust_z"] == pytest.approx(-0.1 / 0.14826)
    assert back["ewma_deviation"] == pytest.approx(abs(20.0 - ewma) / 0.14826)
    assert back["score"] < 0.5


# --- rules -----------------------------------------------------------------------------------


def test_rate_of_change_uses_a_one_minute_floor_and_ignores_the_return() -> None:
    values = [20.0, 20.1, 19.9, 20.0, 20.1, 24.0, 20.0]
    out = score(readings(values, step_s=30.0))
    spike, back = out.row(5, named=True), out.row(6, named=True)
    # 30 s apart: the jump of 3.9 is divided by 1 minute, not by half a minute.
    assert spike["rate_per_min"] == pytest.approx(3.9)
    assert spike["score"] >= 0.6
    # The way back is as steep (4.0 per minute) but moves towards the baseline.
    assert back["driver"] != "rate_of_change"
    assert back["score"] < 0.5


def test_a_slow_change_is_no_rate_alarm() -> None:
    # 4 degrees over 5 minutes is 0.8 per minute: under the 3.0 limit.
    cfg = AnomalyConfig(
        metrics=(TEMPERATURE,),
        window=5,
        min_baseline=3,
        stuck_readings=3,
        z_half=1000.0,
        ewma_half=1000.0,
    )
    out = score(readings([20.0, 20.1, 19.9, 20.0, 24.0], step_s=300.0), cfg)
    last = out.row(4, named=True)
    assert last["rate_per_min"] == pytest.approx(0.8)
    assert last["driver"] in ("robust_z", "ewma")


def test_an_out_of_physics_jump_scores_one() -> None:
    out = score(readings([20.0, 20.1, 19.9, 20.0, 45.0]))
    last = out.row(4, named=True)
    assert last["score"] == 1.0
    assert last["driver"] == "physics"


def test_stuck_values_are_flagged_and_kept_out_of_the_baseline() -> None:
    values = [20.1, 20.5, 19.9, 20.3, 20.3, 20.3, 20.3, 20.3, 19.8]
    config = raw_rule(window=8, min_baseline=3)
    out = score(readings(values), config)
    # The third equal value in a row is the first one flagged.
    assert [d == "stuck" for d in out["driver"]] == [False] * 5 + [True] * 3 + [False]
    assert out["score"].to_list()[5:8] == [0.9, 0.9, 0.9]
    # Row 8 sees rows 0-7, but the run of five 20.3s was stuck by row 7 and leaves the
    # baseline whole, its first two values included: baseline 20.1 20.5 19.9, median
    # 20.1, |dev| 0 .4 .2 -> MAD 0.2.
    last = out.row(8, named=True)
    assert last["baseline_median"] == pytest.approx(20.1)
    assert last["robust_z"] == pytest.approx(-0.3 / (1.4826 * 0.2))


def test_a_run_counts_as_stuck_only_once_it_is_known_to_be() -> None:
    """Row 4 sees rows 0-3; the run starting at row 3 has one value by then and stays in
    the baseline: what row 4 gets never depends on rows after it."""
    values = [20.1, 20.5, 19.9, 20.3, 20.3, 20.3, 20.3]
    config = raw_rule(window=8, min_baseline=3)
    full = score(readings(values), config)
    cut = score(readings(values[:5]), config)
    assert full.head(5).equals(cut)
    # Row 4's baseline: 20.1 20.5 19.9 20.3 -> median (20.1 + 20.3) / 2 = 20.2.
    row = full.row(4, named=True)
    assert row["baseline_median"] == pytest.approx(20.2)


def brute_force_baseline(
    series: Sequence[float], i: int, config: AnomalyConfig
) -> tuple[float, float] | None:
    """(median, scale) of reading ``i``'s baseline, straight from the documented rule,
    one value at a time: the ``window`` readings before it, less every value whose run of
    equal values had reached ``stuck_readings`` by reading ``i - 1``."""
    baseline = []
    for j in range(max(0, i - config.window), i):
        start = j
        while start > 0 and series[start - 1] == series[j]:
            start -= 1
        end = j
        while end + 1 <= i - 1 and series[end + 1] == series[j]:
            end += 1
        if end - start + 1 < config.stuck_readings:
            baseline.append(series[j])
    if len(baseline) < config.min_baseline:
        return None
    median = statistics.median(baseline)
    deviations = [abs(v - median) for v in baseline]
    mad = statistics.median(deviations)
    floor = config.metrics[0].scale_floor
    if mad > 0:
        scale = 1.4826 * mad
    elif sum(deviations) > 0:
        scale = 1.2533 * statistics.mean(deviations)
    else:
        scale = floor
    return median, max(scale, floor)


def test_baselines_match_a_brute_force_reading_of_the_rule() -> None:
    rng = random.Random(4)
    config = raw_rule(window=7, min_baseline=2)
    series: dict[str, list[float]] = {}
    frames = []
    for n, device in enumerate(("dev-a", "dev-b", "dev-c")):
        values = [20.0]
        for _ in range(149):
            # Repeat often enough for runs of every length, stuck ones included.
            repeat = rng.random() < 0.45
            values.append(values[-1] if repeat else rng.choice([19.5, 20.0, 20.5, 21.0]))
        series[device] = values
        frames.append(
            readings(values, step_s=60.0, device=device, start=T0 + dt.timedelta(seconds=n))
        )
    out = score(pl.concat(frames), config)
    compared = 0
    for row in out.iter_rows(named=True):
        index = int(row["event_id"].rsplit("-e", 1)[1])
        expected = brute_force_baseline(series[row["device_id"]], index, config)
        if expected is None:
            assert row["robust_z"] is None
        elif row["baseline_median"] is not None:
            assert (row["baseline_median"], row["baseline_scale"]) == pytest.approx(expected)
            compared += 1
    assert compared >= 300


# --- properties partitioned scoring relies on -------------------------------------------------


def simulated_readings(devices: int = 4, count: int = 3000, **options: object) -> pl.DataFrame:
    config = SimulatorConfig(
        devices=devices,
        users=0,
        seed=3,
        start=T0,
        events_per_second=0.2,
        **options,  # type: ignore[arg-type]
    )
    messages, _ = simulate(config, count)
    return to_frame([m.value for m in messages])


def to_frame(values: Sequence[bytes]) -> pl.DataFrame:
    """Simulator payloads as clean-table rows (offset = position in the list)."""
    rows = [json.loads(v) for v in values]
    return pl.DataFrame(rows).with_columns(
        pl.col("ts").str.to_datetime(time_zone="UTC", time_unit="us"),
        pl.lit("events_raw").alias("topic"),
        pl.lit(0, dtype=pl.Int32).alias("partition"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("offset"),
    )


def test_a_partition_scored_with_its_history_matches_scoring_everything() -> None:
    frame = simulated_readings()
    cut = T0 + dt.timedelta(hours=2)
    history = frame.filter(pl.col("ts") < cut)
    partition = frame.filter(pl.col("ts") >= cut)
    together = score_readings(frame.head(0), frame).filter(pl.col("ts") >= cut)
    split = score_readings(history, partition)
    assert split.height == partition.height
    assert split.equals(together)


def test_history_rows_get_no_score_and_overlap_is_scored_once() -> None:
    frame = simulated_readings(count=400)
    partition = frame.tail(100)
    out = score_readings(frame, partition)
    assert sorted(out["event_id"]) == sorted(partition["event_id"])


def test_other_devices_do_not_change_a_device_s_scores() -> None:
    frame = simulated_readings()
    alone = frame.filter(pl.col("device_id") == "dev-00001")
    mixed = score_readings(frame.head(0), frame).filter(pl.col("device_id") == "dev-00001")
    assert mixed.equals(score_readings(alone.head(0), alone))


def test_output_keeps_the_link_to_the_raw_event() -> None:
    frame = readings([20.0, 20.1, 20.2, 45.0])
    out = score(frame)
    assert out.schema == SCORE_SCHEMA
    assert out.select("event_id", "topic", "partition", "offset").equals(
        frame.select("event_id", "topic", "partition", "offset")
    )
    assert out["score"].is_between(0.0, 1.0).all()


def test_empty_partition_gives_an_empty_frame() -> None:
    frame = readings([20.0, 20.1])
    assert score_readings(frame, frame.head(0)).schema == SCORE_SCHEMA


def test_naive_timestamps_are_rejected() -> None:
    frame = readings([20.0]).with_columns(pl.col("ts").dt.replace_time_zone(None))
    with pytest.raises(ValueError, match="time-zone-aware"):
        score(frame)


def test_other_time_zones_are_converted_to_utc() -> None:
    frame = readings([20.0, 20.1, 19.9, 20.0, 45.0])
    berlin = frame.with_columns(pl.col("ts").dt.convert_time_zone("Europe/Berlin"))
    assert score(berlin).equals(score(frame))


# --- alerts ------------------------------------------------------------------------------------


def test_alerts_are_the_readings_over_the_threshold_with_stable_ids() -> None:
    frame = readings([20.0, 20.1, 19.9, 20.0, 45.0, 20.1, 20.0])
    scores = score(frame)
    alerts = alerts_from_scores(scores, threshold=0.5)
    assert alerts.schema == ALERT_SCHEMA
    assert alerts["event_id"].to_list() == ["dev-00001-e0004"]
    alert = alerts.row(0, named=True)
    version = SMALL.rule_version
    assert alert["alert_id"] == str(uuid.uuid5(ALERT_NAMESPACE, f"dev-00001-e0004|{version}"))
    assert (alert["topic"], alert["partition"], alert["offset"]) == ("events_raw", 3, 1004)
    assert alert["reason"].startswith("physics on temperature_c: value 45.0")


def test_alerts_are_identical_when_scored_again() -> None:
    frame = simulated_readings(count=6000, anomaly_rate_per_device_day=24.0)
    first = alerts_from_scores(score_readings(frame.head(0), frame), 0.5)
    again = alerts_from_scores(
        score_readings(frame.head(0), frame.sample(fraction=1.0, shuffle=True, seed=1)), 0.5
    )
    assert first.height > 0
    assert first.equals(again)
    assert first["alert_id"].n_unique() == first.height


def test_an_alert_keeps_its_id_under_another_threshold_but_not_other_rules() -> None:
    frame = simulated_readings(count=6000, anomaly_rate_per_device_day=24.0)
    scores = score_readings(frame.head(0), frame)
    strict = alerts_from_scores(scores, 0.8)
    loose = alerts_from_scores(scores, 0.5)
    assert 0 < strict.height < loose.height
    assert set(strict["alert_id"]) <= set(loose["alert_id"])
    other_rules = AnomalyConfig(window=90)
    assert other_rules.rule_version != AnomalyConfig().rule_version
    rescored = alerts_from_scores(score_readings(frame.head(0), frame, other_rules), 0.5)
    assert not set(rescored["alert_id"]) & set(loose["alert_id"])


def test_threshold_must_be_in_range() -> None:
    with pytest.raises(ValueError, match="threshold"):
        alerts_from_scores(score(readings([20.0])), 0.0)


# --- quality against the simulator's ground truth ----------------------------------------------

QUALITY = SimulatorConfig(
    devices=20,
    users=0,
    seed=11,
    start=dt.datetime(2026, 11, 23, tzinfo=dt.UTC),
    events_per_second=1.0,
    anomaly_rate_per_device_day=12.0,
    anomaly_kinds=("spike", "stuck"),
)
"""20 devices, one reading every 20 s each, 8 hours: about 40 spikes and stuck sensors."""


def test_precision_and_recall_on_spikes_and_stuck_sensors() -> None:
    messages, truth = simulate(QUALITY, 8 * 3600)
    frame = to_frame([m.value for m in messages])
    alerts = alerts_from_scores(score_readings(frame.head(0), frame), 0.5)
    alerted = set(alerts["event_id"])
    spikes = truth.anomalous_event_ids(["spike"])
    stuck = truth.anomalous_event_ids(["stuck"])
    assert len(spikes) >= 20 and len(stuck) >= 20 * 10
    precision = len(alerted & (spikes | stuck)) / len(alerted)
    spike_recall = len(alerted & spikes) / len(spikes)
    stuck_recall = len(alerted & stuck) / len(stuck)
    assert precision >= 0.8
    assert spike_recall >= 0.8
    assert stuck_recall >= 0.8
    # Per incident: every stuck window holds alerts, and incidents (runs of alerts of one
    # device less than 5 minutes apart) mostly match an injected anomaly.
    windows = [a for a in truth.anomalies if a.kind == "stuck"]
    assert all(set(a.event_ids) & alerted for a in windows)
    incidents = (
        alerts.sort("device_id", "ts")
        .with_columns(
            ((pl.col("ts").diff() > dt.timedelta(minutes=5)).fill_null(True))
            .cum_sum()
            .over("device_id")
            .alias("incident")
        )
        .group_by("device_id", "incident")
        .agg(pl.col("event_id"))
    )
    injected = spikes | stuck
    matched = sum(bool(set(ids) & injected) for ids in incidents["event_id"].to_list())
    assert matched / incidents.height >= 0.8
