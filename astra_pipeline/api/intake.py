"""From a request body to the messages to produce: the gateway's half of the contract.

Every item is validated by the pipeline's own contract (`astra_pipeline.events`) on the
exact bytes that go to Kafka, so the gateway accepts what ingest accepts, no more. An item
without ``event_id`` gets one derived from its content (a UUIDv5 of its canonical JSON):
a client that sends the same item again, after a timeout or a 503, sends the same
event_id, and ingest stores it once (docs/api.md). Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import msgspec

from astra_pipeline.events import EventRejected, SensorReading, parse_event

JSON = "application/json"
NDJSON = "application/x-ndjson"
CONTENT_TYPES = (JSON, NDJSON)
EVENT_ID_NAMESPACE = uuid.UUID("6f1c2b4e-5a1d-4c1e-9a53-2f0d8b7c9e10")


class BodyError(ValueError):
    """The body is not JSON or NDJSON at all (400)."""


@dataclass(frozen=True)
class Accepted:
    """An item that keeps the contract: what goes to Kafka."""

    index: int
    event_id: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Rejected:
    index: int
    reason: str


Item = Accepted | Rejected

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_sorted = msgspec.json.Encoder(order="sorted")


def media_type(content_type: str | None) -> str | None:
    """The body's media type without parameters (``; charset=utf-8``), or None when it is
    not one the gateway reads (415)."""
    if not content_type:
        return None
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind if kind in CONTENT_TYPES else None


def split_body(body: bytes, kind: str) -> list[object]:
    """The items of a body: a JSON object, a JSON array of items, or NDJSON lines. An
    NDJSON line that is not JSON is an item of its own (rejected with its reason); a body
    with nothing readable is a BodyError."""
    if kind == JSON:
        try:
            parsed = _decoder.decode(body)
        except msgspec.DecodeError as error:
            raise BodyError(f"the body is not JSON: {error}") from None
        return parsed if isinstance(parsed, list) else [parsed]
    items: list[object] = []
    readable = False
    for line in body.splitlines():
        if not line.strip():
            continue
        try:
            items.append(_decoder.decode(line))
            readable = True
        except msgspec.DecodeError as error:
            items.append(_Unreadable(f"json: {error}"))
    if not readable:
        raise BodyError("the body is not NDJSON: no line is a JSON value")
    return items


@dataclass(frozen=True)
class _Unreadable:
    reason: str


def content_event_id(item: dict[str, object]) -> str:
    """The event_id an item without one gets: the same for the same content."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, _sorted.encode(item).decode()))


def prepare(index: int, item: object, max_value_bytes: int, now: dt.datetime) -> Item:
    """One item as the message to produce, or the reason it breaks the contract."""
    if isinstance(item, _Unreadable):
        return Rejected(index, item.reason)
    if not isinstance(item, dict):
        return Rejected(index, f"event: must be a JSON object, not {type(item).__name__}")
    if "event_id" not in item:
        item = {"event_id": content_event_id(item), **item}
    value = _encoder.encode(item)
    if len(value) > max_value_bytes:
        return Rejected(
            index, f"event: {len(value)} bytes, above Kafka's limit of {max_value_bytes} bytes"
        )
    try:
        event = parse_event(value, now=now)
    except EventRejected as error:
        return Rejected(index, str(error))
    key = event.device_id if isinstance(event, SensorReading) else event.user_id
    return Accepted(index, event.event_id, key.encode(), value)


def prepare_all(items: list[object], max_value_bytes: int, now: dt.datetime) -> list[Item]:
    return [prepare(i, item, max_value_bytes, now) for i, item in enumerate(items)]
