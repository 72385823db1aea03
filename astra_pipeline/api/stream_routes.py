"""GET /v1/alerts/stream: Server-Sent Events of the alerts reaching the alerts topic, and
the health endpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from astra_pipeline.api.guard import ApiError
from astra_pipeline.api.models import ErrorBody, Health
from astra_pipeline.api.state import ApiState, read_caller, state_of
from resources.alert_follow import AlertFollower
from resources.errors import AstraResourceError

HEARTBEAT_S = 15.0
READY_TIMEOUT_S = 3.0

router = APIRouter()


@router.get(
    "/v1/alerts/stream",
    tags=["read"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 503: {"model": ErrorBody}},
)
async def alert_stream(
    request: Request,
    state: Annotated[ApiState, Depends(read_caller)],
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """New alerts as they are published: ``id:`` the alert id, ``data:`` the alert as
    JSON. Reconnect with Last-Event-ID to resume after the last alert received."""
    try:
        follower = await asyncio.to_thread(
            AlertFollower,
            state.settings.kafka_bootstrap_servers,
            state.settings.topic_alerts,
            last_event_id,
        )
    except AstraResourceError as error:
        raise ApiError(503, "Kafka unavailable", str(error), {"Retry-After": "5"}) from None
    return StreamingResponse(
        _events(request, follower),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(request: Request, follower: AlertFollower) -> AsyncIterator[bytes]:
    try:
        yield b": connected\n\n"
        quiet_since = time.monotonic()
        while not await request.is_disconnected():
            alerts = await asyncio.to_thread(follower.poll, 1.0)
            for alert in alerts:
                data = msgspec.json.encode(msgspec.json.decode(alert.value))
                yield b"id: " + alert.alert_id.encode() + b"\ndata: " + data + b"\n\n"
            if alerts:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > HEARTBEAT_S:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
    finally:
        await asyncio.to_thread(follower.close)


@router.get("/healthz", response_model=Health, tags=["health"])
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
async def readyz(request: Request) -> JSONResponse:
    """Kafka's metadata and the serving database answer within 3 s (which did not, if not)."""
    state = state_of(request.app)

    async def check(name: str, probe: Callable[[], object]) -> tuple[str, str]:
        try:
            await asyncio.wait_for(asyncio.to_thread(probe), READY_TIMEOUT_S)
            return name, "ok"
        except TimeoutError:
            return name, f"no answer within {READY_TIMEOUT_S:.0f}s"
        except AstraResourceError as error:
            return name, str(error)

    results = dict(
        await asyncio.gather(
            check("kafka", lambda: state.producer.topic_partitions(READY_TIMEOUT_S)),
            check("postgres", state.serving.ping),
        )
    )
    ready = all(v == "ok" for v in results.values())
    body = Health(status="ready" if ready else "not ready", checks=results)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format (docs/operations.md); no key needed, like the health routes."""
    state = state_of(request.app)
    body = await asyncio.to_thread(generate_latest, state.registry)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)
