"""lake_files: the lake's data files, kept few and its history bounded (maintenance).

Materializing it compacts the lake (resources.lake_maintenance) and reports, per table,
the files before and after, with the snapshots expired and the bytes reclaimed. In the
writer pool: compaction rewrites
files that a window refresh may be deleting from, and of two such commits one is refused.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from astra_pipeline.assets.ingest import WRITER_POOL
from resources.lake_maintenance import MaintenanceReport, maintain, summary_frame
from resources.warehouse import DuckDBWarehouseResource

LAKE_FILES = dg.AssetKey(["lake_files"])


def build_lake_files(
    default_retention_hours: float, default_raw_retention_days: float = 0.0
) -> dg.AssetsDefinition:
    """The maintenance asset, its retention defaulting to the deployment's setting."""

    class LakeMaintenanceConfig(dg.Config):
        retention_hours: float = Field(
            default=default_retention_hours,
            gt=0,
            description="Snapshots older than this many hours are expired (time travel "
            "reaches back that far).",
        )
        raw_retention_days: float = Field(
            default=default_raw_retention_days,
            ge=0,
            description="raw.events rows ingested longer ago are deleted; 0 keeps all.",
        )

    @dg.asset(
        key=LAKE_FILES,
        group_name="lake",
        pool=WRITER_POOL,
        description="The lake's Parquet files: small files merged, deletes applied, "
        "snapshots past the retention expired and their files deleted.",
    )
    def lake_files(
        context: dg.AssetExecutionContext,
        config: LakeMaintenanceConfig,
        warehouse: DuckDBWarehouseResource,
    ) -> dg.MaterializeResult[None]:
        report = maintain(
            warehouse,
            dt.timedelta(hours=config.retention_hours),
            dt.datetime.now(dt.UTC),
            raw_retention=(
                dt.timedelta(days=config.raw_retention_days) if config.raw_retention_days else None
            ),
        )
        context.log.info(
            f"lake files {_total(report, 'before')} -> {_total(report, 'after')}, "
            f"{report.files_deleted} deleted, {report.bytes_reclaimed} bytes reclaimed"
        )
        return dg.MaterializeResult(metadata=_metadata(report))

    return lake_files


def _total(report: MaintenanceReport, when: str) -> int:
    tables = report.before if when == "before" else report.after
    return sum(t.files for t in tables.values())


def _metadata(report: MaintenanceReport) -> dict[str, dg.MetadataValue]:
    frame = summary_frame(report)
    lines = ["| table | files before | files after | bytes after |", "|---|---:|---:|---:|"]
    lines += [
        f"| {row['table']} | {row['files_before']} | {row['files_after']} | {row['bytes_after']} |"
        for row in frame.iter_rows(named=True)
    ]
    return {
        "files_before": dg.MetadataValue.int(_total(report, "before")),
        "files_after": dg.MetadataValue.int(_total(report, "after")),
        "files_deleted": dg.MetadataValue.int(report.files_deleted),
        "snapshots_expired": dg.MetadataValue.int(report.snapshots_expired),
        "raw_rows_expired": dg.MetadataValue.int(report.raw_rows_expired),
        "bytes_reclaimed": dg.MetadataValue.int(report.bytes_reclaimed),
        "files_per_table": dg.MetadataValue.md("\n".join(lines)),
    }
