"""Ground truth of a simulation in the warehouse, for checks that measure the scores."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from resources.tables import ANOMALY_GROUND_TRUTH, DECLINING_USERS_TRUTH
from resources.warehouse import DuckDBWarehouseResource

if TYPE_CHECKING:
    from astra_pipeline.simulator import GroundTruth

ANOMALY_TRUTH_SCHEMA = pl.Schema(
    {
        "device_id": pl.String(),
        "kind": pl.String(),
        "anomaly_start": pl.Datetime("us", "UTC"),
        "anomaly_end": pl.Datetime("us", "UTC"),
        "event_id": pl.String(),
        "simulation": pl.String(),
    }
)
DECLINING_TRUTH_SCHEMA = pl.Schema(
    {
        "user_id": pl.String(),
        "decline_start": pl.Datetime("us", "UTC"),
        "stop": pl.Datetime("us", "UTC"),
        "simulation": pl.String(),
    }
)


def truth_frames(truth: GroundTruth, simulation: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ground truth as rows of ml.anomaly_ground_truth and ml.declining_users_truth."""
    anomalies = [
        {
            "device_id": a.device_id,
            "kind": a.kind,
            "anomaly_start": a.start,
            "anomaly_end": a.end,
            "event_id": event_id,
            "simulation": simulation,
        }
        for a in truth.anomalies
        for event_id in (a.event_ids or (None,))
    ]
    declining = [
        {
            "user_id": u.user_id,
            "decline_start": u.decline_start,
            "stop": u.stop,
            "simulation": simulation,
        }
        for u in truth.declining_users
    ]
    return (
        pl.DataFrame(anomalies, schema=ANOMALY_TRUTH_SCHEMA),
        pl.DataFrame(declining, schema=DECLINING_TRUTH_SCHEMA),
    )


def record_ground_truth(
    warehouse: DuckDBWarehouseResource, anomalies: pl.DataFrame, declining: pl.DataFrame
) -> None:
    """Replace the rows of the simulations in the frames (a re-run of the same seed
    replaces its truth) in one transaction."""
    warehouse.ensure_schema()
    with warehouse.transaction() as tx:
        for table, frame in ((ANOMALY_GROUND_TRUTH, anomalies), (DECLINING_USERS_TRUTH, declining)):
            for simulation in frame["simulation"].unique().to_list():
                tx.execute(f"DELETE FROM {table} WHERE simulation = ?", [simulation])
            tx.append(table, frame)
