"""Run tags Dagster sets and reads, by their documented names.

Dagster 1.13 exports no constants for them; the strings are part of its documented
behaviour (partitioned runs, backfill ranges, run priority), so they are spelled here
rather than imported from Dagster's private modules.
"""

PARTITION_NAME_TAG = "dagster/partition"
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
PRIORITY_TAG = "dagster/priority"
MAX_RUNTIME_TAG = "dagster/max_runtime"

INGEST_SHARD_TAG = "astra/ingest_shard"
"""Ours: the ingest shard a run drains. The run queue allows one run per value
(dagster.yaml, tag_concurrency_limits), so two runs never ingest a shard at once."""
