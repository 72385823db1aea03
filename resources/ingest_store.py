"""The warehouse side of exactly-once ingestion: the ledger and the batch transaction.

``ops.ingest_ledger`` is the truth of what has been ingested. A batch's rows and its
ledger rows are written in one transaction, after checking that the ledger still ends
where the batch starts; so a replayed or concurrent batch can neither duplicate nor skip
a range.

The check alone is not enough: a DuckLake lets two transactions that only append both
commit, even when each checked the ledger before the other's rows were there: so every
batch also takes a turn on each partition it records (updates the one row of
``ops.ingest_turns_p<partition>``), and of two batches in flight at once that share a
partition only the first to commit does; the other's commit fails with
``CommitConflict``, and nothing of it is written. Batches of disjoint partitions (two
ingest shards) update different turn tables and both commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import polars as pl

from resources.errors import TopicRecreated, WarehouseError
from resources.tables import (
    DEAD_LETTER_EVENTS,
    DUPLICATE_EVENTS,
    INGEST_LEDGER,
    RAW_EVENTS,
    SENSOR_READINGS,
    USER_ACTIVITY,
    ingest_turns_table,
    turn_ddl,
)
from resources.warehouse import WarehouseSession


class LedgerConflict(WarehouseError):
    """The ledger moved since the batch was read: another writer ingested the range."""


@dataclass(frozen=True)
class BatchRows:
    """Rows of one batch for each ingest table (columns named as the tables')."""

    raw_events: pl.DataFrame
    sensor_readings: pl.DataFrame
    user_activity: pl.DataFrame
    dead_letters: pl.DataFrame
    duplicates: pl.DataFrame


@dataclass(frozen=True)
class BatchWritten:
    sensor_readings: int
    user_activity: int
    dead_letters: int
    duplicates: int
    """In-batch duplicates plus copies of event_ids stored by earlier batches."""
    inserted_ts: pl.Series
    """Event times of the clean rows inserted (not of resends dropped as duplicates)."""


def next_offsets(session: WarehouseSession, topic: str) -> dict[int, int]:
    """Per partition, the first offset the ledger has not recorded."""
    frame = session.query(
        f'SELECT "partition", max(end_offset) AS next_offset FROM {INGEST_LEDGER} '
        'WHERE topic = ? GROUP BY "partition"',
        [topic],
    )
    return {int(p): int(o) for p, o in frame.rows()}


def recorded_topic_id(session: WarehouseSession, topic: str) -> str | None:
    """The topic id of the ledger's latest batch of ``topic`` that recorded one."""
    found = session.scalar(
        f"SELECT topic_id FROM {INGEST_LEDGER} WHERE topic = ? AND topic_id IS NOT NULL "
        "ORDER BY committed_at DESC LIMIT 1",
        [topic],
    )
    return str(found) if found is not None else None


def check_topic(session: WarehouseSession, topic: str, topic_id: str | None) -> None:
    """Raise TopicRecreated when ``topic_id`` (the broker's, now) is not the one the
    ledger's batches were read from. A broker that reports no ids, and a ledger that
    recorded none, pass (then only a ledger past a partition's end is caught:
    LedgerAheadOfBroker)."""
    recorded = recorded_topic_id(session, topic)
    if topic_id is None or recorded is None or recorded == topic_id:
        return
    raise TopicRecreated(
        f"topic {topic} has id {topic_id}, but the ledger's batches were read from id "
        f"{recorded}: the topic was deleted and created again (or its broker lost its "
        "data), its offsets started again at 0 and no longer name the messages the ledger "
        "recorded. Nothing was ingested. Start a new epoch: a fresh warehouse for the new "
        "topic (docs/exactly-once.md, 'A topic created again')."
    )


def missing_turns(session: WarehouseSession, partitions: Iterable[int]) -> list[int]:
    """The partitions among ``partitions`` whose turn table does not exist yet."""
    found = session.query(
        "SELECT schema_name || '.' || table_name AS name FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = 'ops'"
    )
    existing = set(found["name"].to_list())
    return [p for p in partitions if ingest_turns_table(p) not in existing]


def create_turns(session: WarehouseSession, partitions: Iterable[int]) -> None:
    """Create the turn tables of ``partitions`` (each with its one row) where missing."""
    for partition in partitions:
        for statement in turn_ddl(ingest_turns_table(partition)):
            session.execute(statement)


def table_rows(session: WarehouseSession) -> dict[str, int]:
    """Rows in the ingest assets' tables: raw_events, cleaned_events (both clean tables)
    and dead_letter_events."""
    raw, clean, dead = session.query(
        f"SELECT (SELECT count(*) FROM {RAW_EVENTS}), (SELECT count(*) FROM {SENSOR_READINGS})"
        f" + (SELECT count(*) FROM {USER_ACTIVITY}), (SELECT count(*) FROM {DEAD_LETTER_EVENTS})"
    ).row(0)
    return {"raw_events": raw, "cleaned_events": clean, "dead_letter_events": dead}


def write_batch(
    session: WarehouseSession,
    *,
    topic: str,
    batch_id: str,
    run_id: str | None,
    start_offsets: Mapping[int, int],
    end_offsets: Mapping[int, int],
    rows: BatchRows,
    committed_at: dt.datetime,
    topic_id: str | None = None,
) -> BatchWritten:
    """Write one batch; call inside ``DuckDBWarehouseResource.transaction()``.
    ``topic_id`` is the id of the topic the batch was read from (None: not reported),
    which the run compared with the ledger's before reading (``check_topic``)."""
    recorded = next_offsets(session, topic)
    moved = {
        p: (recorded.get(p, 0), start)
        for p, start in start_offsets.items()
        if recorded.get(p, 0) != start
    }
    if moved:
        raise LedgerConflict(
            f"the ledger of {topic} moved while the batch was read "
            f"(partition: (ledger next, batch start)) {moved}; the batch is discarded"
        )
    turns = [p for p in sorted(end_offsets) if _count(rows.raw_events, p) > 0]
    # A partition's first batch creates its turn table (two first batches of one
    # partition at once both create it, and conflict like two turns).
    create_turns(session, missing_turns(session, turns))
    for partition in turns:
        session.execute(f"UPDATE {ingest_turns_table(partition)} SET turns = turns + 1")
    session.commit_message(
        run_id or "astra ingest", f"ingest batch {batch_id}: {rows.raw_events.height} of {topic}"
    )
    session.append(RAW_EVENTS, rows.raw_events)
    sensor_ts, late_sensor_dups = _insert_new_events(
        session, SENSOR_READINGS, "sensor_reading", rows.sensor_readings
    )
    user_ts, late_user_dups = _insert_new_events(
        session, USER_ACTIVITY, "user_activity", rows.user_activity
    )
    session.append(DEAD_LETTER_EVENTS, rows.dead_letters)
    session.append(DUPLICATE_EVENTS, rows.duplicates)
    ledger = pl.DataFrame(
        [
            {
                "batch_id": batch_id,
                "run_id": run_id,
                "topic": topic,
                "partition": p,
                "start_offset": start_offsets[p],
                "end_offset": end,
                "message_count": count,
                "committed_at": committed_at,
                "topic_id": topic_id,
            }
            for p, end in sorted(end_offsets.items())
            if (count := _count(rows.raw_events, p)) > 0
        ],
        schema={
            "batch_id": pl.String,
            "run_id": pl.String,
            "topic": pl.String,
            "partition": pl.Int32,
            "start_offset": pl.Int64,
            "end_offset": pl.Int64,
            "message_count": pl.Int64,
            "committed_at": pl.Datetime("us", "UTC"),
            "topic_id": pl.String,
        },
    )
    session.append(INGEST_LEDGER, ledger)
    return BatchWritten(
        sensor_readings=sensor_ts.len(),
        user_activity=user_ts.len(),
        dead_letters=rows.dead_letters.height,
        duplicates=rows.duplicates.height + late_sensor_dups + late_user_dups,
        inserted_ts=pl.concat([sensor_ts, user_ts]),
    )


def _count(raw: pl.DataFrame, partition: int) -> int:
    return int(raw.filter(pl.col("partition") == partition).height)


def _insert_new_events(
    session: WarehouseSession, table: str, event_type: str, frame: pl.DataFrame
) -> tuple[pl.Series, int]:
    """Insert events whose event_id is not stored yet; record the others as duplicates.
    Returns the inserted rows' event times and the number of stored duplicates."""
    if frame.height == 0:
        return pl.Series("ts", [], dtype=pl.Datetime("us", "UTC")), 0
    with session.with_frame("_batch_events", frame.select("event_id")):
        stored = session.frame(
            f"SELECT DISTINCT b.event_id FROM _batch_events AS b SEMI JOIN {table} AS t "
            "ON t.event_id = b.event_id"
        )
    known = frame.get_column("event_id").is_in(stored.get_column("event_id").implode())
    late = frame.filter(known)
    if late.height:
        session.append(
            DUPLICATE_EVENTS,
            late.select(
                "event_id",
                pl.lit(event_type).alias("event_type"),
                "topic",
                "partition",
                "offset",
                "ingested_at",
                "batch_id",
            ),
        )
    new = frame.filter(~known)
    session.append(table, new)
    return new.get_column("ts").cast(pl.Datetime("us", "UTC")), late.height
