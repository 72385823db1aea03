"""Anomaly scores for sensor readings, each against its own device's trailing baseline.

Pure polars and numpy: no I/O, no Dagster, no Kafka, no DuckDB.

For every reading and every scored metric (temperature and humidity by default), with the
device's readings in time order (ties broken by event_id) and the baseline made of the
``window`` readings *before* it (never the reading itself):

- **robust z**: ``z = (x - median) / scale`` over the baseline. ``scale`` is
  ``1.4826 * MAD`` (MAD = median absolute deviation from the median; 1.4826 makes it the
  standard deviation for normal noise). When MAD is 0 (more than half the baseline has
  one value) the fallback is ``1.2533 * mean absolute deviation from the median``
  (again normal-consistent), and when that is 0 too, the metric's ``scale_floor``. The
  scale is never below the floor either: a very quiet sensor must not turn a
  0.1-degree wobble into an alarm. Readings that are part of a stuck run (see below) are
  left out of later baselines, so a frozen sensor does not become "normal". Fewer than
  ``min_baseline`` usable baseline readings: no z (a new device is not scored on it).
- **small-sample correction** (``small_sample_correction``, on by default): a scale
  estimated from ``n < window`` baseline readings is multiplied by ``c(n) >= 1`` (before
  the floor), so that for normal noise the chance of ``|z| >= z_half`` (the default alert
  threshold) is what it is with a full baseline of ``window`` readings, whatever ``n``.
  Without it a MAD from 20 readings, often far too small, made a device's first 60
  readings alert about 7 times as often as later ones (bench/first_hour_alerts.py).
  The model: ``z ~ a(n) * t(nu(n))`` (Student's t), ``nu(n) = 0.3675 n`` (the MAD's
  asymptotic efficiency at the normal: ``Var(1.4826 MAD) ~ sigma^2 / (2 * 0.3675 n)``)
  and ``a(n) = sqrt(1 + pi / (2 n))`` (the median's own error); ``c(n) = a(n) * q(n) /
  z_half`` with ``q(n)`` the two-sided t quantile at the tail probability
  ``P(|a(window) t(nu(window))| >= z_half)``, so ``c(window) = 1``: full baselines score
  as before. About 2.0 at n = 20, 1.4 at 30, 1.17 at 40, 1.06 at 50. The scale reported
  (``baseline_scale``) is the corrected one.
- **EWMA deviation**: ``|x - ewma| / scale``, where ``ewma`` is the time-weighted
  exponential mean of the device's earlier readings (half-life ``ewma_half_life``: a
  reading's weight halves every 10 minutes, however often the device reports), each
  value first clipped to its own ``median +- winsor_z * scale`` so that one spike cannot
  drag the average along. It reacts to slow drifts that the window median follows.
- **rate of change**: ``|x - previous| / max(minutes between them, 1)``; flagged above the
  metric's ``rate_limit_per_min``. The 1-minute floor keeps readings seconds apart from
  turning noise into huge per-minute rates.
- **out-of-physics jump**: ``|x - previous| > physics_jump`` within ``physics_window_s``:
  a change no real environment makes that fast.
- **stuck**: the last ``stuck_readings`` values (this one included) are all equal: zero
  variance, which live sensors with noise essentially never show.

The two jump rules flag only a move *away* from the baseline (``|x - median|`` grows): the
reading after a spike jumps back by as much as the spike did, and that return is recovery,
not a second anomaly.

Each component is mapped to [0, 1] and the reading's ``score`` is the largest over
components and metrics:

- robust z: ``|z| / (|z| + z_half)``, i.e. 0.5 at ``|z| = z_half`` (6 by default),
  rising towards 1; EWMA deviation the same with ``ewma_half``;
- rule flags: a fixed score when raised (physics 1.0, stuck 0.9, rate of change 0.6),
  0 otherwise.

``driver`` names the component that gave the score (ties go to the first of physics,
stuck, rate_of_change, robust_z, ewma) and ``metric`` the metric; ``none``/null when the
score is 0. With the default threshold 0.5 a reading alerts when ``|z| >= 6``, the EWMA
deviation is ``>= 6``, or any rule fires.

Alert ids are a UUID-5 of the event id and the rule version (this module's revision
plus a hash of the config), so scoring the same readings again under the same rules gives
the same alerts with the same ids: downstream can upsert on ``alert_id``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import uuid
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import stdtr, stdtrit

RULES_REVISION = "anomaly-2"
"""Bump when the scoring logic changes meaning: alert ids change with it."""

ALERT_NAMESPACE = uuid.UUID("5f0c7a0e-7f3b-4b7e-9a55-1d2c9a7e4b10")
"""UUID-5 namespace of alert ids (fixed forever: changing it changes every id)."""

MAD_TO_SIGMA = 1.4826
MEAN_AD_TO_SIGMA = 1.2533
MAD_EFFICIENCY = 0.3675
"""Asymptotic efficiency of the MAD scale at the normal: ``Var(1.4826 MAD) ~ sigma^2 /
(2 * 0.3675 n)``, the variance of a t-studentised scale with ``0.3675 n`` degrees of
freedom; used by the small-sample correction."""

DRIVERS = ("physics", "stuck", "rate_of_change", "robust_z", "ewma")
"""Components in tie-break order."""

TIMESTAMP = pl.Datetime("us", "UTC")
KEY_COLUMNS = ("event_id", "device_id", "ts", "topic", "partition", "offset")

SCORE_SCHEMA = pl.Schema(
    {
        "event_id": pl.String(),
        "device_id": pl.String(),
        "ts": TIMESTAMP,
        "topic": pl.String(),
        "partition": pl.Int32(),
        "offset": pl.Int64(),
        "score": pl.Float64(),
        "driver": pl.String(),
        "metric": pl.String(),
        "value": pl.Float64(),
        "baseline_median": pl.Float64(),
        "baseline_scale": pl.Float64(),
        "robust_z": pl.Float64(),
        "ewma_deviation": pl.Float64(),
        "rate_per_min": pl.Float64(),
        "rule_version": pl.String(),
    }
)
"""``score_readings`` output. ``value`` .. ``rate_per_min`` describe the driving metric
(null when the score is 0); ``robust_z`` is signed (above or below the baseline)."""

ALERT_SCHEMA = pl.Schema(
    {
        "alert_id": pl.String(),
        "event_id": pl.String(),
        "device_id": pl.String(),
        "ts": TIMESTAMP,
        "score": pl.Float64(),
        "driver": pl.String(),
        "metric": pl.String(),
        "reason": pl.String(),
        "topic": pl.String(),
        "partition": pl.Int32(),
        "offset": pl.Int64(),
        "rule_version": pl.String(),
    }
)


@dataclass(frozen=True)
class MetricLimits:
    """Per-metric settings, in the metric's own unit."""

    column: str
    scale_floor: float
    rate_limit_per_min: float
    physics_jump: float


DEFAULT_METRICS = (
    MetricLimits("temperature_c", scale_floor=0.05, rate_limit_per_min=3.0, physics_jump=20.0),
    MetricLimits("humidity_pct", scale_floor=0.1, rate_limit_per_min=15.0, physics_jump=50.0),
)


@dataclass(frozen=True)
class AnomalyConfig:
    """Scoring settings; see the module docstring for what each one does."""

    metrics: tuple[MetricLimits, ...] = DEFAULT_METRICS
    window: int = 60
    min_baseline: int = 20
    z_half: float = 6.0
    ewma_half_life: dt.timedelta = dt.timedelta(minutes=10)
    ewma_half: float = 6.0
    winsor_z: float = 6.0
    stuck_readings: int = 6
    physics_window_s: float = 600.0
    rate_score: float = 0.6
    stuck_score: float = 0.9
    physics_score: float = 1.0
    small_sample_correction: bool = True
    """Widen scales estimated from fewer than ``window`` readings (see the module
    docstring); False gives the uncorrected scale of rules revision anomaly-1."""
    history_span: dt.timedelta = dt.timedelta(hours=2)
    """How far before the partition's start callers should pass readings as ``history``:
    the EWMA forgets its start (weight 0.5 ** 12 < 0.0003 left) and the baseline window
    holds ``window`` readings for a device reporting every 2 minutes, ``min_baseline``
    for one reporting every 6. Slower devices need a longer span."""
    chunk_rows: int = 50_000
    """Rows per block of the trailing-window computation (bounds its memory)."""

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError("at least one metric is needed")
        if self.window < 1 or not 1 <= self.min_baseline <= self.window:
            raise ValueError("need window >= 1 and 1 <= min_baseline <= window")
        if self.stuck_readings < 2:
            raise ValueError("stuck_readings must be >= 2")
        if self.ewma_half_life <= dt.timedelta(0):
            raise ValueError("ewma_half_life must be positive")
        if min(self.z_half, self.ewma_half, self.winsor_z) <= 0:
            raise ValueError("z_half, ewma_half and winsor_z must be positive")
        if any(m.scale_floor <= 0 for m in self.metrics):
            raise ValueError("scale_floor must be positive")

    @property
    def rule_version(self) -> str:
        """The code revision plus a hash of every setting that changes scores."""
        settings = repr((self.metrics, self.window, self.min_baseline, self.z_half))
        settings += repr((self.ewma_half_life, self.ewma_half, self.winsor_z, self.stuck_readings))
        settings += repr((self.physics_window_s, self.rate_score, self.stuck_score))
        settings += repr((self.physics_score, self.small_sample_correction))
        return f"{RULES_REVISION}:{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def score_readings(
    history: pl.DataFrame, readings: pl.DataFrame, config: AnomalyConfig | None = None
) -> pl.DataFrame:
    """Score every row of ``readings`` (schema :data:`SCORE_SCHEMA`, sorted by device,
    time, event id).

    ``history`` holds earlier readings of the same devices (those of
    ``config.history_span`` before the partition's start; more is harmless); it is
    baseline only and gets no scores. A reading present in both is
    scored as part of ``readings``. Both need the columns of clean.sensor_readings that
    are used here: event_id, device_id, ts, topic, partition, offset and the metrics.
    """
    config = config or AnomalyConfig()
    metric_columns = [m.column for m in config.metrics]
    columns = [*KEY_COLUMNS, *metric_columns]
    target = _select(readings, columns).with_columns(pl.lit(True).alias("_target"))
    if target.is_empty():
        return pl.DataFrame(schema=SCORE_SCHEMA)
    context = _select(history, columns).filter(
        ~pl.col("event_id").is_in(target["event_id"].implode())
    )
    frame = pl.concat([context.with_columns(pl.lit(False).alias("_target")), target]).sort(
        "device_id", "ts", "event_id"
    )
    rows = np.arange(frame.height)
    new_device = (
        frame.select((pl.col("device_id") != pl.col("device_id").shift(1)).fill_null(True))
        .to_series()
        .to_numpy()
    )
    device = np.cumsum(new_device) - 1
    first_row = np.flatnonzero(new_device)[device]
    ts_us = frame["ts"].dt.epoch("us").to_numpy().astype(np.float64)
    gap_s = np.where(rows > first_row, (ts_us - _shift(ts_us, 1)) / 1e6, np.nan)

    scores: list[FloatArray] = []
    labels: list[tuple[str, str]] = []
    details: list[dict[str, FloatArray]] = []
    for limits in config.metrics:
        parts = _score_metric(frame, limits, config, first_row, gap_s)
        for component in DRIVERS:
            scores.append(parts[f"s_{component}"])
            labels.append((component, limits.column))
        details.append(parts)

    stacked = np.nan_to_num(np.column_stack(scores), nan=0.0)
    best = np.argmax(stacked, axis=1)
    score = stacked[np.arange(len(best)), best]
    metric_index = best // len(DRIVERS)
    positive = score > 0.0
    code = np.where(positive, best, -1)
    drivers = {i: d for i, (d, _) in enumerate(labels)} | {-1: "none"}
    metrics = {i: m for i, (_, m) in enumerate(labels)}

    def pick(name: str) -> FloatArray:
        chosen = np.column_stack([d[name] for d in details])[np.arange(len(best)), metric_index]
        return np.where(positive, chosen, np.nan)

    result = frame.select(*KEY_COLUMNS, "_target").with_columns(
        pl.Series("score", score, dtype=pl.Float64),
        pl.Series("driver", code).replace_strict(drivers, return_dtype=pl.String),
        pl.Series("metric", code).replace_strict(metrics, default=None, return_dtype=pl.String),
        *(
            pl.Series(name, pick(name), dtype=pl.Float64, nan_to_null=True)
            for name in (
                "value",
                "baseline_median",
                "baseline_scale",
                "robust_z",
                "ewma_deviation",
                "rate_per_min",
            )
        ),
        pl.lit(config.rule_version, dtype=pl.String).alias("rule_version"),
    )
    return result.filter(pl.col("_target")).select(SCORE_SCHEMA.names()).cast(SCORE_SCHEMA)


def alerts_from_scores(scores: pl.DataFrame, threshold: float = 0.5) -> pl.DataFrame:
    """Readings whose score reaches ``threshold`` as alerts (schema :data:`ALERT_SCHEMA`).

    ``alert_id`` is UUID-5(event_id | rule_version): the same reading under the same rules
    always yields the same id, whatever the threshold or how often it is re-scored.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be within (0, 1]")
    hits = scores.filter(pl.col("score") >= threshold).sort("device_id", "ts", "event_id")
    ids = [
        str(uuid.uuid5(ALERT_NAMESPACE, f"{event_id}|{version}"))
        for event_id, version in zip(hits["event_id"], hits["rule_version"], strict=True)
    ]

    def num(name: str, digits: int) -> pl.Expr:
        return pl.col(name).round(digits).cast(pl.String).fill_null("n/a")

    reason = pl.format(
        "{} on {}: value {}, baseline median {} (scale {}), robust z {}, "
        "ewma deviation {}, change {}/min",
        "driver",
        "metric",
        num("value", 2),
        num("baseline_median", 2),
        num("baseline_scale", 3),
        num("robust_z", 1),
        num("ewma_deviation", 1),
        num("rate_per_min", 2),
    )
    return hits.with_columns(
        pl.Series("alert_id", ids, dtype=pl.String), reason.alias("reason")
    ).select(ALERT_SCHEMA.names())


@functools.lru_cache(maxsize=32)
def scale_corrections(window: int, min_baseline: int, z_half: float) -> tuple[float, ...]:
    """The small-sample factors ``c(n)`` for ``n = 0 .. window`` (1.0 below
    ``min_baseline``, where there is no z): ``c(n) = a(n) * q(n) / z_half`` with
    ``a(n) = sqrt(1 + pi / (2 n))``, ``q(n)`` the value a Student's t with
    ``MAD_EFFICIENCY * n`` degrees of freedom exceeds in absolute value with probability
    ``p = P(|t(MAD_EFFICIENCY * window)| >= z_half / a(window))``; ``c(window) = 1``."""

    def spread(n: int) -> float:
        return math.sqrt(1.0 + math.pi / (2.0 * n))

    tail = _t_two_sided_tail(z_half / spread(window), MAD_EFFICIENCY * window)
    factors = [1.0] * (window + 1)
    if not tail > 0.0:  # underflow (an enormous z_half): no threshold is ever reached
        return tuple(factors)
    for n in range(max(min_baseline, 1), window):
        quantile = _t_two_sided_quantile(tail, MAD_EFFICIENCY * n)
        factors[n] = max(1.0, spread(n) * quantile / z_half)
    return tuple(factors)


def _t_two_sided_tail(x: float, dof: float) -> float:
    """``P(|T| >= x)`` for Student's t with ``dof`` (real, > 0) degrees of freedom."""
    return float(2.0 * stdtr(dof, -x))


def _t_two_sided_quantile(tail: float, dof: float) -> float:
    """The ``x > 0`` with ``P(|T| >= x) = tail``."""
    return float(-stdtrit(dof, tail / 2.0))


def _select(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"readings lack columns: {', '.join(missing)}")
    dtype = frame.schema["ts"]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise ValueError(f"ts must be a time-zone-aware Datetime, got {dtype}")
    metric_types = {c: pl.Float64() for c in columns[len(KEY_COLUMNS) :]}
    return frame.select(columns).with_columns(
        pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us"),
        pl.col("partition").cast(pl.Int32),
        pl.col("offset").cast(pl.Int64),
        *(pl.col(c).cast(t) for c, t in metric_types.items()),
    )


def _score_metric(
    frame: pl.DataFrame,
    limits: MetricLimits,
    config: AnomalyConfig,
    first_row: IntArray,
    gap_s: FloatArray,
) -> dict[str, FloatArray]:
    """Component scores (``s_<driver>``) and details for one metric, one row per frame row."""
    column = limits.column
    x = frame[column].to_numpy().astype(np.float64)
    runs = _equal_runs(x, first_row)
    stuck = runs.position >= config.stuck_readings

    median, mad, mean_ad, count = _trailing_stats(
        x, first_row, runs, config.window, config.stuck_readings, config.chunk_rows
    )
    floor = limits.scale_floor
    scale = np.where(mad > 0, MAD_TO_SIGMA * mad, MEAN_AD_TO_SIGMA * np.nan_to_num(mean_ad))
    if config.small_sample_correction:
        factors = np.asarray(scale_corrections(config.window, config.min_baseline, config.z_half))
        scale = scale * factors[np.clip(count, 0, config.window).astype(np.int64)]
    scale = np.maximum(scale, floor)
    enough = count >= config.min_baseline
    median = np.where(enough, median, np.nan)
    scale = np.where(enough, scale, np.nan)
    z = (x - median) / scale

    clipped = np.where(
        enough,
        np.clip(x, median - config.winsor_z * scale, median + config.winsor_z * scale),
        x,
    )
    ewma_prev = (
        frame.select("device_id", "ts")
        .with_columns(pl.Series("_clipped", clipped))
        .select(
            pl.col("_clipped")
            .ewm_mean_by("ts", half_life=config.ewma_half_life)
            .shift(1)
            .over("device_id")
        )["_clipped"]
        .to_numpy()
        .astype(np.float64)
    )
    ewma_dev = np.abs(x - ewma_prev) / scale

    rows = np.arange(len(x))
    previous = np.where(rows > first_row, _shift(x, 1), np.nan)
    before_previous = np.where(rows > first_row + 1, _shift(x, 2), np.nan)
    jump = np.abs(x - previous)
    rate = jump / np.maximum(gap_s / 60.0, 1.0)
    reference = np.where(enough, median, before_previous)
    away = np.abs(x - reference) > np.abs(previous - reference)
    rate_flag = (rate > limits.rate_limit_per_min) & away
    physics_flag = (jump > limits.physics_jump) & (gap_s <= config.physics_window_s) & away

    abs_z = np.abs(z)
    return {
        "s_physics": np.where(physics_flag, config.physics_score, 0.0),
        "s_stuck": np.where(stuck, config.stuck_score, 0.0),
        "s_rate_of_change": np.where(rate_flag, config.rate_score, 0.0),
        "s_robust_z": abs_z / (abs_z + config.z_half),
        "s_ewma": ewma_dev / (ewma_dev + config.ewma_half),
        "value": x,
        "baseline_median": median,
        "baseline_scale": scale,
        "robust_z": z,
        "ewma_deviation": ewma_dev,
        "rate_per_min": rate,
    }


@dataclass(frozen=True)
class _Runs:
    """Runs of equal consecutive values of one metric within a device, per row: the
    row's 1-based position in its run and the run's total length."""

    position: IntArray
    length: IntArray


def _equal_runs(values: FloatArray, first_row: IntArray) -> _Runs:
    rows = np.arange(len(values))
    starts_run = (rows == first_row) | (values != _shift(values, 1))
    starts = np.flatnonzero(starts_run)
    run = np.cumsum(starts_run) - 1
    lengths = np.diff(np.append(starts, len(values)))
    return _Runs(rows - starts[run] + 1, lengths[run])


def _trailing_stats(
    values: FloatArray,
    first_row: IntArray,
    runs: _Runs,
    window: int,
    stuck_readings: int,
    chunk_rows: int,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Median, MAD, mean absolute deviation from the median, and count of the baseline
    values of each row: the ``window`` rows before it of the same device (rows
    ``first_row[i] .. i-1``), less those in a stuck run as known at row ``i - 1``.

    A run counts as stuck for row ``i``'s baseline when it had reached ``stuck_readings``
    values by row ``i - 1``: an earlier, finished run by its total length, the run still
    going at ``i - 1`` by its length so far. So the whole frozen stretch leaves the
    baseline, including its first values, and nothing after ``i - 1`` is looked at (the
    score of a reading never depends on later readings).

    Exact, and vectorised by blocks: each device's values are laid out after ``window``
    NaNs, so a row's window is one slice that never reaches into another device; a
    block's windows form one (rows x window) array, sorted row-wise (NaN sorts last, so
    the first ``count`` entries are the values). Stuck runs are blanked once, by their
    total length; only rows right after the first values of a run that becomes stuck
    later (at most ``stuck_readings - 1`` per run) need those values back, and get them
    in a second, small pass. Polars' rolling group-by computes the same MAD several times
    slower.
    """
    n = len(values)
    rows = np.arange(n)
    device = np.cumsum(rows == first_row) - 1
    position = rows + window * (device + 1)
    blanked = np.where(runs.length >= stuck_readings, np.nan, values)
    padded = np.full(n + window * (int(device[-1]) + 1 if n else 0), np.nan)
    padded[position] = blanked
    windows = sliding_window_view(padded, window)
    valid = np.concatenate([[0], np.cumsum(~np.isnan(padded))])
    count = (valid[position] - valid[position - window]).astype(np.float64)

    median = np.empty(n)
    mad = np.empty(n)
    mean_ad = np.empty(n)
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        block = windows[position[lo:hi] - window]
        median[lo:hi], mad[lo:hi], mean_ad[lo:hi] = _window_stats(block, count[lo:hi])

    # Rows whose previous row sits in a run that is not stuck yet but will be: that
    # run's values so far (the last ``k`` of the window) belong in their baseline.
    previous_position = _shift(runs.position.astype(np.float64), 1)
    previous_length = _shift(runs.length.astype(np.float64), 1)
    exact = np.flatnonzero(
        (rows > first_row)
        & (previous_length >= stuck_readings)
        & (previous_position < stuck_readings)
    )
    if len(exact):
        raw = np.full_like(padded, np.nan)
        raw[position] = values
        starts = position[exact] - window
        k = np.minimum(previous_position[exact], window)
        restore = np.arange(window)[None, :] >= window - k[:, None]
        block = np.where(restore, sliding_window_view(raw, window)[starts], windows[starts])
        counts = (~np.isnan(block)).sum(axis=1).astype(np.float64)
        median[exact], mad[exact], mean_ad[exact] = _window_stats(block, counts)
        count[exact] = counts
    return median, mad, mean_ad, count


def _window_stats(
    block: FloatArray, counts: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Median, MAD and (where MAD is 0) mean absolute deviation of each row's non-NaN
    values; the mean absolute deviation is NaN where MAD is not 0 (it is not needed)."""
    median = _sorted_median(np.sort(block, axis=1), counts)
    deviation = np.abs(block - median[:, None])
    mad = _sorted_median(np.sort(deviation, axis=1), counts)
    mean_ad = np.full(len(median), np.nan)
    flat = np.flatnonzero(mad == 0)
    if len(flat):
        mean_ad[flat] = np.nansum(deviation[flat], axis=1) / counts[flat]
    return median, mad, mean_ad


def _shift(values: FloatArray, by: int) -> FloatArray:
    """``values`` moved ``by`` rows down, NaN in front."""
    shifted = np.full(len(values), np.nan)
    shifted[by:] = values[: max(len(values) - by, 0)]
    return shifted


def _sorted_median(ordered: FloatArray, counts: FloatArray | IntArray) -> FloatArray:
    """Median of the first ``counts[i]`` entries of each sorted row; NaN when empty."""
    counts = np.asarray(counts, dtype=np.int64)
    low = np.maximum((counts - 1) // 2, 0)
    high = np.maximum(counts // 2, 0)
    low_values = np.take_along_axis(ordered, low[:, None], axis=1)[:, 0]
    high_values = np.take_along_axis(ordered, high[:, None], axis=1)[:, 0]
    return np.where(counts > 0, (low_values + high_values) / 2.0, np.nan)
