"""The fast path must agree with the pydantic contract; every message is accounted for."""

import datetime as dt
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astra_pipeline.events import EventRejected, parse_event
from astra_pipeline.transforms.validate import validate_messages

NOW = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)

numbers = st.one_of(
    st.floats(min_value=-300, max_value=300, allow_nan=False),
    st.integers(-300, 300),
    st.text(max_size=3),
    st.booleans(),
    st.none(),
)
timestamps = st.one_of(
    st.sampled_from(
        [
            "2026-11-23T07:45:05.123Z",
            "2026-11-23T07:45:05Z",
            "2026-11-23T07:45:05+02:00",
            "2026-11-23T07:45:05",
            "2026-11-23 07:45:05Z",
            "2026-11-23T09:45:05Z",
            "2026-11-23T08:04:59.999999Z",
            "2026-02-30T07:45:05Z",
            "2026-11-23T07:45:05.1234567Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T07:45:05-00:00",
            "yesterday",
        ]
    ),
    st.datetimes(
        min_value=dt.datetime(2026, 11, 23, 7),
        max_value=dt.datetime(2026, 11, 23, 9),
        timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))]),
    ).map(lambda d: d.isoformat()),
)
sensor_docs = st.fixed_dictionaries(
    {
        "event_type": st.just("sensor_reading"),
        "event_id": st.sampled_from(["", "a", "b"]),
        "device_id": st.sampled_from(["", "dev-1"]),
        "ts": timestamps,
        "temperature_c": numbers,
        "humidity_pct": numbers,
        "battery_pct": numbers,
        "lat": numbers,
        "lon": numbers,
        "status": st.sampled_from(["ok", "degraded", "fault", "OK", 1]),
    },
    optional={"extra_field": st.integers()},
)
user_docs = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(["user_activity", "other"]),
        "event_id": st.just("u"),
        "user_id": st.sampled_from(["", "user-1"]),
        "session_id": st.just("s-1"),
        "ts": timestamps,
        "action": st.sampled_from(["page_view", "add_to_cart", "purchase", "login", "logout", "x"]),
    },
    optional={"amount": numbers, "currency": st.sampled_from(["EUR", "EU", None, 3])},
)
documents = st.one_of(sensor_docs, user_docs).map(lambda d: json.dumps(d).encode())
messages = st.one_of(documents, st.binary(max_size=40), st.none())


def pydantic_accepts(value: bytes | None) -> bool:
    if value is None:
        return False
    try:
        parse_event(value, now=NOW)
    except EventRejected:
        return False
    return True


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(messages, max_size=30))
def test_accepted_set_is_exactly_pydantics(values: list[bytes | None]) -> None:
    verdict = validate_messages(values, NOW)
    accepted = set(verdict.sensor_readings["row"]) | set(verdict.user_activity["row"])
    expected = {i for i, v in enumerate(values) if pydantic_accepts(v)}
    assert accepted == expected
    rows = sorted([*accepted, *verdict.rejected["row"]])
    assert rows == list(range(len(values)))  # every message exactly once


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=50))
def test_arbitrary_bytes_never_crash_a_batch(values: list[bytes]) -> None:
    verdict = validate_messages(list(values), NOW)
    assert verdict.total == len(values)


def test_fast_path_values_equal_pydantic_values() -> None:
    doc = {
        "event_type": "sensor_reading",
        "event_id": "x",
        "device_id": "d",
        "ts": "2026-11-23T07:45:05.123+01:00",
        "temperature_c": 21,
        "humidity_pct": 45.5,
        "battery_pct": 80.0,
        "lat": 1.0,
        "lon": 2.0,
        "status": "ok",
    }
    raw = json.dumps(doc).encode()
    verdict = validate_messages([raw], NOW)
    assert verdict.fast_path_rows == 1
    row = verdict.sensor_readings.row(0, named=True)
    model = parse_event(raw, now=NOW)
    assert row["ts"] == model.ts
    assert row["temperature_c"] == 21.0
