"""The one module that names environment variables.

Everything configurable is read here, when the code location loads (never at import
time, but for partitions_start), and handed to resources, sensors and the CLI as a typed
object. Every variable is
listed with its default in `.env.example`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:  # imported where used: `astra sql` reads settings without Dagster
    import dagster as dg


class SettingsError(ValueError):
    """An environment variable holds a value the platform cannot use."""


class AstraSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_raw: str = "events_raw"
    topic_deadletter: str = "events_deadletter"
    topic_alerts: str = "events_alerts"
    raw_partitions: int = Field(default=6, ge=1)
    consumer_group: str = "astra-ingest"
    # How long one request to Kafka may take before the command or run says the broker
    # is unreachable.
    kafka_timeout_s: float = Field(default=15.0, gt=0)
    # The warehouse is a DuckLake (docs/lake.md): its catalog a Postgres database (a
    # postgresql:// URL of an existing database, without its password:
    # ASTRA_LAKE_CATALOG_PASSWORD), its rows Parquet files under lake_data_path (a folder,
    # or s3://bucket/prefix/ reached with the lake_s3_* settings and the credentials
    # ASTRA_LAKE_S3_ACCESS_KEY_ID / ASTRA_LAKE_S3_SECRET_ACCESS_KEY). Unset: the running
    # `make dev` session's lake (data/dev/lake.json), else commands that need the
    # warehouse say so.
    lake_catalog: str = ""
    lake_data_path: str = "data/lake"
    lake_metadata_schema: str = Field(default="", pattern=r"^([a-z_][a-z0-9_]*)?$")
    lake_s3_endpoint: str = ""
    lake_s3_region: str = "us-east-1"
    lake_s3_url_style: str = Field(default="path", pattern=r"^(path|vhost)$")
    lake_s3_use_ssl: bool = True
    # Lake maintenance (lake_maintenance_job): when it runs (cron, UTC), and how far back
    # time travel (`astra sql --at`) reaches: older snapshots and the files only they
    # reference are deleted.
    lake_maintenance_cron: str = "17 * * * *"
    lake_snapshot_retention_hours: float = Field(default=168.0, gt=0)
    # The lake is the archive of the raw messages, kept after Kafka's retention has
    # dropped them: maintenance deletes raw.events rows ingested longer ago than this
    # many days; 0 keeps every message. (The clean tables are kept whatever it is.)
    lake_raw_retention_days: float = Field(default=0.0, ge=0)
    max_batch_size: int = Field(default=100_000, ge=1)
    # Ingest shards: the raw topic's partitions split into this many groups (partition p
    # in shard p % shards), each ingested by runs of its own, side by side. More shards
    # than partitions leaves some shards idle.
    ingest_shards: int = Field(default=1, ge=1, le=64)
    run_time_budget_s: float = Field(default=60.0, gt=0)
    sensor_interval_s: int = Field(default=5, ge=1)
    sensor_running_by_default: bool = True
    deadletter_rate_threshold: float = Field(default=0.05, ge=0, le=1)
    # The first UTC day of the hourly and daily partitions: where this deployment's data
    # can start (events before it are stored, but no window or score covers them). The UI
    # lists every partition from here to now, so a later start means fewer "missing".
    partitions_start: dt.date = dt.date(2026, 1, 1)
    # The Dagster webserver `astra backfill` submits to.
    dagster_url: str = "http://127.0.0.1:3000"
    # Postgres serving copy. Either a libpq URL (without the password) or the parts; the
    # password is never a setting: it is read at run time from PG_PASSWORD_ENV through
    # dg.EnvVar, so it is not stored here, shown in the UI or logged.
    pg_url: str = ""
    pg_host: str = "127.0.0.1"
    pg_port: int = Field(default=5432, ge=1, le=65535)
    pg_user: str = "astra"
    pg_database: str = "astra"
    pg_connect_timeout_s: int = Field(default=10, ge=1)
    pg_lock_timeout_s: float = Field(default=60.0, gt=0)
    # Comma-separated DuckDB schemas copied to Postgres; add "clean" to serve the clean
    # event tables too (they are large: opt in).
    pg_serving_schemas: str = Field(default="agg,features,ml", pattern=r"^[a-z_]+(,[a-z_]+)*$")
    # Re-copy a partition whenever its upstream partition is re-materialized (needs the
    # automation sensor; on in the compose stack, off under `make dev` with no Postgres).
    pg_serving_automation: bool = False

    # `astra api` (docs/api.md): the HTTP/WebSocket gateway and read API. With no API
    # keys it binds to loopback only; api_keys lists `astra api-key create`'s entries
    # (salted hashes, comma-separated), never the keys themselves.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_keys: str = ""
    api_max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Requests per second per API key (per client address without keys), with bursts
    # of as many; above it 429 with Retry-After.
    api_rate_limit_per_s: float = Field(default=200.0, gt=0)
    # How long a POST waits for Kafka's acknowledgement before answering 503, and how
    # many messages the producer may hold unacknowledged before it answers 503 at once.
    api_kafka_timeout_s: float = Field(default=10.0, gt=0)
    api_producer_queue_messages: int = Field(default=200_000, ge=1000)

    def serving_schemas(self) -> tuple[str, ...]:
        return tuple(self.pg_serving_schemas.split(","))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AstraSettings:
        """Build settings from ``ASTRA_*`` variables; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for name in cls.model_fields:
            key = env_var_name(name)
            if key in env and env[key] != "":
                values[name] = env[key]
        for retired, instead in RETIRED.items():
            if env.get(retired):
                raise SettingsError(f"invalid environment: {retired} is no longer read: {instead}")
        if environ is None and "lake_catalog" not in values:
            values |= dev_session_lake()
        try:
            settings = cls.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"{env_var_name(str(e['loc'][0]))}={values.get(str(e['loc'][0]))!r}: {e['msg']}"
                for e in error.errors(include_url=False)
            )
            raise SettingsError(f"invalid environment: {problems}") from None
        return settings


DEV_LAKE_POINTER = Path("data", "dev", "lake.json")
"""Written by `astra dev` while it runs (relative to its working folder): the running
dev session's lake catalog and data path."""


RETIRED = {
    "ASTRA_DUCKDB_PATH": "the warehouse is a DuckLake, set ASTRA_LAKE_CATALOG and "
    "ASTRA_LAKE_DATA_PATH instead (docs/lake.md); `astra import-duckdb PATH` moves an old "
    "file's tables into the lake",
    "ASTRA_DUCKDB_LOCK_TIMEOUT_S": "a DuckLake has no file lock to wait for (docs/lake.md)",
}
"""Variables of the single DuckDB file, which is gone: set, they are an error rather than
silently ignored."""


def dev_session_lake(folder: Path | None = None) -> dict[str, str]:
    """The running dev session's lake settings (lake_catalog, lake_data_path), read
    from DEV_LAKE_POINTER under ``folder`` (default: the working folder), or nothing.
    Applied only when the environment names no lake itself (no ASTRA_LAKE_CATALOG):
    then `astra sql`, `dg launch` and the
    README's commands in another shell see what `make dev` ingests."""
    pointer = (folder or Path.cwd()) / DEV_LAKE_POINTER
    try:
        found = json.loads(pointer.read_text())
    except (OSError, ValueError):
        return {}
    return {
        key: str(found[key])
        for key in ("lake_catalog", "lake_data_path")
        if isinstance(found, dict) and found.get(key)
    }


def partitions_start(environ: Mapping[str, str] | None = None) -> dt.date:
    """ASTRA_PARTITIONS_START alone. The one setting read when a module is imported:
    Dagster's partitions definitions are module-level objects of the asset modules,
    which the code location imports as it loads. Only this variable is read, so another
    variable's bad value cannot stop an import."""
    env = os.environ if environ is None else environ
    key = env_var_name("partitions_start")
    return AstraSettings.from_env({key: env[key]} if env.get(key) else {}).partitions_start


PG_PASSWORD_ENV = "ASTRA_PG_PASSWORD"
"""The serving database's password: a secret, so read through dg.EnvVar, not a setting."""


def pg_password_source(environ: Mapping[str, str] | None = None) -> dg.EnvVar | None:
    """The password as a Dagster EnvVar (resolved when the resource is used), or None when
    the variable is unset or empty (trust, peer or .pgpass authentication)."""
    import dagster as dg

    env = os.environ if environ is None else environ
    return dg.EnvVar(PG_PASSWORD_ENV) if env.get(PG_PASSWORD_ENV) else None


LAKE_SECRET_ENVS = {
    "lake_catalog_password": "ASTRA_LAKE_CATALOG_PASSWORD",
    "lake_s3_access_key_id": "ASTRA_LAKE_S3_ACCESS_KEY_ID",
    "lake_s3_secret_access_key": "ASTRA_LAKE_S3_SECRET_ACCESS_KEY",
}
"""The lake's secrets (not settings: never stored in AstraSettings, shown or logged)."""


def lake_secret_sources(
    environ: Mapping[str, str] | None = None, *, resolve: bool = False
) -> dict[str, str | dg.EnvVar]:
    """The lake secrets that are set: as dg.EnvVar (resolved by Dagster when a run uses
    the resource), or with ``resolve`` as their values (for the CLI, outside Dagster)."""
    env = os.environ if environ is None else environ
    if resolve:
        return {field: env[name] for field, name in LAKE_SECRET_ENVS.items() if env.get(name)}
    import dagster as dg

    return {field: dg.EnvVar(name) for field, name in LAKE_SECRET_ENVS.items() if env.get(name)}


def env_var_name(field: str) -> str:
    return f"ASTRA_{field.upper()}"


def env_var_defaults() -> dict[str, str]:
    """Every variable with its default, as `.env.example` lists them."""
    defaults = AstraSettings()
    return {env_var_name(name): str(getattr(defaults, name)) for name in AstraSettings.model_fields}
