"""How far a computation read the clean tables: its watermark.

A window or scoring partition records the watermark of the clean rows it was computed
from; the incremental refresh reads the rows after it, and the checks recompute from the
rows up to it. Ingest shards commit side by side, and a batch stamped earlier can commit
later, so ingestion times are not in commit order: the watermark is the latest DuckLake
snapshot that inserted clean rows (each row's ``snapshot_id``; snapshots are in commit
order, and a transaction that sees one sees every earlier one), with the latest
``ingested_at`` beside it for records written before snapshots were recorded.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from resources.tables import SENSOR_READINGS, USER_ACTIVITY
from resources.warehouse import WarehouseSession


@dataclass(frozen=True)
class Watermark:
    until: dt.datetime | None
    """The latest ingestion time among the rows read."""
    snapshot: int | None = None
    """The latest snapshot that inserted rows read (None when nothing was read, and for
    records written before it was recorded)."""


def clean_watermark(session: WarehouseSession) -> Watermark:
    """The watermark of the clean rows this transaction can see."""
    until, snapshot = session.query(
        f"SELECT greatest((SELECT max(ingested_at) FROM {SENSOR_READINGS}), "
        f"(SELECT max(ingested_at) FROM {USER_ACTIVITY})), "
        f"greatest((SELECT max(snapshot_id) FROM {SENSOR_READINGS}), "
        f"(SELECT max(snapshot_id) FROM {USER_ACTIVITY}))"
    ).row(0)
    return Watermark(until, None if snapshot is None else int(snapshot))


ROW_COLUMNS = "ingested_at, snapshot_id"
"""The columns a row needs for seen_sql: its ingestion time and snapshot."""


def after_sql(mark: Watermark) -> tuple[str, list[object]]:
    """A condition on a clean table's rows: ingested after ``mark`` (not read by it)."""
    if mark.snapshot is not None:
        return "snapshot_id > ?", [mark.snapshot]
    return "ingested_at > ?", [mark.until]


def seen_sql(row: str, record: str) -> str:
    """A join condition: clean row ``row`` (an alias, with its ``snapshot_id``) was read
    by the computation whose record (alias ``record``, columns seen_until and
    seen_snapshot) it joins."""
    by_time = f"{row}.ingested_at <= {record}.seen_until"
    return (
        f"({record}.seen_snapshot IS NULL AND {by_time} "
        f"OR {row}.snapshot_id <= {record}.seen_snapshot)"
    )
