"""What ingest has stored, counted for `/metrics` without re-reading the warehouse.

The first refresh counts each table once; every later one counts only the rows committed
since: the rows of snapshots after the last one seen (snapshots are in commit order,
whatever order the shards stamped their batches in), four queries filtered on
``snapshot_id``. Each refresh returns a copy: a scrape renders one reading while the next
refresh adds to the running totals.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

from resources.tables import DEAD_LETTER_EVENTS, DUPLICATE_EVENTS, SENSOR_READINGS, USER_ACTIVITY
from resources.warehouse import DuckDBWarehouseResource

CLEAN_TABLES = (SENSOR_READINGS, USER_ACTIVITY)
LATENCY_BUCKETS_S = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


@dataclass
class Tallies:
    ingested: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLEAN_TABLES, 0))
    dead_letters_by_head: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    # Cumulative counts per bucket upper bound (Prometheus `le`), plus +Inf, and the sum.
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    latency_sum_s: float = 0.0


class IngestTallies:
    def __init__(self, warehouse: DuckDBWarehouseResource) -> None:
        self._warehouse = warehouse
        self._marks: dict[str, int] = {}
        self._tallies = Tallies()
        self._lock = threading.Lock()

    def refresh(self) -> Tallies:
        """Add the rows committed since the last refresh; a copy of the running totals."""
        with self._lock, self._warehouse.session(read_only=True) as session:
            tallies = self._tallies
            for table in CLEAN_TABLES:
                buckets = ", ".join(
                    f"count(*) FILTER (WHERE latency <= {bound})" for bound in LATENCY_BUCKETS_S
                )
                row = self._new_rows(
                    session,
                    table,
                    f"count(*), coalesce(sum(latency), 0), {buckets}",
                    "epoch(ingested_at) - epoch(ts) AS latency",
                )
                if row is None:
                    continue
                count, total, *cumulative = row
                tallies.ingested[table] += count
                tallies.latency_sum_s += total
                for i, value in enumerate([*cumulative, count]):
                    tallies.latency_buckets[i] += value
            for head, count in self._grouped(session):
                tallies.dead_letters_by_head[head] = (
                    tallies.dead_letters_by_head.get(head, 0) + count
                )
            row = self._new_rows(session, DUPLICATE_EVENTS, "count(*)", "1 AS one")
            if row is not None:
                tallies.duplicates += row[0]
            return copy.deepcopy(tallies)

    def _new_rows(
        self, session: Any, table: str, select: str, extra: str
    ) -> tuple[Any, ...] | None:
        since = self._marks.get(table)
        where = "WHERE snapshot_id > ?" if since is not None else ""
        params = [since] if since is not None else []
        row = session.query(
            f"SELECT {select}, max(mark)"
            f" FROM (SELECT snapshot_id AS mark, {extra} FROM {table} {where})",
            params,
        ).row(0)
        *values, newest = row
        if newest is None:
            return None
        self._marks[table] = newest
        return tuple(values)

    def _grouped(self, session: Any) -> list[tuple[str, int]]:
        since = self._marks.get(DEAD_LETTER_EVENTS)
        where = "WHERE snapshot_id > ?" if since is not None else ""
        frame = session.query(
            "SELECT split_part(reason, ':', 1) AS head, count(*) AS n, max(snapshot_id) AS newest"
            f" FROM {DEAD_LETTER_EVENTS} {where} GROUP BY 1",
            [since] if since is not None else [],
        )
        if frame.height:
            self._marks[DEAD_LETTER_EVENTS] = max(frame["newest"])
        return [(str(head), int(n)) for head, n in zip(frame["head"], frame["n"], strict=True)]
