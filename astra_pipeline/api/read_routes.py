"""The read API: aggregates, features, scores and alerts from the Postgres serving copy
(point lookups and short ranges on (id, time) indexes); clean readings from the
warehouse (on the lake: a snapshot read that never blocks ingest).

Time ranges are ``[from, to)`` and both ends are required; pages are keyset cursors on
the rows' own ordering (time, then id), so rows arriving meanwhile neither shift nor
repeat a page.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel

from astra_pipeline.api.guard import ApiError
from astra_pipeline.api.models import (
    Alert,
    Churn,
    Device,
    DeviceLatest,
    ErrorBody,
    Page,
    Reading,
    SensorWindow,
    Session,
)
from astra_pipeline.api.state import ApiState, read_caller
from resources.errors import AstraResourceError

router = APIRouter(
    tags=["read"],
    responses={
        400: {"model": ErrorBody},
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        404: {"model": ErrorBody},
        429: {"model": ErrorBody},
        503: {"model": ErrorBody},
    },
)
Reader = Annotated[ApiState, Depends(read_caller)]
Limit = Annotated[int, Query(ge=1, le=1000)]
From = Annotated[dt.datetime | None, Query(alias="from", description="inclusive, ISO-8601")]
To = Annotated[dt.datetime | None, Query(alias="to", description="exclusive, ISO-8601")]
WINDOW_TABLES = {"1m": "agg.sensor_1m", "5m": "agg.sensor_5m_sliding", "1h": "agg.sensor_1h"}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
READING_COLUMNS = (
    "event_id, device_id, ts, temperature_c, humidity_pct, battery_pct, lat, lon, status,"
    " dew_point_c, heat_index_c"
)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def time_range(
    start: dt.datetime | None, end: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime]:
    """``[from, to)``, both given, ``from`` before ``to`` (else 400)."""
    if start is None or end is None:
        raise ApiError(400, "unbounded time range", "give both from and to (ISO-8601)")
    start, end = _utc(start), _utc(end)
    if start >= end:
        raise ApiError(400, "inverted time range", f"from {start} is not before to {end}")
    return start, end


def encode_cursor(time_value: dt.datetime, row_id: str) -> str:
    raw = json.dumps([time_value.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[dt.datetime, str] | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        when, row_id = json.loads(base64.urlsafe_b64decode(padded))
        return _utc(dt.datetime.fromisoformat(when)), str(row_id)
    except (ValueError, TypeError):
        raise ApiError(400, "invalid cursor", "pass next_cursor from a previous page") from None


def _serving(state: ApiState, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    try:
        return state.serving.rows(query, params)
    except AstraResourceError as error:
        raise ApiError(
            503, "serving database unavailable", str(error), {"Retry-After": "5"}
        ) from None


def _warehouse(state: ApiState, query: str, params: list[Any]) -> list[dict[str, Any]]:
    try:
        return list(state.warehouse.query(query, params).to_dicts())
    except AstraResourceError as error:
        raise ApiError(503, "warehouse unavailable", str(error), {"Retry-After": "5"}) from None


def _page(rows: list[dict[str, Any]], limit: int, time_key: str, id_key: str) -> str | None:
    if len(rows) <= limit:
        return None
    del rows[limit:]
    return encode_cursor(rows[-1][time_key], str(rows[-1][id_key]))


def _shape(model: type[BaseModel], row: dict[str, Any]) -> dict[str, Any]:
    """The row with the model's fields only (absent ones null): what the model documents,
    without validating and serializing every row twice (a page of 100 windows did; the
    read p99 paid for it, bench/api.py)."""
    return {name: row.get(name) for name in model.model_fields}


def _page_response(
    model: type[BaseModel], rows: list[dict[str, Any]], next_cursor: str | None
) -> Response:
    body = {"items": [_shape(model, row) for row in rows], "next_cursor": next_cursor}
    return Response(_encoder.encode(body), media_type="application/json")


_encoder = msgspec.json.Encoder()


def _known_device(state: ApiState, device_id: str) -> bool:
    if _serving(state, "SELECT 1 FROM agg.sensor_1m WHERE device_id = %s LIMIT 1", (device_id,)):
        return True
    return bool(
        _warehouse(
            state, "SELECT 1 FROM clean.sensor_readings WHERE device_id = ? LIMIT 1", [device_id]
        )
    )


def _latest_window(state: ApiState, device_id: str) -> dict[str, Any] | None:
    rows = _serving(
        state,
        "SELECT * FROM agg.sensor_1m WHERE device_id = %s ORDER BY window_start DESC LIMIT 1",
        (device_id,),
    )
    return rows[0] if rows else None


@router.get("/v1/devices", response_model=Page[Device])
def devices(state: Reader, limit: Limit = 100, cursor: str | None = None) -> Page[Device]:
    """Each device with its latest reading time and its newest 1-minute window, by id."""
    after = ""
    if cursor:
        decoded = decode_cursor(cursor)
        after = decoded[1] if decoded else ""
    windows = _serving(
        state,
        """
        WITH RECURSIVE ids AS (
            (SELECT device_id FROM agg.sensor_1m WHERE device_id > %s
             ORDER BY device_id LIMIT 1)
            UNION ALL
            SELECT (SELECT s.device_id FROM agg.sensor_1m s WHERE s.device_id > ids.device_id
                    ORDER BY s.device_id LIMIT 1)
            FROM ids WHERE ids.device_id IS NOT NULL
        )
        SELECT w.* FROM (SELECT device_id FROM ids WHERE device_id IS NOT NULL LIMIT %s) d
        CROSS JOIN LATERAL (
            SELECT * FROM agg.sensor_1m s WHERE s.device_id = d.device_id
            ORDER BY s.window_start DESC LIMIT 1
        ) w
        ORDER BY w.device_id
        """,
        (after, limit + 1),
    )
    next_cursor = None
    if len(windows) > limit:
        del windows[limit:]
        next_cursor = encode_cursor(EPOCH, windows[-1]["device_id"])
    ids = [w["device_id"] for w in windows]
    latest: dict[str, dt.datetime] = {}
    if ids:
        marks = ", ".join("?" for _ in ids)
        for row in _warehouse(
            state,
            f"SELECT device_id, max(ts) AS ts FROM clean.sensor_readings"
            f" WHERE device_id IN ({marks}) GROUP BY device_id",
            ids,
        ):
            latest[row["device_id"]] = row["ts"]
    items = [
        Device(
            device_id=w["device_id"],
            latest_reading_at=latest.get(w["device_id"]),
            latest_window=SensorWindow(**w),
        )
        for w in windows
    ]
    return Page[Device](items=items, next_cursor=next_cursor)


@router.get("/v1/devices/{device_id}/latest", response_model=DeviceLatest)
def device_latest(state: Reader, device_id: str) -> DeviceLatest:
    """The device's newest clean reading and its newest 1-minute window."""
    readings = _warehouse(
        state,
        f"SELECT {READING_COLUMNS} FROM clean.sensor_readings WHERE device_id = ?"
        " ORDER BY ts DESC, event_id DESC LIMIT 1",
        [device_id],
    )
    window = _latest_window(state, device_id)
    if not readings and window is None:
        raise ApiError(404, "unknown device", device_id)
    return DeviceLatest(
        device_id=device_id,
        reading=Reading(**readings[0]) if readings else None,
        window=SensorWindow(**window) if window else None,
    )


@router.get("/v1/devices/{device_id}/windows", response_model=Page[SensorWindow])
def device_windows(
    state: Reader,
    device_id: str,
    resolution: Literal["1m", "5m", "1h"] = "1m",
    start: From = None,
    end: To = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Response:
    """The device's windows starting in ``[from, to)``; 5m is the sliding 5-minute table."""
    lower, upper = time_range(start, end)
    after = decode_cursor(cursor)
    rows = _serving(
        state,
        f"SELECT * FROM {WINDOW_TABLES[resolution]} WHERE device_id = %s"
        " AND window_start >= %s AND window_start < %s AND window_start > %s"
        " ORDER BY window_start LIMIT %s",
        (device_id, lower, upper, after[0] if after else lower - dt.timedelta(1), limit + 1),
    )
    if not rows and not after and not _known_device(state, device_id):
        raise ApiError(404, "unknown device", device_id)
    next_cursor = _page(rows, limit, "window_start", "device_id")
    return _page_response(SensorWindow, rows, next_cursor)


@router.get("/v1/devices/{device_id}/readings", response_model=Page[Reading])
def device_readings(
    state: Reader,
    device_id: str,
    start: From = None,
    end: To = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Response:
    """The device's clean readings with ``ts`` in ``[from, to)``, oldest first."""
    lower, upper = time_range(start, end)
    after = decode_cursor(cursor)
    keyset, params = "", [device_id, lower, upper]
    if after:
        keyset = " AND (ts > ? OR (ts = ? AND event_id > ?))"
        params += [after[0], after[0], after[1]]
    rows = _warehouse(
        state,
        f"SELECT {READING_COLUMNS} FROM clean.sensor_readings"
        f" WHERE device_id = ? AND ts >= ? AND ts < ?{keyset}"
        f" ORDER BY ts, event_id LIMIT {limit + 1}",
        params,
    )
    if not rows and not after and not _known_device(state, device_id):
        raise ApiError(404, "unknown device", device_id)
    next_cursor = _page(rows, limit, "ts", "event_id")
    return _page_response(Reading, rows, next_cursor)


@router.get("/v1/users/{user_id}/sessions", response_model=Page[Session])
def user_sessions(
    state: Reader,
    user_id: str,
    start: From = None,
    end: To = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Response:
    """The user's sessions starting in ``[from, to)``."""
    lower, upper = time_range(start, end)
    after = decode_cursor(cursor)
    rows = _serving(
        state,
        "SELECT * FROM agg.user_sessions WHERE user_id = %s AND session_start >= %s"
        " AND session_start < %s AND session_start > %s ORDER BY session_start LIMIT %s",
        (user_id, lower, upper, after[0] if after else lower - dt.timedelta(1), limit + 1),
    )
    if not rows and not after:
        known = _serving(
            state, "SELECT 1 FROM agg.user_sessions WHERE user_id = %s LIMIT 1", (user_id,)
        )
        if not known:
            raise ApiError(404, "unknown user", user_id)
    next_cursor = _page(rows, limit, "session_start", "user_id")
    return _page_response(Session, rows, next_cursor)


@router.get("/v1/users/{user_id}/churn", response_model=Churn)
def user_churn(state: Reader, user_id: str) -> Churn:
    """The user's latest churn score, with the features it was computed from."""
    scores = _serving(
        state,
        "SELECT * FROM ml.churn_scores WHERE user_id = %s ORDER BY as_of_day DESC LIMIT 1",
        (user_id,),
    )
    if not scores:
        raise ApiError(404, "no churn score for this user", user_id)
    score = scores[0]
    features = _serving(
        state,
        "SELECT * FROM features.user_churn WHERE user_id = %s AND as_of_day = %s",
        (user_id, score["as_of_day"]),
    )
    extra = {
        k: (v.isoformat() if isinstance(v, dt.datetime | dt.date) else v)
        for k, v in (features[0] if features else {}).items()
        if k not in ("user_id", "as_of_day")
    }
    return Churn(**score, features=extra)


@router.get("/v1/alerts", response_model=Page[Alert])
def alerts(
    state: Reader,
    since: dt.datetime | None = None,
    device_id: str | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Response:
    """Alerts whose reading's event time is at or after ``since``, oldest first."""
    after = decode_cursor(cursor)
    where = ["ts >= %s"]
    params: list[Any] = [_utc(since) if since else EPOCH]
    if device_id is not None:
        where.append("device_id = %s")
        params.append(device_id)
    if after:
        where.append("(ts, alert_id) > (%s, %s)")
        params += [after[0], after[1]]
    rows = _serving(
        state,
        f"SELECT * FROM ml.alerts WHERE {' AND '.join(where)} ORDER BY ts, alert_id LIMIT %s",
        (*params, limit + 1),
    )
    next_cursor = _page(rows, limit, "ts", "alert_id")
    return _page_response(Alert, rows, next_cursor)
