"""The wire contract: one JSON object per Kafka message, told apart by ``event_type``.

These pydantic models are the single source of truth for what a valid event is. The
ingest fast path validates with them directly (strict mode, no coercion) and turns their
error messages into the dead-letter reasons.

Only the standard library and pydantic are imported here (enforced by import-linter).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

MAX_FUTURE_SKEW = dt.timedelta(minutes=5)
"""An event may claim a time at most this far ahead of its ingestion time."""

SENSOR_STATUSES = ("ok", "degraded", "fault")
USER_ACTIONS = ("page_view", "add_to_cart", "purchase", "login", "logout")

# ISO-8601 (RFC 3339) date and time with a zone: the only timestamps the contract takes.
# pydantic alone would also read "7" or "1764388800" as seconds since 1970, even strict.
ISO_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)"
)

NonEmptyStr = Annotated[str, Field(min_length=1)]
SensorStatus = Literal["ok", "degraded", "fault"]
UserAction = Literal["page_view", "add_to_cart", "purchase", "login", "logout"]


class _Event(BaseModel):
    """Fields and rules shared by every event type."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True, allow_inf_nan=False)

    event_id: NonEmptyStr
    # Lax for this one field: after the before-validator the value is a Python string,
    # which strict mode would refuse to parse; the validator already refused all but ISO.
    ts: Annotated[AwareDatetime, Field(strict=False)]

    @field_validator("ts", mode="before")
    @classmethod
    def _iso_8601(cls, value: object) -> object:
        # Only this shape reaches the (lax, see `ts`) datetime parser: no numbers, no
        # numeric strings, no local times. Python callers may pass a datetime.
        if isinstance(value, dt.datetime) or (
            isinstance(value, str) and ISO_TIMESTAMP.fullmatch(value)
        ):
            return value
        raise ValueError(
            "must be an ISO-8601 date and time with a timezone (Z or +HH:MM), "
            "e.g. 2026-11-23T07:45:05.123Z"
        )

    @model_validator(mode="after")
    def _extra_is_json(self) -> _Event:
        # JSON has no NaN or Infinity (RFC 8259); the parser reads them anyway, and an
        # unknown field is stored as JSON in `extra`: refuse them rather than store
        # text no JSON reader takes.
        for name, value in (self.__pydantic_extra__ or {}).items():
            if not _finite(value):
                raise ValueError(f"extra field {name!r} holds NaN or Infinity, which is not JSON")
        return self

    @field_validator("ts")
    @classmethod
    def _not_in_the_future(cls, value: dt.datetime, info: ValidationInfo) -> dt.datetime:
        context = info.context or {}
        now: dt.datetime = context.get("now") or dt.datetime.now(dt.UTC)
        if value - now > MAX_FUTURE_SKEW:
            ahead = (value - now).total_seconds()
            raise ValueError(f"timestamp is {ahead:.0f}s ahead of ingestion time (max 300s)")
        return value

    @property
    def extra(self) -> dict[str, Any]:
        """Unknown fields: kept, not rejected."""
        return dict(self.__pydantic_extra__ or {})


def _finite(value: object) -> bool:
    """No NaN or infinite float anywhere in a parsed JSON value (walked without recursion,
    so depth costs nothing)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


class SensorReading(_Event):
    """A reading from an IoT device; keyed on Kafka by ``device_id``."""

    event_type: Literal["sensor_reading"]
    device_id: NonEmptyStr
    temperature_c: Annotated[float, Field(ge=-60, le=85)]
    humidity_pct: Annotated[float, Field(ge=0, le=100)]
    battery_pct: Annotated[float, Field(ge=0, le=100)]
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    status: SensorStatus


class UserActivity(_Event):
    """Something a user did in an app; keyed on Kafka by ``user_id``."""

    event_type: Literal["user_activity"]
    user_id: NonEmptyStr
    session_id: NonEmptyStr
    action: UserAction
    amount: Annotated[float, Field(ge=0)] | None = None
    currency: Annotated[str, Field(min_length=3, max_length=3)] | None = None

    @model_validator(mode="after")
    def _purchase_has_amount(self) -> UserActivity:
        if self.action == "purchase" and self.amount is None:
            raise ValueError("amount is required for a purchase")
        return self


Event = Annotated[SensorReading | UserActivity, Field(discriminator="event_type")]
EVENT_ADAPTER: TypeAdapter[SensorReading | UserActivity] = TypeAdapter(Event)


class EventRejected(ValueError):
    """A message that breaks the contract, with a reason a person can read."""


def describe_error(error: ValidationError) -> str:
    """Turn pydantic's errors into one readable line: ``field: message; ...``."""
    parts = []
    for item in error.errors(include_url=False, include_context=False):
        # The first location element of a discriminated union is the tag; drop it.
        loc = [str(p) for p in item["loc"] if p not in ("sensor_reading", "user_activity")]
        where = ".".join(loc) or "event"
        message = item["msg"]
        if item["type"] == "json_invalid":
            where = "json"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def parse_event(raw: bytes | str, now: dt.datetime | None = None) -> SensorReading | UserActivity:
    """Validate one message against the contract or raise :class:`EventRejected`."""
    try:
        return EVENT_ADAPTER.validate_json(raw, context={"now": now} if now else None)
    except ValidationError as error:
        raise EventRejected(describe_error(error)) from error


def json_schema() -> dict[str, Any]:
    """The contract as JSON Schema (draft 2020-12), as ``astra schema`` prints it."""
    schema = EVENT_ADAPTER.json_schema()
    schema["title"] = "AstraStream event"
    schema["description"] = (
        "One JSON object per Kafka message on topic events_raw, keyed by device_id or "
        "user_id. Unknown extra fields are kept in an `extra` column. `ts` must carry a "
        "zone and be at most 5 minutes ahead of ingestion time."
    )
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True)
