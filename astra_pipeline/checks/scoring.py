"""Asset checks of churn_features, churn_scores, anomaly_scores and alerts.

A run's partition tags (a day or an hour, or a backfill's range) name the partitions it
replaced; each check looks at exactly those recorded in ops.scoring_partitions, with the
latest ingestion time recorded for them (seen_until). The tags, not the run id recorded
there: another run may have rewritten a partition between this run's step and its checks
(anomaly_scores takes no pool; writer steps of other runs can come between two steps).
Checks executed on their own (from the UI, a run without partitions) look at every
recorded partition.

Where a check recomputes something from the clean tables it counts only the rows that
had been committed when the run read them (the snapshot it recorded,
``resources.watermark``): events that arrive later are the next materialization's
business, not a defect of this one.
"""

import datetime as dt

import dagster as dg

from astra_pipeline.assets.alerts import ALERTS_KEY
from astra_pipeline.assets.features import CHURN_FEATURES
from astra_pipeline.assets.scoring import ANOMALY_SCORES_KEY, CHURN_SCORES_KEY
from astra_pipeline.checks.run_partitions import run_partition_keys
from astra_pipeline.transforms.anomaly import DRIVERS
from resources.tables import (
    ALERTS,
    ANOMALY_GROUND_TRUTH,
    ANOMALY_SCORES,
    CHURN_MODELS,
    CHURN_SCORES,
    DEVICE_HEALTH,
    SCORING_PARTITIONS,
    SENSOR_READINGS,
    USER_ACTIVITY,
    USER_CHURN,
)
from resources.warehouse import DuckDBWarehouseResource
from resources.watermark import seen_sql

EXAMPLES = 20
TOLERANCE = 1e-9

ALERT_RATE_WARN = 0.01
QUALITY_TARGET = 0.8
"""Alert precision, and recall on spikes and on stuck sensors, against injected truth."""
QUALITY_MIN_READINGS = 5
"""Fewer tampered readings of a kind than this in the hours: its recall is not judged."""
"""Share of scored readings that may alert before alerts_rate warns: above it the
threshold is too low for the fleet, or something is broken everywhere at once."""

# The recorded partitions of one asset in the run's partition range (all of them for a
# run without partitions), as a CTE every check starts from. Parameters: _params'. Days
# are UTC days: p is their start (midnight UTC).
_RUN_PARTS = (
    f"run_parts AS (SELECT partition_start AS p, seen_until, seen_snapshot "
    f"FROM {SCORING_PARTITIONS} "
    "WHERE asset = ? AND (CAST(? AS TIMESTAMPTZ) IS NULL OR partition_start BETWEEN ? AND ?))"
)
_KEY_FORMATS = ("%Y-%m-%d-%H:%M", "%Y-%m-%d")
"""Hourly and daily partition keys."""
_RUN_DAYS = (
    f"{_RUN_PARTS}, days AS (SELECT CAST(p AT TIME ZONE 'UTC' AS DATE) AS d, p AS day_start, "
    "p + INTERVAL 24 HOUR AS day_end, seen_until, seen_snapshot FROM run_parts)"
)


def _partition_start(key: str) -> dt.datetime:
    for fmt in _KEY_FORMATS:
        try:
            return dt.datetime.strptime(key, fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    raise ValueError(f"not an hourly or daily partition key: {key!r}")


def _params(
    asset: dg.AssetKey, context: dg.AssetCheckExecutionContext
) -> list[str | dt.datetime | None]:
    """_RUN_PARTS' parameters: the asset, the run's first partition start (twice) and its
    last, or NULLs for a run without partitions."""
    name = asset.to_user_string()
    keys = run_partition_keys(context.run.tags)
    if keys is None:
        return [name, None, None, None]
    first, last = (_partition_start(key) for key in keys)
    return [name, first, first, last]


def _examples(rows: list[tuple[object, ...]]) -> dg.MetadataValue:
    return dg.MetadataValue.json([list(map(str, row)) for row in rows[:EXAMPLES]])


def _broken(rules: dict[str, str]) -> str:
    """A column naming every rule a row breaks (comma-separated; empty when none)."""
    cases = ", ".join(
        f"CASE WHEN {condition} THEN '{name}' END" for name, condition in rules.items()
    )
    return f"concat_ws(',', {cases})"


def _result(found: list[tuple[object, ...]], checked: int, label: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not found,
        metadata={"partitions_checked": checked, label: len(found), "examples": _examples(found)},
    )


def _partitions(
    warehouse: DuckDBWarehouseResource,
    asset: dg.AssetKey,
    context: dg.AssetCheckExecutionContext,
) -> int:
    return int(
        warehouse.query(
            f"WITH {_RUN_PARTS} SELECT count(*) AS n FROM run_parts", _params(asset, context)
        ).item()
    )


USER_RULES = {
    "recency": "days_since_last_event < 0 OR days_since_last_event > tenure_days",
    "purchase_recency": "days_since_last_purchase < days_since_last_event",
    "cart_recency": "days_since_last_cart < days_since_last_event",
    "purchase_null": "coalesce(days_since_last_purchase < 30, false) <> (purchases_30d > 0)",
    "active_last7": "(days_since_last_event < 7) <> (events_last7 > 0)",
    "windows": "sessions_7d < 0 OR sessions_7d > sessions_30d OR page_views_7d < 0 "
    "OR page_views_7d > page_views_30d OR purchases_7d < 0 OR purchases_7d > purchases_30d "
    "OR events_prev7 < 0 OR page_views_7d + purchases_7d > events_last7 "
    "OR sessions_7d > events_last7",
    "revenue": f"revenue_7d < 0 OR revenue_7d > revenue_30d + {TOLERANCE}",
    "aov": "(aov_7d IS NULL) <> (purchases_7d = 0) OR (aov_30d IS NULL) <> (purchases_30d = 0) "
    "OR aov_7d < 0 OR aov_30d < 0",
    "trend": "abs(events_trend_ratio - (events_last7 + 1) / (events_prev7 + 1)) > "
    f"{TOLERANCE} OR events_trend_diff <> events_last7 - events_prev7",
    "conversion": "cart_to_purchase_30d < 0 OR isnan(cart_to_purchase_30d)",
    "duplicate": "count(*) OVER (PARTITION BY user_id, as_of_day) > 1",
}
DEVICE_RULES = {
    "reporting_rate": "readings < 0 OR expected_readings <= 0 "
    f"OR abs(reporting_rate - readings / expected_readings) > {TOLERANCE}",
    "silence": "longest_silence_s < 0 OR longest_silence_s > 86400 "
    "OR (readings = 0 AND longest_silence_s <> 86400)",
    "last_reading": "seconds_since_last_reading < 0 "
    "OR (readings > 0 AND seconds_since_last_reading > 86400) "
    "OR (readings = 0 AND seconds_since_last_reading < 86400)",
    "status_shares": "(share_degraded IS NULL) <> (readings = 0) "
    "OR (share_fault IS NULL) <> (readings = 0) OR share_degraded < 0 OR share_fault < 0 "
    f"OR share_degraded + share_fault > 1 + {TOLERANCE}",
    "battery_slope": "battery_slope_per_h IS NOT NULL AND (readings < 2 "
    "OR isnan(battery_slope_per_h) OR isinf(battery_slope_per_h))",
    "duplicate": "count(*) OVER (PARTITION BY device_id, as_of_day) > 1",
}


@dg.asset_check(
    asset=CHURN_FEATURES,
    blocking=True,
    description="Feature values are in range, consistent with each other, null only where "
    "undefined (no purchase, no cart, no reading), and one row per user or device and day.",
)
def churn_features_in_range(
    context: dg.AssetCheckExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.AssetCheckResult:
    found = warehouse.query(
        f"""
        WITH {_RUN_DAYS},
        users AS (
            SELECT 'user' AS kind, user_id AS id, as_of_day, {_broken(USER_RULES)} AS broken
            FROM {USER_CHURN} JOIN days ON as_of_day = d),
        devices AS (
            SELECT 'device', device_id, as_of_day, {_broken(DEVICE_RULES)}
            FROM {DEVICE_HEALTH} JOIN days ON as_of_day = d)
        SELECT * FROM (SELECT * FROM users UNION ALL SELECT * FROM devices)
        WHERE broken <> '' ORDER BY ALL LIMIT {EXAMPLES}
        """,
        _params(CHURN_FEATURES, context),
    )
    checked = _partitions(warehouse, CHURN_FEATURES, context)
    return _result(found.rows(), checked, "rows_out_of_range")


@dg.asset_check(
    asset=CHURN_FEATURES,
    blocking=True,
    description="Day D's features use only events before the end of D: the latest event "
    "each row used is before it, and recency, tenure, the 7-day counts and the device "
    "counts match an independent SQL recomputation over the clean events before the end "
    "of D; no user or device is missing or extra.",
)
def churn_features_no_future_leakage(
    context: dg.AssetCheckExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.AssetCheckResult:
    user_rules = {
        "missing_row": "s.user_id IS NULL",
        "no_events_before_day_end": "e.user_id IS NULL",
        "event_after_day_end": "s.max_event_ts >= s.day_end",
        "last_event": "s.max_event_ts <> e.last_ts",
        "days_since_last_event": "s.days_since_last_event <> "
        "s.as_of_day - CAST(e.last_ts AT TIME ZONE 'UTC' AS DATE)",
        "tenure": "s.tenure_days <> s.as_of_day - CAST(e.first_ts AT TIME ZONE 'UTC' AS DATE)",
        "events_last7": "s.events_last7 <> e.events_last7",
        "events_prev7": "s.events_prev7 <> e.events_prev7",
    }
    device_rules = {
        "missing_row": "s.device_id IS NULL",
        "no_readings_before_day_end": "e.device_id IS NULL",
        "readings": "s.readings <> e.readings",
        "last_reading": "abs(s.seconds_since_last_reading - epoch(e.day_end - e.last_ts)) > 1e-3",
    }
    found = warehouse.query(
        f"""
        WITH {_RUN_DAYS},
        user_expected AS (
            SELECT d.d AS as_of_day, a.user_id, min(a.ts) AS first_ts, max(a.ts) AS last_ts,
                count(*) FILTER (WHERE a.ts >= d.day_end - INTERVAL 168 HOUR) AS events_last7,
                count(*) FILTER (WHERE a.ts >= d.day_end - INTERVAL 336 HOUR
                                 AND a.ts < d.day_end - INTERVAL 168 HOUR) AS events_prev7
            FROM days AS d JOIN {USER_ACTIVITY} AS a
              ON a.ts < d.day_end AND {seen_sql("a", "d")}
            GROUP BY ALL),
        user_stored AS (
            SELECT f.*, d.day_end FROM {USER_CHURN} AS f JOIN days AS d ON f.as_of_day = d.d),
        device_expected AS (
            SELECT d.d AS as_of_day, d.day_end, r.device_id, max(r.ts) AS last_ts,
                count(*) FILTER (WHERE r.ts >= d.day_start) AS readings
            FROM days AS d JOIN {SENSOR_READINGS} AS r
              ON r.ts < d.day_end AND {seen_sql("r", "d")}
            GROUP BY ALL),
        device_stored AS (
            SELECT f.* FROM {DEVICE_HEALTH} AS f JOIN days AS d ON f.as_of_day = d.d),
        broken AS (
            SELECT 'user' AS kind, coalesce(s.user_id, e.user_id) AS id,
                   coalesce(s.as_of_day, e.as_of_day) AS as_of_day,
                   {_broken(user_rules)} AS broken
            FROM user_stored AS s FULL JOIN user_expected AS e
              ON s.user_id = e.user_id AND s.as_of_day = e.as_of_day
            UNION ALL
            SELECT 'device', coalesce(s.device_id, e.device_id),
                   coalesce(s.as_of_day, e.as_of_day), {_broken(device_rules)}
            FROM device_stored AS s FULL JOIN device_expected AS e
              ON s.device_id = e.device_id AND s.as_of_day = e.as_of_day)
        SELECT * FROM broken WHERE broken <> '' ORDER BY ALL LIMIT {EXAMPLES}
        """,
        _params(CHURN_FEATURES, context),
    )
    checked = _partitions(warehouse, CHURN_FEATURES, context)
    return _result(found.rows(), checked, "rows_not_point_in_time")


@dg.asset_check(
    asset=CHURN_SCORES_KEY,
    description="Probabilities are in [0, 1]; churn_predicted agrees with the threshold of "
    "the stored model version that scored the row; every row has features for its day, "
    "and one score per user and day.",
)
def churn_scores_in_range(
    context: dg.AssetCheckExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.AssetCheckResult:
    rules = {
        "probability": "s.churn_probability < 0 OR s.churn_probability > 1 "
        "OR isnan(s.churn_probability)",
        "unknown_model": "m.version IS NULL",
        "threshold": "s.churn_predicted <> (s.churn_probability >= m.threshold)",
        "no_features": "f.user_id IS NULL",
        "duplicate": "count(*) OVER (PARTITION BY s.user_id, s.as_of_day) > 1",
    }
    found = warehouse.query(
        f"""
        WITH {_RUN_DAYS},
        checked AS (
            SELECT s.user_id, s.as_of_day, s.model_version, {_broken(rules)} AS broken
            FROM {CHURN_SCORES} AS s JOIN days ON s.as_of_day = days.d
            LEFT JOIN {CHURN_MODELS} AS m ON m.version = s.model_version
            LEFT JOIN {USER_CHURN} AS f ON f.user_id = s.user_id AND f.as_of_day = s.as_of_day)
        SELECT * FROM checked WHERE broken <> '' ORDER BY ALL LIMIT {EXAMPLES}
        """,
        _params(CHURN_SCORES_KEY, context),
    )
    checked = _partitions(warehouse, CHURN_SCORES_KEY, context)
    return _result(found.rows(), checked, "rows_out_of_range")


@dg.asset_check(
    asset=ANOMALY_SCORES_KEY,
    blocking=True,
    description="Every clean reading of the hour (ingested when the run read) has exactly "
    "one score, and no score is without its reading.",
)
def anomaly_scores_complete(
    context: dg.AssetCheckExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.AssetCheckResult:
    found = warehouse.query(
        f"""
        WITH {_RUN_PARTS},
        readings AS (
            SELECT r.event_id FROM run_parts AS p JOIN {SENSOR_READINGS} AS r
              ON r.ts >= p.p AND r.ts < p.p + INTERVAL 1 HOUR
              AND {seen_sql("r", "p")}),
        scores AS (
            SELECT s.event_id, count(*) AS n FROM run_parts AS p JOIN {ANOMALY_SCORES} AS s
              ON s.ts >= p.p AND s.ts < p.p + INTERVAL 1 HOUR GROUP BY s.event_id)
        SELECT coalesce(r.event_id, s.event_id) AS event_id,
               CASE WHEN s.event_id IS NULL THEN 'unscored'
                    WHEN r.event_id IS NULL THEN 'no_reading' ELSE 'scored_twice' END AS problem
        FROM readings AS r FULL JOIN scores AS s ON r.event_id = s.event_id
        WHERE r.event_id IS NULL OR s.event_id IS NULL OR s.n > 1
        ORDER BY ALL LIMIT {EXAMPLES}
        """,
        _params(ANOMALY_SCORES_KEY, context),
    )
    checked = _partitions(warehouse, ANOMALY_SCORES_KEY, context)
    return _result(found.rows(), checked, "readings_not_scored_once")


@dg.asset_check(
    asset=ANOMALY_SCORES_KEY,
    description="Scores are in [0, 1]; a score of 0 has driver 'none' and no metric, any "
    "other names its driver and metric.",
)
def anomaly_scores_in_range(
    context: dg.AssetCheckExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.AssetCheckResult:
    drivers = ", ".join(f"'{driver}'" for driver in DRIVERS)
    rules = {
        "score": "s.score < 0 OR s.score > 1 OR isnan(s.score)",
        "driver": f"s.driver NOT IN ({drivers}, 'none') OR (s.driver = 'none') <> (s.score = 0)",
        "metric": "(s.metric IS NULL) <> (s.score = 0)",
    }
    found = warehouse.query(
        f"""
        WITH {_RUN_PARTS},
        checked AS (
            SELECT s.event_id, s.ts, s.score, s.driver, {_broken(rules)} AS broken
            FROM run_parts AS p JOIN {ANOMALY_SCORES} AS s
              ON s.ts >= p.p AND s.ts < p.p + INTERVAL 1 HOUR)
        SELECT * FROM checked WHERE broken <> '' ORDER BY ALL LIMIT {EXAMPLES}
        """,
        _params(ANOMALY_SCORES_KEY, context),
    )
    checked = _partitions(warehouse, ANOMALY_SCORES_KEY, context)
    return _result(found.rows(), checked, "scores_out_of_range")


def make_alert_rate_check(max_rate: float = ALERT_RATE_WARN) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=ALERTS_KEY,
        name="alerts_rate",
        description=f"Alerts stay under {max_rate:.1%} of the scored readings of the hours.",
    )
    def alerts_rate(
        context: dg.AssetCheckExecutionContext, warehouse: DuckDBWarehouseResource
    ) -> dg.AssetCheckResult:
        # Alerts on readings a simulation says it tampered with (`astra simulate --truth`,
        # ml.anomaly_ground_truth) are the anomalies doing their job: they are counted
        # apart, and the rate is that of the others.
        counts = warehouse.query(
            f"""
            WITH {_RUN_PARTS},
            alerted AS (SELECT a.event_id FROM run_parts AS p JOIN {ALERTS} AS a
                        ON a.ts >= p.p AND a.ts < p.p + INTERVAL 1 HOUR)
            SELECT (SELECT count(*) FROM alerted) AS alerts,
                   (SELECT count(*) FROM alerted WHERE event_id IN
                      (SELECT event_id FROM {ANOMALY_GROUND_TRUTH}
                       WHERE event_id IS NOT NULL)) AS injected,
                   (SELECT count(*) FROM run_parts AS p JOIN {ANOMALY_SCORES} AS s
                      ON s.ts >= p.p AND s.ts < p.p + INTERVAL 1 HOUR) AS readings
            """,
            _params(ALERTS_KEY, context),
        )
        alerts, injected, readings = counts.row(0)
        rate = (alerts - injected) / readings if readings else 0.0
        top = warehouse.query(
            f"""
            WITH {_RUN_PARTS}
            SELECT a.device_id, count(*) AS n FROM run_parts AS p JOIN {ALERTS} AS a
              ON a.ts >= p.p AND a.ts < p.p + INTERVAL 1 HOUR
            GROUP BY a.device_id ORDER BY n DESC, a.device_id LIMIT 5
            """,
            _params(ALERTS_KEY, context),
        )
        return dg.AssetCheckResult(
            passed=rate <= max_rate,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "rate": rate,
                "max_rate": max_rate,
                "alerts": alerts,
                "alerts_on_injected_anomalies": injected,
                "readings": readings,
                "top_devices": _examples(top.rows()),
            },
        )

    return alerts_rate


@dg.asset_check(
    asset=ALERTS_KEY,
    description="Every alert of the hours links back to its clean reading (event id, "
    "topic, partition, offset) and its stored score, and crossed its threshold.",
)
def alerts_traceable(
    context: dg.AssetCheckExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.AssetCheckResult:
    rules = {
        "no_reading": "r.event_id IS NULL",
        "no_score": "s.event_id IS NULL",
        "below_threshold": "a.score < a.threshold",
    }
    found = warehouse.query(
        f"""
        WITH {_RUN_PARTS},
        checked AS (
            SELECT a.alert_id, a.event_id, {_broken(rules)} AS broken
            FROM run_parts AS p JOIN {ALERTS} AS a
              ON a.ts >= p.p AND a.ts < p.p + INTERVAL 1 HOUR
            LEFT JOIN {SENSOR_READINGS} AS r
              ON r.event_id = a.event_id AND r.topic = a.topic
             AND r."partition" = a."partition" AND r."offset" = a."offset"
            LEFT JOIN {ANOMALY_SCORES} AS s ON s.event_id = a.event_id)
        SELECT * FROM checked WHERE broken <> '' ORDER BY ALL LIMIT {EXAMPLES}
        """,
        _params(ALERTS_KEY, context),
    )
    checked = _partitions(warehouse, ALERTS_KEY, context)
    return _result(found.rows(), checked, "untraceable_alerts")


@dg.asset_check(
    asset=ALERTS_KEY,
    description="No alert is waiting to be published: every alert in ml.alerts has been "
    "acknowledged by the alerts topic.",
)
def alerts_published(warehouse: DuckDBWarehouseResource) -> dg.AssetCheckResult:
    waiting = warehouse.query(
        f"SELECT alert_id, device_id, ts, publish_attempt FROM {ALERTS} "
        "WHERE published_at IS NULL ORDER BY ts, alert_id"
    )
    return dg.AssetCheckResult(
        passed=waiting.height == 0,
        metadata={"unpublished": waiting.height, "examples": _examples(waiting.rows())},
    )


@dg.asset_check(
    asset=ALERTS_KEY,
    description="On simulated data whose ground truth is stored (`astra simulate --truth`): "
    f"alert precision, and recall on spikes and on stuck sensors, are at least "
    f"{QUALITY_TARGET:.0%} over the run's hours (reading level). Passes, saying so, where "
    "no ground truth covers them.",
)
def alerts_match_ground_truth(
    context: dg.AssetCheckExecutionContext, warehouse: DuckDBWarehouseResource
) -> dg.AssetCheckResult:
    # Every alert on a reading no anomaly touched counts against precision: measure with
    # --anomaly-kinds spike,stuck (a drift's end also alerts, after its labelled window).
    counts = warehouse.query(
        f"""
        WITH {_RUN_PARTS},
        scored AS (
            SELECT s.event_id FROM run_parts AS p JOIN {ANOMALY_SCORES} AS s
              ON s.ts >= p.p AND s.ts < p.p + INTERVAL 1 HOUR),
        truth AS (
            SELECT DISTINCT g.event_id, g.kind FROM {ANOMALY_GROUND_TRUTH} AS g
            JOIN scored USING (event_id)),
        alerted AS (
            SELECT a.event_id FROM run_parts AS p JOIN {ALERTS} AS a
              ON a.ts >= p.p AND a.ts < p.p + INTERVAL 1 HOUR)
        SELECT
            (SELECT count(*) FROM truth) AS tampered,
            (SELECT count(*) FROM alerted) AS alerts,
            (SELECT count(*) FROM alerted WHERE event_id IN (SELECT event_id FROM truth))
                AS true_alerts,
            (SELECT count(*) FROM truth WHERE kind = 'spike') AS spikes,
            (SELECT count(*) FROM truth WHERE kind = 'spike'
               AND event_id IN (SELECT event_id FROM alerted)) AS spikes_alerted,
            (SELECT count(*) FROM truth WHERE kind = 'stuck') AS stuck,
            (SELECT count(*) FROM truth WHERE kind = 'stuck'
               AND event_id IN (SELECT event_id FROM alerted)) AS stuck_alerted
        """,
        _params(ALERTS_KEY, context),
    ).row(0, named=True)
    if counts["tampered"] == 0:
        return dg.AssetCheckResult(
            passed=True, metadata={"note": "no stored ground truth covers these hours", **counts}
        )
    measured: dict[str, float] = {}
    if counts["alerts"]:
        measured["precision"] = counts["true_alerts"] / counts["alerts"]
    for kind in ("spikes", "stuck"):
        if counts[kind] >= QUALITY_MIN_READINGS:
            measured[f"recall_{kind}"] = counts[f"{kind}_alerted"] / counts[kind]
    failing = {name: value for name, value in measured.items() if value < QUALITY_TARGET}
    return dg.AssetCheckResult(
        passed=not failing,
        metadata={
            **{name: round(value, 4) for name, value in measured.items()},
            "target": QUALITY_TARGET,
            "below_target": dg.MetadataValue.json(sorted(failing)),
            **counts,
        },
    )


def scoring_checks(max_alert_rate: float = ALERT_RATE_WARN) -> list[dg.AssetChecksDefinition]:
    return [
        churn_features_in_range,
        churn_features_no_future_leakage,
        churn_scores_in_range,
        anomaly_scores_complete,
        anomaly_scores_in_range,
        make_alert_rate_check(max_alert_rate),
        alerts_traceable,
        alerts_published,
        alerts_match_ground_truth,
    ]
