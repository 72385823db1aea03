"""What the windowed_aggregates checks verify, over a range of hourly partitions.

Shared by the asset checks (checks/windows.py: the hours of the checked run) and the
ingest run, which refreshes the live hour itself and records the checks' evaluations of
that partition with its materialization. A range of None checks every partition.
"""

import datetime as dt

import dagster as dg

from resources.tables import (
    AGG_SENSOR_1H,
    AGG_SENSOR_1M,
    AGG_SENSOR_5M_SLIDING,
    AGG_USER_1H,
    AGG_USER_1M,
    AGG_USER_SESSIONS,
    SENSOR_READINGS,
    USER_ACTIVITY,
    WINDOW_PARTITIONS,
)
from resources.warehouse import DuckDBWarehouseResource
from resources.watermark import ROW_COLUMNS, seen_sql

EXAMPLES = 20

HourRange = tuple[dt.datetime, dt.datetime] | None
"""The first and last hour (inclusive) to check, or None for every partition."""

# The hours checked (every hour for None), as a CTE every check starts from; its
# parameters are _params'.
_RUN_HOURS = (
    f"run_hours AS (SELECT partition_start AS h, seen_until, seen_snapshot "
    f"FROM {WINDOW_PARTITIONS} "
    "WHERE CAST(? AS TIMESTAMPTZ) IS NULL OR partition_start BETWEEN ? AND ?)"
)


def _params(hours: HourRange) -> list[dt.datetime | None]:
    if hours is None:
        return [None, None, None]
    first, last = hours
    return [first, first, last]


def _examples(frame_rows: list[tuple[object, ...]]) -> dg.MetadataValue:
    return dg.MetadataValue.json([list(map(str, row)) for row in frame_rows[:EXAMPLES]])


def _no_rows(
    warehouse: DuckDBWarehouseResource, hours: HourRange, selects: list[str], label: str
) -> dg.AssetCheckResult:
    """Passes when none of ``selects`` (each joined to run_hours) returns a row."""
    found = warehouse.query(
        f"WITH {_RUN_HOURS} " + " UNION ALL ".join(selects) + f" LIMIT {EXAMPLES}",
        _params(hours),
    )
    return dg.AssetCheckResult(passed=found.height == 0, metadata={label: _examples(found.rows())})


def complete(warehouse: DuckDBWarehouseResource, hours: HourRange) -> dg.AssetCheckResult:
    """Per partition, the 1-minute counts add up to the clean events of that hour."""
    # Clean rows ingested after the run read its snapshot are not expected in its windows.
    wrong = warehouse.query(
        f"""
        WITH {_RUN_HOURS},
        clean AS (
            SELECT r.h, count(c.ts) AS n FROM run_hours AS r LEFT JOIN (
                SELECT ts, {ROW_COLUMNS} FROM {SENSOR_READINGS}
                UNION ALL SELECT ts, {ROW_COLUMNS} FROM {USER_ACTIVITY}) AS c
              ON c.ts >= r.h AND c.ts < r.h + INTERVAL 1 HOUR AND {seen_sql("c", "r")}
            GROUP BY r.h),
        windows AS (
            SELECT r.h, coalesce(sum(w.n), 0) AS n FROM run_hours AS r LEFT JOIN (
                SELECT window_start, reading_count AS n FROM {AGG_SENSOR_1M}
                UNION ALL SELECT window_start, event_count FROM {AGG_USER_1M}) AS w
              ON w.window_start >= r.h AND w.window_start < r.h + INTERVAL 1 HOUR
            GROUP BY r.h)
        SELECT clean.h, clean.n AS clean_events, windows.n AS window_events
        FROM clean JOIN windows USING (h) WHERE clean.n <> windows.n ORDER BY clean.h
        """,
        _params(hours),
    )
    checked = warehouse.query(
        f"WITH {_RUN_HOURS} SELECT count(*) AS n FROM run_hours",
        _params(hours),
    ).item()
    return dg.AssetCheckResult(
        passed=wrong.height == 0,
        metadata={
            "partitions_checked": checked,
            "incomplete": wrong.height,
            "examples": _examples(wrong.rows()),
        },
    )


def windows_in_partition(
    warehouse: DuckDBWarehouseResource, hours: HourRange
) -> dg.AssetCheckResult:
    """Every window has its length, is aligned, and lies in its own partition."""
    shapes = [
        (AGG_SENSOR_1M, "1 MINUTE", "minute"),
        (AGG_USER_1M, "1 MINUTE", "minute"),
        (AGG_SENSOR_1H, "1 HOUR", "hour"),
        (AGG_USER_1H, "1 HOUR", "hour"),
        (AGG_SENSOR_5M_SLIDING, "5 MINUTE", "minute"),
    ]
    parts = [
        f"SELECT '{table}' AS tbl, window_start AS start_ts, window_end AS end_ts FROM {table} "
        "JOIN run_hours ON window_start >= h AND window_start < h + INTERVAL 1 HOUR "
        f"WHERE window_end - window_start <> INTERVAL {length} "
        f"OR date_trunc('{unit}', window_start) <> window_start"
        for table, length, unit in shapes
    ]
    parts.append(
        f"SELECT '{AGG_USER_SESSIONS}', session_start, session_end FROM {AGG_USER_SESSIONS} "
        "JOIN run_hours ON session_start >= h AND session_start < h + INTERVAL 1 HOUR "
        "WHERE session_end < session_start OR session_end >= h + INTERVAL 1 HOUR"
    )
    return _no_rows(warehouse, hours, parts, "misplaced")


def within_bounds(warehouse: DuckDBWarehouseResource, hours: HourRange) -> dg.AssetCheckResult:
    """Aggregates stay within the contract's physical bounds and min <= mean <= max."""
    # Bounds of the contract (astra_pipeline.events): -60..85 degC, 0..100 % humidity and
    # battery; a tiny tolerance absorbs floating error in means and interpolated p95.
    sensor_rule = " OR ".join(
        [
            "reading_count < 1",
            "temperature_c_min < -60 OR temperature_c_max > 85",
            "humidity_pct_min < 0 OR humidity_pct_max > 100",
            "battery_min < 0 OR battery_min > 100",
            "temperature_c_mean < temperature_c_min - 1e-9",
            "temperature_c_mean > temperature_c_max + 1e-9",
            "temperature_c_p95 < temperature_c_min - 1e-9",
            "temperature_c_p95 > temperature_c_max + 1e-9",
            "humidity_pct_mean < humidity_pct_min - 1e-9",
            "humidity_pct_mean > humidity_pct_max + 1e-9",
            "coalesce(temperature_c_stddev, 0) < 0",
            "count_ok + count_degraded + count_fault <> reading_count",
        ]
    )
    user_rule = (
        "event_count < 1 OR page_views < 0 OR carts < 0 OR purchases < 0 OR revenue < 0 "
        "OR page_views + carts + purchases > event_count"
    )
    queries = [
        f"SELECT '{t}' AS tbl, device_id AS id, window_start FROM {t} JOIN run_hours "
        f"ON window_start >= h AND window_start < h + INTERVAL 1 HOUR WHERE {sensor_rule}"
        for t in (AGG_SENSOR_1M, AGG_SENSOR_1H)
    ] + [
        f"SELECT '{t}', user_id, window_start FROM {t} JOIN run_hours "
        f"ON window_start >= h AND window_start < h + INTERVAL 1 HOUR WHERE {user_rule}"
        for t in (AGG_USER_1M, AGG_USER_1H)
    ]
    queries.append(
        f"SELECT '{AGG_USER_SESSIONS}', user_id, session_start FROM {AGG_USER_SESSIONS} "
        "JOIN run_hours ON session_start >= h AND session_start < h + INTERVAL 1 HOUR "
        "WHERE event_count < 1 OR purchase_count < 0 OR revenue < 0 OR duration_s < 0"
    )
    return _no_rows(warehouse, hours, queries, "out_of_bounds")


def sessions_disjoint(warehouse: DuckDBWarehouseResource, hours: HourRange) -> dg.AssetCheckResult:
    """A user's sessions never overlap."""
    overlapping = warehouse.query(
        f"""
        WITH {_RUN_HOURS}, ordered AS (
            SELECT user_id, session_start, session_end,
                   lag(session_end) OVER (PARTITION BY user_id ORDER BY session_start) AS prev_end
            FROM {AGG_USER_SESSIONS}
            WHERE session_start >= (SELECT min(h) FROM run_hours) - INTERVAL 1 HOUR
              AND session_start < (SELECT max(h) FROM run_hours) + INTERVAL 2 HOUR)
        SELECT user_id, session_start, prev_end FROM ordered
        WHERE prev_end IS NOT NULL AND session_start <= prev_end
        ORDER BY user_id, session_start LIMIT {EXAMPLES}
        """,
        _params(hours),
    )
    return dg.AssetCheckResult(
        passed=overlapping.height == 0, metadata={"overlaps": _examples(overlapping.rows())}
    )


AUDITS = {
    "windowed_aggregates_complete": complete,
    "windowed_aggregates_windows_in_partition": windows_in_partition,
    "windowed_aggregates_within_bounds": within_bounds,
    "windowed_aggregates_sessions_disjoint": sessions_disjoint,
}
"""Each windowed_aggregates check's name and what it verifies."""
