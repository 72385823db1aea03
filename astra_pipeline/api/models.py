"""The API's response models: every response body is one of these (OpenAPI at /docs)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, in a few words.")
    detail: Any = Field(default=None, description="Specifics: a reason, a field, a limit.")


class ItemResult(BaseModel):
    index: int = Field(description="Position of the item in the request (0-based).")
    status: Literal["accepted", "rejected", "failed"]
    event_id: str | None = None
    partition: int | None = None
    offset: int | None = None
    reason: str | None = Field(default=None, description="Why the item was not accepted.")


class IngestResults(BaseModel):
    results: list[ItemResult]


class IngestFailure(ErrorBody):
    """503 after some items were produced: what Kafka acknowledged (status accepted) and
    what it did not (status failed); send the failed ones again."""

    results: list[ItemResult] = []


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last one."
    )


class SensorWindow(BaseModel):
    device_id: str
    window_start: dt.datetime
    window_end: dt.datetime
    reading_count: int
    temperature_c_mean: float
    temperature_c_max: float
    humidity_pct_mean: float
    humidity_pct_max: float
    # The 1-minute and 1-hour tables only (not the sliding 5-minute one).
    temperature_c_min: float | None = None
    temperature_c_stddev: float | None = None
    temperature_c_p95: float | None = None
    humidity_pct_min: float | None = None
    humidity_pct_stddev: float | None = None
    humidity_pct_p95: float | None = None
    battery_min: float | None = None
    count_ok: int | None = None
    count_degraded: int | None = None
    count_fault: int | None = None


class Reading(BaseModel):
    event_id: str
    device_id: str
    ts: dt.datetime
    temperature_c: float
    humidity_pct: float
    battery_pct: float
    lat: float
    lon: float
    status: str
    dew_point_c: float | None = None
    heat_index_c: float | None = None


class Device(BaseModel):
    device_id: str
    latest_reading_at: dt.datetime | None
    latest_window: SensorWindow | None = Field(description="Its newest 1-minute window.")


class DeviceLatest(BaseModel):
    device_id: str
    reading: Reading | None
    window: SensorWindow | None


class Session(BaseModel):
    user_id: str
    session_start: dt.datetime
    session_end: dt.datetime
    duration_s: float
    event_count: int
    purchase_count: int
    revenue: float
    continues_previous: bool


class Churn(BaseModel):
    user_id: str
    as_of_day: dt.date
    churn_probability: float
    churn_predicted: bool
    model_version: str
    features: dict[str, Any] = Field(
        default={}, description="features.user_churn of the same day (empty if absent)."
    )


class Alert(BaseModel):
    alert_id: str
    device_id: str
    ts: dt.datetime = Field(description="The reading's event time.")
    score: float
    driver: str
    metric: str | None
    reason: str
    threshold: float
    rule_version: str
    created_at: dt.datetime
    published_at: dt.datetime | None


class Health(BaseModel):
    status: Literal["ok", "ready", "not ready"]
    checks: dict[str, str] = {}
