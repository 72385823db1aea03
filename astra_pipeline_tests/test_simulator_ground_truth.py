"""Tests for the simulator's opt-in ground truth: declining users and injected anomalies.

The payloads are decoded with ``json`` and the ground truth is checked against them: a
spike is far from its neighbours, a stuck sensor repeats itself, a silent device sends
nothing, a declining user stops. Defaults are pinned byte for byte to the output of the
simulator before these options existed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import statistics
from collections import Counter, defaultdict
from typing import Any

import polars as pl
import pytest

from astra_pipeline.simulator import (
    ANOMALY_KINDS,
    GroundTruth,
    SimulatedMessage,
    Simulation,
    SimulatorConfig,
    generate,
    simulate,
)
from astra_pipeline.transforms.churn import device_health_features

START = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
ANOMALIES = SimulatorConfig(
    devices=20,
    users=0,
    seed=11,
    start=START,
    events_per_second=1.0,
    anomaly_rate_per_device_day=12.0,
)
"""20 devices reporting every ~20 s for 8 hours, all four kinds of anomaly."""
ANOMALY_COUNT = 8 * 3600


@pytest.fixture(scope="module")
def injected() -> tuple[list[SimulatedMessage], GroundTruth]:
    return simulate(ANOMALIES, ANOMALY_COUNT)


def decoded(messages: list[SimulatedMessage]) -> list[dict[str, Any]]:
    return [json.loads(m.value) | {"_label": m.anomaly} for m in messages]


def by_device(messages: list[SimulatedMessage]) -> dict[str, list[dict[str, Any]]]:
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in decoded(messages):
        event["_ts"] = dt.datetime.fromisoformat(event["ts"])
        series[event["device_id"]].append(event)
    return series


# --- defaults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "digest"),
    [
        (
            {
                "seed": 7,
                "malformed_fraction": 0.05,
                "duplicate_fraction": 0.05,
                "late_fraction": 0.05,
            },
            "1aa0155a2fdf01916c00f9f3a2c80609de95792141485f7286ce7b150d76f7ed",
        ),
        (
            {"devices": 3, "users": 5, "seed": 2, "events_per_second": 0.01},
            "1ac92b7b683a2e5292d74128ee6053aadbca49b1631caa9d30c95edf883662c8",
        ),
    ],
)
def test_defaults_leave_the_traffic_byte_for_byte_unchanged(
    options: dict[str, Any], digest: str
) -> None:
    """The digests were taken from the simulator before the ground-truth options."""
    start = dt.datetime(2026, 11, 23, 7, 45, tzinfo=dt.UTC)
    messages, truth = simulate(SimulatorConfig(start=start, **options), 5000)
    sha = hashlib.sha256()
    for m in messages:
        sha.update(m.key + b"|" + m.value + b"|" + m.kind.encode() + b"\n")
    assert sha.hexdigest() == digest
    assert all(m.anomaly is None for m in messages)
    assert truth == GroundTruth((), ())


def test_generate_and_simulate_agree(injected: tuple[list[SimulatedMessage], GroundTruth]) -> None:
    messages, _ = injected
    assert list(generate(ANOMALIES, ANOMALY_COUNT)) == messages


def test_a_simulation_runs_once() -> None:
    simulation = Simulation(ANOMALIES, 10)
    assert len(list(simulation)) == 10
    with pytest.raises(RuntimeError, match="once"):
        iter(simulation)


def test_same_seed_same_truth_other_seed_other_truth(
    injected: tuple[list[SimulatedMessage], GroundTruth],
) -> None:
    messages, truth = injected
    again = simulate(ANOMALIES, ANOMALY_COUNT)
    assert again == (messages, truth)
    other = simulate(dataclasses.replace(ANOMALIES, seed=12), ANOMALY_COUNT)[1]
    assert other.anomalies != truth.anomalies


# --- injected anomalies -------------------------------------------------------------------------


def test_labels_on_messages_match_the_ground_truth(
    injected: tuple[list[SimulatedMessage], GroundTruth],
) -> None:
    messages, truth = injected
    labelled = {m.event_id: m.anomaly for m in messages if m.anomaly}
    expected = {e: a.kind for a in truth.anomalies for e in a.event_ids}
    assert labelled == expected
    assert truth.anomalous_event_ids() == frozenset(labelled)
    assert truth.anomalous_event_ids(["spike"]) == {e for e, k in labelled.items() if k == "spike"}
    kinds = Counter(a.kind for a in truth.anomalies)
    assert set(kinds) == set(ANOMALY_KINDS)
    # Poisson arrivals at 12 per device-day: 20 devices x 1/3 day -> about 80, fewer
    # because a device has one anomaly at a time and some windows see no reading.
    assert 40 <= len(truth.anomalies) <= 100
    for anomaly in truth.anomalies:
        assert anomaly.start <= anomaly.end
        assert (anomaly.kind == "silent") == (not anomaly.event_ids)


def test_spikes_stand_out_from_their_neighbours(
    injected: tuple[list[SimulatedMessage], GroundTruth],
) -> None:
    messages, truth = injected
    series = by_device(messages)
    spikes = [a for a in truth.anomalies if a.kind == "spike"]
    assert spikes
    for spike in spikes:
        (event_id,) = spike.event_ids
        events = series[spike.device_id]
        index = next(i for i, e in enumerate(events) if e["event_id"] == event_id)
        assert events[index]["_ts"] == spike.start == spike.end
        neighbours = [e["temperature_c"] for e in events[max(0, index - 5) : index + 6]]
        del neighbours[min(index, 5)]
        assert abs(events[index]["temperature_c"] - statistics.median(neighbours)) >= 5.0


def test_stuck_sensors_repeat_the_last_values_sent(
    injected: tuple[list[SimulatedMessage], GroundTruth],
) -> None:
    messages, truth = injected
    series = by_device(messages)
    stuck = [a for a in truth.anomalies if a.kind == "stuck"]
    assert stuck
    for anomaly in stuck:
        events = series[anomaly.device_id]
        ids = set(anomaly.event_ids)
        inside = [i for i, e in enumerate(events) if e["event_id"] in ids]
        assert inside == list(range(inside[0], inside[-1] + 1))  # consecutive readings
        frozen = {(events[i]["temperature_c"], events[i]["humidity_pct"]) for i in inside}
        assert len(frozen) == 1
        if inside[0] > 0:
            before = events[inside[0] - 1]
            assert frozen == {(before["temperature_c"], before["humidity_pct"])}
        assert all(anomaly.start <= events[i]["_ts"] <= anomaly.end for i in inside)
        # Every reading of the device inside the window is stuck.
        assert all(e["event_id"] in ids for e in events if anomaly.start <= e["_ts"] <= anomaly.end)


def test_drifts_move_away_over_their_window(
    injected: tuple[list[SimulatedMessage], GroundTruth],
) -> None:
    messages, truth = injected
    series = by_device(messages)
    shifts = []
    for anomaly in (a for a in truth.anomalies if a.kind == "drift"):
        events = series[anomaly.device_id]
        ids = set(anomaly.event_ids)
        inside = [i for i, e in enumerate(events) if e["event_id"] in ids]
        if len(inside) < 60 or inside[0] < 5:
            continue
        before = statistics.mean(e["temperature_c"] for e in events[inside[0] - 5 : inside[0]])
        last = statistics.mean(events[i]["temperature_c"] for i in inside[-5:])
        first = statistics.mean(events[i]["temperature_c"] for i in inside[:5])
        shifts.append((abs(first - before), abs(last - before)))
    assert len(shifts) >= 3
    # 3-8 C per hour for at least 20 minutes (60 readings): at least 1 C by the end,
    # far more than at the start, whatever the daily cycle did meanwhile.
    assert statistics.mean(end for _, end in shifts) >= 2.0
    assert sum(end > start for start, end in shifts) >= 0.8 * len(shifts)


def test_silent_devices_send_nothing_and_show_in_device_health(
    injected: tuple[list[SimulatedMessage], GroundTruth],
) -> None:
    messages, truth = injected
    series = by_device(messages)
    silent = [a for a in truth.anomalies if a.kind == "silent"]
    assert silent
    for anomaly in silent:
        assert not [
            e for e in series[anomaly.device_id] if anomaly.start <= e["_ts"] <= anomaly.end
        ]
    frame = pl.DataFrame(
        [{k: e[k] for k in ("device_id", "ts", "battery_pct", "status")} for e in decoded(messages)]
    ).with_columns(pl.col("ts").str.to_datetime(time_zone="UTC", time_unit="us"))
    health = device_health_features(frame, START.date(), expected_interval_s=20.0)
    longest = dict(zip(health["device_id"], health["longest_silence_s"], strict=True))
    for anomaly in silent:
        assert longest[anomaly.device_id] >= (anomaly.end - anomaly.start).total_seconds()


def test_only_the_configured_kinds_are_injected() -> None:
    config = dataclasses.replace(ANOMALIES, anomaly_kinds=("spike", "stuck"))
    _, truth = simulate(config, 4 * 3600)
    assert {a.kind for a in truth.anomalies} == {"spike", "stuck"}


def test_malformed_messages_carry_no_anomaly() -> None:
    config = dataclasses.replace(ANOMALIES, malformed_fraction=0.2, duplicate_fraction=0.1)
    messages, truth = simulate(config, 4 * 3600)
    assert all(m.anomaly is None for m in messages if m.kind == "malformed")
    originals = {m.event_id for m in messages if m.kind in ("valid", "late")}
    assert truth.anomalous_event_ids() <= originals
    resent = [m for m in messages if m.kind == "duplicate" and m.anomaly]
    assert all(m.event_id in truth.anomalous_event_ids() for m in resent)


# --- declining users --------------------------------------------------------------------------

DECLINE = SimulatorConfig(
    devices=0,
    users=150,
    seed=5,
    start=START,
    events_per_second=100_000 / (45 * 86_400),
    declining_fraction=0.3,
    decline_start_days=(2.0, 31.0),
    session_continuation=0.9,
)


@pytest.fixture(scope="module")
def declining() -> tuple[list[dict[str, Any]], GroundTruth]:
    messages, truth = simulate(DECLINE, 100_000)
    return decoded(messages), truth


def test_declining_users_are_named_and_then_stop(
    declining: tuple[list[dict[str, Any]], GroundTruth],
) -> None:
    events, truth = declining
    assert len(truth.declining_users) == 45  # floor(0.3 * 150)
    schedule = {u.user_id: u for u in truth.declining_users}
    assert len(schedule) == 45
    for user in truth.declining_users:
        assert START + dt.timedelta(days=2) <= user.decline_start <= START + dt.timedelta(days=31)
        assert dt.timedelta(days=3) <= user.stop - user.decline_start <= dt.timedelta(days=12)
    for event in events:
        user = schedule.get(event["user_id"])
        if user is not None:
            assert dt.datetime.fromisoformat(event["ts"]) < user.stop


def test_declining_users_fade_before_they_stop(
    declining: tuple[list[dict[str, Any]], GroundTruth],
) -> None:
    """Per declining user, the daily event rate in the second half of the decline is
    well below the rate before it started."""
    events, truth = declining
    times: dict[str, list[dt.datetime]] = defaultdict(list)
    for event in events:
        times[event["user_id"]].append(dt.datetime.fromisoformat(event["ts"]))
    before_rates, late_rates = [], []
    for user in truth.declining_users:
        halfway = user.decline_start + (user.stop - user.decline_start) / 2
        stamps = times[user.user_id]
        before_days = (user.decline_start - START) / dt.timedelta(days=1)
        late_days = (user.stop - halfway) / dt.timedelta(days=1)
        before_rates.append(sum(t < user.decline_start for t in stamps) / before_days)
        late_rates.append(sum(halfway <= t < user.stop for t in stamps) / late_days)
    assert statistics.mean(late_rates) < 0.35 * statistics.mean(before_rates)


def test_other_users_stay_active(declining: tuple[list[dict[str, Any]], GroundTruth]) -> None:
    events, truth = declining
    leaving = {u.user_id for u in truth.declining_users}
    last_week = START + dt.timedelta(days=38)
    recent = {e["user_id"] for e in events if dt.datetime.fromisoformat(e["ts"]) >= last_week}
    stayers = {f"user-{n:05d}" for n in range(150)} - leaving
    assert len(recent & stayers) >= 0.95 * len(stayers)


def test_session_continuation_keeps_sessions_together_at_low_rates() -> None:
    slow = SimulatorConfig(devices=0, users=150, seed=5, start=START, events_per_second=1 / 60)
    plain = decoded(simulate(slow, 5000)[0])
    together = decoded(simulate(dataclasses.replace(slow, session_continuation=0.9), 5000)[0])

    def events_per_session(events: list[dict[str, Any]]) -> float:
        return len(events) / len({e["session_id"] for e in events})

    assert events_per_session(plain) < 2.0
    assert events_per_session(together) > 4.0
    # Longer sessions fill carts, so far more of them end in a purchase.
    bought = sum(e["action"] == "purchase" for e in together)
    assert bought > 2 * sum(e["action"] == "purchase" for e in plain)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"declining_fraction": 1.0}, "declining_fraction"),
        ({"decline_start_days": (5.0, 1.0)}, "decline_start_days"),
        ({"decline_length_days": (0.0, 3.0)}, "decline_length_days"),
        ({"session_continuation": 1.0}, "session_continuation"),
        ({"anomaly_rate_per_device_day": -1.0}, "anomaly_rate_per_device_day"),
        ({"anomaly_kinds": ("spike", "meteor")}, "anomaly_kinds"),
        ({"anomaly_kinds": ()}, "anomaly_kinds"),
    ],
)
def test_invalid_options_are_rejected(options: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        SimulatorConfig(**options)
