"""Errors as JSON, API keys and scopes, per-key request rates, request ids."""

from __future__ import annotations

import contextvars
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from astra_pipeline.api.keys import Caller, KeyEntry, Scope, check_key

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
ANONYMOUS = "anonymous"


class ApiError(Exception):
    """An error answered as ``{"error": ..., "detail": ...}`` with its status."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, **self.extra}


def request_id(header: str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new one."""
    if header and len(header) <= 128 and header.isprintable() and " " not in header:
        return header
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Keys:
    """The configured keys; none configured means anyone on loopback may call."""

    entries: dict[str, KeyEntry]

    @property
    def required(self) -> bool:
        return bool(self.entries)

    def caller(self, authorization: str | None, scope: Scope) -> Caller:
        if not self.required:
            return Caller(ANONYMOUS, scope)
        if not authorization or not authorization.lower().startswith("bearer "):
            raise ApiError(
                401,
                "missing API key",
                "send Authorization: Bearer <key>",
                {"WWW-Authenticate": "Bearer"},
            )
        caller = check_key(self.entries, authorization[7:].strip())
        if caller is None:
            raise ApiError(401, "unknown API key", None, {"WWW-Authenticate": "Bearer"})
        if caller.scope != scope:
            raise ApiError(403, "API key lacks the scope", f"this route needs scope {scope!r}")
        return caller


class RateLimiter:
    """A token bucket per caller: ``rate`` requests per second, bursts of as many."""

    def __init__(self, rate_per_s: float) -> None:
        self._rate = rate_per_s
        self._burst = max(1.0, rate_per_s)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            if tokens < 1:
                self._buckets[who] = (tokens, now)
                wait = math.ceil((1 - tokens) / self._rate)
                raise ApiError(
                    429,
                    "too many requests",
                    f"above {self._rate:g} requests/s for this key",
                    {"Retry-After": str(max(1, wait))},
                )
            self._buckets[who] = (tokens - 1, now)
