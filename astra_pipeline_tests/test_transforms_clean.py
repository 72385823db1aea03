import math

import polars as pl
import pytest

from astra_pipeline.transforms.clean import deduplicate, enrich_sensor_readings


def reference_heat_index_f(t: float, rh: float) -> float:
    """The NWS algorithm written out independently, scalar, in Fahrenheit."""
    simple = 0.5 * (t + 61.0 + ((t - 68.0) * 1.2) + (rh * 0.094))
    if (simple + t) / 2 < 80:
        return simple
    hi = (
        -42.379
        + 2.04901523 * t
        + 10.14333127 * rh
        - 0.22475541 * t * rh
        - 6.83783e-3 * t**2
        - 5.481717e-2 * rh**2
        + 1.22874e-3 * t**2 * rh
        + 8.5282e-4 * t * rh**2
        - 1.99e-6 * t**2 * rh**2
    )
    if rh < 13 and 80 <= t <= 112:
        hi -= ((13 - rh) / 4) * math.sqrt((17 - abs(t - 95)) / 17)
    elif rh > 85 and 80 <= t <= 87:
        hi += ((rh - 85) / 10) * ((87 - t) / 5)
    return hi


def enrich(t_c: float, rh: float) -> dict:
    frame = pl.DataFrame(
        {
            "temperature_c": [t_c],
            "humidity_pct": [rh],
            "ts": pl.Series(["2026-11-23T23:59:59Z"]).str.to_datetime(time_zone="UTC"),
        }
    )
    return enrich_sensor_readings(frame).row(0, named=True)


def test_heat_index_matches_nws_table() -> None:
    # NWS heat index chart: 90 F at 50 % RH feels like about 95 F.
    row = enrich((90 - 32) * 5 / 9, 50)
    assert row["heat_index_c"] * 9 / 5 + 32 == pytest.approx(94.6, abs=0.2)


@pytest.mark.parametrize(
    ("t_c", "rh"), [(10, 40), (27, 90), (30, 10), (35, 60), (40, 5), (21.4, 45.2)]
)
def test_heat_index_matches_reference(t_c: float, rh: float) -> None:
    expected_f = reference_heat_index_f(t_c * 9 / 5 + 32, rh)
    assert enrich(t_c, rh)["heat_index_c"] == pytest.approx((expected_f - 32) * 5 / 9, abs=1e-9)


def test_dew_point_by_hand() -> None:
    # At 100 % humidity the dew point is the temperature itself.
    assert enrich(20.0, 100.0)["dew_point_c"] == pytest.approx(20.0, abs=1e-9)
    # 20 C, 50 %: gamma = ln(0.5) + 17.62*20/263.12 = 0.646193; Td = 243.12*g/(17.62-g) = 9.255
    assert enrich(20.0, 50.0)["dew_point_c"] == pytest.approx(9.255, abs=0.01)
    assert enrich(20.0, 0.0)["dew_point_c"] is None


def test_day_and_hour_are_utc_parts() -> None:
    row = enrich(20.0, 50.0)
    assert str(row["event_date"]) == "2026-11-23"
    assert row["event_hour"].hour == 23 and row["event_hour"].minute == 0


def test_deduplicate_keeps_first_in_offset_order() -> None:
    frame = pl.DataFrame(
        {
            "event_id": ["a", "b", "a", "c", "b"],
            "partition": [0, 0, 0, 1, 0],
            "offset": [5, 1, 2, 0, 9],
        }
    )
    result = deduplicate(frame, ["partition", "offset"])
    assert sorted(result.kept.select("event_id", "offset").rows()) == [("a", 2), ("b", 1), ("c", 0)]
    assert sorted(result.duplicates["offset"].to_list()) == [5, 9]
