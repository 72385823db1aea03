"""No message's content can fail a batch: whatever it is, it is judged on its own.

A batch that raised on one message would raise again on every replay of its range and
stop the whole topic, so the property is stated on the batch: for any list of messages,
`build_ingest_frames` returns, and every message lands in exactly one place. The
strategies aim at what parsers choke on: depth, width, huge numbers, long strings,
invalid UTF-8, NaN/Infinity, duplicate keys, and valid events around them.
"""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astra_pipeline.events import EventRejected, parse_event
from astra_pipeline.transforms.ingest_batch import build_ingest_frames
from astra_pipeline.transforms.validate import MAX_REASON_CHARS, validate_messages

NOW = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)

VALID = {
    "event_type": "sensor_reading",
    "event_id": "e-1",
    "device_id": "dev-1",
    "ts": "2026-11-23T07:45:05.123Z",
    "temperature_c": 21.4,
    "humidity_pct": 45.2,
    "battery_pct": 87.0,
    "lat": 52.52,
    "lon": 13.4,
    "status": "ok",
}


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    """A value nested hundreds or thousands deep, before, after or without event_type."""
    depth = draw(st.sampled_from([999, 1_000, 5_000, 20_000, 150, 201]))
    inner = _nested(depth, draw(st.sampled_from(["array", "object"])))
    where = draw(st.sampled_from(["alone", "before_type", "after_type", "as_field"]))
    if where == "alone":
        return inner
    head = json.dumps(VALID)[:-1].encode()
    if where == "before_type":
        return b'{"a": ' + inner + b', "event_type": "sensor_reading"}'
    if where == "after_type":
        return b'{"event_type": "sensor_reading", "a": ' + inner + b"}"
    return head + b', "x": ' + inner + b"}"


@st.composite
def wide(draw: st.DrawFn) -> bytes:
    count = draw(st.sampled_from([1_000, 20_000]))
    fields = ", ".join(f'"f{i}": {i}' for i in range(count))
    return (json.dumps(VALID)[:-1] + ", " + fields + "}").encode()


@st.composite
def odd_numbers(draw: st.DrawFn) -> bytes:
    """Numbers no float holds, and the JSON parsers' non-JSON literals."""
    literal = draw(
        st.sampled_from(
            ["1e400", "-1e400", "1" * 5_000, "NaN", "Infinity", "-Infinity", "1e-400", "-0"]
        )
    )
    field = draw(st.sampled_from(["temperature_c", "lat", "extra_value"]))
    doc = dict(VALID)
    doc.pop(field, None)
    return (json.dumps(doc)[:-1] + f', "{field}": {literal}}}').encode()


@st.composite
def long_strings(draw: st.DrawFn) -> bytes:
    size = draw(st.sampled_from([10_000, 1_000_000]))
    field = draw(st.sampled_from(["event_id", "device_id", "status", "ts", "note"]))
    return json.dumps({**VALID, field: "x" * size}).encode()


@st.composite
def bad_utf8(draw: st.DrawFn) -> bytes:
    raw = json.dumps(VALID).encode()
    cut = draw(st.integers(0, len(raw)))
    junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\\ud800"]))
    return raw[:cut] + junk + raw[cut:]


@st.composite
def duplicate_keys(draw: st.DrawFn) -> bytes:
    field = draw(st.sampled_from(["event_type", "temperature_c", "ts", "event_id"]))
    value = draw(st.sampled_from(['"user_activity"', "999", '"7"', '""', "null"]))
    return (json.dumps(VALID)[:-1] + f', "{field}": {value}}}').encode()


adversarial = st.one_of(
    deep(),
    deep(),
    wide(),
    odd_numbers(),
    long_strings(),
    bad_utf8(),
    duplicate_keys(),
    st.binary(max_size=64),
    st.none(),
    st.just(json.dumps(VALID).encode()),
)


def _frame(values: list[bytes | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "partition": [0] * len(values),
            "offset": list(range(len(values))),
            "key": [b"k"] * len(values),
            "value": values,
            "kafka_ts": [NOW] * len(values),
        },
        schema={
            "partition": pl.Int32,
            "offset": pl.Int64,
            "key": pl.Binary,
            "value": pl.Binary,
            "kafka_ts": pl.Datetime("us", "UTC"),
        },
    )


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(adversarial, min_size=1, max_size=6))
def test_a_batch_never_fails_because_of_its_content(values: list[bytes | None]) -> None:
    frames = build_ingest_frames(_frame(values), "t", "b", NOW)
    # Every message exactly once: clean (or an in-batch duplicate) or dead-lettered.
    assert frames.accounted == len(values)
    assert frames.raw_events.height == len(values)
    reasons = frames.dead_letters["reason"].to_list()
    assert all(r and len(r) <= MAX_REASON_CHARS for r in reasons)
    for extra in [*frames.sensor_readings["extra"], *frames.user_activity["extra"]]:
        # What is stored as JSON parses as strict JSON (no NaN/Infinity).
        if extra is not None:
            json.loads(extra, parse_constant=_refuse)


def _refuse(literal: str) -> None:
    raise AssertionError(f"{literal} stored in a JSON column")


@pytest.mark.parametrize("where", ["alone", "before_type", "after_type"])
def test_a_2kb_deeply_nested_message_is_a_dead_letter_not_a_crash(where: str) -> None:
    inner = b"[" * 998 + b"]" * 998
    value = {
        "alone": b'{"a": ' + inner + b"}",
        "before_type": b'{"a": ' + inner + b', "event_type": "sensor_reading"}',
        "after_type": b'{"event_type": "sensor_reading", "a": ' + inner + b"}",
    }[where]
    valid = json.dumps(VALID).encode()
    verdict = validate_messages([value, valid], NOW)
    assert verdict.sensor_readings["row"].to_list() == [1]
    [reason] = verdict.rejected["reason"].to_list()
    assert "recursion limit" in reason


# The contract's timestamp: ISO-8601 with a zone. Both paths must give the same verdict.
TIMESTAMPS = [
    ("7", False),
    ("1764388800", False),
    ("1764388800.5", False),
    ("-1", False),
    ("2026-11-23", False),
    ("2026-11-23T07:45:05", False),
    ("2026-11-23_07:45:05Z", False),
    ("20261123T074505Z", False),
    ("2026-11-23T07:45:05Z", True),
    ("2026-11-23T07:45:05.123Z", True),
    ("2026-11-23T07:45:05.123456789Z", True),
    ("2026-11-23T07:45:05+01:00", True),
    ("2026-11-23T07:45:05+0100", True),
    ("2026-11-23 07:45:05Z", True),
    ("2026-11-23T07:45Z", True),
    ("2026-11-23T25:45:05Z", False),
]


@pytest.mark.parametrize(("ts", "accepted"), TIMESTAMPS)
def test_fast_path_and_contract_agree_on_timestamps(ts: str, accepted: bool) -> None:
    raw = json.dumps({**VALID, "ts": ts}).encode()
    verdict = validate_messages([raw], NOW)
    fast = verdict.sensor_readings.height == 1
    try:
        parse_event(raw, now=NOW)
        contract = True
    except EventRejected as error:
        contract = False
        assert "ts" in str(error)
    assert fast == contract == accepted
    if not accepted:
        assert "ts" in verdict.rejected["reason"][0]


@pytest.mark.parametrize("ts", [7, 1764388800, None, True, ["2026-11-23T07:45:05Z"]])
def test_a_timestamp_that_is_not_a_string_is_rejected(ts: object) -> None:
    raw = json.dumps({**VALID, "ts": ts}).encode()
    with pytest.raises(EventRejected, match="ISO-8601"):
        parse_event(raw, now=NOW)
    assert validate_messages([raw], NOW).rejected.height == 1


@pytest.mark.parametrize(
    "extra", ['{"x": NaN}', '{"x": [1, Infinity]}', '{"x": {"y": -Infinity}}', '{"x": 1e999}']
)
def test_nan_and_infinity_in_unknown_fields_are_rejected(extra: str) -> None:
    raw = (json.dumps(VALID)[:-1] + ", " + extra[1:]).encode()
    with pytest.raises(EventRejected, match="NaN or Infinity"):
        parse_event(raw, now=NOW)
    verdict = validate_messages([raw], NOW)
    assert verdict.rejected.height == 1
    assert "NaN or Infinity" in verdict.rejected["reason"][0]


def test_finite_unknown_fields_are_kept_as_json() -> None:
    raw = (json.dumps(VALID)[:-1] + ', "x": {"y": [1, 2.5, -0.0, 1e308]}}').encode()
    verdict = validate_messages([raw], NOW)
    assert json.loads(verdict.sensor_readings["extra"][0]) == {"x": {"y": [1, 2.5, -0.0, 1e308]}}


def test_duplicate_keys_take_the_last_value_on_both_paths() -> None:
    raw = (json.dumps(VALID)[:-1] + ', "temperature_c": 30.5}').encode()
    verdict = validate_messages([raw], NOW)
    assert verdict.sensor_readings["temperature_c"].to_list() == [30.5]
    reading = parse_event(raw, now=NOW)
    assert reading.temperature_c == 30.5  # type: ignore[union-attr]
