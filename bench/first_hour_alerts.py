"""False alerts in a device's first readings, and recall on injected anomalies (issue 11,
item 15).

A new device's first readings are scored against a baseline of as few as
``min_baseline`` (20) readings; a MAD from so few readings is often far too small, so
those readings alerted much more often than later ones. This measures, on simulated
readings with **no injected anomalies** (so every alert is a false alert), the alert rate
(alerts / readings) by the reading's age within its device:

- by count: readings 1-60 after the device's first reading, 61-120, and later;
- by time: the device's first hour (``ts < first ts + 1 h``) and later hours;

for the anomaly-1 scale (``AnomalyConfig(small_sample_correction=False)``, the code before
the fix) and the default config (with the small-sample correction), and the ratio of the
early rate to the later one, with a 95 % interval (the early share of the alerts is
binomial given their total: Wilson interval, mapped to the ratio). Every reading is
scored from the device's first one (no history before it), as a new device is.

Then recall on labelled anomalies: the same scoring on runs with spikes and stuck
sensors injected (``anomaly_rate_per_device_day``, ``anomaly_kinds=("spike", "stuck")``),
reading level (an injected reading counts as found when it has an alert), overall and
in the devices' first hour.

Time of day: the simulator's readings follow a daily cycle (a sine with its peak at 15:00
UTC) whose slope varies over the day, and a steeper trend makes the trailing median lag
and alerts more frequent. So that a device's first hour and its later hours see the same
trend, every run is centred on 09:00 UTC, where the cycle is steepest and nearly
linear: over 4 hours its slope stays within 14 % of the peak.

All data comes from the seeded simulator (``generate``/``Simulation``); payloads are
parsed with polars' NDJSON reader into clean-table-like frames. Default threshold (0.5).

Usage: .venv/bin/python bench/first_hour_alerts.py
       [--runs 20:1000:3:1,2,3 60:2000:4:4,5 7.2:1000:2:6]
       [--recall-runs 20:200:4:11,12,13 120:400:6:14,15] [--anomalies-per-device-day 12]

A run is ``INTERVAL_S:DEVICES:HOURS:SEEDS``: DEVICES devices reporting every INTERVAL_S
seconds each (on average: the simulator draws the device of each reading at random), for
HOURS hours, once per seed. The defaults (3.6 million clean readings, 1.3 million of them in
a device's first hour; 0.6 million with anomalies) take about 1.5 minutes of CPU. The
recall runs include devices reporting every 2 minutes, whose spikes the rate rule
(3 C/min) often misses, so that they rest on the robust z.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sys
import time
from dataclasses import dataclass

import polars as pl
from scoring import frame_of  # bench/scoring.py (this folder is on sys.path)

from astra_pipeline.simulator import Simulation, SimulatorConfig
from astra_pipeline.transforms.anomaly import AnomalyConfig, alerts_from_scores, score_readings

DAY = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
STEEPEST = dt.timedelta(hours=9)
"""Time of day at which the simulator's daily cycle is steepest (and nearly linear)."""
CONFIGS = {
    "current (anomaly-1 scale)": AnomalyConfig(small_sample_correction=False),
    "fix (small-sample correction)": AnomalyConfig(),
}
AGE_BUCKETS = ("1-60", "61-120", "121+")
TIME_BUCKETS = ("first hour", "later hours")


@dataclass(frozen=True)
class Run:
    interval_s: float
    devices: int
    hours: float
    seeds: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Run:
        interval, devices, hours, seeds = text.split(":")
        return cls(
            float(interval), int(devices), float(hours), tuple(int(s) for s in seeds.split(","))
        )

    def simulator(self, seed: int, **options: object) -> SimulatorConfig:
        return SimulatorConfig(
            devices=self.devices,
            users=0,
            seed=seed,
            start=self.start,
            events_per_second=self.devices / self.interval_s,
            **options,  # type: ignore[arg-type]
        )

    @property
    def start(self) -> dt.datetime:
        """The run is centred on 09:00 UTC (see the module docstring)."""
        return DAY + STEEPEST - dt.timedelta(hours=self.hours / 2)

    @property
    def count(self) -> int:
        return int(self.hours * 3600 * self.devices / self.interval_s)


def clean_readings(run: Run, seed: int) -> pl.DataFrame:
    """Readings of a run with nothing injected; checks that the simulator injected none."""
    simulation = Simulation(run.simulator(seed), run.count)
    messages = list(simulation)
    tampered = [m for m in messages if m.kind != "valid" or m.anomaly is not None]
    if tampered or simulation.ground_truth.anomalies:
        raise AssertionError(f"seed {seed}: the simulator injected something: {tampered[:3]}")
    return frame_of([m.value for m in messages])


def scored_with_age(frame: pl.DataFrame, config: AnomalyConfig) -> pl.DataFrame:
    """Each reading's alert flag, its age (0 = the device's first reading) and buckets."""
    scores = score_readings(frame.head(0), frame, config)  # sorted by device, ts, event id
    alerted = alerts_from_scores(scores)["event_id"]
    return scores.select(
        "event_id",
        pl.col("event_id").is_in(alerted.implode()).alias("alert"),
        pl.int_range(pl.len()).over("device_id").alias("age"),
        (pl.col("ts") < pl.col("ts").min().over("device_id") + dt.timedelta(hours=1)).alias(
            "first_hour"
        ),
    ).with_columns(
        pl.when(pl.col("age") == 0)
        .then(pl.lit("0"))
        .when(pl.col("age") <= 60)
        .then(pl.lit("1-60"))
        .when(pl.col("age") <= 120)
        .then(pl.lit("61-120"))
        .otherwise(pl.lit("121+"))
        .alias("age_bucket"),
        pl.when(pl.col("first_hour"))
        .then(pl.lit("first hour"))
        .otherwise(pl.lit("later hours"))
        .alias("time_bucket"),
    )


def counts(scored: pl.DataFrame, column: str) -> dict[str, tuple[int, int]]:
    """Bucket -> (alerts, readings)."""
    grouped = scored.group_by(column).agg(pl.col("alert").sum(), pl.len())
    found = {row[0]: (int(row[1]), int(row[2])) for row in grouped.iter_rows()}
    return {bucket: found.get(bucket, (0, 0)) for bucket in ("0", *AGE_BUCKETS, *TIME_BUCKETS)}


def ratio_interval(early: tuple[int, int], late: tuple[int, int]) -> tuple[float, float, float]:
    """Rate ratio early/late with a 95 % interval: given the total of alerts, the early
    share is binomial with p = r1 n1 / (r1 n1 + r2 n2); Wilson interval for it, mapped to
    the ratio r1 / r2 = p / (1 - p) * n2 / n1."""
    (k1, n1), (k2, n2) = early, late
    k, z = k1 + k2, 1.96
    if k == 0 or n1 == 0 or n2 == 0:
        return math.nan, math.nan, math.nan
    share = k1 / k
    centre = (share + z * z / (2 * k)) / (1 + z * z / k)
    half = z * math.sqrt(share * (1 - share) / k + z * z / (4 * k * k)) / (1 + z * z / k)

    def to_ratio(p: float) -> float:
        return math.inf if p >= 1.0 else p / (1.0 - p) * n2 / n1

    point = math.inf if k2 == 0 else (k1 / n1) / (k2 / n2)
    return point, to_ratio(max(0.0, centre - half)), to_ratio(min(1.0, centre + half))


def recall(
    frame: pl.DataFrame, ids: dict[str, set[str]], config: AnomalyConfig
) -> dict[str, tuple[int, int]]:
    """Per kind (found, injected), the same in the first hour, and (false alerts,
    untouched readings)."""
    scored = scored_with_age(frame, config)
    alerted = set(scored.filter("alert")["event_id"])
    first_hour = set(scored.filter("first_hour")["event_id"])
    injected = set().union(*ids.values())
    clean = scored.filter(~pl.col("event_id").is_in(list(injected)))
    out = {kind: (len(alerted & found), len(found)) for kind, found in ids.items()}
    out["first hour, both kinds"] = (
        len(alerted & injected & first_hour),
        len(injected & first_hour),
    )
    out["false alerts"] = (int(clean["alert"].sum()), clean.height)
    return out


def per_million(pair: tuple[int, int]) -> str:
    alerts, readings = pair
    return f"{1e6 * alerts / readings:,.1f} ({alerts:,} / {readings:,})" if readings else "n/a"


def fraction(pair: tuple[int, int]) -> str:
    found, total = pair
    return f"{found / total:.3f} ({found:,} / {total:,})" if total else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--runs", nargs="+", default=["20:1000:3:1,2,3", "60:2000:4:4,5", "7.2:1000:2:6"]
    )
    parser.add_argument(
        "--recall-runs", nargs="+", default=["20:200:4:11,12,13", "120:400:6:14,15"]
    )
    parser.add_argument("--anomalies-per-device-day", type=float, default=12.0)
    args = parser.parse_args()
    cpu0 = time.process_time()
    print(f"# {' '.join(sys.argv)}")
    print(f"# nproc={os.cpu_count()}, Python {platform.python_version()}, polars {pl.__version__}")

    by_age: dict[str, dict[str, tuple[int, int]]] = {name: {} for name in CONFIGS}
    by_time: dict[str, dict[str, tuple[int, int]]] = {name: {} for name in CONFIGS}
    per_run: list[tuple[str, str, dict[str, tuple[int, int]]]] = []

    def add(total: dict[str, tuple[int, int]], part: dict[str, tuple[int, int]]) -> None:
        for key, (a, n) in part.items():
            a0, n0 = total.get(key, (0, 0))
            total[key] = (a0 + a, n0 + n)

    for text in args.runs:
        run = Run.parse(text)
        run_age: dict[str, dict[str, tuple[int, int]]] = {name: {} for name in CONFIGS}
        for seed in run.seeds:
            frame = clean_readings(run, seed)
            for name, config in CONFIGS.items():
                scored = scored_with_age(frame, config)
                add(by_age[name], counts(scored, "age_bucket"))
                add(run_age[name], counts(scored, "age_bucket"))
                add(by_time[name], counts(scored, "time_bucket"))
        for name in CONFIGS:
            per_run.append((text, name, run_age[name]))

    print("\n## False alerts on simulated readings without anomalies (alerts per million)\n")
    print(f"Runs (interval_s:devices:hours:seeds): {' '.join(args.runs)}; threshold 0.5.\n")
    header = [
        "config",
        *(f"age {b}" for b in AGE_BUCKETS),
        "1-60 / 121+",
        *TIME_BUCKETS,
        "first / later hours",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" + "---:|" * (len(header) - 1))
    for name in CONFIGS:
        age, hours = by_age[name], by_time[name]
        r_age = ratio_interval(age["1-60"], age["121+"])
        r_time = ratio_interval(hours["first hour"], hours["later hours"])
        cells = [
            name,
            *(per_million(age[b]) for b in AGE_BUCKETS),
            f"**{r_age[0]:.2f}** [{r_age[1]:.2f}, {r_age[2]:.2f}]",
            *(per_million(hours[b]) for b in TIME_BUCKETS),
            f"**{r_time[0]:.2f}** [{r_time[1]:.2f}, {r_time[2]:.2f}]",
        ]
        print("| " + " | ".join(cells) + " |")
    zero = {name: by_age[name].get("0", (0, 0)) for name in CONFIGS}
    print(
        "\n(The device's first reading itself, age 0, has nothing to compare with: "
        + ", ".join(f"{a} alerts in {n:,}" for a, n in zero.values())
        + ".) Ratios: point estimate [95 % interval]."
    )

    print("\nPer run:\n")
    print("| run | config | " + " | ".join(f"age {b}" for b in AGE_BUCKETS) + " | 1-60 / 121+ |")
    print("|---|---|" + "---:|" * (len(AGE_BUCKETS) + 1))
    for text, name, age in per_run:
        ratio = ratio_interval(age["1-60"], age["121+"])
        cells = [text, name, *(per_million(age[b]) for b in AGE_BUCKETS)]
        cells.append(f"{ratio[0]:.2f} [{ratio[1]:.2f}, {ratio[2]:.2f}]")
        print("| " + " | ".join(cells) + " |")

    results: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
    for text in args.recall_runs:
        run = Run.parse(text)
        for name in CONFIGS:
            results[("all", name)] = results.get(("all", name), {})
            results[(text, name)] = {}
        for seed in run.seeds:
            simulation = Simulation(
                run.simulator(
                    seed,
                    anomaly_rate_per_device_day=args.anomalies_per_device_day,
                    anomaly_kinds=("spike", "stuck"),
                ),
                run.count,
            )
            frame = frame_of([m.value for m in simulation])
            truth = simulation.ground_truth
            ids = {kind: set(truth.anomalous_event_ids([kind])) for kind in ("spike", "stuck")}
            for name, config in CONFIGS.items():
                measured = recall(frame, ids, config)
                add(results[("all", name)], measured)
                add(results[(text, name)], measured)

    print(
        f"\n## Recall on injected anomalies ({' '.join(args.recall_runs)}, "
        f"{args.anomalies_per_device_day:g} per device-day, spikes and stuck sensors)\n"
    )
    print(
        "| runs | config | spike recall | stuck recall | first-hour recall (both) "
        "| false alerts per million (untouched readings) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for runs, name in [(runs, name) for runs in ("all", *args.recall_runs) for name in CONFIGS]:
        r = results[(runs, name)]
        cells = [
            runs,
            name,
            fraction(r["spike"]),
            fraction(r["stuck"]),
            fraction(r["first hour, both kinds"]),
            per_million(r["false alerts"]),
        ]
        print("| " + " | ".join(cells) + " |")
    print(f"\nCPU time: {time.process_time() - cpu0:.0f} s")


if __name__ == "__main__":
    main()
