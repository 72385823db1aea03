"""Window functions: hand-computed cases, then a plain-Python reference on random data."""

from __future__ import annotations

import datetime as dt
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astra_pipeline.events import SENSOR_STATUSES, USER_ACTIONS
from astra_pipeline.transforms import windows as w
from resources import tables
from resources.warehouse import DuckDBWarehouseResource

UTC = dt.UTC
MIN = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
GAP = dt.timedelta(minutes=30)
US = dt.timedelta(microseconds=1)


def at(hour: int, minute: int = 0, second: int = 0, micro: int = 0, day: int = 23) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, second, micro, tzinfo=UTC)


READING_SCHEMA = {
    "event_id": pl.String,
    "device_id": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "temperature_c": pl.Float64,
    "humidity_pct": pl.Float64,
    "battery_pct": pl.Float64,
    "status": pl.String,
}
ACTIVITY_SCHEMA = {
    "event_id": pl.String,
    "user_id": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "action": pl.String,
    "amount": pl.Float64,
    "revenue": pl.Float64,
}


def readings(*rows: tuple[str, dt.datetime, float, float, float, str]) -> pl.DataFrame:
    """Rows of (device_id, ts, temperature_c, humidity_pct, battery_pct, status)."""
    return pl.DataFrame(
        [(f"e{i}", *row) for i, row in enumerate(rows)], schema=READING_SCHEMA, orient="row"
    )


def activity(*rows: tuple[str, dt.datetime, str, float | None]) -> pl.DataFrame:
    """Rows of (user_id, ts, action, amount); revenue as the clean table derives it."""
    full = [
        (f"e{i}", user, ts, action, amount, amount if action == "purchase" else 0.0)
        for i, (user, ts, action, amount) in enumerate(rows)
    ]
    return pl.DataFrame(full, schema=ACTIVITY_SCHEMA, orient="row")


def one_reading(device: str, ts: dt.datetime, t: float = 20.0) -> tuple[Any, ...]:
    return (device, ts, t, 50.0, 90.0, "ok")


# --- hand-computed: sensor windows ---------------------------------------------------


def test_sensor_1m_by_hand() -> None:
    frame = readings(
        ("dev-1", at(10, 0, 5), 20.0, 40.0, 90.0, "ok"),
        ("dev-1", at(10, 0, 59, 999_999), 22.0, 60.0, 80.0, "fault"),
        ("dev-1", at(10, 0, 30), 21.0, 50.0, 85.0, "ok"),
        ("dev-1", at(10, 1, 0), 25.5, 10.0, 79.0, "degraded"),
        ("dev-0", at(10, 0, 1), 18.0, 30.0, 50.0, "ok"),
    )
    rows = w.sensor_1m(frame).to_dicts()
    assert [(r["device_id"], r["window_start"]) for r in rows] == [
        ("dev-0", at(10, 0)),
        ("dev-1", at(10, 0)),
        ("dev-1", at(10, 1)),
    ]
    three = rows[1]
    # temperatures 20, 21, 22: mean 21; sample variance (1 + 0 + 1) / 2 = 1 -> stddev 1;
    # p95: h = 0.95 * 2 = 1.9 -> x[1] + 0.9 * (x[2] - x[1]) = 21.9.
    assert three["window_end"] == at(10, 1)
    assert three["reading_count"] == 3
    assert three["temperature_c_mean"] == pytest.approx(21.0)
    assert three["temperature_c_min"] == 20.0
    assert three["temperature_c_max"] == 22.0
    assert three["temperature_c_stddev"] == pytest.approx(1.0)
    assert three["temperature_c_p95"] == pytest.approx(21.9)
    # humidity 40, 50, 60: mean 50, stddev sqrt((100 + 0 + 100) / 2) = 10, p95 = 59.
    assert three["humidity_pct_mean"] == pytest.approx(50.0)
    assert three["humidity_pct_stddev"] == pytest.approx(10.0)
    assert three["humidity_pct_p95"] == pytest.approx(59.0)
    assert three["battery_min"] == 80.0
    assert (three["count_ok"], three["count_degraded"], three["count_fault"]) == (2, 0, 1)
    single = rows[2]
    assert single["reading_count"] == 1
    assert single["temperature_c_stddev"] is None
    assert single["humidity_pct_stddev"] is None
    assert single["temperature_c_p95"] == 25.5
    assert (single["count_ok"], single["count_degraded"], single["count_fault"]) == (0, 1, 0)


def test_p95_interpolates_linearly_between_ranks() -> None:
    # 21 readings 0..20 in one minute: h = 0.95 * 20 = 19 exactly -> p95 = 19.
    # 11 readings 0..10: h = 9.5 -> 9.5. 2 readings 1, 2: h = 0.95 -> 1.95.
    frame = readings(
        *(one_reading("a", at(10, 0, i), float(i)) for i in range(21)),
        *(one_reading("b", at(10, 0, i), float(i)) for i in range(11)),
        one_reading("c", at(10, 0, 0), 1.0),
        one_reading("c", at(10, 0, 1), 2.0),
    )
    p95 = dict(w.sensor_1m(frame).select("device_id", "temperature_c_p95").iter_rows())
    assert p95 == pytest.approx({"a": 19.0, "b": 9.5, "c": 1.95})


def test_window_and_day_boundaries() -> None:
    last_us = at(23, 59, 59, 999_999)
    midnight = dt.datetime(2026, 11, 24, tzinfo=UTC)
    frame = readings(one_reading("d", last_us, 1.0), one_reading("d", midnight, 2.0))
    minute_rows = w.sensor_1m(frame).select("window_start", "window_end", "temperature_c_mean")
    assert minute_rows.rows() == [
        (at(23, 59), midnight, 1.0),
        (midnight, midnight + MIN, 2.0),
    ]
    hour_rows = w.sensor_1h(frame).select("window_start", "window_end", "reading_count")
    assert hour_rows.rows() == [(at(23), midnight, 1), (midnight, midnight + HOUR, 1)]
    users = activity(("u", last_us, "page_view", None), ("u", midnight, "page_view", None))
    assert w.user_1m(users).select("window_start", "event_count").rows() == [
        (at(23, 59), 1),
        (midnight, 1),
    ]


def test_minutes_without_events_have_no_row() -> None:
    frame = readings(one_reading("d", at(10, 0, 10)), one_reading("d", at(10, 3, 0)))
    assert w.sensor_1m(frame)["window_start"].to_list() == [at(10, 0), at(10, 3)]


def test_input_order_does_not_matter() -> None:
    rows = [one_reading(f"d{i % 3}", at(10, i % 7, i), float(i)) for i in range(40)]
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    for function in (w.sensor_1m, w.sensor_1h):
        expected = function(readings(*rows))
        got = function(readings(*shuffled))
        assert got.select("device_id", "window_start", "reading_count").equals(
            expected.select("device_id", "window_start", "reading_count")
        )
        for column in ("temperature_c_mean", "temperature_c_stddev", "temperature_c_p95"):
            assert got[column].to_list() == pytest.approx(expected[column].to_list())


def test_late_event_reopens_its_window_and_touches_its_hours() -> None:
    on_time = [one_reading("d", at(10, 58, 0), 20.0), one_reading("d", at(11, 5, 0), 30.0)]
    late = one_reading("d", at(10, 58, 30), 26.0)
    before = w.sensor_1m(readings(on_time[0]))
    after = w.sensor_1m(readings(on_time[0], late))
    assert before.select("reading_count", "temperature_c_mean").row(0) == (1, 20.0)
    assert after.select("reading_count", "temperature_c_mean").row(0) == (2, 23.0)
    # The late reading (10:58:30) arrives in a batch with one at 11:05:00. 10:58:30 touches
    # 10:00 (own hour; 10:54:30 for sliding windows) and 11:00 (10:58:30 + 30 min);
    # 11:05:00 touches 11:00 (own hour, 11:01 for sliding; 11:35 for sessions).
    batch = pl.Series([at(11, 5, 0), at(10, 58, 30)], dtype=pl.Datetime("us", "UTC"))
    assert w.touched_hours(batch) == [at(10), at(11)]


def test_touched_hours_by_hand() -> None:
    def hours(*stamps: dt.datetime) -> list[dt.datetime]:
        return w.touched_hours(pl.Series(stamps, dtype=pl.Datetime("us", "UTC")))

    # 10:03:59 - 4 min = 09:59:59 -> the 09:56..09:59 sliding windows of hour 09 hold it.
    assert hours(at(10, 3, 59)) == [at(9), at(10)]
    # 10:04:00 - 4 min = 10:00:00: no sliding window of hour 09 reaches it.
    assert hours(at(10, 4, 0)) == [at(10)]
    # 10:29:59 + 30 min < 11:00; 10:30:00 + 30 min = 11:00 -> next hour's flag.
    assert hours(at(10, 29, 59)) == [at(10)]
    assert hours(at(10, 30, 0)) == [at(10), at(11)]
    # Day boundary, duplicates, unsorted input.
    assert hours(at(0, 2, 0, day=24), at(23, 45, 0), at(0, 2, 0, day=24)) == [
        at(23),
        at(0, day=24),
    ]
    assert hours() == []
    # Wider windows than the defaults: every hour in between is touched.
    wide = w.touched_hours(
        pl.Series([at(10, 30)], dtype=pl.Datetime("us", "UTC")),
        sliding_lookahead=dt.timedelta(hours=2),
        session_gap=dt.timedelta(hours=2),
    )
    assert wide == [at(8), at(9), at(10), at(11), at(12)]


def test_sliding_windows_by_hand() -> None:
    frame = readings(
        one_reading("d", at(9, 59, 0), 99.0),  # before the partition: in no window of it
        one_reading("d", at(10, 0, 30), 10.0),
        one_reading("d", at(10, 4, 59, 999_999), 20.0),
        one_reading("d", at(10, 5, 0), 30.0),
        one_reading("d", at(11, 3, 59), 40.0),  # in the 10:59 window [10:59, 11:04)
        one_reading("d", at(11, 4, 0), 50.0),  # past every window of the partition
    )
    rows = w.sensor_5m_sliding(frame, at(10), at(11))
    got = {
        r["window_start"]: (r["reading_count"], r["temperature_c_mean"], r["temperature_c_max"])
        for r in rows.to_dicts()
    }
    assert got == {
        at(10, 0): (2, 15.0, 20.0),  # 10:00:30 and 10:04:59.999999
        at(10, 1): (2, 25.0, 30.0),  # 10:04:59.999999 and 10:05:00
        at(10, 2): (2, 25.0, 30.0),
        at(10, 3): (2, 25.0, 30.0),
        at(10, 4): (2, 25.0, 30.0),
        at(10, 5): (1, 30.0, 30.0),  # 10:05:00 only; 10:06 .. 10:58 hold nothing
        at(10, 59): (1, 40.0, 40.0),  # 11:03:59, not 11:04:00
    }
    assert rows["window_end"].to_list() == [s + 5 * MIN for s in rows["window_start"]]
    assert list(rows.columns) == list(w.SENSOR_SLIDING_SCHEMA)


# --- hand-computed: users and sessions ------------------------------------------------


def test_user_1m_and_1h_by_hand() -> None:
    frame = activity(
        ("u1", at(10, 0, 1), "page_view", None),
        ("u1", at(10, 0, 2), "add_to_cart", None),
        ("u1", at(10, 0, 3), "purchase", 19.99),
        ("u1", at(10, 0, 4), "purchase", 5.01),
        ("u1", at(10, 2, 0), "login", None),
        ("u2", at(10, 59, 59), "page_view", None),
    )
    minute = w.user_1m(frame).drop("window_end").rows()
    assert minute == [
        ("u1", at(10, 0), 4, 1, 1, 2, pytest.approx(25.0)),
        ("u1", at(10, 2), 1, 0, 0, 0, 0.0),
        ("u2", at(10, 59), 1, 1, 0, 0, 0.0),
    ]
    hour = w.user_1h(frame).rows()
    assert hour == [
        ("u1", at(10), at(11), 5, 1, 1, 2, pytest.approx(25.0)),
        ("u2", at(10), at(11), 1, 1, 0, 0, 0.0),
    ]


def session_rows(frame: pl.DataFrame, start: dt.datetime) -> list[tuple[Any, ...]]:
    return w.user_sessions(frame, start, start + HOUR).rows()


def test_single_event_session() -> None:
    frame = activity(("u", at(10, 15), "purchase", 3.5))
    assert session_rows(frame, at(10)) == [("u", at(10, 15), at(10, 15), 0.0, 1, 1, 3.5, False)]


def test_gap_of_exactly_thirty_minutes_splits() -> None:
    frame = activity(
        ("split", at(10, 0), "page_view", None),
        ("split", at(10, 30), "page_view", None),
        ("joined", at(10, 0), "page_view", None),
        ("joined", at(10, 29, 59, 999_999), "purchase", 10.0),
    )
    assert session_rows(frame, at(10)) == [
        ("joined", at(10, 0), at(10, 29, 59, 999_999), 1799.999999, 2, 1, 10.0, False),
        ("split", at(10, 0), at(10, 0), 0.0, 1, 0, 0.0, False),
        ("split", at(10, 30), at(10, 30), 0.0, 1, 0, 0.0, False),
    ]


def test_sessions_are_clipped_to_the_partition() -> None:
    # One user active every 10 minutes from 09:40 to 11:10: one real session, three rows.
    stamps = [at(9, 40) + k * 10 * MIN for k in range(10)]
    frame = activity(*(("u", ts, "page_view", None) for ts in stamps))
    assert session_rows(frame, at(9)) == [("u", at(9, 40), at(9, 50), 600.0, 2, 0, 0.0, False)]
    assert session_rows(frame, at(10)) == [("u", at(10, 0), at(10, 50), 3000.0, 6, 0, 0.0, True)]
    assert session_rows(frame, at(11)) == [("u", at(11, 0), at(11, 10), 600.0, 2, 0, 0.0, True)]


def test_continues_previous_by_hand() -> None:
    frame = activity(
        # last event before the hour 20 min before the first in the hour -> continues;
        # the user's second session of the hour does not.
        ("a", at(9, 45), "page_view", None),
        ("a", at(10, 5), "page_view", None),
        ("a", at(10, 50), "page_view", None),
        # previous event 34 min before the first in the hour -> a new session.
        ("b", at(9, 31), "page_view", None),
        ("b", at(10, 5), "page_view", None),
        # exactly 30 min -> a new session (same rule as inside the hour).
        ("c", at(9, 30), "page_view", None),
        ("c", at(10, 0), "page_view", None),
        # nothing in the 30 minutes before the hour.
        ("d", at(9, 20), "page_view", None),
        ("d", at(10, 1), "page_view", None),
    )
    flags = [(r[0], r[1], r[-1]) for r in session_rows(frame, at(10))]
    assert flags == [
        ("a", at(10, 5), True),
        ("a", at(10, 50), False),
        ("b", at(10, 5), False),
        ("c", at(10, 0), False),
        ("d", at(10, 1), False),
    ]


# --- schemas, empty input, time zones, DuckDB -----------------------------------------

TABLE_FUNCTIONS: dict[str, tuple[Callable[[pl.DataFrame], pl.DataFrame], pl.Schema, str]] = {
    tables.AGG_SENSOR_1M: (w.sensor_1m, w.SENSOR_WINDOW_SCHEMA, "readings"),
    tables.AGG_SENSOR_1H: (w.sensor_1h, w.SENSOR_WINDOW_SCHEMA, "readings"),
    tables.AGG_SENSOR_5M_SLIDING: (
        lambda f: w.sensor_5m_sliding(f, at(10), at(11)),
        w.SENSOR_SLIDING_SCHEMA,
        "readings",
    ),
    tables.AGG_USER_1M: (w.user_1m, w.USER_WINDOW_SCHEMA, "activity"),
    tables.AGG_USER_1H: (w.user_1h, w.USER_WINDOW_SCHEMA, "activity"),
    tables.AGG_USER_SESSIONS: (
        lambda f: w.user_sessions(f, at(10), at(11)),
        w.USER_SESSIONS_SCHEMA,
        "activity",
    ),
}

SAMPLE_READINGS = readings(
    ("d1", at(10, 0, 1), 20.0, 40.0, 90.0, "ok"),
    ("d1", at(10, 0, 2), 21.0, 41.0, 89.0, "fault"),
    ("d2", at(10, 30), 5.0, 90.0, 10.0, "degraded"),
)
SAMPLE_ACTIVITY = activity(
    ("u1", at(9, 50), "login", None),
    ("u1", at(10, 0, 1), "page_view", None),
    ("u1", at(10, 0, 2), "purchase", 9.5),
    ("u2", at(10, 30), "add_to_cart", None),
)


def sample_for(kind: str) -> pl.DataFrame:
    return SAMPLE_READINGS if kind == "readings" else SAMPLE_ACTIVITY


@pytest.mark.parametrize("table", list(TABLE_FUNCTIONS))
def test_empty_input_gives_empty_frame_with_the_schema(table: str) -> None:
    function, schema, kind = TABLE_FUNCTIONS[table]
    out = function(sample_for(kind).clear())
    assert out.height == 0
    assert out.schema == schema


@pytest.mark.parametrize("table", list(TABLE_FUNCTIONS))
def test_output_schema_and_other_time_zones(table: str) -> None:
    function, schema, kind = TABLE_FUNCTIONS[table]
    frame = sample_for(kind)
    expected = function(frame)
    assert expected.height > 0
    assert expected.schema == schema
    # DuckDB hands TIMESTAMPTZ to polars as Etc/UTC; any aware zone means the same instant.
    for zone in ("Etc/UTC", "Asia/Kolkata"):
        shifted = frame.with_columns(pl.col("ts").dt.convert_time_zone(zone))
        assert function(shifted).equals(expected)
    naive = frame.with_columns(pl.col("ts").dt.replace_time_zone(None))
    with pytest.raises(ValueError, match="time-zone aware"):
        function(naive)


def test_naive_partition_bounds_are_rejected() -> None:
    with pytest.raises(ValueError, match="partition_start must be time-zone aware"):
        w.user_sessions(SAMPLE_ACTIVITY, dt.datetime(2026, 11, 23, 10), at(11))


def test_tables_round_trip_through_the_duckdb_ddl(warehouse: DuckDBWarehouseResource) -> None:
    warehouse.ensure_schema()
    duck_types = {
        pl.String(): "VARCHAR",
        pl.Datetime("us", "UTC"): "TIMESTAMP WITH TIME ZONE",
        pl.Int64(): "BIGINT",
        pl.Float64(): "DOUBLE",
        pl.Boolean(): "BOOLEAN",
    }
    for table, (function, schema, kind) in TABLE_FUNCTIONS.items():
        frame = function(sample_for(kind))
        schema_name, name = table.split(".")
        with warehouse.transaction() as tx:
            assert tx.append(table, frame) == frame.height
            columns = tx.query(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [schema_name, name],
            ).rows()
            back = tx.query(f"SELECT * FROM {table}")
        assert columns == [(c, duck_types[t]) for c, t in schema.items()], table
        back = back.with_columns(
            pl.col(c).dt.convert_time_zone("UTC")
            for c, t in schema.items()
            if isinstance(t, pl.Datetime)
        )
        assert back.sort(back.columns[:2]).equals(frame.cast(back.schema)), table


# --- generic building blocks on hand data ---------------------------------------------


def test_hopping_with_a_size_that_is_not_a_multiple_of_the_step() -> None:
    # Windows of 3 min every 2 min start at even minutes; 10:03:30 is in [10:02, 10:05)
    # only, 10:04:10 in [10:02, 10:05) and [10:04, 10:07), 10:05:00 in [10:04, 10:07) only.
    frame = readings(
        one_reading("d", at(10, 3, 30), 1.0),
        one_reading("d", at(10, 4, 10), 3.0),
        one_reading("d", at(10, 5, 0), 5.0),
    )
    rows = w.hopping(
        frame,
        key="device_id",
        size=3 * MIN,
        step=2 * MIN,
        aggs=[pl.col("temperature_c").sum().alias("total")],
        window_start_from=at(10),
        window_start_to=at(11),
    )
    assert rows.rows() == [("d", at(10, 2), at(10, 5), 4.0), ("d", at(10, 4), at(10, 7), 8.0)]


def test_tumbling_with_other_keys_and_lengths() -> None:
    frame = readings(
        one_reading("d", at(10, 14, 59), 1.0),
        one_reading("d", at(10, 15, 0), 2.0),
        one_reading("d", at(10, 29, 0), 3.0),
    )
    rows = w.tumbling(
        frame, key="status", every=15 * MIN, aggs=[pl.col("temperature_c").max().alias("m")]
    )
    assert rows.rows() == [("ok", at(10, 0), at(10, 15), 1.0), ("ok", at(10, 15), at(10, 30), 3.0)]


def test_bad_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="every must be positive"):
        w.tumbling(SAMPLE_READINGS, key="device_id", every=dt.timedelta(0), aggs=[])
    with pytest.raises(ValueError, match="gap must be positive"):
        w.user_sessions(SAMPLE_ACTIVITY, at(10), at(11), gap=-GAP)


# --- plain-Python reference implementations -------------------------------------------


def floor_to(ts: dt.datetime, every: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((ts - epoch) // every) * every


def p95(values: list[float]) -> float:
    """The documented quantile: statistics' 'inclusive' method is linear interpolation."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def ref_sensor(rows: Iterable[dict[str, Any]], every: dt.timedelta) -> list[dict[str, Any]]:
    groups: dict[tuple[str, dt.datetime], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["device_id"], floor_to(row["ts"], every))].append(row)
    out = []
    for (device, start), members in sorted(groups.items()):
        record: dict[str, Any] = {
            "device_id": device,
            "window_start": start,
            "window_end": start + every,
            "reading_count": len(members),
        }
        for metric in ("temperature_c", "humidity_pct"):
            values = [m[metric] for m in members]
            record[f"{metric}_mean"] = statistics.fmean(values)
            record[f"{metric}_min"] = min(values)
            record[f"{metric}_max"] = max(values)
            record[f"{metric}_stddev"] = statistics.stdev(values) if len(values) > 1 else None
            record[f"{metric}_p95"] = p95(values)
        record["battery_min"] = min(m["battery_pct"] for m in members)
        for status in SENSOR_STATUSES:
            record[f"count_{status}"] = sum(m["status"] == status for m in members)
        out.append(record)
    return out


def ref_sliding(
    rows: list[dict[str, Any]], start: dt.datetime, end: dt.datetime
) -> list[dict[str, Any]]:
    out = []
    for device in sorted({r["device_id"] for r in rows}):
        mine = [r for r in rows if r["device_id"] == device]
        window = start
        while window < end:
            inside = [r for r in mine if window <= r["ts"] < window + 5 * MIN]
            if inside:
                record: dict[str, Any] = {
                    "device_id": device,
                    "window_start": window,
                    "window_end": window + 5 * MIN,
                    "reading_count": len(inside),
                }
                for metric in ("temperature_c", "humidity_pct"):
                    record[f"{metric}_mean"] = statistics.fmean(r[metric] for r in inside)
                    record[f"{metric}_max"] = max(r[metric] for r in inside)
                out.append(record)
            window += MIN
    return out


def ref_user(rows: Iterable[dict[str, Any]], every: dt.timedelta) -> list[dict[str, Any]]:
    groups: dict[tuple[str, dt.datetime], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["user_id"], floor_to(row["ts"], every))].append(row)
    return [
        {
            "user_id": user,
            "window_start": start,
            "window_end": start + every,
            "event_count": len(members),
            "page_views": sum(m["action"] == "page_view" for m in members),
            "carts": sum(m["action"] == "add_to_cart" for m in members),
            "purchases": sum(m["action"] == "purchase" for m in members),
            "revenue": math.fsum(m["revenue"] for m in members),
        }
        for (user, start), members in sorted(groups.items())
    ]


def ref_sessions(
    rows: list[dict[str, Any]], start: dt.datetime, end: dt.datetime
) -> list[dict[str, Any]]:
    out = []
    for user in sorted({r["user_id"] for r in rows}):
        mine = sorted((r for r in rows if r["user_id"] == user), key=lambda r: r["ts"])
        before = [r["ts"] for r in mine if start - GAP <= r["ts"] < start]
        inside = [r for r in mine if start <= r["ts"] < end]
        runs: list[list[dict[str, Any]]] = []
        for row in inside:
            if runs and row["ts"] - runs[-1][-1]["ts"] < GAP:
                runs[-1].append(row)
            else:
                runs.append([row])
        for i, run in enumerate(runs):
            first, last = run[0]["ts"], run[-1]["ts"]
            out.append(
                {
                    "user_id": user,
                    "session_start": first,
                    "session_end": last,
                    "duration_s": (last - first).total_seconds(),
                    "event_count": len(run),
                    "purchase_count": sum(r["action"] == "purchase" for r in run),
                    "revenue": math.fsum(r["revenue"] for r in run),
                    "continues_previous": i == 0 and bool(before) and first - max(before) < GAP,
                }
            )
    return out


def ref_touched_hours(stamps: list[dt.datetime]) -> list[dt.datetime]:
    """Brute force over candidate hours: does any window or flag of hour H see ts?"""
    touched = set()
    for ts in stamps:
        base = floor_to(ts, HOUR)
        for k in range(-3, 4):
            hour = base + k * HOUR
            own = hour <= ts < hour + HOUR
            sliding = any(hour + m * MIN <= ts < hour + m * MIN + 5 * MIN for m in range(60))
            flag = hour - GAP <= ts < hour
            if own or sliding or flag:
                touched.add(hour)
    return sorted(touched)


def assert_rows_match(got: pl.DataFrame, expected: list[dict[str, Any]]) -> None:
    actual = got.to_dicts()
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.keys() == e.keys()
        for column, value in e.items():
            if isinstance(value, float) and not isinstance(value, bool):
                assert a[column] == pytest.approx(value, rel=1e-9, abs=1e-9), (column, a, e)
            else:
                assert a[column] == value, (column, a, e)


# --- hypothesis: every table function against the reference ---------------------------

BASE = at(23)  # the events span 23:00 .. 01:00, across midnight
SPAN_US = 2 * 3600 * 10**6
PARTITIONS = [at(22), at(23), at(0, day=24), at(1, day=24)]

offsets = st.one_of(
    st.integers(0, SPAN_US - 1),
    # on a 5-minute grid, so equal timestamps and gaps of exactly 30 minutes happen
    st.integers(0, 23).map(lambda k: k * 5 * 60 * 10**6),
    # right at hour and minute boundaries
    st.sampled_from([0, 3600 * 10**6 - 1, 3600 * 10**6, 3600 * 10**6 + 1, 60 * 10**6 - 1]),
)
values = st.floats(-60, 85, allow_nan=False, allow_infinity=False)
reading_rows = st.lists(
    st.tuples(
        st.sampled_from(["dev-a", "dev-b", "dev-c"]),
        offsets,
        values,
        st.floats(0, 100, allow_nan=False),
        st.floats(0, 100, allow_nan=False),
        st.sampled_from(SENSOR_STATUSES),
    ),
    max_size=60,
)
activity_rows = st.lists(
    st.tuples(
        st.sampled_from(["user-a", "user-b", "user-c"]),
        offsets,
        st.sampled_from(USER_ACTIONS),
        st.floats(0, 500, allow_nan=False),
    ),
    max_size=60,
)


def in_range(frame: pl.DataFrame, lo: dt.datetime, hi: dt.datetime) -> pl.DataFrame:
    return frame.filter(pl.col("ts") >= lo, pl.col("ts") < hi)


@settings(max_examples=120, deadline=None)
@given(rows=reading_rows, rng=st.randoms(use_true_random=False))
def test_sensor_tables_match_reference(rows: list[tuple[Any, ...]], rng: random.Random) -> None:
    built = [
        (device, BASE + offset * US, t, h, b, status) for device, offset, t, h, b, status in rows
    ]
    rng.shuffle(built)
    frame = readings(*built)
    records = frame.to_dicts()
    for start in PARTITIONS:
        end = start + HOUR
        mine = [r for r in records if start <= r["ts"] < end]
        part = in_range(frame, start, end)
        assert_rows_match(w.sensor_1m(part), ref_sensor(mine, MIN))
        assert_rows_match(w.sensor_1h(part), ref_sensor(mine, HOUR))
        expected = ref_sliding(records, start, end)
        assert_rows_match(w.sensor_5m_sliding(frame, start, end), expected)
        needed = in_range(frame, start, end + 4 * MIN)
        assert_rows_match(w.sensor_5m_sliding(needed, start, end), expected)
    # The partitions' 1-minute counts add up to the readings (the completeness check).
    total = sum(
        w.sensor_1m(in_range(frame, s, s + HOUR))["reading_count"].sum() for s in PARTITIONS
    )
    assert total == len(rows)


@settings(max_examples=120, deadline=None)
@given(rows=activity_rows, rng=st.randoms(use_true_random=False))
def test_user_tables_match_reference(rows: list[tuple[Any, ...]], rng: random.Random) -> None:
    built = [
        (user, BASE + offset * US, action, amount if action == "purchase" else None)
        for user, offset, action, amount in rows
    ]
    rng.shuffle(built)
    frame = activity(*built)
    records = frame.to_dicts()
    for start in PARTITIONS:
        end = start + HOUR
        mine = [r for r in records if start <= r["ts"] < end]
        part = in_range(frame, start, end)
        assert_rows_match(w.user_1m(part), ref_user(mine, MIN))
        assert_rows_match(w.user_1h(part), ref_user(mine, HOUR))
        expected = ref_sessions(records, start, end)
        assert_rows_match(w.user_sessions(frame, start, end), expected)
        needed = in_range(frame, start - GAP, end)
        assert_rows_match(w.user_sessions(needed, start, end), expected)


@settings(max_examples=60, deadline=None)
@given(
    rows=reading_rows,
    size_min=st.integers(1, 7),
    step_min=st.integers(1, 4),
    start_min=st.integers(0, 90),
    length_min=st.integers(1, 60),
)
def test_hopping_matches_reference(
    rows: list[tuple[Any, ...]], size_min: int, step_min: int, start_min: int, length_min: int
) -> None:
    frame = readings(
        *((device, BASE + offset * US, t, h, b, s) for device, offset, t, h, b, s in rows)
    )
    size, step = size_min * MIN, step_min * MIN
    lo, hi = BASE + start_min * MIN, BASE + (start_min + length_min) * MIN
    got = w.hopping(
        frame,
        key="device_id",
        size=size,
        step=step,
        aggs=[pl.len().alias("n"), pl.col("temperature_c").min().alias("low")],
        window_start_from=lo,
        window_start_to=hi,
    )
    expected = []
    for device in sorted(set(frame["device_id"])):
        mine = [r for r in frame.to_dicts() if r["device_id"] == device]
        window = floor_to(lo - US, step) + step  # the first multiple of step >= lo
        while window < hi:
            inside = [r["temperature_c"] for r in mine if window <= r["ts"] < window + size]
            if inside:
                expected.append(
                    {
                        "device_id": device,
                        "window_start": window,
                        "window_end": window + size,
                        "n": len(inside),
                        "low": min(inside),
                    }
                )
            window += step
    assert_rows_match(got, expected)


@settings(max_examples=100, deadline=None)
@given(st.lists(offsets, max_size=20))
def test_touched_hours_matches_brute_force(stamp_offsets: list[int]) -> None:
    stamps = [BASE + o * US for o in stamp_offsets]
    series = pl.Series(stamps, dtype=pl.Datetime("us", "UTC"))
    assert w.touched_hours(series) == ref_touched_hours(stamps)


def test_tumbling_without_the_packed_key_gives_the_same_rows() -> None:
    # A non-string key, and windows spanning 2**32 indexes or more (1 us windows over 14
    # hours), take the plain two-column group_by; both paths must agree.
    last = at(23, 59, 59, 999_999)
    frame = readings(
        *(one_reading(f"d{i % 4}", at(10, i % 10, i % 7, i), float(i)) for i in range(50)),
        one_reading("d1", last, 7.0),
    )
    aggs = [pl.len().alias("n"), pl.col("temperature_c").sum().alias("total")]
    # (i % 4, i % 10) takes 20 values: 20 minute windows, plus the one at 23:59.
    for every, windows in ((MIN, 21), (US, 51)):
        packed = w.tumbling(frame, key="device_id", every=every, aggs=aggs)
        plain = w.tumbling(
            frame.with_columns(pl.col("device_id").cast(pl.Categorical)),
            key="device_id",
            every=every,
            aggs=aggs,
        ).with_columns(pl.col("device_id").cast(pl.String))
        assert packed.height == windows
        assert packed.equals(plain)
        assert packed.filter(pl.col("window_start") == floor_to(last, every)).rows() == [
            ("d1", floor_to(last, every), floor_to(last, every) + every, 1, 7.0)
        ]


def busy_hour(seed: int, events: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Readings in 10:00-11:04 and user events from 09:30, with values that do not add
    up exactly in floating point."""
    rng = random.Random(seed)
    stamps = sorted(at(9, 30) + rng.random() * (HOUR + 34 * MIN) for _ in range(events))
    sensor = readings(
        *(
            (f"d{rng.randrange(20)}", ts, rng.uniform(-10, 40), rng.uniform(0, 100), 50.0, "ok")
            for ts in stamps
        )
    )
    user = activity(
        *((f"u{rng.randrange(60)}", ts, "purchase", round(rng.uniform(1, 200), 2)) for ts in stamps)
    )
    return sensor.filter(pl.col("ts") >= at(10)), user


def test_every_table_is_bit_identical_however_often_and_wherever_it_is_computed() -> None:
    """Floating sums must not depend on how polars splits a group-by over threads: a
    partition computed again, or inside a wider frame (a backfill of several hours),
    gives the same bits. (The micro-batch equivalence test found sliding means whose
    last bits differed from run to run on identical input; polars chooses its group-by
    strategy from a sample of the keys, so the sizes here sweep the range where it
    flipped.)"""
    later = 3 * HOUR
    for events in range(1_400, 2_400, 100):
        sensor, user = busy_hour(seed=events, events=events)
        wider_sensor = pl.concat([sensor, sensor.with_columns(pl.col("ts") + later)])
        wider_user = pl.concat([user, user.with_columns(pl.col("ts") + later)])
        for table, (function, _, kind) in TABLE_FUNCTIONS.items():
            frame, wider = (sensor, wider_sensor) if kind == "readings" else (user, wider_user)
            first = function(frame)
            assert first.height >= 20, table
            for _ in range(5):
                assert function(frame).equals(first), (table, events)
            in_wider = function(wider).filter(pl.col(first.columns[1]) < at(12))
            assert in_wider.equals(first), (table, events)


def test_session_duration_does_not_depend_on_how_many_sessions_there_are() -> None:
    """duration_s of a session is the same alone and among many (polars divides long
    columns by a constant through its reciprocal, short ones exactly)."""
    start = at(10, 15, 46, 275_995)
    end = at(10, 53, 1, 590_368)
    mine = [("u0", start, "login", None), ("u0", at(10, 35), "login", None)]
    mine += [("u0", end, "page_view", None)]
    alone = w.user_sessions(activity(*mine), at(10), at(11))
    others = list(mine)
    for i in range(1, 60):
        others += [(f"u{i}", at(10, i % 50, 7, 123_457 * i % 1_000_000), "login", None)]
        others += [(f"u{i}", at(10, i % 50 + 9, 1, 777_777 * i % 1_000_000), "login", None)]
    among = w.user_sessions(activity(*others), at(10), at(11))
    assert among.filter(pl.col("user_id") == "u0").equals(alone)
    assert alone["duration_s"].item() == 2235 + 314_373 * 1e-6


def test_latency_percentiles_are_nearest_rank_by_hand() -> None:
    from astra_pipeline.transforms.latency import LatencySample

    committed = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
    sample = LatencySample()
    # 1..20 seconds old, in two batches: p50 is the 10th smallest, p95 the 19th.
    ages = list(range(1, 21))
    for part in (ages[:7], ages[7:]):
        sample.add(pl.Series([committed - dt.timedelta(seconds=a) for a in part]), committed)
    sample.add(pl.Series([], dtype=pl.Datetime("us", "UTC")), committed)
    assert sample.summary() == {"latency_p50_s": 10.0, "latency_p95_s": 19.0, "latency_max_s": 20.0}
    assert LatencySample().summary() == {}
