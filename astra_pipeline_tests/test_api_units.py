"""The gateway's pure parts: keys, body splitting, item preparation, cursors, ranges,
the rate limiter. Expectations worked out by hand."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

import pytest

from astra_pipeline.api.guard import ApiError, Keys, RateLimiter, request_id
from astra_pipeline.api.intake import (
    EVENT_ID_NAMESPACE,
    JSON,
    NDJSON,
    Accepted,
    BodyError,
    Rejected,
    content_event_id,
    media_type,
    prepare,
    split_body,
)
from astra_pipeline.api.keys import KeyConfigError, check_key, create_key, parse_entries
from astra_pipeline.api.read_routes import decode_cursor, encode_cursor, time_range

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
READING = {
    "event_type": "sensor_reading",
    "device_id": "d1",
    "ts": "2026-11-29T11:59:00Z",
    "temperature_c": 20.5,
    "humidity_pct": 40.0,
    "battery_pct": 90.0,
    "lat": 1.0,
    "lon": 2.0,
    "status": "ok",
}


def test_a_created_key_checks_against_its_entry_only() -> None:
    key, entry = create_key("ingest")
    other_key, other = create_key("read")
    entries = parse_entries(f"{entry.line()}, {other.line()}")
    caller = check_key(entries, key)
    assert caller is not None and (caller.key_id, caller.scope) == (entry.key_id, "ingest")
    assert check_key(entries, other_key).scope == "read"  # type: ignore[union-attr]
    prefix, key_id, secret = key.split("_", 2)
    # The entry is sha256(salt + secret), by hand:
    assert entry.digest == hashlib.sha256(bytes.fromhex(entry.salt) + secret.encode()).hexdigest()
    assert secret not in entry.line()
    assert check_key(entries, f"{prefix}_{key_id}_{secret}x") is None
    assert check_key(entries, f"{prefix}_ffffffffffff_{secret}") is None
    assert check_key(entries, "Bearer nonsense") is None


@pytest.mark.parametrize(
    "setting", ["admin:1:aa:bb", "read:1:aa", "read:1:zz:bb", "read:1:aa:bb:cc"]
)
def test_a_bad_key_entry_is_an_error_naming_the_setting(setting: str) -> None:
    with pytest.raises(KeyConfigError, match="ASTRA_API_KEYS entry 1"):
        parse_entries(setting)


def test_keys_required_scopes_and_statuses() -> None:
    key, entry = create_key("read")
    keys = Keys(parse_entries(entry.line()))
    assert keys.caller(f"Bearer {key}", "read").scope == "read"
    for header, status in ((None, 401), ("Basic abc", 401), ("Bearer astra_1_2", 401)):
        with pytest.raises(ApiError) as caught:
            keys.caller(header, "read")
        assert caught.value.status == status
    with pytest.raises(ApiError) as caught:
        keys.caller(f"Bearer {key}", "ingest")
    assert caught.value.status == 403
    assert Keys({}).caller(None, "ingest").key_id == "anonymous"


def test_media_types() -> None:
    assert media_type("application/json; charset=utf-8") == JSON
    assert media_type("Application/X-NDJSON") == NDJSON
    assert media_type("text/plain") is None
    assert media_type(None) is None


def test_bodies_split_into_items() -> None:
    assert split_body(b'{"a": 1}', JSON) == [{"a": 1}]
    assert split_body(b'[{"a": 1}, 2]', JSON) == [{"a": 1}, 2]
    with pytest.raises(BodyError):
        split_body(b"{nope", JSON)
    items = split_body(b'{"a": 1}\n\nnope\n[1]\n', NDJSON)
    assert items[0] == {"a": 1} and items[2] == [1]
    assert isinstance(prepare(1, items[1], 1000, NOW), Rejected)
    with pytest.raises(BodyError):
        split_body(b"nope\nnever\n", NDJSON)


def test_an_item_without_event_id_gets_the_uuid5_of_its_canonical_json() -> None:
    shuffled = dict(reversed(list(READING.items())))
    canonical = json.dumps(READING, sort_keys=True, separators=(",", ":"))
    want = str(uuid.uuid5(EVENT_ID_NAMESPACE, canonical))
    assert content_event_id(READING) == content_event_id(shuffled) == want
    accepted = prepare(0, READING, 10_000, NOW)
    assert isinstance(accepted, Accepted)
    assert accepted.event_id == want and accepted.key == b"d1"
    assert json.loads(accepted.value) == {"event_id": want, **READING}


def test_items_that_break_the_contract_are_rejected_with_its_reason() -> None:
    hot = prepare(3, {**READING, "temperature_c": 500}, 10_000, NOW)
    assert isinstance(hot, Rejected) and hot.index == 3 and "temperature_c" in hot.reason
    future = prepare(0, {**READING, "ts": "2026-11-29T13:00:00Z"}, 10_000, NOW)
    assert isinstance(future, Rejected) and "ahead" in future.reason
    assert isinstance(prepare(0, [READING], 10_000, NOW), Rejected)
    huge = prepare(0, {**READING, "note": "x" * 2000}, 1000, NOW)
    assert isinstance(huge, Rejected) and "above Kafka's limit" in huge.reason
    user = prepare(
        0,
        {
            "event_type": "user_activity",
            "event_id": "u-1",
            "user_id": "u7",
            "session_id": "s",
            "ts": "2026-11-29T11:00:00Z",
            "action": "login",
        },
        10_000,
        NOW,
    )
    assert isinstance(user, Accepted) and user.key == b"u7" and user.event_id == "u-1"


def test_cursors_round_trip_and_bad_ones_are_400() -> None:
    when = dt.datetime(2026, 11, 29, 7, 45, 5, 123000, tzinfo=dt.UTC)
    assert decode_cursor(encode_cursor(when, "alert-9")) == (when, "alert-9")
    assert decode_cursor(None) is None
    for bad in ("%%%", "bm90IGpzb24", encode_cursor(when, "x")[:-3]):
        with pytest.raises(ApiError) as caught:
            decode_cursor(bad)
        assert caught.value.status == 400


def test_time_ranges() -> None:
    start, end = NOW, NOW + dt.timedelta(hours=1)
    assert time_range(start.replace(tzinfo=None), end) == (start, end)
    for lower, upper in ((None, end), (start, None), (end, start), (start, start)):
        with pytest.raises(ApiError) as caught:
            time_range(lower, upper)
        assert caught.value.status == 400


def test_the_rate_limiter_allows_a_burst_then_429_with_retry_after() -> None:
    limiter = RateLimiter(rate_per_s=5)
    for _ in range(5):
        limiter.take("k")
    with pytest.raises(ApiError) as caught:
        limiter.take("k")
    assert caught.value.status == 429 and caught.value.headers["Retry-After"] == "1"
    limiter.take("other")  # per key


def test_request_ids() -> None:
    assert request_id("abc-123") == "abc-123"
    generated = request_id("has space")
    assert generated != "has space" and len(generated) == 32
    assert len(request_id(None)) == 32
