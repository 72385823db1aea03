"""churn_features, churn_scores, anomaly_scores and alerts against a fresh lake
and the real test broker.

Simulated multi-day traffic is written into the clean tables through the ingest's own
transforms and batch writer (no broker in between: weeks of events in seconds). Expected
values come from the pure functions run over the *whole* event history, the simulator's
ground truth, or DuckDB queries, never from what the assets happened to store.
"""

import datetime as dt
import json
import uuid
from collections.abc import Iterable

import dagster as dg
import polars as pl
import psycopg
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

import astra_pipeline.assets.alerts as alerts_module
from astra_pipeline.assets.alerts import build_alerts_asset
from astra_pipeline.assets.features import CHURN_FEATURES, DAILY, churn_features
from astra_pipeline.assets.scoring import anomaly_scores, churn_scores
from astra_pipeline.assets.serving import (
    ALERTS_SPEC,
    ANOMALY_SCORES_SPEC,
    CHURN_SCORES_SPEC,
    DEVICE_HEALTH_SPEC,
    USER_CHURN_SPEC,
    ServedTable,
    build_serving_asset,
)
from astra_pipeline.checks.scoring import (
    alerts_match_ground_truth,
    alerts_published,
    alerts_traceable,
    anomaly_scores_complete,
    anomaly_scores_in_range,
    churn_features_in_range,
    churn_features_no_future_leakage,
    churn_scores_in_range,
    make_alert_rate_check,
)
from astra_pipeline.definitions import build_definitions
from astra_pipeline.jobs import ANOMALY_JOB_NAME, CHURN_JOB_NAME, WINDOWS_JOB_NAME
from astra_pipeline.simulator import SimulatedMessage, SimulatorConfig, simulate
from astra_pipeline.transforms.churn import churn_label, user_churn_features
from astra_pipeline.transforms.ingest_batch import build_ingest_frames
from astra_pipeline_tests.helpers import PostgresServer, copy_lake, lake_fields, make_lake
from resources.broker import EmbeddedBroker
from resources.ingest_store import BatchRows, next_offsets, write_batch
from resources.kafka import KafkaResource
from resources.serving import PostgresServingResource, ServingTableSpec
from resources.settings import AstraSettings
from resources.truth_store import record_ground_truth, truth_frames
from resources.warehouse import DuckDBWarehouseResource
from sensors.churn_schedule import previous_day_key
from sensors.window_refresh import refresh_request

RAW_TOPIC = "events_raw"
CHURN_CHECKS = [churn_features_in_range, churn_features_no_future_leakage, churn_scores_in_range]


def write_clean(warehouse: DuckDBWarehouseResource, messages: Iterable[SimulatedMessage]) -> None:
    """Ingest messages as the ingest asset would, straight from memory (one batch)."""
    messages = list(messages)
    warehouse.ensure_schema()
    with warehouse.transaction() as tx:
        start = next_offsets(tx, RAW_TOPIC).get(0, 0)
        batch = pl.DataFrame(
            {
                "partition": pl.Series([0] * len(messages), dtype=pl.Int32),
                "offset": pl.Series(range(start, start + len(messages)), dtype=pl.Int64),
                "key": pl.Series([m.key for m in messages], dtype=pl.Binary),
                "value": pl.Series([m.value for m in messages], dtype=pl.Binary),
                "kafka_ts": pl.Series([None] * len(messages), dtype=pl.Datetime("ms", "UTC")),
            }
        )
        frames = build_ingest_frames(batch, RAW_TOPIC, uuid.uuid4().hex, dt.datetime.now(dt.UTC))
        write_batch(
            tx,
            topic=RAW_TOPIC,
            batch_id=uuid.uuid4().hex,
            run_id=None,
            start_offsets={0: start},
            end_offsets={0: start + len(messages)},
            rows=BatchRows(
                raw_events=frames.raw_events,
                sensor_readings=frames.sensor_readings,
                user_activity=frames.user_activity,
                dead_letters=frames.dead_letters,
                duplicates=frames.duplicates,
            ),
            committed_at=dt.datetime.now(dt.UTC),
        )


def range_tags(first: str, last: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def failed_checks(result: dg.ExecuteInProcessResult) -> list[tuple[str, object]]:
    return [
        (c.check_name, c.metadata) for c in result.get_asset_check_evaluations() if not c.passed
    ]


def metadata(result: dg.ExecuteInProcessResult, node: str) -> dict[str, object]:
    """The run's metadata of ``node`` (a range run reports it once per partition)."""
    materializations = result.asset_materializations_for_node(node)
    assert materializations
    return {k: v.value for k, v in materializations[0].metadata.items()}


# --- churn: 45 simulated days of 150 users (30 % declining) and 4 devices -------------------

SIM_START = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
SIM_DAYS = 45
USER_EVENTS = 100_000
CHURN_SIM = SimulatorConfig(
    devices=0,
    users=150,
    seed=5,
    start=SIM_START,
    events_per_second=USER_EVENTS / (SIM_DAYS * 86_400),
    declining_fraction=0.3,
    decline_start_days=(2.0, SIM_DAYS - 14.0),
    session_continuation=0.9,
)
DEVICE_SIM = SimulatorConfig(
    devices=4, users=0, seed=6, start=SIM_START, events_per_second=4 / 1800
)
"""4 devices, one reading every half hour each."""
FIRST_DAY = "2026-09-08"
SCORED_DAY = dt.date(2026, 9, 30)
"""Trained on 09-08 .. 09-16 (the stored feature days whose 14-day horizon ends by the end
of 09-30) and scored on 09-30, whose own horizon the simulation covers (to 10-14)."""
LEAK_DAY = dt.date(2026, 9, 20)


@pytest.fixture(scope="module")
def churn_data() -> tuple[list[SimulatedMessage], set[str]]:
    users, truth = simulate(CHURN_SIM, USER_EVENTS)
    devices, _ = simulate(DEVICE_SIM, 4 * 48 * SIM_DAYS)
    messages = sorted([*users, *devices], key=event_ts)
    return messages, {u.user_id for u in truth.declining_users}


def event_ts(message: SimulatedMessage) -> dt.datetime:
    return dt.datetime.fromisoformat(json.loads(message.value)["ts"])


def activity_frame(messages: list[SimulatedMessage]) -> pl.DataFrame:
    rows = [json.loads(m.value) for m in messages]
    users = [r for r in rows if r["event_type"] == "user_activity"]
    return pl.DataFrame(users, infer_schema_length=None).with_columns(
        pl.col("ts").str.to_datetime(time_zone="UTC", time_unit="us")
    )


@pytest.fixture(scope="module")
def churn_warehouse(
    tmp_path_factory: pytest.TempPathFactory,
    lake_catalog: str,
    churn_data: tuple[list[SimulatedMessage], set[str]],
) -> DuckDBWarehouseResource:
    """Every simulated event ingested and the features of 09-08 .. 09-30 materialized in
    one range run (as a backfill would), their checks passing."""
    warehouse = make_lake(lake_catalog, tmp_path_factory.mktemp("churn"))
    write_clean(warehouse, churn_data[0])
    result = dg.materialize(
        [churn_features, churn_scores, *CHURN_CHECKS],
        resources={"warehouse": warehouse},
        selection=dg.AssetSelection.assets(churn_features),
        tags=range_tags(FIRST_DAY, SCORED_DAY.isoformat()),
    )
    assert result.success and failed_checks(result) == []
    return warehouse


def score_day(warehouse: DuckDBWarehouseResource, day: dt.date) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [churn_features, churn_scores, *CHURN_CHECKS],
        resources={"warehouse": warehouse},
        selection=dg.AssetSelection.assets(churn_scores),
        partition_key=day.isoformat(),
    )
    assert result.success
    assert failed_checks(result) == []
    return result


def test_stored_features_equal_the_pure_function_over_the_whole_history(
    churn_warehouse: DuckDBWarehouseResource,
    churn_data: tuple[list[SimulatedMessage], set[str]],
) -> None:
    """The asset reads only 30 days in full and a few older rows per user: on these
    days (up to 5 weeks of history) it must store what the whole history gives."""
    everything = activity_frame(churn_data[0])
    for day in (dt.date(2026, 9, 8), LEAK_DAY, SCORED_DAY):
        expected = user_churn_features(everything, day)
        stored = churn_warehouse.query(
            "SELECT * EXCLUDE (max_event_ts) FROM features.user_churn WHERE as_of_day = ? "
            "ORDER BY user_id",
            [day],
        )
        assert stored.height == expected.height > 100
        assert stored.cast(dict(expected.schema)).equals(expected), day
    days = churn_warehouse.query(
        "SELECT as_of_day, count(*) AS n, max(max_event_ts) AS latest "
        "FROM features.user_churn GROUP BY ALL ORDER BY ALL"
    )
    assert days.height == (SCORED_DAY - dt.date(2026, 9, 8)).days + 1
    ends = [
        dt.datetime.combine(d + dt.timedelta(days=1), dt.time(), dt.UTC) for d in days["as_of_day"]
    ]
    assert all(latest < end for latest, end in zip(days["latest"], ends, strict=True))
    devices = churn_warehouse.query(
        "SELECT as_of_day, count(*) AS n, sum(readings) AS readings FROM features.device_health "
        "GROUP BY ALL ORDER BY ALL"
    )
    clean = churn_warehouse.query(
        "SELECT CAST(ts AT TIME ZONE 'UTC' AS DATE) AS as_of_day, count(*) AS readings "
        "FROM clean.sensor_readings WHERE ts >= '2026-09-08 00:00:00+00' "
        "AND ts < '2026-10-01 00:00:00+00' GROUP BY ALL ORDER BY ALL"
    )
    assert devices["n"].to_list() == [4] * days.height
    assert devices["readings"].to_list() == clean["readings"].to_list()


def test_events_after_the_day_do_not_change_its_features(
    warehouse: DuckDBWarehouseResource, churn_data: tuple[list[SimulatedMessage], set[str]]
) -> None:
    messages = churn_data[0]
    end = dt.datetime.combine(LEAK_DAY + dt.timedelta(days=1), dt.time(), dt.UTC)
    before = [m for m in messages if event_ts(m) < end]
    after = [m for m in messages if event_ts(m) >= end]
    assert before and after
    write_clean(warehouse, before)

    def materialize_day() -> tuple[pl.DataFrame, pl.DataFrame]:
        result = dg.materialize(
            [churn_features, churn_features_in_range, churn_features_no_future_leakage],
            resources={"warehouse": warehouse},
            partition_key=LEAK_DAY.isoformat(),
        )
        assert result.success and failed_checks(result) == []
        return (
            warehouse.query("SELECT * FROM features.user_churn ORDER BY ALL"),
            warehouse.query("SELECT * FROM features.device_health ORDER BY ALL"),
        )

    users, devices = materialize_day()
    write_clean(warehouse, after)
    assert warehouse.query("SELECT max(ts) AS t FROM clean.user_activity").item() > end
    again_users, again_devices = materialize_day()
    assert users.height > 100 and devices.height == 4
    assert again_users.equals(users) and again_devices.equals(devices)


def test_churn_scores_train_on_past_days_and_flag_declining_users(
    churn_warehouse: DuckDBWarehouseResource,
    churn_data: tuple[list[SimulatedMessage], set[str]],
) -> None:
    result = score_day(churn_warehouse, SCORED_DAY)
    meta = metadata(result, "churn_scores")
    assert meta["status"] == "trained"
    assert meta["training_rows"] + meta["evaluation_rows"] >= 200
    assert meta["auc"] >= 0.8
    scores = churn_warehouse.query("SELECT * FROM ml.churn_scores ORDER BY user_id")
    assert scores.height == meta["scored_users"] > 0
    assert scores["as_of_day"].unique().to_list() == [SCORED_DAY]
    assert scores["churn_probability"].is_between(0.0, 1.0).all()
    # Only users active in the last 7 days are scored (the model's population).
    active = churn_warehouse.query(
        "SELECT user_id FROM features.user_churn WHERE as_of_day = ? "
        "AND days_since_last_event < 7 ORDER BY user_id",
        [SCORED_DAY],
    )
    assert scores["user_id"].to_list() == active["user_id"].to_list()
    # Against what the users actually did in the 14 days after (the label's definition,
    # computed from the whole simulation) and against who the simulator made decline:
    # far better than the base rate of churners among the scored users.
    actual = churn_label(activity_frame(churn_data[0]), SCORED_DAY).join(
        scores, on=["user_id", "as_of_day"]
    )
    assert actual.height == scores.height and actual["churned"].null_count() == 0
    flagged = actual.filter(pl.col("churn_predicted"))
    churners = actual.filter(pl.col("churned") == 1)
    assert churners.height / actual.height < 0.2
    assert flagged.height > 0 and flagged["churned"].mean() >= 0.5
    assert flagged.filter(pl.col("churned") == 1).height / churners.height >= 0.4
    assert flagged["user_id"].is_in(list(churn_data[1])).mean() >= 0.7
    (model,) = churn_warehouse.query(
        "SELECT version, trained_for_day, trained_through, metrics FROM ml.churn_models"
    ).rows()
    assert model[0] == meta["model_version"] == scores["model_version"][0]
    assert model[1] == SCORED_DAY and model[2] <= SCORED_DAY - dt.timedelta(days=14)
    assert json.loads(model[3])["training_rows"] == meta["training_rows"]
    # Re-materializing the day trains the same model on the same rows: same version.
    again = metadata(score_day(churn_warehouse, SCORED_DAY), "churn_scores")
    assert again["model_version"] == meta["model_version"] and again["new_model_version"] is False
    assert churn_warehouse.query("SELECT count(*) AS n FROM ml.churn_models").item() == 1
    assert churn_warehouse.query("SELECT * FROM ml.churn_scores ORDER BY user_id").equals(scores)


def test_a_fresh_system_skips_scoring_with_a_reason(
    churn_warehouse: DuckDBWarehouseResource,
) -> None:
    # 09-20's training days (08-09 .. 09-06) have no stored features.
    result = score_day(churn_warehouse, LEAK_DAY)
    meta = metadata(result, "churn_scores")
    assert meta["status"] == "skipped" and "no stored features" in str(meta["skip_reason"])
    assert meta["dagster/row_count"] == 0
    stored = churn_warehouse.query(
        "SELECT count(*) AS n FROM ml.churn_scores WHERE as_of_day = ?", [LEAK_DAY]
    )
    assert stored.item() == 0


def test_churn_checks_fail_on_tampered_rows(
    churn_warehouse: DuckDBWarehouseResource, warehouse: DuckDBWarehouseResource
) -> None:
    score_day(churn_warehouse, SCORED_DAY)
    copy_lake(churn_warehouse, warehouse)  # the shared lake keeps its rows
    with warehouse.transaction() as tx:
        # A 7-day count that saw an event of the next day (kept consistent with the
        # trend columns, so only the recomputation can tell), a status share above 1,
        # and a probability outside [0, 1].
        tx.execute(
            "UPDATE features.user_churn SET events_last7 = events_last7 + 1, "
            "events_trend_diff = events_trend_diff + 1, "
            "events_trend_ratio = (events_last7 + 2) / (events_prev7 + 1) "
            "WHERE as_of_day = ? AND user_id = (SELECT min(user_id) FROM features.user_churn)",
            [SCORED_DAY],
        )
        tx.execute(
            "UPDATE features.device_health SET share_fault = 1.5 "
            "WHERE device_id = (SELECT min(device_id) FROM features.device_health)"
        )
        tx.execute(
            "UPDATE ml.churn_scores SET churn_probability = 1.5 "
            "WHERE user_id = (SELECT min(user_id) FROM ml.churn_scores)"
        )
    result = dg.materialize(
        [churn_features, churn_scores, *CHURN_CHECKS],
        resources={"warehouse": warehouse},
        selection=dg.AssetSelection.checks(*CHURN_CHECKS),
        raise_on_error=False,
    )
    verdicts = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert verdicts == {
        "churn_features_in_range": False,
        "churn_features_no_future_leakage": False,
        "churn_scores_in_range": False,
    }


def test_the_daily_schedule_runs_the_churn_job_for_the_day_that_just_ended(
    churn_warehouse: DuckDBWarehouseResource,
) -> None:
    settings = AstraSettings(**lake_fields(churn_warehouse))
    definitions = build_definitions(settings)
    schedule = definitions.resolve_schedule_def("churn_daily_schedule")
    assert schedule.cron_schedule == "15 0 * * *" and schedule.execution_timezone == "UTC"
    tick = dt.datetime.combine(SCORED_DAY + dt.timedelta(days=1), dt.time(0, 15), dt.UTC)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=tick,
            repository_def=definitions.get_repository_def(),
        )
        (request,) = schedule.evaluate_tick(context).run_requests or []
    assert request.partition_key == SCORED_DAY.isoformat() == previous_day_key(tick)
    job = definitions.resolve_job_def(CHURN_JOB_NAME)
    result = job.execute_in_process(partition_key=request.partition_key)
    assert result.success and failed_checks(result) == []
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == {
        "churn_features",
        "churn_scores",
    }
    assert metadata(result, "churn_scores")["status"] == "trained"
    scored = churn_warehouse.query(
        "SELECT count(*) AS n FROM ml.churn_scores WHERE as_of_day = ?", [SCORED_DAY]
    )
    assert scored.item() > 0


# --- anomalies: 20 devices, a reading every 20 s each, spikes and stuck sensors ------------

ANOMALY_SIM = SimulatorConfig(
    devices=20,
    users=0,
    seed=11,
    start=dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
    events_per_second=1.0,
    anomaly_rate_per_device_day=12.0,
    anomaly_kinds=("spike", "stuck"),
)
SCORED_HOURS = ("2026-11-20-02:00", "2026-11-20-05:00")
"""Four hours scored, after two hours that serve as their first baseline."""
HOURS_START = dt.datetime(2026, 11, 20, 2, tzinfo=dt.UTC)
HOURS_END = dt.datetime(2026, 11, 20, 6, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def anomaly_data() -> tuple[list[SimulatedMessage], set[str], set[str]]:
    messages, truth = simulate(ANOMALY_SIM, 6 * 3600)
    return (
        messages,
        set(truth.anomalous_event_ids(["spike"])),
        set(truth.anomalous_event_ids(["stuck"])),
    )


@pytest.fixture
def alerts_topic(kafka: KafkaResource, topic: str) -> str:
    name = f"{topic}_alerts"
    kafka.create_topics({name: 1})
    return name


def score_hours(
    warehouse: DuckDBWarehouseResource,
    kafka: KafkaResource,
    alerts_topic: str,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [
            anomaly_scores,
            build_alerts_asset(alerts_topic),
            anomaly_scores_complete,
            anomaly_scores_in_range,
            make_alert_rate_check(0.2),
            alerts_traceable,
            alerts_published,
        ],
        resources={"warehouse": warehouse, "kafka": kafka},
        tags=range_tags(*SCORED_HOURS),
        raise_on_error=raise_on_error,
    )


def topic_alert_ids(kafka: KafkaResource, topic: str) -> list[str]:
    """Every alert_id on the topic, read to its end (duplicates kept)."""
    with kafka.reader(topic) as reader:
        offsets, ids = {0: 0}, []
        while True:
            batch = reader.read(offsets, 100_000)
            ids += [json.loads(v)["alert_id"] for v in batch.frame["value"]]
            offsets = batch.end_offsets
            if batch.reached_eof:
                return ids


def table_alert_ids(warehouse: DuckDBWarehouseResource) -> list[str]:
    return warehouse.query("SELECT alert_id FROM ml.alerts ORDER BY alert_id")["alert_id"].to_list()


def test_anomaly_scores_and_alerts_each_alert_exactly_once(
    warehouse: DuckDBWarehouseResource,
    kafka: KafkaResource,
    alerts_topic: str,
    anomaly_data: tuple[list[SimulatedMessage], set[str], set[str]],
) -> None:
    messages, spikes, stuck = anomaly_data
    write_clean(warehouse, messages)
    first = score_hours(warehouse, kafka, alerts_topic)
    assert failed_checks(first) == []
    readings = warehouse.query(
        "SELECT count(*) AS n FROM clean.sensor_readings WHERE ts >= ? AND ts < ?",
        [HOURS_START, HOURS_END],
    ).item()
    scores = warehouse.query("SELECT * FROM ml.anomaly_scores")
    assert scores.height == readings > 10_000
    assert scores["ts"].min() >= HOURS_START and scores["ts"].max() < HOURS_END
    assert scores["score"].is_between(0.0, 1.0).all()

    # Quality at the asset level, against the simulator's ground truth for these hours.
    in_hours = {m.event_id for m in messages if HOURS_START <= event_ts(m) < HOURS_END}
    spikes, stuck = spikes & in_hours, stuck & in_hours
    assert len(spikes) >= 5 and len(stuck) >= 50
    alerted = set(warehouse.query("SELECT event_id FROM ml.alerts")["event_id"])
    assert len(alerted & (spikes | stuck)) / len(alerted) >= 0.8
    assert len(alerted & spikes) / len(spikes) >= 0.8
    assert len(alerted & stuck) / len(stuck) >= 0.8

    ids = table_alert_ids(warehouse)
    meta = metadata(first, "alerts")
    assert meta["new_alerts"] == meta["published"] == len(ids) > 10
    on_topic = topic_alert_ids(kafka, alerts_topic)
    assert sorted(on_topic) == ids
    # The link back to the source message holds in the table and on the topic.
    linked = warehouse.query(
        "SELECT count(*) AS n FROM ml.alerts AS a JOIN clean.sensor_readings AS r "
        'ON r.event_id = a.event_id AND r."offset" = a."offset" AND r.topic = a.topic'
    ).item()
    assert linked == len(ids)

    second = score_hours(warehouse, kafka, alerts_topic)
    assert failed_checks(second) == []
    again = metadata(second, "alerts")
    assert again["new_alerts"] == 0 and again["already_recorded"] == len(ids)
    assert again["published"] == 0
    assert table_alert_ids(warehouse) == ids
    assert sorted(topic_alert_ids(kafka, alerts_topic)) == ids


def test_scores_are_never_replaced_by_scores_of_an_older_snapshot(
    warehouse: DuckDBWarehouseResource,
    anomaly_data: tuple[list[SimulatedMessage], set[str], set[str]],
) -> None:
    """anomaly_scores computes outside any lock, so a slower run may finish after a run
    that read later clean rows: it must leave that run's hours in place, and replace
    the others."""
    write_clean(warehouse, anomaly_data[0])

    def score() -> dict[str, object]:
        result = dg.materialize(
            [anomaly_scores], resources={"warehouse": warehouse}, tags=range_tags(*SCORED_HOURS)
        )
        return metadata(result, "anomaly_scores")

    def per_hour() -> list[tuple[object, int]]:
        return warehouse.query(
            "SELECT date_trunc('hour', ts) AS h, count(*) AS n FROM ml.anomaly_scores "
            "GROUP BY h ORDER BY h"
        ).rows()

    assert score()["hours_superseded"] == 0
    scored = per_hour()
    assert len(scored) == 4
    first, last = HOURS_START, HOURS_START + dt.timedelta(hours=1)
    with warehouse.transaction() as tx:
        # The first hour holds another run's scores, from clean rows ingested later than
        # everything here (one score fewer, to tell them apart); the second hour lost a
        # score without such a record.
        for hour in (first, last):
            tx.execute(
                "DELETE FROM ml.anomaly_scores WHERE event_id = (SELECT min(event_id) "
                "FROM ml.anomaly_scores WHERE ts >= ? AND ts < ?)",
                [hour, hour + dt.timedelta(hours=1)],
            )
        tx.execute(
            "UPDATE ops.scoring_partitions SET seen_until = seen_until + INTERVAL 1 HOUR, "
            "seen_snapshot = seen_snapshot + 1000000 "
            "WHERE asset = 'anomaly_scores' AND partition_start = ?",
            [first],
        )
    assert score()["hours_superseded"] == 1
    after = per_hour()
    assert after[0][1] == scored[0][1] - 1  # left as the later run wrote it
    assert after[1:] == scored[1:]  # replaced: the lost score is back
    with warehouse.transaction() as tx:
        tx.execute(
            "UPDATE ops.scoring_partitions SET seen_until = seen_until - INTERVAL 2 HOUR, "
            "seen_snapshot = seen_snapshot - 2000000 WHERE asset = 'anomaly_scores'"
        )
    # Recorded from an older snapshot than this run's: replaced.
    assert score()["hours_superseded"] == 0
    assert per_hour() == scored


def test_anomaly_checks_look_at_the_hours_of_their_run(
    warehouse: DuckDBWarehouseResource,
    anomaly_data: tuple[list[SimulatedMessage], set[str], set[str]],
) -> None:
    """A run's checks cover the hours of its partition tags, not the rows that name its
    run id (another run may have rewritten them since); damage elsewhere is not theirs."""
    write_clean(warehouse, anomaly_data[0])
    dg.materialize(
        [anomaly_scores], resources={"warehouse": warehouse}, tags=range_tags(*SCORED_HOURS)
    )
    with warehouse.transaction() as tx:
        tx.execute(
            "DELETE FROM ml.anomaly_scores WHERE event_id = (SELECT min(event_id) "
            "FROM ml.anomaly_scores WHERE ts >= ? AND ts < ?)",
            [HOURS_START, HOURS_START + dt.timedelta(hours=1)],
        )

    def complete(hour: dt.datetime) -> tuple[bool, object]:
        result = dg.materialize(
            [anomaly_scores, anomaly_scores_complete],
            resources={"warehouse": warehouse},
            selection=dg.AssetSelection.checks(anomaly_scores_complete),
            tags={"dagster/partition": hour.strftime("%Y-%m-%d-%H:00")},
            raise_on_error=False,
        )
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation.passed, evaluation.metadata["partitions_checked"].value

    assert complete(HOURS_END - dt.timedelta(hours=1)) == (True, 1)
    assert complete(HOURS_START) == (False, 1)


def test_an_alert_sent_before_a_crash_is_not_sent_again(
    warehouse: DuckDBWarehouseResource,
    kafka: KafkaResource,
    alerts_topic: str,
    anomaly_data: tuple[list[SimulatedMessage], set[str], set[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_clean(warehouse, anomaly_data[0])

    def crash(*args: object, **kwargs: object) -> int:
        raise RuntimeError("killed after the broker acknowledged, before the commit")

    monkeypatch.setattr(alerts_module, "complete_publication", crash)
    assert not score_hours(warehouse, kafka, alerts_topic, raise_on_error=False).success
    monkeypatch.undo()
    ids = table_alert_ids(warehouse)
    assert sorted(topic_alert_ids(kafka, alerts_topic)) == ids
    unpublished = warehouse.query("SELECT count(*) AS n FROM ml.alerts WHERE published_at IS NULL")
    assert unpublished.item() == len(ids) > 10

    recovered = score_hours(warehouse, kafka, alerts_topic)
    assert failed_checks(recovered) == []
    meta = metadata(recovered, "alerts")
    assert meta["settled_from_log"] == len(ids) and meta["published"] == 0
    assert sorted(topic_alert_ids(kafka, alerts_topic)) == ids


def test_an_alert_not_sent_before_a_crash_is_sent_on_the_next_run(
    warehouse: DuckDBWarehouseResource,
    kafka: KafkaResource,
    alerts_topic: str,
    anomaly_data: tuple[list[SimulatedMessage], set[str], set[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_clean(warehouse, anomaly_data[0])

    def crash(alert: object) -> tuple[bytes, bytes]:
        raise RuntimeError("killed after recording the attempt, before sending")

    monkeypatch.setattr(alerts_module, "alert_message", crash)
    failed = score_hours(warehouse, kafka, alerts_topic, raise_on_error=False)
    assert not failed.success
    monkeypatch.undo()
    ids = table_alert_ids(warehouse)
    assert len(ids) > 10 and topic_alert_ids(kafka, alerts_topic) == []
    # Checks run on their own now see the stranded alerts.
    stranded = dg.materialize(
        [build_alerts_asset(alerts_topic), alerts_published],
        resources={"warehouse": warehouse, "kafka": kafka},
        selection=dg.AssetSelection.checks(alerts_published),
        raise_on_error=False,
    )
    assert [c.passed for c in stranded.get_asset_check_evaluations()] == [False]

    recovered = score_hours(warehouse, kafka, alerts_topic)
    assert failed_checks(recovered) == []
    meta = metadata(recovered, "alerts")
    assert meta["settled_from_log"] == 0 and meta["published"] == len(ids)
    assert meta["interrupted_attempts"] == 1
    assert sorted(topic_alert_ids(kafka, alerts_topic)) == ids


def test_the_windows_refresh_job_scores_and_alerts_the_hours_it_refreshes(
    warehouse: DuckDBWarehouseResource,
    broker: EmbeddedBroker,
    alerts_topic: str,
    anomaly_data: tuple[list[SimulatedMessage], set[str], set[str]],
) -> None:
    """The jobs the windows and scoring sensors launch, with the range tags they set."""
    write_clean(warehouse, anomaly_data[0])
    settings = AstraSettings(
        **lake_fields(warehouse),
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topic_alerts=alerts_topic,
    )
    definitions = build_definitions(settings)
    request = refresh_request(HOURS_START, HOURS_END - dt.timedelta(hours=1), trigger=1)
    windows = definitions.resolve_job_def(WINDOWS_JOB_NAME).execute_in_process(tags=request.tags)
    assert windows.success
    job = definitions.resolve_job_def(ANOMALY_JOB_NAME)
    result = job.execute_in_process(tags=request.tags)
    assert result.success
    # A reading in eight alerts, with this many injected anomalies: far above the
    # deployed 1 % limit, which warns (and only warns).
    (warned,) = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert warned.check_name == "alerts_rate" and warned.severity == dg.AssetCheckSeverity.WARN
    assert warned.metadata["rate"].value > 0.05
    assert warned.metadata["alerts_on_injected_anomalies"].value == 0  # no truth stored
    # With the simulation's ground truth stored (as `astra simulate --truth` does), the
    # alerts on injected anomalies are counted apart and the rest stay under the limit.
    _, spikes, stuck = anomaly_data
    with warehouse.transaction() as tx:
        tx.execute(
            "INSERT INTO ml.anomaly_ground_truth SELECT device_id, 'spike', ts, ts, event_id, "
            "'test' FROM clean.sensor_readings WHERE list_contains(?, event_id)",
            [sorted(spikes | stuck)],
        )
    alerted = table_alert_ids(warehouse)
    rechecked = job.execute_in_process(tags=request.tags)
    (rate,) = [c for c in rechecked.get_asset_check_evaluations() if c.check_name == "alerts_rate"]
    assert rate.passed, rate.metadata
    injected = rate.metadata["alerts_on_injected_anomalies"].value
    assert 0 < injected <= len(alerted)
    assert rate.metadata["rate"].value == pytest.approx(
        (rate.metadata["alerts"].value - injected) / rate.metadata["readings"].value
    )
    per_asset = warehouse.query(
        "SELECT asset, count(*) AS hours FROM ops.scoring_partitions GROUP BY ALL ORDER BY ALL"
    )
    assert per_asset.rows() == [("alerts", 4), ("anomaly_scores", 4)]
    windows = warehouse.query("SELECT count(*) AS n FROM ops.window_partitions").item()
    assert windows == 4
    assert sorted(
        topic_alert_ids(KafkaResource(bootstrap_servers=broker.bootstrap_servers), alerts_topic)
    ) == table_alert_ids(warehouse)


def test_anomaly_checks_fail_on_tampered_rows(
    warehouse: DuckDBWarehouseResource,
    kafka: KafkaResource,
    alerts_topic: str,
    anomaly_data: tuple[list[SimulatedMessage], set[str], set[str]],
) -> None:
    write_clean(warehouse, anomaly_data[0])
    score_hours(warehouse, kafka, alerts_topic)
    with warehouse.transaction() as tx:
        tx.execute(
            "DELETE FROM ml.anomaly_scores WHERE event_id = (SELECT min(event_id) "
            "FROM ml.anomaly_scores)"
        )
        tx.execute(
            "UPDATE ml.anomaly_scores SET score = 2.0 WHERE event_id = (SELECT max(event_id) "
            "FROM ml.anomaly_scores)"
        )
        tx.execute(
            'UPDATE ml.alerts SET "offset" = "offset" + 1000000 WHERE alert_id = '
            "(SELECT min(alert_id) FROM ml.alerts)"
        )
    checks = [
        anomaly_scores_complete,
        anomaly_scores_in_range,
        make_alert_rate_check(0.0),
        alerts_traceable,
        alerts_published,
    ]
    result = dg.materialize(
        [anomaly_scores, build_alerts_asset(alerts_topic), *checks],
        resources={"warehouse": warehouse, "kafka": kafka},
        selection=dg.AssetSelection.checks(*checks),
        raise_on_error=False,
    )
    verdicts = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert verdicts == {
        "anomaly_scores_complete": False,
        "anomaly_scores_in_range": False,
        "alerts_rate": False,
        "alerts_traceable": False,
        "alerts_published": True,
    }


# --- serving ------------------------------------------------------------------------------


def test_daily_feature_tables_are_served_one_as_of_day_at_a_time(
    churn_warehouse: DuckDBWarehouseResource, postgres_server: PostgresServer, pg: str
) -> None:
    """The serving copy of a daily table replaces exactly the rows of its as_of_day."""
    schema = f"astra_test_{uuid.uuid4().hex[:10]}"
    warehouse = churn_warehouse  # the tables below are new ones, in a schema of their own
    serving_db = PostgresServingResource(
        host=postgres_server.host,
        port=postgres_server.port,
        user=postgres_server.user,
        database="test",
    )
    specs = [
        spec.model_copy(update={"table": f"{schema}.{spec.table_name}"})
        for spec in (USER_CHURN_SPEC, DEVICE_HEALTH_SPEC)
    ]
    with warehouse.transaction() as tx:
        tx.execute(f"CREATE SCHEMA {schema}")
        for spec, source in zip(specs, (USER_CHURN_SPEC, DEVICE_HEALTH_SPEC), strict=True):
            tx.execute(f"CREATE TABLE {spec.table} AS SELECT * FROM {source.table}")
    assets = [build_serving_asset(ServedTable(spec, CHURN_FEATURES, DAILY)) for spec in specs]
    try:
        for day in (SCORED_DAY, SCORED_DAY - dt.timedelta(days=1), SCORED_DAY):
            result = dg.materialize(
                assets,
                resources={"warehouse": warehouse, "serving_db": serving_db},
                partition_key=day.isoformat(),
            )
            assert result.success and failed_checks(result) == []
        with psycopg.connect(pg) as conn:
            for spec in specs:
                served = conn.execute(
                    f"SELECT as_of_day, count(*) FROM {spec.table} GROUP BY 1 ORDER BY 1"
                ).fetchall()
                stored = warehouse.query(
                    f"SELECT as_of_day, count(*) AS n FROM {spec.table} WHERE as_of_day IN (?, ?) "
                    "GROUP BY ALL ORDER BY ALL",
                    [SCORED_DAY - dt.timedelta(days=1), SCORED_DAY],
                ).rows()
                assert served == stored and len(served) == 2
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


DUCKDB_TO_PG = {
    "VARCHAR": "text",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "DOUBLE": "double precision",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
}


@pytest.mark.parametrize(
    "spec",
    [USER_CHURN_SPEC, DEVICE_HEALTH_SPEC, CHURN_SCORES_SPEC, ANOMALY_SCORES_SPEC, ALERTS_SPEC],
    ids=lambda s: s.table,
)
def test_serving_spec_matches_the_warehouse_ddl(
    spec: ServingTableSpec, warehouse: DuckDBWarehouseResource
) -> None:
    warehouse.ensure_schema()
    described = warehouse.query(f"DESCRIBE {spec.table}")
    assert described["column_name"].to_list() == spec.column_names
    assert [DUCKDB_TO_PG[t] for t in described["column_type"]] == [c.type for c in spec.columns]
    not_null = described.filter(pl.col("null") == "NO")["column_name"].to_list()
    assert not_null == [c.name for c in spec.columns if not c.nullable]


def test_alerts_match_the_stored_ground_truth(
    warehouse: DuckDBWarehouseResource, kafka: KafkaResource, alerts_topic: str
) -> None:
    """The ground truth `astra simulate --truth` stores, measured by an asset check."""
    messages, truth = simulate(ANOMALY_SIM, 6 * 3600)
    write_clean(warehouse, messages)
    record_ground_truth(warehouse, *truth_frames(truth, "seed-11"))
    assets = [anomaly_scores, build_alerts_asset(alerts_topic)]

    def run_check(selection: dg.AssetSelection | None = None) -> dg.AssetCheckEvaluation:
        result = dg.materialize(
            [*assets, alerts_match_ground_truth],
            resources={"warehouse": warehouse, "kafka": kafka},
            tags=range_tags(*SCORED_HOURS),
            selection=selection,
        )
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation

    measured = run_check()
    assert measured.passed, measured.metadata
    assert measured.metadata["precision"].value >= 0.8
    assert measured.metadata["recall_spikes"].value >= 0.8
    assert measured.metadata["recall_stuck"].value >= 0.8
    # Alerts lost for half the spikes: the recall on spikes falls below the target.
    spikes = sorted(truth.anomalous_event_ids(["spike"]))
    with warehouse.transaction() as tx:
        for event_id in spikes[::2]:
            tx.execute("DELETE FROM ml.alerts WHERE event_id = ?", [event_id])
    tampered = run_check(dg.AssetSelection.checks(alerts_match_ground_truth))
    assert not tampered.passed
    assert "recall_spikes" in tampered.metadata["below_target"].value


def test_without_ground_truth_the_quality_check_says_so(
    warehouse: DuckDBWarehouseResource,
    kafka: KafkaResource,
    alerts_topic: str,
    anomaly_data: tuple[list[SimulatedMessage], set[str], set[str]],
) -> None:
    write_clean(warehouse, anomaly_data[0])
    result = dg.materialize(
        [anomaly_scores, build_alerts_asset(alerts_topic), alerts_match_ground_truth],
        resources={"warehouse": warehouse, "kafka": kafka},
        tags=range_tags(*SCORED_HOURS),
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed
    assert "no stored ground truth" in evaluation.metadata["note"].value
