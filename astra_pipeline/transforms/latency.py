"""End-to-end latency of committed events: event time to the commit that stored them."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import polars as pl


@dataclass
class LatencySample:
    """The latencies (seconds) of the events a run committed, batch after batch."""

    seconds: list[pl.Series] = field(default_factory=list)

    def add(self, event_ts: pl.Series, committed_at: dt.datetime) -> None:
        if event_ts.len():
            committed = pl.lit(committed_at.astimezone(dt.UTC), dtype=pl.Datetime("us", "UTC"))
            frame = pl.DataFrame({"ts": event_ts.cast(pl.Datetime("us", "UTC"))})
            latency = frame.select(
                ((committed - pl.col("ts")).dt.total_microseconds() / 1e6).alias("s")
            )
            self.seconds.append(latency["s"])

    def summary(self) -> dict[str, float]:
        """p50, p95 and max in seconds (nearest-rank percentiles); empty without events."""
        if not self.seconds:
            return {}
        values = pl.concat(self.seconds).sort()
        n = values.len()

        def rank(q: float) -> float:  # the ceil(q * n)-th smallest
            return round(float(values[max(0, math.ceil(round(q * n, 9)) - 1)]), 3)

        return {
            "latency_p50_s": rank(0.50),
            "latency_p95_s": rank(0.95),
            "latency_max_s": round(float(values[n - 1]), 3),
        }
