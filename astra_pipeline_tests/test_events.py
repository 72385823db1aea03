import datetime as dt
import json

import pytest

from astra_pipeline.events import (
    EventRejected,
    SensorReading,
    UserActivity,
    json_schema,
    parse_event,
)

NOW = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
SENSOR = {
    "event_type": "sensor_reading",
    "event_id": "e1",
    "device_id": "dev-00017",
    "ts": "2026-11-23T07:45:05.123Z",
    "temperature_c": 21.4,
    "humidity_pct": 45.2,
    "battery_pct": 87.0,
    "lat": 52.52,
    "lon": 13.40,
    "status": "ok",
}
USER = {
    "event_type": "user_activity",
    "event_id": "e2",
    "user_id": "user-00042",
    "session_id": "s-9f1c",
    "ts": "2026-11-23T07:45:06.001Z",
    "action": "purchase",
    "amount": 19.99,
    "currency": "EUR",
}


def parse(doc: dict) -> SensorReading | UserActivity:
    return parse_event(json.dumps(doc), now=NOW)


def test_architecture_examples_are_valid() -> None:
    reading = parse(SENSOR)
    assert isinstance(reading, SensorReading)
    assert reading.ts == dt.datetime(2026, 11, 23, 7, 45, 5, 123000, tzinfo=dt.UTC)
    activity = parse(USER)
    assert isinstance(activity, UserActivity) and activity.amount == 19.99


@pytest.mark.parametrize(
    ("change", "reason_part"),
    [
        ({"temperature_c": "21"}, "temperature_c"),
        ({"temperature_c": 85.01}, "temperature_c"),
        ({"humidity_pct": -0.1}, "humidity_pct"),
        ({"battery_pct": 100.5}, "battery_pct"),
        ({"lat": 90.5}, "lat"),
        ({"lon": -180.5}, "lon"),
        ({"status": "broken"}, "status"),
        ({"device_id": ""}, "device_id"),
        ({"ts": "2026-11-23T07:45:05"}, "timezone"),
        ({"ts": "2026-11-23T08:05:01Z"}, "ahead of ingestion time"),
        ({"temperature_c": True}, "temperature_c"),
    ],
)
def test_sensor_rule_violations_are_rejected_with_reason(change: dict, reason_part: str) -> None:
    with pytest.raises(EventRejected) as error:
        parse({**SENSOR, **change})
    assert reason_part in str(error.value)


def test_ts_exactly_five_minutes_ahead_is_allowed() -> None:
    assert parse({**SENSOR, "ts": "2026-11-23T08:05:00Z"})


@pytest.mark.parametrize(
    ("change", "reason_part"),
    [
        ({"amount": "lots"}, "amount"),
        ({"amount": -1}, "amount"),
        ({"action": "dance"}, "action"),
        ({"amount": None}, "amount is required for a purchase"),
        ({"user_id": ""}, "user_id"),
    ],
)
def test_user_rule_violations_are_rejected(change: dict, reason_part: str) -> None:
    with pytest.raises(EventRejected) as error:
        parse({**USER, **change})
    assert reason_part in str(error.value)


def test_missing_field_and_bad_json_are_rejected() -> None:
    doc = dict(SENSOR)
    del doc["device_id"]
    with pytest.raises(EventRejected, match="device_id: Field required"):
        parse(doc)
    with pytest.raises(EventRejected, match="json"):
        parse_event(b'{"event_type": ', now=NOW)


def test_unknown_fields_are_kept_not_rejected() -> None:
    event = parse({**USER, "action": "login", "amount": None, "app_version": "2.1"})
    assert event.extra == {"app_version": "2.1"}


def test_json_schema_names_both_event_types() -> None:
    text = json.dumps(json_schema())
    assert "sensor_reading" in text and "user_activity" in text and "temperature_c" in text
