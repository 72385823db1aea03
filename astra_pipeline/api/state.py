"""What every route shares (settings, the producer, the readers, the keys) and the
dependencies that check a request's key, scope and rate before the route runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry

from astra_pipeline.api.guard import ANONYMOUS, Keys, RateLimiter
from astra_pipeline.api.keys import Caller, Scope
from astra_pipeline.api.metrics import HttpMetrics
from resources.gateway_producer import GatewayProducer
from resources.serving_reads import ServingReader
from resources.settings import AstraSettings


@dataclass
class ApiState:
    settings: AstraSettings
    producer: GatewayProducer
    serving: ServingReader
    warehouse: Any  # resources.warehouse.DuckDBWarehouseResource (its query method)
    keys: Keys
    rate: RateLimiter
    # /metrics: the registry it renders and the HTTP metrics the middleware records.
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    http: HttpMetrics | None = None

    def __post_init__(self) -> None:
        if self.http is None:
            self.http = HttpMetrics(self.registry)


def state_of(app: FastAPI) -> ApiState:
    state: ApiState = app.state.astra
    return state


def rate_key(caller: Caller, client: Any) -> str:
    """Per key; without keys, per client address."""
    if caller.key_id != ANONYMOUS:
        return caller.key_id
    return f"{ANONYMOUS}:{client.host if client else '?'}"


def _check(request: Request, scope: Scope) -> ApiState:
    state = state_of(request.app)
    caller = state.keys.caller(request.headers.get("authorization"), scope)
    request.state.key_id = caller.key_id
    state.rate.take(rate_key(caller, request.client))
    return state


def ingest_caller(request: Request) -> ApiState:
    return _check(request, "ingest")


def read_caller(request: Request) -> ApiState:
    return _check(request, "read")
