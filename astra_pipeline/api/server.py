"""`astra api`: build the real resources from the settings and serve on uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import sys
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from astra_pipeline.api.app import build_app
from astra_pipeline.api.guard import Keys, RateLimiter
from astra_pipeline.api.keys import KeyConfigError, parse_entries
from astra_pipeline.api.metrics import PipelineCollector
from astra_pipeline.api.state import ApiState
from resources.gateway_producer import GatewayProducer
from resources.ingest_tallies import IngestTallies
from resources.lag_probe import LagProbe
from resources.run_tallies import RunTallies
from resources.serving import serving_resource_from_settings
from resources.serving_reads import ServingReader
from resources.settings import AstraSettings, SettingsError
from resources.warehouse import warehouse_from_settings

INDEX_RETRY_S = 60.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_keys(settings: AstraSettings) -> Keys:
    try:
        keys = Keys(parse_entries(settings.api_keys))
    except KeyConfigError as error:
        raise SettingsError(f"invalid environment: {error}") from None
    if not keys.required and not is_loopback(settings.api_host):
        raise SettingsError(
            f"invalid environment: ASTRA_API_HOST={settings.api_host} is not loopback and "
            "ASTRA_API_KEYS is empty: without keys the API serves loopback only "
            "(`astra api-key create --scope ingest|read`)"
        )
    return keys


def build_state(settings: AstraSettings) -> ApiState:
    keys = load_keys(settings)
    state = ApiState(
        settings=settings,
        producer=GatewayProducer(
            settings.kafka_bootstrap_servers,
            settings.topic_raw,
            settings.api_kafka_timeout_s,
            settings.api_producer_queue_messages,
        ),
        serving=ServingReader(
            serving_resource_from_settings(settings, resolve_secrets=True).conninfo(),
            timeout_s=5.0,
        ),
        warehouse=warehouse_from_settings(settings, resolve_secrets=True),
        keys=keys,
        rate=RateLimiter(settings.api_rate_limit_per_s),
    )
    state.registry.register(
        PipelineCollector(
            settings.topic_raw,
            LagProbe(
                settings.kafka_bootstrap_servers,
                settings.consumer_group,
                settings.topic_raw,
                timeout_s=5.0,
            ),
            IngestTallies(state.warehouse),
            state.serving,
            _run_tallies(),
            state.producer.queued,
        )
    )
    return state


def _run_tallies() -> RunTallies | None:
    """The Dagster instance's runs, when this process can reach the instance
    (DAGSTER_HOME set: `make dev`, the compose stack)."""
    if not os.environ.get("DAGSTER_HOME"):
        return None
    import dagster as dg

    return RunTallies(dg.DagsterInstance.get())


def serve(settings: AstraSettings, host: str | None = None, port: int | None = None) -> int:
    if host is not None or port is not None:
        settings = settings.model_copy(
            update={k: v for k, v in {"api_host": host, "api_port": port}.items() if v is not None}
        )
    state = build_state(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.serving.open()
        indexes = asyncio.create_task(_read_indexes(state))
        yield
        indexes.cancel()
        await asyncio.to_thread(state.producer.close)
        await asyncio.to_thread(state.serving.close)

    app = build_app(state)
    app.router.lifespan_context = lifespan
    # The process holds ~200,000 long-lived objects from its imports (Dagster, DuckDB,
    # polars): freezing them keeps every full collection from walking them again, which
    # paused all requests for 110-150 ms each (bench/api.py, docs/performance.md).
    gc.collect()
    gc.freeze()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    auth = (
        f"{len(state.keys.entries)} API keys"
        if state.keys.required
        else "no API keys: loopback only, no authentication"
    )
    sys.stdout.write(
        f"astra api on http://{settings.api_host}:{settings.api_port} ({auth}); "
        f"OpenAPI at /docs; events to {settings.topic_raw} on {settings.kafka_bootstrap_servers}\n"
    )
    sys.stdout.flush()
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
    uvicorn.Server(config).run()
    return 0


async def _read_indexes(state: ApiState) -> None:
    """The read indexes on the serving tables, once each table exists (tables appear as
    the pipeline first serves them)."""
    log = logging.getLogger("astra.api")
    done: set[str] = set()
    while True:
        try:
            made = await asyncio.to_thread(state.serving.ensure_read_indexes)
            for index in set(made) - done:
                log.info("read index on %s", index)
            done |= set(made)
        except Exception as error:  # a serving database not up yet: next round
            log.warning("read indexes not created yet: %s", error)
        await asyncio.sleep(INDEX_RETRY_S)
