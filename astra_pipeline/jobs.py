"""Jobs are selections over the asset graph."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from astra_pipeline.assets.ingest import IngestConfig

INGEST_JOB_NAME = "ingest_events_job"


def build_ingest_job(config: IngestConfig) -> UnresolvedAssetJobDefinition:
    """The ingest job, its default run config taken from the settings."""
    return dg.define_asset_job(
        INGEST_JOB_NAME,
        selection=dg.AssetSelection.groups("ingest"),
        # One process per run: a micro-batch should not pay a subprocess start per step.
        executor_def=dg.in_process_executor,
        config=dg.RunConfig(ops={"ingest_events": config}),
        description="Drain Kafka into raw, clean and dead-letter tables, then run their checks.",
    )
