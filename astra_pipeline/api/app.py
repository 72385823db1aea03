"""The FastAPI application: routes, JSON errors, request ids and one log line a request."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from astra_pipeline.api import ingest_routes, read_routes, stream_routes
from astra_pipeline.api.guard import REQUEST_ID, ApiError, request_id
from astra_pipeline.api.state import ApiState

LOG = logging.getLogger("astra.api")


def build_app(state: ApiState) -> FastAPI:
    app = FastAPI(
        title="AstraStream API",
        version="1",
        description="Send events (HTTP, WebSocket) and read what the pipeline made of them.",
    )
    app.state.astra = state
    app.include_router(ingest_routes.router)
    app.include_router(read_routes.router)
    app.include_router(stream_routes.router)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(error.detail).lower(), "detail": request.url.path},
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        return JSONResponse({"error": "invalid request", "detail": detail}, status_code=400)

    @app.middleware("http")
    async def request_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        rid = request_id(request.headers.get("x-request-id"))
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            REQUEST_ID.reset(token)
        response.headers["X-Request-ID"] = rid
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        if state.http is not None:
            state.http.observe(
                template, request.method, response.status_code, time.perf_counter() - started
            )
        LOG.info(
            "%s %s %s %d %.1fms key=%s",
            rid,
            request.method,
            template,
            response.status_code,
            (time.perf_counter() - started) * 1000,
            getattr(request.state, "key_id", "-"),
        )
        return response

    return app
