"""Tests for the event simulator.

Expectations are derived independently of the simulator's internals: the simulated clock
is recomputed from the config, payloads are decoded with ``json`` and judged against the
wire contract (``parse_event``) or against the contract's ranges written out here.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import random
import re
import statistics
import sys
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from astra_pipeline import simulator
from astra_pipeline.events import EventRejected, SensorReading, parse_event
from astra_pipeline.simulator import SimulatedMessage, SimulatorConfig, generate

START = dt.datetime(2026, 11, 23, 7, 45, tzinfo=dt.UTC)
FAULTY = SimulatorConfig(
    seed=7,
    start=START,
    malformed_fraction=0.05,
    duplicate_fraction=0.05,
    late_fraction=0.05,
)
TS_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SENSOR_REQUIRED = {
    "event_type",
    "event_id",
    "device_id",
    "ts",
    "temperature_c",
    "humidity_pct",
    "battery_pct",
    "lat",
    "lon",
    "status",
}
USER_REQUIRED = {"event_type", "event_id", "user_id", "session_id", "ts", "action"}
RANGES = {
    "temperature_c": (-60, 85),
    "humidity_pct": (0, 100),
    "battery_pct": (0, 100),
    "lat": (-90, 90),
    "lon": (-180, 180),
}


def clock_at(index: int, events_per_second: float = 0.0) -> dt.datetime:
    """The simulated clock for message ``index``, as the interface documents it."""
    if events_per_second:
        return START + dt.timedelta(seconds=index / events_per_second)
    return START + dt.timedelta(milliseconds=index)


def ts_of(message: SimulatedMessage) -> dt.datetime:
    return dt.datetime.fromisoformat(json.loads(message.value)["ts"])


def originals(messages: list[SimulatedMessage]) -> list[dict[str, Any]]:
    """Decoded first sends (valid and late), in emission order."""
    return [json.loads(m.value) for m in messages if m.kind in ("valid", "late")]


@pytest.fixture(scope="module")
def faulty_small() -> list[SimulatedMessage]:
    return list(generate(FAULTY, 4000))


@pytest.fixture(scope="module")
def faulty_large() -> list[SimulatedMessage]:
    return list(generate(FAULTY, 20_000))


@pytest.fixture(scope="module")
def clean() -> list[SimulatedMessage]:
    return list(generate(SimulatorConfig(seed=3, start=START), 10_000))


# --- determinism -------------------------------------------------------------------------


def test_same_config_gives_identical_messages() -> None:
    first = list(generate(FAULTY, 3000))
    second = list(generate(FAULTY, 3000))
    assert [(m.key, m.value, m.kind) for m in first] == [(m.key, m.value, m.kind) for m in second]
    assert first == second


def test_a_prefix_is_stable_when_count_grows() -> None:
    short = list(generate(FAULTY, 500))
    long = list(generate(FAULTY, 1500))
    assert long[:500] == short


def test_different_seed_gives_different_messages() -> None:
    other = SimulatorConfig(seed=8, start=START, malformed_fraction=0.05)
    a = [m.value for m in generate(FAULTY, 500)]
    b = [m.value for m in generate(other, 500)]
    assert sum(x == y for x, y in zip(a, b, strict=True)) == 0


def test_start_none_starts_the_clock_at_wall_time() -> None:
    before = dt.datetime.now(dt.UTC)
    first = next(iter(generate(SimulatorConfig(seed=1), 1)))
    after = dt.datetime.now(dt.UTC)
    assert before - dt.timedelta(milliseconds=1) <= ts_of(first) <= after


def test_event_ids_are_uuid4_and_unique(clean: list[SimulatedMessage]) -> None:
    ids = [m.event_id for m in clean]
    assert len(set(ids)) == len(ids)
    for event_id in ids[:2000]:
        assert event_id is not None
        parsed = uuid.UUID(event_id)
        assert parsed.version == 4
        assert str(parsed) == event_id


def test_uuid_text_matches_the_stdlib_construction() -> None:
    """The fast formatter must produce exactly what uuid.UUID(version=4) would."""
    fast, reference = random.Random(99), random.Random(99)
    for _ in range(200):
        expected = str(uuid.UUID(int=reference.getrandbits(128), version=4))
        assert simulator._uuid4(fast) == expected


# --- the contract ------------------------------------------------------------------------


def test_every_well_formed_message_passes_the_contract(
    faulty_small: list[SimulatedMessage],
) -> None:
    checked = 0
    for index, message in enumerate(faulty_small):
        if message.kind == "malformed":
            continue
        event = parse_event(message.value, now=clock_at(index))
        assert event.event_id == message.event_id
        source = event.device_id if isinstance(event, SensorReading) else event.user_id
        assert message.key == source.encode()
        assert event.extra == {}
        checked += 1
    assert checked > 3500


def test_every_malformed_message_is_rejected(faulty_small: list[SimulatedMessage]) -> None:
    kinds: Counter[str] = Counter()
    for index, message in enumerate(faulty_small):
        if message.kind != "malformed":
            continue
        assert message.event_id is None
        assert re.fullmatch(rb"(dev|user)-\d{5}", message.key)
        with pytest.raises(EventRejected):
            parse_event(message.value, now=clock_at(index))
        kinds[message.malformed_kind or ""] += 1
    assert set(kinds) == set(simulator.MALFORMED_KINDS)


def _decodes(raw: bytes) -> bool:
    try:
        json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


def _wrong_types(obj: dict[str, Any]) -> list[str]:
    """Fields whose JSON type the contract forbids (strict: no string numbers, no bools)."""
    numeric = ("temperature_c", "humidity_pct", "battery_pct", "lat", "lon", "amount")
    textual = ("event_id", "device_id", "user_id", "session_id", "ts", "status", "action")
    bad = [
        name
        for name in numeric
        if name in obj
        and obj[name] is not None
        and (isinstance(obj[name], bool) or not isinstance(obj[name], int | float))
    ]
    bad += [name for name in textual if name in obj and not isinstance(obj[name], str)]
    return bad


def _out_of_range(obj: dict[str, Any]) -> list[str]:
    bad = [
        name
        for name, (low, high) in RANGES.items()
        if isinstance(obj.get(name), int | float) and not low <= obj[name] <= high
    ]
    if isinstance(obj.get("amount"), int | float) and obj["amount"] < 0:
        bad.append("amount")
    return bad


def test_malformed_messages_are_broken_the_way_they_say(
    faulty_large: list[SimulatedMessage],
) -> None:
    for index, message in enumerate(faulty_large):
        if message.kind != "malformed":
            continue
        how = message.malformed_kind
        if how == "bad_json":
            assert not _decodes(message.value)
            continue
        obj = json.loads(message.value)
        required = SENSOR_REQUIRED if message.key.startswith(b"dev-") else USER_REQUIRED
        if how == "missing_field":
            assert len(required - set(obj)) == 1
        elif how == "out_of_range":
            assert _out_of_range(obj)
        elif how == "wrong_type":
            assert _wrong_types(obj)
        else:
            assert how == "future_ts"
            ahead = dt.datetime.fromisoformat(obj["ts"]) - clock_at(index)
            assert ahead >= dt.timedelta(minutes=10)


# --- shares --------------------------------------------------------------------------------


def test_fault_fractions_are_within_tolerance(faulty_large: list[SimulatedMessage]) -> None:
    kinds = Counter(m.kind for m in faulty_large)
    total = len(faulty_large)
    assert set(kinds) == {"valid", "late", "duplicate", "malformed"}
    assert abs(kinds["malformed"] / total - 0.05) < 0.01
    assert abs(kinds["duplicate"] / total - 0.05) < 0.01
    assert abs(kinds["late"] / (kinds["valid"] + kinds["late"]) - 0.05) < 0.01


def test_malformed_kinds_are_all_well_represented(faulty_large: list[SimulatedMessage]) -> None:
    kinds = Counter(m.malformed_kind for m in faulty_large if m.kind == "malformed")
    total = sum(kinds.values())
    for how in simulator.MALFORMED_KINDS:
        assert kinds[how] / total > 0.12


def test_no_faults_unless_asked(clean: list[SimulatedMessage]) -> None:
    assert {m.kind for m in clean} == {"valid"}
    assert all(m.malformed_kind is None for m in clean)


def test_traffic_mix_is_forty_percent_sensors(clean: list[SimulatedMessage]) -> None:
    sensors = sum(m.key.startswith(b"dev-") for m in clean)
    assert abs(sensors / len(clean) - 0.4) < 0.02


def test_devices_only_or_users_only() -> None:
    only_devices = list(generate(SimulatorConfig(users=0, start=START), 300))
    only_users = list(generate(SimulatorConfig(devices=0, start=START), 300))
    assert all(m.key.startswith(b"dev-") for m in only_devices)
    assert all(m.key.startswith(b"user-") for m in only_users)


# --- duplicates and late events ------------------------------------------------------------


def test_duplicates_resend_an_earlier_original_verbatim(
    faulty_large: list[SimulatedMessage],
) -> None:
    sent: dict[str, tuple[bytes, bytes]] = {}
    duplicates = 0
    for message in faulty_large:
        if message.kind in ("valid", "late"):
            assert message.event_id not in sent
            assert message.event_id is not None
            sent[message.event_id] = (message.key, message.value)
        elif message.kind == "duplicate":
            assert message.event_id in sent
            assert sent[message.event_id] == (message.key, message.value)
            duplicates += 1
    assert duplicates > 0


def test_late_events_are_one_to_thirty_minutes_behind_the_clock(
    faulty_large: list[SimulatedMessage],
) -> None:
    late = 0
    for index, message in enumerate(faulty_large):
        if message.kind == "late":
            behind = clock_at(index) - ts_of(message)
            assert dt.timedelta(minutes=1) <= behind <= dt.timedelta(minutes=30, milliseconds=1)
            late += 1
        elif message.kind == "valid":
            assert ts_of(message) == clock_at(index)
    assert late > 0


# --- the clock -----------------------------------------------------------------------------


def test_timestamps_follow_the_configured_rate() -> None:
    config = SimulatorConfig(seed=2, start=START, events_per_second=10)
    for index, message in enumerate(generate(config, 500)):
        raw_ts = json.loads(message.value)["ts"]
        assert TS_PATTERN.match(raw_ts)
        assert dt.datetime.fromisoformat(raw_ts) == clock_at(index, 10)


def test_clock_spacing_defaults_to_one_millisecond(clean: list[SimulatedMessage]) -> None:
    stamps = [json.loads(m.value)["ts"] for m in clean[:3]]
    assert stamps == [
        "2026-11-23T07:45:00.000Z",
        "2026-11-23T07:45:00.001Z",
        "2026-11-23T07:45:00.002Z",
    ]


def test_a_non_utc_start_is_converted_to_utc() -> None:
    berlin = dt.timezone(dt.timedelta(hours=1))
    config = SimulatorConfig(start=START.astimezone(berlin))
    first = next(iter(generate(config, 1)))
    assert json.loads(first.value)["ts"] == "2026-11-23T07:45:00.000Z"


# --- sensor realism ------------------------------------------------------------------------


def test_sensor_readings_are_within_plausible_ranges(clean: list[SimulatedMessage]) -> None:
    readings = [e for e in originals(clean) if e["event_type"] == "sensor_reading"]
    statuses = Counter(e["status"] for e in readings)
    for event in readings:
        assert re.fullmatch(r"dev-\d{5}", event["device_id"])
        assert 0 <= event["temperature_c"] <= 45
        for name, (low, high) in RANGES.items():
            assert low <= event[name] <= high
    assert set(statuses) <= {"ok", "degraded", "fault"}
    assert statuses["ok"] / len(readings) > 0.9
    assert statuses["degraded"] > statuses["fault"]


def test_device_position_is_fixed_with_tiny_jitter(clean: list[SimulatedMessage]) -> None:
    positions: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for event in originals(clean):
        if event["event_type"] == "sensor_reading":
            positions[event["device_id"]].append((event["lat"], event["lon"]))
    assert len(positions) == 50
    for fixes in positions.values():
        lats, lons = zip(*fixes, strict=True)
        assert max(lats) - min(lats) < 0.001
        assert max(lons) - min(lons) < 0.001


def test_battery_only_drains(clean: list[SimulatedMessage]) -> None:
    last: dict[str, float] = {}
    for event in originals(clean):
        if event["event_type"] == "sensor_reading":
            device = event["device_id"]
            assert event["battery_pct"] <= last.get(device, 100.0)
            last[device] = event["battery_pct"]


def test_temperature_peaks_in_the_afternoon_and_humidity_moves_against_it() -> None:
    """One device, one reading a minute for two days: afternoon beats night, and
    humidity is negatively correlated with temperature."""
    config = SimulatorConfig(devices=1, users=0, seed=5, start=START, events_per_second=1 / 60)
    readings = originals(list(generate(config, 2 * 24 * 60)))
    by_hour: dict[int, list[float]] = defaultdict(list)
    for event in readings:
        by_hour[dt.datetime.fromisoformat(event["ts"]).hour].append(event["temperature_c"])
    afternoon = statistics.mean(t for h in (13, 14, 15, 16) for t in by_hour[h])
    night = statistics.mean(t for h in (1, 2, 3, 4) for t in by_hour[h])
    assert afternoon - night > 2.0
    peak_hour = max(by_hour, key=lambda h: statistics.mean(by_hour[h]))
    assert 13 <= peak_hour <= 17
    temps = [e["temperature_c"] for e in readings]
    humidity = [e["humidity_pct"] for e in readings]
    assert statistics.correlation(temps, humidity) < -0.5


# --- user realism --------------------------------------------------------------------------


def test_purchases_have_a_positive_two_decimal_amount_in_eur(
    clean: list[SimulatedMessage],
) -> None:
    purchases = [m for m in clean if b'"action":"purchase"' in m.value]
    assert purchases
    for message in purchases:
        assert re.search(rb'"amount":\d+\.\d{2}[,}]', message.value)
        event = json.loads(message.value)
        assert event["amount"] > 0
        assert event["currency"] == "EUR"
    others = [json.loads(m.value) for m in clean if b'"action":"purchase"' not in m.value]
    assert not any("amount" in e for e in others)


def test_sessions_look_like_sessions(clean: list[SimulatedMessage]) -> None:
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in originals(clean):
        if event["event_type"] == "user_activity":
            assert re.fullmatch(r"user-\d{5}", event["user_id"])
            assert re.fullmatch(r"s-[0-9a-f]+", event["session_id"])
            sessions[event["session_id"]].append(event)
    actions = Counter(e["action"] for events in sessions.values() for e in events)
    assert set(actions) == {"page_view", "add_to_cart", "purchase", "login", "logout"}
    assert actions["page_view"] > actions["add_to_cart"] > actions["purchase"]
    multi_event = 0
    for events in sessions.values():
        assert len({e["user_id"] for e in events}) == 1
        assert events[0]["action"] in ("login", "page_view")
        assert all(e["action"] != "logout" for e in events[:-1])
        assert all(e["action"] != "login" for e in events[1:])
        multi_event += len(events) > 2
    assert multi_event > len(sessions) / 3


def test_a_long_gap_starts_a_new_session() -> None:
    """One user, one event every 31 minutes: every event opens a fresh session."""
    config = SimulatorConfig(devices=0, users=1, start=START, events_per_second=1 / (31 * 60))
    events = originals(list(generate(config, 50)))
    assert len({e["session_id"] for e in events}) == len(events)
    assert {e["action"] for e in events} <= {"login", "page_view"}


# --- config and purity ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"malformed_fraction": -0.1}, "malformed_fraction"),
        ({"late_fraction": 1.5}, "late_fraction"),
        ({"malformed_fraction": 0.6, "duplicate_fraction": 0.6}, "must not exceed 1"),
        ({"start": START.replace(tzinfo=None)}, "timezone-aware"),
        ({"events_per_second": -1.0}, "events_per_second"),
        ({"devices": 0, "users": 0}, "at least one"),
    ],
)
def test_invalid_configs_are_rejected(kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        SimulatorConfig(**kwargs)


def test_negative_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="count"):
        generate(SimulatorConfig(start=START), -1)


def test_simulator_imports_only_the_standard_library_and_pydantic() -> None:
    tree = ast.parse(Path(simulator.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 0
    }
    allowed = set(sys.stdlib_module_names) | {"pydantic", "__future__"}
    assert imported <= allowed
