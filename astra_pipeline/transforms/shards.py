"""Ingest shards: which partitions of the raw topic each shard ingests.

Partition p belongs to shard p mod shards, so every partition has exactly one shard and
the shards' sizes differ by at most one partition. The same split in the sensor (which
requests a run per shard with lag) and in the run (which reads only its partitions).
"""

from __future__ import annotations

from collections.abc import Iterable


def shard_partitions(partitions: Iterable[int], shards: int, shard: int) -> list[int]:
    """The partitions of ``partitions`` that shard ``shard`` of ``shards`` ingests."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not one of 0..{shards - 1}")
    return sorted(p for p in partitions if p % shards == shard)


def shard_of(partition: int, shards: int) -> int:
    return partition % shards
