"""POST /v1/events and the WebSocket /v1/ws/events: validated events to Kafka.

Both take the same items and answer the same per-item results. A result says
``accepted`` only after Kafka acknowledged the message (acks=all, idempotent producer);
items that break the contract are ``rejected`` with the contract's reason and never
produced. The WebSocket reads a client's next message only after it acknowledged the
previous one: a slow Kafka slows the socket, nothing queues up in memory.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

from astra_pipeline.api.guard import REQUEST_ID, ApiError
from astra_pipeline.api.intake import (
    CONTENT_TYPES,
    JSON,
    Accepted,
    BodyError,
    Rejected,
    media_type,
    prepare_all,
    split_body,
)
from astra_pipeline.api.models import ErrorBody, IngestFailure, IngestResults
from astra_pipeline.api.state import ApiState, ingest_caller, rate_key, state_of
from resources.errors import KafkaUnavailable
from resources.gateway_producer import Delivered, GatewayMessage, ProducerBusy

MAX_VALUE_BYTES = 1_000_000
"""librdkafka's default message.max.bytes: an item above it cannot be one message."""
RETRY_AFTER_S = "5"

router = APIRouter(tags=["ingest"])


Result = dict[str, object]
"""One item's result, as ItemResult documents it (plain dicts: a model per item cost a
tenth of a batch's time, bench/api.py)."""


async def ingest_items(state: ApiState, items: list[object]) -> tuple[int, list[Result]]:
    """Validate and produce; (HTTP status, results in item order). Raises ApiError for a
    503."""
    prepared = prepare_all(items, MAX_VALUE_BYTES, dt.datetime.now(dt.UTC))
    accepted = [item for item in prepared if isinstance(item, Accepted)]
    results: list[Result] = [
        {"index": item.index, "status": "rejected", "reason": item.reason}
        if isinstance(item, Rejected)
        else {}
        for item in prepared
    ]
    if not accepted:
        return 422, results
    header: list[tuple[str, str | bytes | None]] = [("x-request-id", REQUEST_ID.get().encode())]
    try:
        deliveries = await state.producer.send(
            [GatewayMessage(item.key, item.value, header) for item in accepted]
        )
    except ProducerBusy as error:
        raise ApiError(
            503, "Kafka producer queue full", str(error), {"Retry-After": RETRY_AFTER_S}
        ) from None
    except KafkaUnavailable as error:
        raise ApiError(
            503, "Kafka unavailable", str(error), {"Retry-After": RETRY_AFTER_S}
        ) from None
    failed = False
    for item, delivery in zip(accepted, deliveries, strict=True):
        if isinstance(delivery, Delivered):
            results[item.index] = {
                "index": item.index,
                "status": "accepted",
                "event_id": item.event_id,
                "partition": delivery.partition,
                "offset": delivery.offset,
            }
        else:
            failed = True
            results[item.index] = {
                "index": item.index,
                "status": "failed",
                "event_id": item.event_id,
                "reason": delivery.reason,
            }
    if failed:
        raise ApiError(
            503,
            "Kafka did not acknowledge every event",
            "items with status failed were not stored: send them again (same event_id)",
            {"Retry-After": RETRY_AFTER_S},
            {"results": results},
        )
    return 200, results


def _json(body: object, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


_encoder = msgspec.json.Encoder()


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (chunked bodies too)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body too large", f"limit {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body too large", f"limit {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/v1/events",
    response_model=IngestResults,
    response_model_exclude_none=True,
    responses={
        400: {"model": ErrorBody},
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        413: {"model": ErrorBody},
        415: {"model": ErrorBody},
        422: {"model": IngestResults},
        429: {"model": ErrorBody},
        503: {"model": IngestFailure},
    },
    summary="Send events: one JSON object, a JSON array, or NDJSON",
)
async def post_events(
    request: Request, state: Annotated[ApiState, Depends(ingest_caller)]
) -> Response:
    kind = media_type(request.headers.get("content-type"))
    if kind is None:
        raise ApiError(
            415,
            "unsupported content type",
            f"send {' or '.join(CONTENT_TYPES)}, not {request.headers.get('content-type')!r}",
        )
    body = await _body(request, state.settings.api_max_body_bytes)
    try:
        items = split_body(body, kind)
    except BodyError as error:
        raise ApiError(400, "body is not JSON or NDJSON", str(error)) from None
    if not items:
        raise ApiError(400, "no events", "the body holds no item")
    status, results = await ingest_items(state, items)
    return _json({"results": results}, status)


@router.websocket("/v1/ws/events")
async def ws_events(websocket: WebSocket) -> None:
    """Each message: one event or a JSON array of events. Each answer, in order: the
    message's results, or ``{"error", "detail"}`` for a message that is not JSON or
    that Kafka did not take (send it again)."""
    state = state_of(websocket.app)
    try:
        caller = state.keys.caller(websocket.headers.get("authorization"), "ingest")
    except ApiError as error:
        await websocket.close(code=1008, reason=error.error)
        return
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("bytes") or (message.get("text") or "").encode()
            if len(raw) > state.settings.api_max_body_bytes:
                await websocket.send_json({"error": "message too large", "detail": len(raw)})
                continue
            try:
                items = split_body(raw, JSON)
                state.rate.take(rate_key(caller, websocket.client))
                _, results = await ingest_items(state, items)
                await websocket.send_text(_encoder.encode({"results": results}).decode())
            except BodyError as error:
                await websocket.send_json({"error": "message is not JSON", "detail": str(error)})
            except ApiError as error:
                await websocket.send_json(error.body())
    except WebSocketDisconnect:
        return
