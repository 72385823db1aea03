"""`/metrics` in the Prometheus text format: the API's own requests, and the pipeline's
state computed at scrape time from cheap sources (docs/operations.md).

Sources: Kafka's watermarks and the ingest group's committed offsets (lag), the
warehouse's new rows since the last scrape (ingested, dead-letter and duplicate counts,
end-to-end latency), the serving copy (window freshness, alerts), the Dagster instance
(finished runs), the producer (its queue). Each source is read at most every
CACHE_S seconds whatever the scrape rate; a source that fails is reported by
``astra_metrics_source_up{source}`` 0 and its metrics are left out of that scrape.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from astra_pipeline.events import SensorReading, UserActivity
from resources.ingest_tallies import LATENCY_BUCKETS_S, IngestTallies, Tallies
from resources.lag_probe import LagProbe, PartitionLag
from resources.run_tallies import RunTallies
from resources.serving_reads import ServingReader

CACHE_S = 5.0
LOG = logging.getLogger("astra.api")

# Dead-letter reasons start with the field that broke the contract ("ts: must be ...");
# the contract's fields (and "event", "json" for a message that is no event or no JSON)
# are the classes a metric label may take. Any other start is "other": a label never
# carries raw text.
REASON_CLASSES = frozenset(
    {"event", "json", *SensorReading.model_fields, *UserActivity.model_fields}
)


def reason_class(head: str) -> str:
    head = head.strip().split(".", 1)[0].split(" ", 1)[0]
    return head if head in REASON_CLASSES else "other"


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "astra_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "astra_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route).observe(seconds)


class _Cached:
    """A source's last reading. A scrape never waits for a slow source: once the reading
    is older than CACHE_S, one background refresh starts and the scrape answers with the
    last reading (only the very first scrape waits for one)."""

    def __init__(self, name: str, read: Callable[[], Any]) -> None:
        self.name = name
        self._read = read
        self._value: Any = None
        self._ok = False
        self._at = float("-inf")
        self._refreshing = False
        self._lock = threading.Lock()
        self._first = threading.Event()

    def _refresh(self) -> None:
        try:
            value, ok = self._read(), True
        except Exception as error:  # reported as source_up 0
            LOG.warning("metrics source %s: %s", self.name, error)
            value, ok = None, False
        with self._lock:
            if ok:
                self._value = value
            self._ok = ok
            self._at = time.monotonic()
            self._refreshing = False
        self._first.set()

    def get(self) -> tuple[bool, Any]:
        with self._lock:
            stale = time.monotonic() - self._at >= CACHE_S
            start = stale and not self._refreshing
            if start:
                self._refreshing = True
        if start:
            threading.Thread(target=self._refresh, name=f"metrics-{self.name}", daemon=True).start()
        self._first.wait()
        with self._lock:
            return self._ok, self._value


class PipelineCollector(Collector):
    def __init__(
        self,
        topic: str,
        lag: LagProbe,
        tallies: IngestTallies,
        serving: ServingReader,
        runs: RunTallies | None,
        producer_queue: Callable[[], int],
    ) -> None:
        self._topic = topic
        self._producer_queue = producer_queue
        self._sources = {
            "kafka": _Cached("kafka", lag.lag),
            "warehouse": _Cached("warehouse", tallies.refresh),
            "serving": _Cached("serving", lambda: _serving_state(serving)),
        }
        if runs is not None:
            self._sources["dagster"] = _Cached("dagster", runs.refresh)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "astra_metrics_source_up", "Whether a metrics source answered.", labels=["source"]
        )
        readings = {}
        for name, source in self._sources.items():
            ok, value = source.get()
            up.add_metric([name], 1.0 if ok else 0.0)
            if ok:
                readings[name] = value
        yield up
        if "kafka" in readings:
            yield from self._lag(readings["kafka"])
        if "warehouse" in readings:
            yield from _ingest(readings["warehouse"])
        if "serving" in readings:
            yield from _serving(readings["serving"])
        if "dagster" in readings:
            runs = CounterMetricFamily(
                "astra_dagster_runs",
                "Finished Dagster runs by job and status.",
                labels=["job", "status"],
            )
            for (job, status), count in sorted(readings["dagster"].items()):
                runs.add_metric([job, status], count)
            yield runs
        queue = GaugeMetricFamily(
            "astra_api_producer_queue_messages",
            "Messages the gateway's producer holds, not yet acknowledged by Kafka.",
        )
        queue.add_metric([], self._producer_queue())
        yield queue

    def _lag(self, partitions: list[PartitionLag]) -> Iterator[Metric]:
        messages = GaugeMetricFamily(
            "astra_kafka_lag_messages",
            "Messages of the raw topic not yet ingested (past the group's committed offset).",
            labels=["topic", "partition"],
        )
        seconds = GaugeMetricFamily(
            "astra_kafka_lag_seconds",
            "Age of the oldest message not yet ingested (0 without lag).",
            labels=["topic", "partition"],
        )
        produced = CounterMetricFamily(
            "astra_kafka_messages",
            "Messages produced to the raw topic (each partition's end offset).",
            labels=["topic", "partition"],
        )
        for item in partitions:
            labels = [self._topic, str(item.partition)]
            messages.add_metric(labels, item.messages)
            seconds.add_metric(labels, item.oldest_age_s)
            produced.add_metric(labels, item.end_offset)
        yield messages
        yield seconds
        yield produced


def _ingest(tallies: Tallies) -> Iterator[Metric]:
    ingested = CounterMetricFamily(
        "astra_ingested_events", "Valid events stored, by clean table.", labels=["table"]
    )
    for table, count in sorted(tallies.ingested.items()):
        ingested.add_metric([table], count)
    yield ingested
    dead = CounterMetricFamily(
        "astra_dead_letter_events",
        "Messages rejected into clean.dead_letter_events, by reason class (the field).",
        labels=["reason"],
    )
    classes: dict[str, int] = {}
    for head, count in tallies.dead_letters_by_head.items():
        key = reason_class(head)
        classes[key] = classes.get(key, 0) + count
    for key, count in sorted(classes.items()):
        dead.add_metric([key], count)
    yield dead
    duplicates = CounterMetricFamily(
        "astra_duplicate_events", "Later copies of a stored event_id (clean.duplicate_events)."
    )
    duplicates.add_metric([], tallies.duplicates)
    yield duplicates
    latency = HistogramMetricFamily(
        "astra_end_to_end_latency_seconds",
        "From an event's time to the commit that stored it (valid events).",
    )
    bounds = [str(b) for b in LATENCY_BUCKETS_S] + ["+Inf"]
    latency.add_metric(
        [], list(zip(bounds, tallies.latency_buckets, strict=True)), tallies.latency_sum_s
    )
    yield latency


def _serving_state(serving: ServingReader) -> dict[str, Any]:
    newest = serving.rows(
        "SELECT max(window_end) AS newest FROM agg.sensor_1m WHERE window_end <= now()"
    )
    alerts = serving.rows("SELECT driver, count(*) AS n FROM ml.alerts GROUP BY driver")
    return {
        "newest_window_end": newest[0]["newest"] if newest else None,
        "alerts": {row["driver"]: row["n"] for row in alerts},
    }


def _serving(state: dict[str, Any]) -> Iterator[Metric]:
    newest: dt.datetime | None = state["newest_window_end"]
    if newest is not None:
        freshness = GaugeMetricFamily(
            "astra_window_freshness_seconds",
            "Now minus the end of the newest complete 1-minute window (event time).",
        )
        freshness.add_metric([], (dt.datetime.now(dt.UTC) - newest).total_seconds())
        yield freshness
    alerts = CounterMetricFamily(
        "astra_alerts", "Alerts raised, by kind (driver).", labels=["kind"]
    )
    for kind, count in sorted(state["alerts"].items()):
        alerts.add_metric([kind], count)
    yield alerts
