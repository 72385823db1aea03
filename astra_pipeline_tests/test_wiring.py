import subprocess
import sys
from pathlib import Path

import dagster as dg

import resources
from astra_pipeline.definitions import defs

REPO = Path(__file__).resolve().parent.parent


def test_definitions_load_with_pinned_names() -> None:
    definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    served = ["sensor_1m", "sensor_1h", "sensor_5m_sliding", "user_1m", "user_1h", "user_sessions"]
    served_scoring = [
        "features/user_churn",
        "features/device_health",
        "ml/churn_scores",
        "ml/anomaly_scores",
        "ml/alerts",
    ]
    assert {s.key.to_user_string() for s in definitions.resolve_all_asset_specs()} == {
        "raw_events",
        "cleaned_events",
        "dead_letter_events",
        "windowed_aggregates",
        "churn_features",
        "churn_scores",
        "anomaly_scores",
        "alerts",
        "lake_files",
        *(f"serving/agg/{name}" for name in served),
        *(f"serving/{name}" for name in served_scoring),
    }
    checks = {k.name for k in definitions.resolve_asset_graph().asset_check_keys}
    assert checks == {
        "raw_events_offset_continuity",
        "raw_events_unique_offsets",
        "raw_events_topic_not_recreated",
        "cleaned_events_unique_event_id",
        "cleaned_events_offsets_accounted",
        "dead_letter_events_rate",
        "windowed_aggregates_complete",
        "windowed_aggregates_fresh_on_event_time",
        "windowed_aggregates_windows_in_partition",
        "windowed_aggregates_within_bounds",
        "windowed_aggregates_sessions_disjoint",
        "churn_features_in_range",
        "churn_features_no_future_leakage",
        "churn_scores_in_range",
        "anomaly_scores_complete",
        "anomaly_scores_in_range",
        "alerts_rate",
        "alerts_traceable",
        "alerts_published",
        "alerts_match_ground_truth",
        *(f"agg_{name}_matches_warehouse" for name in served),
        *(f"{name.replace('/', '_')}_matches_warehouse" for name in served_scoring),
    }
    jobs = [j.name for j in definitions.resolve_all_job_defs() if not j.name.startswith("__")]
    assert sorted(jobs) == [
        "aggregate_windows_job",
        "ingest_events_job",
        "lake_maintenance_job",
        "score_anomalies_job",
        "score_churn_job",
    ]
    assert [s.name for s in definitions.sensors] == [
        "kafka_events_sensor",
        "cleaned_events_windows_sensor",
        "windowed_aggregates_scoring_sensor",
    ]
    assert [s.name for s in definitions.schedules] == [
        "churn_daily_schedule",
        "lake_maintenance_schedule",
    ]
    groups = {s.key.to_user_string(): s.group_name for s in definitions.resolve_all_asset_specs()}
    assert groups["windowed_aggregates"] == "aggregate"
    assert groups["churn_features"] == "features"
    assert {groups[name] for name in ("churn_scores", "anomaly_scores", "alerts")} == {"scoring"}
    assert {groups[f"serving/agg/{name}"] for name in served} == {"serving"}
    assert {groups[f"serving/{name}"] for name in served_scoring} == {"serving"}
    # The windows refresh only refreshes windows; scoring follows in its own job.
    windows = definitions.resolve_job_def("aggregate_windows_job")
    assert {k.to_user_string() for k in windows.asset_layer.executable_asset_keys} == {
        "windowed_aggregates"
    }
    scores = definitions.resolve_job_def("score_anomalies_job")
    assert {k.to_user_string() for k in scores.asset_layer.executable_asset_keys} == {
        "anomaly_scores",
        "alerts",
    }
    churn = definitions.resolve_job_def("score_churn_job")
    assert isinstance(churn.partitions_def, dg.DailyPartitionsDefinition)


def test_resources_package_is_ours_not_the_pypi_one() -> None:
    assert Path(resources.__file__).resolve().is_relative_to(REPO)


def test_import_direction() -> None:
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(linter)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_bad_argument_is_one_line() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "astra_pipeline.cli",
            "simulate",
            "--malformed",
            "2",
            "--count",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_product_code_imports_no_private_dagster_module() -> None:
    """Product code uses Dagster's public API only (``dagster._...`` may change in any
    release)."""
    root = Path(__file__).resolve().parent.parent
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for package in ("astra_pipeline", "sensors", "resources")
        for path in sorted((root / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "dagster._" in line and line.lstrip().startswith(("from ", "import "))
    ]
    assert offenders == []
