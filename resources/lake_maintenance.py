"""Keeping a DuckLake small: fewer, larger files and no history past its retention.

0. when a raw retention is set, delete the raw.events rows ingested before it (the lake
   keeps the raw messages after Kafka's own retention dropped them, for as long as this
   says; the clean tables are kept);

Every micro-batch commit writes a Parquet file per table it touches (or, for a few rows,
inlines them in the catalog), and every window refresh deletes rows (a delete file) and
writes new ones; a day of 5-second runs leaves thousands of small files. Maintenance, in
this order:

1. flush the rows inlined in the catalog into Parquet files;
2. rewrite the files that carry deletes, so a reader no longer merges delete files;
3. merge adjacent small files of each table into larger ones;
4. expire the snapshots older than the retention (time travel reaches back that far);
5. delete the files no remaining snapshot references, and files the catalog does not
   know (left by a writer that died before its commit) once older than the retention.

Steps 1-3 are commits like any other: a reader sees the same rows before and after.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import polars as pl

from resources.lake import LAKE
from resources.tables import RAW_EVENTS
from resources.warehouse import DuckDBWarehouseResource, WarehouseSession


@dataclass(frozen=True)
class TableFiles:
    files: int
    bytes: int
    delete_files: int


@dataclass(frozen=True)
class MaintenanceReport:
    before: dict[str, TableFiles]
    after: dict[str, TableFiles]
    snapshots_expired: int
    raw_rows_expired: int
    files_deleted: int
    bytes_reclaimed: int
    """Bytes freed in the data path (a local folder: measured on disk; a bucket: the
    catalog's live bytes before minus after, which leaves out expired history)."""


def table_files(session: WarehouseSession) -> dict[str, TableFiles]:
    """Per table (schema.table), its live data files, their bytes and its delete files."""
    frame = session.frame(
        "SELECT s.schema_name || '.' || i.table_name AS name, i.file_count, "
        "i.file_size_bytes, i.delete_file_count "
        f"FROM ducklake_table_info('{LAKE}') AS i "
        "JOIN duckdb_tables() AS s ON s.database_name = current_database() "
        "AND s.table_name = i.table_name AND s.table_oid IS NOT NULL "
        "ORDER BY name"
    )
    return {
        row["name"]: TableFiles(
            files=int(row["file_count"] or 0),
            bytes=int(row["file_size_bytes"] or 0),
            delete_files=int(row["delete_file_count"] or 0),
        )
        for row in frame.unique("name", keep="first").iter_rows(named=True)
    }


COMPACTIONS = (
    f"CALL ducklake_flush_inlined_data('{LAKE}')",
    f"CALL ducklake_rewrite_data_files('{LAKE}')",
    f"CALL ducklake_merge_adjacent_files('{LAKE}')",
)
"""Steps 1-3: inlined rows to files, deletes applied, small files merged. Each in a
transaction of its own (DuckLake commits a compaction alone, with no other change)."""


def expire(session: WarehouseSession, older_than: dt.datetime) -> tuple[int, int]:
    """Steps 4-5; returns (snapshots expired, files deleted)."""
    expired = session.query(
        f"CALL ducklake_expire_snapshots('{LAKE}', older_than => ?::TIMESTAMPTZ)", [older_than]
    ).height
    deleted = session.query(
        f"CALL ducklake_cleanup_old_files('{LAKE}', older_than => ?::TIMESTAMPTZ)", [older_than]
    ).height
    orphans = session.query(
        f"CALL ducklake_delete_orphaned_files('{LAKE}', older_than => ?::TIMESTAMPTZ)",
        [older_than],
    ).height
    return expired, deleted + orphans


def expire_raw(before: dt.datetime, session: WarehouseSession) -> int:
    """Step 0: delete the raw messages ingested before ``before``; how many."""
    return int(
        session.scalar(f"DELETE FROM {RAW_EVENTS} WHERE ingested_at < ?::TIMESTAMPTZ", [before])
        or 0
    )


def _run(call: str, session: WarehouseSession) -> None:
    session.query(call)


def folder_bytes(path: str) -> int | None:
    """Bytes of the files under a local data path; None for a bucket."""
    if path.startswith("s3://"):
        return None
    return sum(
        (Path(root) / name).stat().st_size
        for root, _, names in os.walk(path)
        for name in names
        if (Path(root) / name).exists()
    )


def summary_frame(report: MaintenanceReport) -> pl.DataFrame:
    """One row per table: files and bytes before and after (for the UI's metadata)."""
    names = sorted(set(report.before) | set(report.after))
    empty = TableFiles(0, 0, 0)
    return pl.DataFrame(
        {
            "table": names,
            "files_before": [report.before.get(n, empty).files for n in names],
            "files_after": [report.after.get(n, empty).files for n in names],
            "delete_files_before": [report.before.get(n, empty).delete_files for n in names],
            "bytes_before": [report.before.get(n, empty).bytes for n in names],
            "bytes_after": [report.after.get(n, empty).bytes for n in names],
        }
    )


def maintain(
    warehouse: DuckDBWarehouseResource,
    retention: dt.timedelta,
    now: dt.datetime,
    raw_retention: dt.timedelta | None = None,
) -> MaintenanceReport:
    """Compact the lake and drop its history older than ``retention`` (steps 1-5). A
    concurrent writer's commit can refuse a compaction's: it is tried again from the
    start (the compaction reads what it rewrites inside its own transaction)."""
    path = warehouse.lake_location().data_path
    with warehouse.session() as session:
        before = table_files(session)
    disk_before = folder_bytes(path)
    raw_expired = 0
    if raw_retention is not None:
        raw_expired = warehouse.retrying(partial(expire_raw, now - raw_retention))
    for call in COMPACTIONS:
        warehouse.retrying(partial(_run, call))
    expired, deleted = warehouse.retrying(lambda session: expire(session, now - retention))
    with warehouse.session() as session:
        after = table_files(session)
    disk_after = folder_bytes(path)
    reclaimed = (
        disk_before - disk_after
        if disk_before is not None and disk_after is not None
        else sum(t.bytes for t in before.values()) - sum(t.bytes for t in after.values())
    )
    return MaintenanceReport(
        before=before,
        after=after,
        snapshots_expired=expired,
        raw_rows_expired=raw_expired,
        files_deleted=deleted,
        bytes_reclaimed=reclaimed,
    )
