"""The partitions a checked run materialized, from its tags (not from rows it wrote: with
the writer pool held per step, another run may rewrite them before the checks run)."""

from collections.abc import Mapping

from astra_pipeline.run_tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)


def run_partition_keys(tags: Mapping[str, str]) -> tuple[str, str] | None:
    """The first and last partition key of a run (the same key for one partition), or
    None for a run without partitions (checks executed on their own)."""
    first = tags.get(PARTITION_NAME_TAG) or tags.get(ASSET_PARTITION_RANGE_START_TAG)
    last = tags.get(PARTITION_NAME_TAG) or tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if first is None or last is None:
        return None
    return first, last
