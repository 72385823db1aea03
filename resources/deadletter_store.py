"""The warehouse side of dead letters: what broke, and what was sent again.

``clean.dead_letter_events`` holds every malformed message whole; ``ops.deadletter_replays``
holds one row per dead letter that was replayed (at most once: a claim checks inside its
transaction that none of its dead letters is claimed, and takes a turn so that two
claims in flight at once cannot both commit on a lake), with the message it publishes
and, once acknowledged, where it landed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from resources.errors import WarehouseError
from resources.tables import DEAD_LETTER_EVENTS, DEADLETTER_REPLAY_TURNS, DEADLETTER_REPLAYS
from resources.warehouse import WarehouseSession


class AlreadyClaimed(WarehouseError):
    """A dead letter of a claim has been claimed by another replay."""


_COORDS = 'd.topic, d."partition", d."offset"'
# A dead letter that is itself a replayed message, and the dead letter it replays.
_REPLAY_OF = (
    f"LEFT JOIN {DEADLETTER_REPLAYS} AS origin ON origin.target_topic = d.topic "
    'AND origin.target_partition = d."partition" AND origin.target_offset = d."offset"'
)
_REPLAYED = (
    f"LEFT JOIN {DEADLETTER_REPLAYS} AS r ON r.source_topic = d.topic "
    'AND r.source_partition = d."partition" AND r.source_offset = d."offset"'
)


@dataclass(frozen=True)
class Selection:
    """Which dead letters: a reason pattern and/or exact coordinates, and a start time."""

    reason: str | None = None
    """A case-insensitive substring of the reason, in which ``*`` matches anything."""
    ids: tuple[tuple[str | None, int, int], ...] = ()
    """(topic or None for any, partition, offset)."""
    since: dt.datetime | None = None
    """Dead letters ingested at or after this time."""

    def where(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        params: list[object] = []
        if self.reason is not None:
            clauses.append("d.reason ILIKE ? ESCAPE '\\'")
            params.append(like_pattern(self.reason))
        if self.ids:
            parts = []
            for topic, partition, offset in self.ids:
                parts.append(
                    '(d."partition" = ? AND d."offset" = ? AND (? IS NULL OR d.topic = ?))'
                )
                params.extend([partition, offset, topic, topic])
            clauses.append("(" + " OR ".join(parts) + ")")
        if self.since is not None:
            clauses.append("d.ingested_at >= ?")
            params.append(self.since)
        return (" AND ".join(clauses) or "TRUE"), params


def like_pattern(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "%" + escaped.replace("*", "%") + "%"


def summary(session: WarehouseSession, selection: Selection, top: int = 20) -> pl.DataFrame:
    """Per reason (the ``top`` most frequent): dead letters, how many were replayed, how
    many are themselves replays of earlier dead letters, first and last seen."""
    where, params = selection.where()
    return session.query(
        "SELECT d.reason, count(*) AS dead_letters, count(r.replay_id) AS replayed, "
        "count(origin.replay_id) AS replays_of_others, min(d.ingested_at) AS first_seen, "
        f"max(d.ingested_at) AS last_seen FROM {DEAD_LETTER_EVENTS} AS d {_REPLAYED} "
        f"{_REPLAY_OF} WHERE {where} GROUP BY d.reason ORDER BY dead_letters DESC, d.reason "
        "LIMIT ?",
        [*params, top],
    )


def examples(session: WarehouseSession, selection: Selection, limit: int) -> pl.DataFrame:
    """Recent dead letters with their coordinates, a value preview, and replay links."""
    where, params = selection.where()
    return session.query(
        f'SELECT {_COORDS}, d.ingested_at, d.reason, octet_length(d."value") AS value_bytes, '
        "left(decode(d.\"value\"[1:80], 'replace'), 80) AS value_preview, "
        "CASE WHEN r.replay_id IS NULL THEN NULL ELSE r.target_topic || '/' || "
        "coalesce(r.target_partition::VARCHAR, '?') || '/' || "
        "coalesce(r.target_offset::VARCHAR, '?') END AS replayed_as, "
        "CASE WHEN origin.replay_id IS NULL THEN NULL ELSE origin.source_topic || '/' || "
        "origin.source_partition::VARCHAR || '/' || origin.source_offset::VARCHAR END "
        f"AS replay_of FROM {DEAD_LETTER_EVENTS} AS d {_REPLAYED} {_REPLAY_OF} "
        f'WHERE {where} ORDER BY d.ingested_at DESC, d."partition", d."offset" LIMIT ?',
        [*params, limit],
    )


def replayable(session: WarehouseSession, selection: Selection) -> pl.DataFrame:
    """The selected dead letters not replayed yet: topic, partition, offset, key, value,
    reason."""
    where, params = selection.where()
    return session.frame(
        f'SELECT {_COORDS}, d."key", d."value", d.reason FROM {DEAD_LETTER_EVENTS} AS d '
        f'{_REPLAYED} WHERE r.replay_id IS NULL AND {where} ORDER BY d.topic, d."partition", '
        'd."offset"',
        params,
    )


def claim(
    session: WarehouseSession,
    claims: pl.DataFrame,
    attempt_id: str,
    target_topic: str,
    search_from: Mapping[int, int],
    transform: str | None,
    claimed_at: dt.datetime,
) -> int:
    """Record the replays before anything is sent. ``claims`` has source_topic,
    source_partition, source_offset, replay_id, key, value, reason. A dead letter claimed
    meanwhile by another replay fails the whole claim (``AlreadyClaimed``; on a lake a
    claim in flight at the same time fails at commit, ``CommitConflict``)."""
    frame = claims.with_columns(
        pl.lit(attempt_id).alias("attempt_id"),
        pl.lit(target_topic).alias("target_topic"),
        pl.lit(transform, dtype=pl.String).alias("transform"),
        pl.lit(json.dumps({str(p): o for p, o in search_from.items()})).alias("search_from"),
        pl.lit(claimed_at, dtype=pl.Datetime("us", "UTC")).alias("claimed_at"),
    )
    session.execute(f"UPDATE {DEADLETTER_REPLAY_TURNS} SET turns = turns + 1")
    with session.with_frame("_claims", frame):
        taken = session.scalar(
            f"SELECT count(*) FROM {DEADLETTER_REPLAYS} AS r JOIN _claims AS c "
            "ON r.source_topic = c.source_topic AND r.source_partition = c.source_partition "
            "AND r.source_offset = c.source_offset"
        )
        if taken:
            raise AlreadyClaimed(
                f"{taken} of these dead letters were claimed by another replay meanwhile; "
                "nothing was claimed"
            )
        session.execute(
            f"INSERT INTO {DEADLETTER_REPLAYS} (source_topic, source_partition, source_offset, "
            'replay_id, attempt_id, target_topic, "key", "value", reason, transform, '
            "search_from, claimed_at) SELECT source_topic, source_partition, source_offset, "
            'replay_id, attempt_id, target_topic, "key", "value", reason, transform, '
            "search_from, claimed_at FROM _claims"
        )
    return frame.height


def unpublished(session: WarehouseSession) -> pl.DataFrame:
    """Claimed replays without a recorded acknowledgement."""
    return session.frame(
        "SELECT replay_id, attempt_id, target_topic, search_from, source_topic, "
        'source_partition, source_offset, "key", "value", reason, transform '
        f"FROM {DEADLETTER_REPLAYS} WHERE published_at IS NULL ORDER BY claimed_at, "
        "source_topic, source_partition, source_offset"
    )


def mark_published(
    session: WarehouseSession, landed: Mapping[str, tuple[int, int]], at: dt.datetime
) -> int:
    if not landed:
        return 0
    frame = pl.DataFrame(
        [
            {"replay_id": k, "target_partition": p, "target_offset": o}
            for k, (p, o) in landed.items()
        ],
        schema={"replay_id": pl.String, "target_partition": pl.Int32, "target_offset": pl.Int64},
    )
    with session.with_frame("_landed", frame):
        session.execute(
            f"UPDATE {DEADLETTER_REPLAYS} AS r SET target_partition = l.target_partition, "
            "target_offset = l.target_offset, published_at = ? FROM _landed AS l "
            "WHERE r.replay_id = l.replay_id AND r.published_at IS NULL",
            [at],
        )
    return frame.height


def search_start(rows: pl.DataFrame) -> dict[int, int]:
    """The earliest recorded topic end over the given replays' attempts, per partition."""
    return publish_starts(rows["search_from"].to_list())


def unpublished_dead_letters(
    session: WarehouseSession, topic: str | None = None, partitions: Sequence[int] | None = None
) -> pl.DataFrame:
    """Dead letters committed but not acknowledged by the dead-letter topic yet (a run
    died in between): topic, partition, offset, key, value, reason, publish_from. With
    ``topic`` and ``partitions``, only those of these partitions of that topic (an
    ingest shard settles its own: another shard's may be on their way right now)."""
    where, params = "published_at IS NULL", []
    if topic is not None and partitions is not None:
        where += ' AND topic = ? AND list_contains(?, "partition")'
        params = [topic, list(partitions)]
    return session.frame(
        'SELECT topic, "partition", "offset", "key", "value", reason, publish_from '
        f'FROM {DEAD_LETTER_EVENTS} WHERE {where} ORDER BY topic, "partition", "offset"',
        params,
    )


def mark_dead_letters_published(
    session: WarehouseSession, letters: pl.DataFrame, at: dt.datetime
) -> int:
    """Record that these dead letters (columns topic, partition, offset) are on the
    dead-letter topic."""
    if letters.height == 0:
        return 0
    with session.with_frame("_published", letters.select("topic", "partition", "offset")):
        session.execute(
            f"UPDATE {DEAD_LETTER_EVENTS} AS d SET published_at = ? FROM _published AS p "
            'WHERE d.topic = p.topic AND d."partition" = p."partition" '
            'AND d."offset" = p."offset" AND d.published_at IS NULL',
            [at],
        )
    return letters.height


def publish_starts(texts: list[str]) -> dict[int, int]:
    """The earliest recorded topic end per partition over publish_from values."""
    start: dict[int, int] = {}
    for text in set(texts):
        for partition, offset in json.loads(text).items():
            start[int(partition)] = min(offset, start.get(int(partition), offset))
    return start
