"""Ground truth of a simulation in the warehouse, for checks that measure the scores."""

from __future__ import annotations

import polars as pl

from resources.tables import ANOMALY_GROUND_TRUTH, DECLINING_USERS_TRUTH
from resources.warehouse import DuckDBWarehouseResource

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
