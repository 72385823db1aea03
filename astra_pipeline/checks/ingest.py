"""Asset checks of the ingest tables; each failing check says which rows are at fault."""

import dagster as dg

from astra_pipeline.assets.ingest import CLEANED_EVENTS, DEAD_LETTER_EVENTS, RAW_EVENTS
from resources.tables import (
    DEAD_LETTER_EVENTS as DEAD_LETTER_TABLE,
)
from resources.tables import (
    DUPLICATE_EVENTS,
    INGEST_LEDGER,
    SENSOR_READINGS,
    USER_ACTIVITY,
)
from resources.tables import (
    RAW_EVENTS as RAW_TABLE,
)
from resources.warehouse import DuckDBWarehouseResource


@dg.asset_check(
    asset=RAW_EVENTS, blocking=True, description="Ledger ranges have no gaps or overlaps."
)
def raw_events_offset_continuity(warehouse: DuckDBWarehouseResource) -> dg.AssetCheckResult:
    broken = warehouse.query(
        f"""
        SELECT topic, "partition", start_offset, previous_end FROM (
            SELECT topic, "partition", start_offset,
                   lag(end_offset, 1, 0) OVER (PARTITION BY topic, "partition"
                                               ORDER BY start_offset) AS previous_end
            FROM {INGEST_LEDGER})
        WHERE start_offset <> previous_end
        ORDER BY topic, "partition", start_offset LIMIT 20
        """
    )
    return dg.AssetCheckResult(
        passed=broken.height == 0,
        metadata={
            "breaks": broken.height,
            "examples": dg.MetadataValue.json([list(map(str, r)) for r in broken.rows()]),
        },
    )


@dg.asset_check(asset=RAW_EVENTS, description="Each (topic, partition, offset) is stored once.")
def raw_events_unique_offsets(warehouse: DuckDBWarehouseResource) -> dg.AssetCheckResult:
    repeated = warehouse.query(
        f'SELECT topic, "partition", "offset", count(*) AS n FROM {RAW_TABLE} '
        "GROUP BY ALL HAVING count(*) > 1 ORDER BY ALL LIMIT 20"
    )
    return dg.AssetCheckResult(
        passed=repeated.height == 0,
        metadata={"repeated": dg.MetadataValue.json([list(map(str, r)) for r in repeated.rows()])},
    )


@dg.asset_check(
    asset=CLEANED_EVENTS, blocking=True, description="event_id is unique per clean table."
)
def cleaned_events_unique_event_id(warehouse: DuckDBWarehouseResource) -> dg.AssetCheckResult:
    repeated = warehouse.query(
        f"SELECT 'sensor_readings' AS tbl, event_id, count(*) AS n FROM {SENSOR_READINGS} "
        "GROUP BY ALL HAVING count(*) > 1 UNION ALL "
        f"SELECT 'user_activity', event_id, count(*) FROM {USER_ACTIVITY} "
        "GROUP BY ALL HAVING count(*) > 1 LIMIT 20"
    )
    return dg.AssetCheckResult(
        passed=repeated.height == 0,
        metadata={"repeated": dg.MetadataValue.json([list(map(str, r)) for r in repeated.rows()])},
    )


@dg.asset_check(
    asset=CLEANED_EVENTS,
    blocking=True,
    description="Every raw offset is in exactly one of clean, duplicates or dead letters.",
)
def cleaned_events_offsets_accounted(warehouse: DuckDBWarehouseResource) -> dg.AssetCheckResult:
    wrong = warehouse.query(
        f"""
        WITH placed AS (
            SELECT topic, "partition", "offset" FROM {SENSOR_READINGS}
            UNION ALL SELECT topic, "partition", "offset" FROM {USER_ACTIVITY}
            UNION ALL SELECT topic, "partition", "offset" FROM {DUPLICATE_EVENTS}
            UNION ALL SELECT topic, "partition", "offset" FROM {DEAD_LETTER_TABLE}),
        counted AS (SELECT topic, "partition", "offset", count(*) AS n FROM placed GROUP BY ALL)
        SELECT r.topic, r."partition", r."offset", coalesce(c.n, 0) AS placements
        FROM {RAW_TABLE} AS r LEFT JOIN counted AS c USING (topic, "partition", "offset")
        WHERE coalesce(c.n, 0) <> 1
        ORDER BY ALL LIMIT 20
        """
    )
    return dg.AssetCheckResult(
        passed=wrong.height == 0,
        metadata={"misplaced": dg.MetadataValue.json([list(map(str, r)) for r in wrong.rows()])},
    )


def make_dead_letter_rate_check(threshold: float) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=DEAD_LETTER_EVENTS,
        name="dead_letter_events_rate",
        description=f"Share of ingested messages that were rejected stays under {threshold:.1%}.",
    )
    def dead_letter_events_rate(warehouse: DuckDBWarehouseResource) -> dg.AssetCheckResult:
        counts = warehouse.query(
            f"SELECT (SELECT count(*) FROM {RAW_TABLE}) AS total, "
            f"(SELECT count(*) FROM {DEAD_LETTER_TABLE}) AS rejected"
        )
        total, rejected = counts.row(0)
        rate = rejected / total if total else 0.0
        top = warehouse.query(
            f"SELECT reason, count(*) AS n FROM {DEAD_LETTER_TABLE} GROUP BY reason "
            "ORDER BY n DESC LIMIT 5"
        )
        return dg.AssetCheckResult(
            passed=rate <= threshold,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "rate": rate,
                "threshold": threshold,
                "rejected": rejected,
                "total": total,
                "top_reasons": dg.MetadataValue.json([list(map(str, r)) for r in top.rows()]),
            },
        )

    return dead_letter_events_rate


STATIC_CHECKS = [
    raw_events_offset_continuity,
    raw_events_unique_offsets,
    cleaned_events_unique_event_id,
    cleaned_events_offsets_accounted,
]
