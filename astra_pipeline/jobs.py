"""Jobs are selections over the asset graph."""

from __future__ import annotations

import dagster as dg

INGEST_JOB_NAME = "ingest_events_job"

ingest_events_job = dg.define_asset_job(
    INGEST_JOB_NAME,
    selection=dg.AssetSelection.groups("ingest"),
    # One process per run: a micro-batch should not pay a subprocess start per step.
    executor_def=dg.in_process_executor,
    description="Drain Kafka into raw, clean and dead-letter tables, then run their checks.",
)
