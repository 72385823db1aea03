"""Tests for the churn features, the churn label, device health and the churn model.

The fixtures are small enough to work out every feature by hand; the expected values are
written out with the arithmetic. The model is checked on a seeded simulation in which the
simulator says which users decline.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import pickle

import polars as pl
import pytest

from astra_pipeline.simulator import SimulatorConfig, simulate
from astra_pipeline.transforms.churn import (
    CHURN_LABEL_SCHEMA,
    DEVICE_HEALTH_SCHEMA,
    USER_CHURN_SCHEMA,
    churn_label,
    device_health_features,
    user_churn_features,
)
from astra_pipeline.transforms.churn_model import (
    ChurnModel,
    ModelIntegrityError,
    deserialize_model,
    score_churn,
    serialize_model,
    train_churn_model,
)

D = dt.date(2026, 11, 20)
"""The as-of day of the fixtures; its end is 2026-11-21 00:00 UTC."""
LAST_US = dt.timedelta(microseconds=1)


def at(day: int, hour: int = 0, minute: int = 0, month: int = 11) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=dt.UTC)


def activity(rows: list[tuple[str, str, dt.datetime, str, float | None]]) -> pl.DataFrame:
    """clean.user_activity rows from (user, session, ts, action, amount)."""
    frame = pl.DataFrame(
        rows,
        schema={
            "user_id": pl.String,
            "session_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "action": pl.String,
            "amount": pl.Float64,
        },
        orient="row",
    )
    revenue = pl.when(pl.col("action") == "purchase").then(pl.col("amount")).otherwise(0.0)
    return frame.with_columns(revenue.fill_null(0.0).alias("revenue"))


FIXTURE = activity(
    [
        # user-a: seen since Oct 1, buys, active on D itself.
        ("user-a", "s1", at(1, 10, month=10), "page_view", None),
        ("user-a", "s2", at(5, 12), "add_to_cart", None),
        ("user-a", "s3", at(8, 9), "page_view", None),
        ("user-a", "s3", at(8, 9, 5), "add_to_cart", None),
        ("user-a", "s3", at(8, 9, 10), "purchase", 30.0),
        ("user-a", "s4", at(15, 18), "page_view", None),
        ("user-a", "s5", at(18, 20), "purchase", 10.0),
        ("user-a", "s5", at(21) - LAST_US, "page_view", None),
        ("user-a", "s6", at(21), "page_view", None),
        # user-b: one login, never a cart or a purchase.
        ("user-b", "s7", at(10, 8), "login", None),
        ("user-b", "s10", at(5, month=12), "page_view", None),
        # user-c: first seen after D.
        ("user-c", "s11", at(21), "login", None),
        # user-d: one event on each side of the 7-day boundary (Nov 14 00:00).
        ("user-d", "s8", at(14), "page_view", None),
        ("user-d", "s9", at(14) - LAST_US, "page_view", None),
        ("user-d", "s12", at(5, month=12) - LAST_US, "page_view", None),
    ]
)


# --- user features --------------------------------------------------------------------------


def test_user_features_by_hand() -> None:
    features = user_churn_features(FIXTURE, D)
    assert features.schema == USER_CHURN_SCHEMA
    assert features["user_id"].to_list() == ["user-a", "user-b", "user-d"]
    a, b, d = features.rows(named=True)
    assert a == {
        "user_id": "user-a",
        "as_of_day": D,
        "days_since_last_event": 0,  # 23:59:59.999999 on D; the 00:00 of D+1 is not seen
        "days_since_last_purchase": 2,  # Nov 18
        "days_since_last_cart": 12,  # Nov 8
        "sessions_7d": 2,  # s4, s5
        "sessions_30d": 4,  # s2..s5 (s1 on Oct 1 is 50 days back)
        "page_views_7d": 2,  # Nov 15, Nov 20
        "page_views_30d": 3,  # + Nov 8
        "purchases_7d": 1,
        "purchases_30d": 2,
        "revenue_7d": 10.0,
        "revenue_30d": 40.0,
        "aov_7d": 10.0,
        "aov_30d": 20.0,  # 40 / 2
        "events_last7": 3,  # Nov 15, 18, 20
        "events_prev7": 3,  # the three of Nov 8
        "events_trend_ratio": 1.0,  # (3 + 1) / (3 + 1)
        "events_trend_diff": 0,
        "cart_to_purchase_30d": 1.0,  # 2 purchases / 2 carts (Nov 5, Nov 8)
        "tenure_days": 50,  # Oct 1 -> Nov 20
    }
    assert b == {
        "user_id": "user-b",
        "as_of_day": D,
        "days_since_last_event": 10,
        "days_since_last_purchase": None,
        "days_since_last_cart": None,
        "sessions_7d": 0,
        "sessions_30d": 1,
        "page_views_7d": 0,
        "page_views_30d": 0,
        "purchases_7d": 0,
        "purchases_30d": 0,
        "revenue_7d": 0.0,
        "revenue_30d": 0.0,
        "aov_7d": None,  # no purchases: undefined, not 0
        "aov_30d": None,
        "events_last7": 0,
        "events_prev7": 1,  # Nov 10
        "events_trend_ratio": 0.5,  # (0 + 1) / (1 + 1)
        "events_trend_diff": -1,
        "cart_to_purchase_30d": None,  # no carts
        "tenure_days": 10,
    }
    # Nov 14 00:00 opens the 7-day window; a microsecond earlier is the week before.
    assert (d["events_last7"], d["events_prev7"]) == (1, 1)
    assert (d["sessions_7d"], d["sessions_30d"]) == (1, 2)
    assert d["days_since_last_event"] == 6
    assert d["tenure_days"] == 7


def test_day_boundary_moves_an_event_to_the_next_day() -> None:
    """The event at Nov 21 00:00 belongs to Nov 21's features, not Nov 20's."""
    next_day = user_churn_features(FIXTURE, D + dt.timedelta(days=1))
    a = next_day.filter(pl.col("user_id") == "user-a").row(0, named=True)
    assert a["days_since_last_event"] == 0
    assert a["sessions_7d"] == 3  # s4, s5, s6
    assert "user-c" in next_day["user_id"].to_list()


def test_adding_later_events_does_not_change_a_day_s_features() -> None:
    """No leakage: everything after the end of D (new users, more events, a purchase at
    exactly midnight) leaves D's features identical."""
    before = user_churn_features(FIXTURE.filter(pl.col("ts") < at(21)), D)
    future = activity(
        [
            ("user-a", "s20", at(21), "purchase", 99.0),
            ("user-b", "s21", at(22, 3), "add_to_cart", None),
            ("user-e", "s22", at(25), "login", None),
        ]
    )
    after = user_churn_features(pl.concat([FIXTURE, future]), D)
    assert after.equals(before)
    assert after.equals(user_churn_features(FIXTURE, D))


def test_revenue_is_derived_from_amount_when_absent() -> None:
    assert user_churn_features(FIXTURE.drop("revenue"), D).equals(user_churn_features(FIXTURE, D))


def test_a_single_event_user() -> None:
    one = activity([("user-x", "s1", at(20, 12), "purchase", 5.5)])
    row = user_churn_features(one, D).row(0, named=True)
    assert row["days_since_last_event"] == 0
    assert row["tenure_days"] == 0
    assert row["aov_7d"] == 5.5
    assert row["cart_to_purchase_30d"] is None
    assert row["events_trend_ratio"] == 2.0  # (1 + 1) / (0 + 1)


# --- label ------------------------------------------------------------------------------------


def test_churn_label_by_hand() -> None:
    labels = churn_label(FIXTURE, D)
    assert labels.schema == CHURN_LABEL_SCHEMA
    # Horizon: Nov 21 00:00 (included) to Dec 5 00:00 (excluded). user-a is back at
    # Nov 21 00:00; user-b's next event is at Dec 5 00:00, just outside; user-d's at Dec 4
    # 23:59:59.999999, just inside. The latest event (Dec 5 00:00) proves the horizon is
    # observed. user-c was not seen by the end of D: no label.
    assert labels.rows() == [("user-a", D, 0), ("user-b", D, 1), ("user-d", D, 0)]


def test_churn_label_is_null_until_the_horizon_is_observed() -> None:
    partial = FIXTURE.filter(pl.col("ts") < at(5, month=12))
    assert churn_label(partial, D)["churned"].null_count() == 3
    explicit = churn_label(partial, D, observed_until=at(5, month=12))
    assert explicit["churned"].to_list() == [0, 1, 0]
    short = churn_label(FIXTURE, D, observed_until=at(5, month=12) - LAST_US)
    assert short["churned"].null_count() == 3


def test_a_shorter_horizon() -> None:
    labels = churn_label(FIXTURE, D, horizon_days=7, observed_until=at(28))
    # Nov 21 .. Nov 27: only user-a comes back.
    assert labels["churned"].to_list() == [0, 1, 1]


# --- device health ----------------------------------------------------------------------------


def readings(rows: list[tuple[str, dt.datetime, float, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "device_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "battery_pct": pl.Float64,
            "status": pl.String,
        },
        orient="row",
    )


def test_device_health_by_hand() -> None:
    frame = readings(
        [
            ("dev-x", at(19, 23), 81.0, "ok"),
            ("dev-x", at(20, 1), 80.0, "ok"),
            ("dev-x", at(20, 3), 79.0, "degraded"),
            ("dev-x", at(20, 9), 76.0, "ok"),
            ("dev-x", at(20, 21), 70.0, "fault"),
            ("dev-x", at(21, 0, 30), 69.0, "ok"),
            ("dev-y", at(18, 12), 50.0, "ok"),
            ("dev-z", at(20, 12), 40.0, "ok"),
            ("dev-w", at(21, 1), 90.0, "ok"),
        ]
    )
    health = device_health_features(frame, D, expected_interval_s=3600.0)
    assert health.schema == DEVICE_HEALTH_SCHEMA
    x, y, z = health.rows(named=True)
    # dev-x on Nov 20: readings at 1h, 3h, 9h, 21h. Silences: 1h from midnight, gaps 2h,
    # 6h, 12h, then 3h to the end: longest 12h. Battery by least squares: x = 1 3 9 21
    # (mean 8.5), y = 80 79 76 70 (mean 76.25); sum dx*dy = -121.5, sum dx^2 = 243.
    assert x == {
        "device_id": "dev-x",
        "as_of_day": D,
        "readings": 4,
        "expected_readings": 24.0,
        "reporting_rate": pytest.approx(4 / 24),
        "longest_silence_s": 43_200.0,
        "seconds_since_last_reading": 10_800.0,
        "battery_slope_per_h": pytest.approx(-0.5),
        "share_degraded": 0.25,
        "share_fault": 0.25,
    }
    # dev-y: silent all of Nov 20, last heard Nov 18 12:00 (2.5 days before the end).
    assert y == {
        "device_id": "dev-y",
        "as_of_day": D,
        "readings": 0,
        "expected_readings": 24.0,
        "reporting_rate": 0.0,
        "longest_silence_s": 86_400.0,
        "seconds_since_last_reading": 216_000.0,
        "battery_slope_per_h": None,
        "share_degraded": None,
        "share_fault": None,
    }
    # dev-z: one reading at noon: 12h of silence either side, no slope from one point.
    assert z["longest_silence_s"] == 43_200.0
    assert z["battery_slope_per_h"] is None
    assert z["share_degraded"] == 0.0


def test_device_health_needs_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="expected_interval_s"):
        device_health_features(readings([]), D, expected_interval_s=0.0)


# --- the model on a simulation with declining users -------------------------------------------

SIM_START = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
SIM_DAYS = 45
CHURN_SIM = SimulatorConfig(
    devices=0,
    users=150,
    seed=5,
    start=SIM_START,
    events_per_second=100_000 / (SIM_DAYS * 86_400),
    declining_fraction=0.3,
    decline_start_days=(2.0, SIM_DAYS - 14.0),
    session_continuation=0.9,
)


@pytest.fixture(scope="module")
def simulated() -> tuple[pl.DataFrame, pl.DataFrame, set[str]]:
    """Features and labels for the days that have 7 days of history and a fully
    observed 14-day horizon, plus the users the simulator made decline."""
    messages, truth = simulate(CHURN_SIM, 100_000)
    events = pl.DataFrame([json.loads(m.value) for m in messages]).with_columns(
        pl.col("ts").str.to_datetime(time_zone="UTC", time_unit="us")
    )
    days = [SIM_START.date() + dt.timedelta(days=n) for n in range(7, SIM_DAYS - 15)]
    features = pl.concat([user_churn_features(events, day) for day in days])
    labels = pl.concat([churn_label(events, day) for day in days])
    return features, labels, {u.user_id for u in truth.declining_users}


def test_model_separates_churners_on_later_days(
    simulated: tuple[pl.DataFrame, pl.DataFrame, set[str]],
) -> None:
    features, labels, declining = simulated
    model, metrics = train_churn_model(features, labels, seed=0)
    assert metrics.auc is not None and metrics.auc >= 0.8
    assert metrics.train_last_day < metrics.eval_first_day
    assert metrics.eval_last_day == features["as_of_day"].max()
    assert 0.0 < metrics.threshold < 1.0
    assert metrics.precision > 0.5 and metrics.recall > 0.5
    # The population: labelled rows of users active within the last 7 days.
    population = features.join(labels, on=["user_id", "as_of_day"]).filter(
        pl.col("churned").is_not_null() & (pl.col("days_since_last_event") < 7)
    )
    assert metrics.training_rows + metrics.evaluation_rows == population.height
    # The users the model flags on the evaluation days are mostly the declining ones.
    late = features.filter(pl.col("as_of_day") >= metrics.eval_first_day)
    flagged = score_churn(model, late).filter(pl.col("churn_predicted"))
    assert flagged.height > 0
    assert flagged["user_id"].is_in(list(declining)).mean() >= 0.8


def test_scores_are_probabilities_one_per_row(
    simulated: tuple[pl.DataFrame, pl.DataFrame, set[str]],
) -> None:
    features, labels, _ = simulated
    model, _ = train_churn_model(features, labels, seed=0)
    day = features.filter(pl.col("as_of_day") == features["as_of_day"].max())
    scores = score_churn(model, day)
    assert scores.select("user_id", "as_of_day").equals(
        day.sort("as_of_day", "user_id").select("user_id", "as_of_day")
    )
    assert scores["churn_probability"].is_between(0.0, 1.0).all()
    assert scores["churn_predicted"].to_list() == [
        p >= model.threshold for p in scores["churn_probability"]
    ]


def test_training_is_reproducible(
    simulated: tuple[pl.DataFrame, pl.DataFrame, set[str]],
) -> None:
    features, labels, _ = simulated
    first_model, first = train_churn_model(features, labels, seed=0)
    second_model, second = train_churn_model(features, labels, seed=0)
    assert first == second
    day = features.filter(pl.col("as_of_day") == features["as_of_day"].max())
    assert score_churn(first_model, day).equals(score_churn(second_model, day))
    assert first.as_dict()["eval_first_day"] == first.eval_first_day.isoformat()


def test_model_round_trips_through_bytes_with_a_content_version(
    simulated: tuple[pl.DataFrame, pl.DataFrame, set[str]],
) -> None:
    features, labels, _ = simulated
    model, _ = train_churn_model(features, labels, seed=0)
    artifact = serialize_model(model)
    assert artifact.version.startswith("churn-") and len(artifact.version) == 22
    assert serialize_model(model).version == artifact.version
    restored = deserialize_model(artifact.payload, expected_version=artifact.version)
    assert isinstance(restored, ChurnModel)
    day = features.filter(pl.col("as_of_day") == features["as_of_day"].max())
    assert score_churn(restored, day).equals(score_churn(model, day))
    other = dataclasses.replace(model, threshold=model.threshold / 2)
    assert serialize_model(other).version != artifact.version


def test_a_tampered_or_foreign_artifact_is_refused(
    simulated: tuple[pl.DataFrame, pl.DataFrame, set[str]],
) -> None:
    features, labels, _ = simulated
    artifact = serialize_model(train_churn_model(features, labels, seed=0)[0])
    with pytest.raises(ModelIntegrityError, match="expected"):
        deserialize_model(artifact.payload + b"\x00", expected_version=artifact.version)
    with pytest.raises(ModelIntegrityError, match="artifact"):
        deserialize_model(pickle.dumps({"not": "a model"}))


def test_training_needs_two_labelled_days() -> None:
    features = user_churn_features(FIXTURE, D)
    labels = churn_label(FIXTURE, D)
    with pytest.raises(ValueError, match="two days"):
        train_churn_model(features, labels, seed=0)
