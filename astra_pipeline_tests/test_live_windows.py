"""The increment of a live partition against a full recomputation (pure, no I/O)."""

import datetime as dt
import random

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from astra_pipeline.transforms.live_windows import (
    IncrementScope,
    WindowIncrement,
    increment_scope,
    minute_runs,
    window_increment,
)
from astra_pipeline.transforms.partition_windows import compute_partition_windows
from astra_pipeline.transforms.windows import USER_SESSIONS_SCHEMA

UTC = dt.UTC
MIN = dt.timedelta(minutes=1)
HOUR_START = dt.datetime(2026, 11, 23, 10, tzinfo=UTC)
TS = pl.Datetime("us", "UTC")


def at(minute: float) -> dt.datetime:
    """HOUR_START plus a (possibly negative or fractional) number of minutes."""
    return HOUR_START + dt.timedelta(minutes=minute)


def readings(rows: list[tuple[str, dt.datetime, float, dt.datetime]]) -> pl.DataFrame:
    """(device_id, ts, temperature_c, ingested_at) rows, in the store's order."""
    return pl.DataFrame(
        [
            (f"r{i}", device, ts, temp, 50.0 + temp / 3, 80.0, "ok", ingested)
            for i, (device, ts, temp, ingested) in enumerate(rows)
        ],
        schema={
            "event_id": pl.String,
            "device_id": pl.String,
            "ts": TS,
            "temperature_c": pl.Float64,
            "humidity_pct": pl.Float64,
            "battery_pct": pl.Float64,
            "status": pl.String,
            "ingested_at": TS,
        },
        orient="row",
    ).sort("ts", "event_id")


def activity(rows: list[tuple[str, dt.datetime, str, dt.datetime]]) -> pl.DataFrame:
    """(user_id, ts, action, ingested_at) rows; a purchase brings 9.99 of revenue."""
    return pl.DataFrame(
        [
            (f"a{i}", user, "s", ts, action, 9.99 if action == "purchase" else 0.0, ingested)
            for i, (user, ts, action, ingested) in enumerate(rows)
        ],
        schema={
            "event_id": pl.String,
            "user_id": pl.String,
            "session_id": pl.String,
            "ts": TS,
            "action": pl.String,
            "revenue": pl.Float64,
            "ingested_at": TS,
        },
        orient="row",
    ).sort("ts", "event_id")


def in_ranges(frame: pl.DataFrame, ranges: list[tuple[dt.datetime, dt.datetime]]):
    ts = pl.col("ts")
    return pl.any_horizontal([pl.lit(False)] + [(ts >= lo) & (ts < hi) for lo, hi in ranges])


def loaded(readings_: pl.DataFrame, activity_: pl.DataFrame, scope: IncrementScope):
    """Only the rows the scope says to read, as the window store loads them."""
    lo, hi = scope.session_range
    ts = pl.col("ts")
    sessions = pl.col("user_id").is_in(scope.session_users) & (ts >= lo) & (ts < hi)
    return (
        readings_.filter(in_ranges(readings_, scope.reading_ranges)),
        activity_.filter(in_ranges(activity_, scope.activity_ranges) | sessions),
    )


def increment_at(
    all_readings: pl.DataFrame,
    all_activity: pl.DataFrame,
    since: dt.datetime,
    until: dt.datetime,
    rollups: bool = True,
) -> WindowIncrement:
    """The increment after the rows ingested in (since, until] arrived."""

    def upto(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(pl.col("ingested_at") <= until)

    def new(frame: pl.DataFrame) -> pl.DataFrame:
        return upto(frame).filter(pl.col("ingested_at") > since)

    scope = increment_scope(
        new(all_readings).select("ts", "ingested_at"),
        new(all_activity).select("ts", "ingested_at", "user_id"),
        HOUR_START,
        rollups=rollups,
    )
    return window_increment(*loaded(upto(all_readings), upto(all_activity), scope), scope)


def applied(state: dict[str, pl.DataFrame], increment: WindowIncrement) -> dict[str, pl.DataFrame]:
    """The tables after replacing what the increment replaces, as the store does."""
    out = {}
    scope = increment.scope
    for name, frame in state.items():
        if name == "user_sessions":
            kept = frame.filter(~pl.col("user_id").is_in(scope.session_users))
        else:
            start = pl.col("window_start")
            hit = pl.any_horizontal(
                [pl.lit(False)] + [(start >= a) & (start < b) for a, b in scope.ranges[name]]
            )
            kept = frame.filter(~hit)
        key = frame.columns[:2]
        out[name] = pl.concat([kept, increment.tables[name]]).sort(key)
    return out


def full(all_readings: pl.DataFrame, all_activity: pl.DataFrame, until: dt.datetime):
    return compute_partition_windows(
        all_readings.filter(pl.col("ingested_at") <= until),
        all_activity.filter(pl.col("ingested_at") <= until),
        HOUR_START,
        HOUR_START + dt.timedelta(hours=1),
    ).tables


def test_minute_runs_by_hand() -> None:
    ts = pl.Series([at(3.5), at(3.9), at(10.2), at(-2), at(61)], dtype=TS)
    assert minute_runs(ts, at(0), at(60)) == [(at(3), at(4)), (at(10), at(11))]
    # Each minute with the 4 before it (the sliding windows holding the reading), clipped:
    # 11:01 is in the windows starting 10:57, 10:58 and 10:59.
    assert minute_runs(ts, at(0), at(60), reach_back=4) == [
        (at(0), at(4)),
        (at(6), at(11)),
        (at(57), at(60)),
    ]
    assert minute_runs(pl.Series([], dtype=TS), at(0), at(60)) == []


def test_a_late_event_before_the_hour_flips_continues_previous() -> None:
    """u1's session at 10:05 was stored as a fresh one; an event of 09:50 arriving late
    makes it the continuation of a session cut at the hour boundary."""
    early, late = at(10), at(20)
    acts = activity([("u1", at(5), "page_view", early), ("u1", at(-10), "login", late)])
    before = full(readings([]), acts, early)["user_sessions"]
    assert before["continues_previous"].to_list() == [False]
    increment = increment_at(readings([]), acts, early, late, rollups=False)
    assert increment.scope.session_users == ["u1"]
    assert increment.tables["user_sessions"]["continues_previous"].to_list() == [True]
    # The event is in the previous hour: no minute of this hour changes.
    assert increment.scope.ranges["user_1m"] == [] and increment.scope.ranges["user_1h"] == []


def test_a_reading_of_the_next_hour_changes_only_the_last_sliding_windows() -> None:
    early, late = at(10), at(20)
    rows = readings([("d1", at(58.5), 20.0, early), ("d1", at(61.5), 30.0, late)])
    increment = increment_at(rows, activity([]), early, late, rollups=False)
    ranges = increment.scope.ranges
    assert ranges["sensor_5m_sliding"] == [(at(57), at(60))]
    assert ranges["sensor_1m"] == [] and ranges["sensor_1h"] == []
    # Read: the readings of those windows only, not the hour.
    assert increment.scope.reading_ranges == [(at(57), at(64))]
    assert increment.tables["sensor_5m_sliding"]["temperature_c_max"].to_list() == [30.0] * 3
    assert increment.tables["sensor_1m"].height == 0


def test_nothing_new_is_an_empty_increment() -> None:
    rows = readings([("d1", at(1), 20.0, at(2))])
    increment = increment_at(rows, activity([]), at(2), at(3), rollups=False)
    assert increment.scope.empty
    assert increment.scope.stats["cleaned_events"].to_list() == [0]


def test_due_rollups_cover_the_hour_even_without_new_readings() -> None:
    """Earlier increments may have left the roll-ups behind: when they are due, they are
    recomputed from the whole hour whatever the new rows are."""
    rows = readings([("d1", at(1), 20.0, at(2)), ("d1", at(2), 22.0, at(70))])
    acts = activity([("u1", at(5), "purchase", at(80))])
    increment = increment_at(rows, acts, at(70), at(80), rollups=True)
    assert increment.scope.ranges["sensor_1h"] == [(at(0), at(60))]
    assert increment.tables["sensor_1h"]["reading_count"].to_list() == [2]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), batches=st.integers(1, 8))
def test_increments_in_ingestion_order_equal_a_full_recompute(seed: int, batches: int) -> None:
    """Rows anywhere the partition reads (the half hour before for sessions, 4 minutes
    after for sliding windows), ingested in batches, many of them late: applying each
    batch's increment to the tables leaves, after every batch, what a full recompute of
    the rows ingested so far gives; the hourly roll-ups too whenever the increment
    computed them (randomly left for later, as a live hour does)."""
    rng = random.Random(seed)
    ingest_times = sorted(at(70 + rng.random() * 30) for _ in range(batches))

    def ingested(minute: float) -> dt.datetime:
        # In order mostly; a third of the rows late (any later batch).
        if rng.random() < 1 / 3:
            return rng.choice(ingest_times)
        return next((t for t in ingest_times if t >= at(70 + 30 * (minute + 30) / 94)), at(100))

    sensor_rows = []
    for _ in range(rng.randrange(0, 120)):
        minute = rng.uniform(-30, 64)
        sensor_rows.append(
            (f"d{rng.randrange(4)}", at(minute), rng.uniform(-5, 35), ingested(minute))
        )
    user_rows = []
    for _ in range(rng.randrange(0, 120)):
        minute = rng.uniform(-30, 60)
        action = rng.choice(["page_view", "add_to_cart", "purchase", "login"])
        user_rows.append((f"u{rng.randrange(5)}", at(minute), action, ingested(minute)))
    all_readings, all_activity = readings(sensor_rows), activity(user_rows)

    state = full(all_readings, all_activity, at(0))
    assert state["user_sessions"].schema == USER_SESSIONS_SCHEMA
    since = at(0)
    for until in sorted(set(ingest_times)):
        rollups = rng.random() < 0.5
        increment = increment_at(all_readings, all_activity, since, until, rollups)
        state = applied(state, increment)
        expected = full(all_readings, all_activity, until)
        for name, frame in expected.items():
            if rollups or name not in ("sensor_1h", "user_1h"):
                assert state[name].equals(frame), (name, until)
        since = until
