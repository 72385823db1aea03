"""`/metrics` under an ingest drain: scrape latency, and the drain's rate with and without
a scraper, in one run.

One embedded (Tansu, in-memory) broker, one simulated backlog of N events (1% malformed)
in one 6-partition topic, fresh Postgres databases on --pg (dropped at the end): one
serving copy (the test helper's synthetic serving tables) and one lake catalog per drain,
each lake's Parquet files in a temporary folder; an empty Dagster instance (SQLite) as
DAGSTER_HOME, so the runs source is read too.

Each drain reads the whole topic with a consumer group of its own into a fresh lake:
``drain()`` (batch 100,000, budget 3600 s) in a child process (as a Dagster run or
``astra ingest`` is), timed inside the child around the ``drain()`` call. Before each
drain a real ``astra api`` process is started with that drain's topic, consumer group
and lake (ASTRA_TOPIC_RAW, ASTRA_CONSUMER_GROUP, ASTRA_LAKE_*), so its ``/metrics``
reports exactly what the drain changes; one scrape before the drain checks that it sees
the whole backlog as lag (and warms the API: first lake attach).

- A: nobody scrapes during the drain (the API runs idle);
- B: a thread of this process GETs ``/metrics`` every 1 s (fixed schedule, one
  keep-alive connection, like Prometheus) from the moment the child starts ``drain()``
  until it returns; each scrape's latency (``time.perf_counter`` around the request,
  body read) and status are recorded, with the lag and ingested totals it reported.

After each A or B drain, one scrape past the 5 s cache must show lag 0 and the drain's
clean rows as ingested. CPU time (user + system) of the drain process (with its helper
reader, from wait4), of the API process and of the broker (from /proc) is taken per
drain.

To see where a scrape's time goes and what slows the drain, more drains without an API,
during which this process reads the collector's sources itself (built as `astra api`
builds them, for that drain's group and lake), each read timed, with the steps inside
``LagProbe.lag()`` (consumer calls) and ``IngestTallies.refresh()`` (queries):

- K: ``LagProbe.lag()`` alone, W: ``IngestTallies.refresh()`` alone, each at the API's
  cadence under a 1 s scrape interval (one read, then 5.5 s: the 5 s cache); they run
  in the same alternating order, A B K W, W K B A;
- S (last): all four sources in a row (kafka, warehouse, serving, dagster), on a 1 s
  schedule, back to back when a round takes longer.

Before each measured phase the run waits until no ``bench/api.py`` runs and the
1-minute load average is under --max-load (polling every 30 s, at most 25 minutes in
all; then it measures anyway and says so).

Usage: .venv/bin/python bench/metrics_scrape.py [--events 1000000] [--write-docs]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from bench_util import (
    fmt,
    invocation,
    log,
    machine,
    percentile,
    proc_cpu,
    scratch,
    start_drain_child,
)
from ingest import PARTITIONS, new_topic, simulate

from resources.broker import EmbeddedBroker
from resources.kafka import KafkaResource
from resources.serving import PostgresServingResource
from resources.warehouse import DuckDBWarehouseResource

ROOT = Path(__file__).resolve().parent.parent
# The tests' helpers (a real `astra api` process, synthetic serving tables) are not an
# installed package: import them from the repository.
sys.path.insert(1, str(ROOT))
from astra_pipeline_tests.api_server import ApiProcess  # noqa: E402
from astra_pipeline_tests.serving_rows import serve_tables  # noqa: E402

BATCH = 100_000
SECTION = "## /metrics under an ingest drain"
TARGET_P99_S = 0.200
# "No measurable slowdown": B/A at least 1 - max(this, the spread between the two reps of
# one condition): a difference smaller than the run's own noise is not measurable.
SLOWDOWN_FLOOR = 0.03
CACHE_S = 5.0  # astra_pipeline.api.metrics.CACHE_S (not imported: keep the API's modules out)
METADATA_SCHEMA = "astra_lake"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def other_benches() -> list[str]:
    done = subprocess.run(["pgrep", "-af", "bench/api.py"], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if line.strip()]


class Quiet:
    """Waits before a phase until no bench/api.py runs and the 1-minute load average is
    under ``max_load``; at most ``budget_s`` of waiting over the whole run."""

    def __init__(self, max_load: float, budget_s: float, poll_s: float = 30.0) -> None:
        self.max_load = max_load
        self.budget_s = budget_s
        self.poll_s = poll_s
        self.waited_s = 0.0
        self.gave_up = False
        self.phases: list[dict[str, Any]] = []

    def wait(self, phase: str) -> dict[str, Any]:
        began = time.monotonic()
        forced = False
        while True:
            others = other_benches()
            load = os.getloadavg()[0]
            if not others and load < self.max_load:
                break
            spent = self.waited_s + time.monotonic() - began
            if spent >= self.budget_s:
                forced = self.gave_up = True
                log(f"{phase}: waited {spent:.0f}s in all; measuring anyway (load {load:.2f})")
                break
            why = f"bench/api.py running ({len(others)})" if others else f"load {load:.2f}"
            log(f"{phase}: waiting for a quiet machine: {why}")
            time.sleep(min(self.poll_s, self.budget_s - spent))
        waited = time.monotonic() - began
        self.waited_s += waited
        entry = {
            "phase": phase,
            "waited_s": waited,
            "load_1m": os.getloadavg()[0],
            "others": other_benches(),
            "forced": forced,
        }
        self.phases.append(entry)
        return entry


# ------------------------------------------------------------------ Postgres


class Databases:
    """Fresh databases on the --pg server, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.tag = uuid.uuid4().hex[:8]
        self.created: list[str] = []

    def url(self, name: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def create(self, kind: str) -> str:
        name = f"bench_{kind}_{self.tag}_{len(self.created) + 1}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url(name)

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.created:
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except psycopg.Error as error:
                    log(f"could not drop {name}: {error}")


# ------------------------------------------------------------------ scraping

LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse(body: str) -> dict[str, Any]:
    """The figures of a scrape this benchmark checks: lag and ingested totals, the
    sources up."""
    lag = ingested = 0.0
    up: dict[str, float] = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        if match is None:
            continue
        name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
        if name == "astra_kafka_lag_messages":
            lag += value
        elif name == "astra_ingested_events_total":
            ingested += value
        elif name == "astra_metrics_source_up":
            source = re.search(r'source="([^"]*)"', labels)
            up[source.group(1) if source else "?"] = value
    return {"lag": lag, "ingested": ingested, "up": up}


def scrape_once(client: httpx.Client, url: str) -> dict[str, Any]:
    began = time.perf_counter()
    try:
        response = client.get(url)
        body = response.text
        status: int | str = response.status_code
    except httpx.HTTPError as error:
        body, status = "", type(error).__name__
    seconds = time.perf_counter() - began
    out: dict[str, Any] = {"at": began, "seconds": seconds, "status": status, "bytes": len(body)}
    if status == 200:
        out.update(parse(body))
    return out


class Scraper(threading.Thread):
    """GET /metrics every ``interval_s`` on a fixed schedule (a late scrape is followed
    at once by the next, never two at a time), until stopped."""

    def __init__(self, url: str, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.interval_s = interval_s
        self.scrapes: list[dict[str, Any]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30.0) as client:
            due = time.perf_counter()
            while not self._halt.is_set():
                self.scrapes.append(scrape_once(client, self.url))
                due += self.interval_s
                delay = due - time.perf_counter()
                if delay < 0:
                    due, delay = time.perf_counter(), 0.0
                self._halt.wait(delay)

    def stop(self) -> list[dict[str, Any]]:
        self._halt.set()
        self.join()
        return self.scrapes


# ------------------------------------------------------------------ drains


class Lab:
    """The run's shared parts: broker, topic, serving database, Dagster home."""

    def __init__(
        self,
        broker: EmbeddedBroker,
        topic: str,
        dlq: str,
        dbs: Databases,
        serving_url: str,
        dagster_home: Path,
        tmp: Path,
        n: int,
    ) -> None:
        self.broker = broker
        self.servers = broker.bootstrap_servers
        self.topic = topic
        self.dlq = dlq
        self.dbs = dbs
        self.serving_url = serving_url
        self.dagster_home = dagster_home
        self.tmp = tmp
        self.n = n

    def new_lake(self, label: str) -> DuckDBWarehouseResource:
        catalog = self.dbs.create("lake")
        data = self.tmp / "lakes" / label
        data.mkdir(parents=True)
        warehouse = DuckDBWarehouseResource(
            lake_catalog=catalog, lake_data_path=str(data), lake_metadata_schema=METADATA_SCHEMA
        )
        warehouse.ensure_schema()
        return warehouse

    def api_env(self, group: str, warehouse: DuckDBWarehouseResource) -> dict[str, str]:
        return {
            "DAGSTER_HOME": str(self.dagster_home),
            "ASTRA_KAFKA_BOOTSTRAP_SERVERS": self.servers,
            "ASTRA_TOPIC_RAW": self.topic,
            "ASTRA_TOPIC_DEADLETTER": self.dlq,
            "ASTRA_CONSUMER_GROUP": group,
            "ASTRA_PG_URL": self.serving_url,
            "ASTRA_LAKE_CATALOG": warehouse.lake_catalog,
            "ASTRA_LAKE_DATA_PATH": warehouse.lake_data_path,
            "ASTRA_LAKE_METADATA_SCHEMA": METADATA_SCHEMA,
            "ASTRA_MAX_BATCH_SIZE": str(BATCH),
        }

    def start_child(
        self, group: str, warehouse: DuckDBWarehouseResource
    ) -> tuple[subprocess.Popen[str], list[str]]:
        return start_drain_child(self.servers, group, self.topic, self.dlq, warehouse, BATCH)

    def finish_child(
        self, child: subprocess.Popen[str], errors: list[str], label: str
    ) -> dict[str, Any]:
        assert child.stdout is not None
        line = child.stdout.readline()
        ended = time.perf_counter()
        rest = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0 or not line.startswith("{"):
            time.sleep(0.3)
            raise SystemExit(
                f"DRAIN FAILED ({label}): exit {child.returncode}, {line!r} {rest!r}\n"
                + "".join(errors)[-3000:]
            )
        result: dict[str, Any] = json.loads(line)
        if result["messages"] != self.n or not result["reached_eof"]:
            raise SystemExit(f"DRAIN FAILED ({label}): {result}, expected {self.n:,} messages")
        result["ended_at"] = ended
        result["drain_cpu_s"] = usage.ru_utime + usage.ru_stime
        result["rate"] = self.n / result["seconds"]
        return result

    def settled(
        self,
        api: ApiProcess,
        url: str,
        label: str,
        group: str,
        warehouse: DuckDBWarehouseResource,
        clean: int,
    ) -> dict[str, Any]:
        """The first scrape past the cache after the drain, which must report lag 0 and
        the drain's clean rows; a stale answer is scraped again (each CACHE_S later, at
        most 4 times, kept as "stale"), then the run stops with what this process reads
        from the same group and lake beside what the API reported."""
        stale: list[dict[str, Any]] = []
        with httpx.Client(timeout=30.0) as client:
            for _ in range(5):
                time.sleep(CACHE_S + 0.5)
                after = scrape_once(client, url)
                if after["status"] == 200 and (after["lag"], after["ingested"]) == (0, clean):
                    break
                stale.append({k: after.get(k) for k in ("status", "lag", "ingested", "up")})
        after["stale"] = stale
        if stale:
            log(f"{label}: stale /metrics after the drain: {stale}")
        if len(stale) == 5:
            from resources.lag_probe import LagProbe

            probe = LagProbe(self.servers, group, self.topic, timeout_s=5.0)
            try:
                own_lag = sum(p.messages for p in probe.lag())
            finally:
                probe.close()
            rows = warehouse.query(
                "SELECT (SELECT count(*) FROM clean.sensor_readings) "
                "+ (SELECT count(*) FROM clean.user_activity) AS n"
            ).row(0)[0]
            raise SystemExit(
                f"{label}: /metrics after the drain stayed stale: {stale}; expected lag 0 "
                f"and {clean:,} ingested; this process reads lag {own_lag:,} and {rows:,} "
                f"clean rows. API log:\n{api.log()[-4000:]}"
            )
        check_scrape(after, label, "after the drain", lag=0, ingested=clean)
        return after

    def drain_with_api(self, label: str, scrape: bool, quiet: Quiet) -> dict[str, Any]:
        warehouse = self.new_lake(label)
        group = f"scrape-{label}-{uuid.uuid4().hex[:6]}"
        api = ApiProcess(self.api_env(group, warehouse), self.tmp / f"api-{label}.log")
        try:
            api.wait_ready()
            url = f"{api.url}/metrics"
            with httpx.Client(timeout=30.0) as client:
                before = scrape_once(client, url)
            check_scrape(before, label, "before the drain", lag=self.n, ingested=0)
            # The next scrape will refresh every source (as Prometheus' would, some
            # time after start), not answer from the warm-up's cache.
            time.sleep(CACHE_S + 0.5)
            gate = quiet.wait(label)
            api_cpu, broker_cpu = proc_cpu(api.process.pid), proc_cpu(self.broker.pid)
            log(f"{label}: drain {'with a 1 s scraper' if scrape else 'unscraped'}")
            child, errors = self.start_child(group, warehouse)
            began = time.perf_counter()
            scraper = Scraper(url, 1.0) if scrape else None
            if scraper is not None:
                scraper.start()
            result = self.finish_child(child, errors, label)
            scrapes = scraper.stop() if scraper is not None else []
            result["api_cpu_s"] = proc_cpu(api.process.pid) - api_cpu
            result["broker_cpu_s"] = proc_cpu(self.broker.pid) - broker_cpu
            result["wall_s"] = result["ended_at"] - began
            result["others_after"] = other_benches()
            result["load_after"] = os.getloadavg()[0]
            clean = result["sensor_readings"] + result["user_activity"]
            after = self.settled(api, url, label, group, warehouse, clean)
            for s in scrapes:
                s["t"] = s["at"] - began
            if scrape:
                bad = [s for s in scrapes if s["status"] != 200]
                seen_lag = [s["lag"] for s in scrapes if s["status"] == 200]
                seen_ingested = [s["ingested"] for s in scrapes if s["status"] == 200]
                result["distinct_lag_values"] = len(set(seen_lag))
                result["distinct_ingested_values"] = len(set(seen_ingested))
                result["non_200"] = len(bad)
            result.update(
                label=label,
                scraped=scrape,
                scrapes=scrapes,
                before=before,
                after=after,
                gate=gate,
                api_log_warnings=[
                    line for line in api.log().splitlines() if "metrics source" in line
                ][-5:],
            )
            log(
                f"  {fmt(result['rate'])} ev/s ({result['seconds']:.2f}s), API CPU "
                f"{result['api_cpu_s']:.1f}s, drain CPU {result['drain_cpu_s']:.1f}s"
                + (
                    f"; {len(scrapes)} scrapes, p50 {ms(stats(lat(scrapes))['p50'])}, "
                    f"max {ms(max(lat(scrapes)))}"
                    if scrapes
                    else ""
                )
            )
            return result
        finally:
            api.stop()


def lat(scrapes: list[dict[str, Any]]) -> list[float]:
    return [s["seconds"] for s in scrapes]


def check_scrape(scrape: dict[str, Any], label: str, when: str, lag: int, ingested: int) -> None:
    if scrape["status"] != 200:
        raise SystemExit(f"{label}: /metrics {when} answered {scrape['status']}")
    down = [k for k, v in scrape["up"].items() if v != 1.0]
    if down or set(scrape["up"]) != {"kafka", "warehouse", "serving", "dagster"}:
        raise SystemExit(f"{label}: /metrics {when}: sources {scrape['up']}")
    if scrape["lag"] != lag or scrape["ingested"] != ingested:
        raise SystemExit(
            f"{label}: /metrics {when} reports lag {scrape['lag']:,.0f} and "
            f"{scrape['ingested']:,.0f} ingested; expected {lag:,} and {ingested:,}"
        )


# ------------------------------------------------------------------ sources alone


def timed_method(obj: Any, name: str, sink: dict[str, float]) -> None:
    """Wrap ``obj.name`` (an instance attribute) to add its wall time to ``sink[name]``."""
    original = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink[name] = sink.get(name, 0.0) + time.perf_counter() - began
            sink[f"#{name}"] = sink.get(f"#{name}", 0) + 1

    setattr(obj, name, wrapper)


class TimedConsumer:
    """The LagProbe's consumer, each call timed into the current sink."""

    def __init__(self, consumer: Any, sink: Callable[[], dict[str, float]]) -> None:
        self._consumer = consumer
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._consumer, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                sink = self._sink()
                sink[name] = sink.get(name, 0.0) + time.perf_counter() - began
                sink[f"#{name}"] = sink.get(f"#{name}", 0) + 1

        return call


SOURCE_NAMES = {
    "kafka": "`LagProbe.lag()` (kafka)",
    "warehouse": "`IngestTallies.refresh()` (warehouse)",
    "serving": "serving state (2 Postgres queries)",
    "dagster": "`RunTallies.refresh()` (dagster, empty instance)",
}
# The API's own cadence under a 1 s scrape interval: a source is read, then answered from
# its 5 s cache until the first scrape at least 5 s after the read ended.
API_CADENCE_PAUSE_S = CACHE_S + 0.5


class Sources:
    """The four sources `astra api`'s collector reads (astra_pipeline/api/server.py),
    built here in this process for one drain's consumer group and lake, each read timed
    (with the steps inside LagProbe.lag() and IngestTallies.refresh())."""

    def __init__(self, lab: Lab, group: str, warehouse: DuckDBWarehouseResource) -> None:
        import dagster as dg

        from astra_pipeline.api.metrics import _serving_state
        from resources.ingest_tallies import IngestTallies
        from resources.lag_probe import LagProbe
        from resources.run_tallies import RunTallies
        from resources.serving_reads import ServingReader

        api_warehouse = DuckDBWarehouseResource(
            lake_catalog=warehouse.lake_catalog,
            lake_data_path=warehouse.lake_data_path,
            lake_metadata_schema=METADATA_SCHEMA,
        )
        self.probe = LagProbe(lab.servers, group, lab.topic, timeout_s=5.0)
        self._kafka_sink: dict[str, float] = {}
        sink = self._kafka_sink
        self.probe._consumer = TimedConsumer(self.probe._consumer, lambda: sink)  # type: ignore[assignment]
        timed_method(self.probe, "_true_end", sink)
        timed_method(self.probe, "_age", sink)
        self.tallies = IngestTallies(api_warehouse)
        self._tally_sink: dict[str, float] = {}
        timed_method(self.tallies, "_new_rows", self._tally_sink)
        timed_method(self.tallies, "_grouped", self._tally_sink)
        self.serving = ServingReader(lab.serving_url, timeout_s=5.0)
        self.serving.open()
        self.instance = dg.DagsterInstance.from_config(str(lab.dagster_home))
        self.runs = RunTallies(self.instance)
        self._serving_state = _serving_state
        self.samples: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def read(self, name: str, phase: str) -> None:
        self._kafka_sink.clear()
        self._tally_sink.clear()
        began = time.perf_counter()
        sample: dict[str, Any] = {"phase": phase}
        if name == "kafka":
            sample["lag"] = sum(p.messages for p in self.probe.lag())
        elif name == "warehouse":
            sample["ingested"] = sum(self.tallies.refresh().ingested.values())
        elif name == "serving":
            self._serving_state(self.serving)
        else:
            self.runs.refresh()
        sample["seconds"] = time.perf_counter() - began
        if name in ("kafka", "warehouse"):  # the step timings end with the read
            sample["steps"] = dict(self._kafka_sink if name == "kafka" else self._tally_sink)
        self.samples[name].append(sample)

    def close(self) -> None:
        self.serving.close()
        self.probe.close()
        self.instance.dispose()


def probe_drain(
    lab: Lab, quiet: Quiet, label: str, names: tuple[str, ...], api_cadence: bool
) -> dict[str, Any]:
    """One drain (no API process) during which this process reads ``names``, timed:
    with ``api_cadence`` one read, then a pause of API_CADENCE_PAUSE_S, as `astra api`
    refreshes a source under a 1 s scrape interval; else all of them in a row on a 1 s
    schedule (back to back when a round takes longer)."""
    warehouse = lab.new_lake(label)
    group = f"scrape-{label}-{uuid.uuid4().hex[:6]}"
    sources = Sources(lab, group, warehouse)
    try:
        for phase in ("first", "again"):
            for name in names:
                sources.read(name, phase)
        gate = quiet.wait(label)
        what = " + ".join(names)
        log(
            f"{label}: drain, {what} read here "
            + ("at the API's cadence" if api_cadence else "every 1 s")
        )
        broker_cpu = proc_cpu(lab.broker.pid)
        usage = os.times()
        child, errors = lab.start_child(group, warehouse)
        stop = threading.Event()

        def loop() -> None:
            due = time.perf_counter()
            while not stop.is_set():
                for name in names:
                    sources.read(name, "drain")
                if api_cadence:
                    stop.wait(API_CADENCE_PAUSE_S)
                    continue
                due += 1.0
                delay = due - time.perf_counter()
                if delay < 0:
                    due, delay = time.perf_counter(), 0.0
                stop.wait(delay)

        reader = threading.Thread(target=loop, daemon=True)
        reader.start()
        result = lab.finish_child(child, errors, label)
        stop.set()
        reader.join()
        after = os.times()
        result["prober_cpu_s"] = (after.user - usage.user) + (after.system - usage.system)
        result["broker_cpu_s"] = proc_cpu(lab.broker.pid) - broker_cpu
        log(
            f"  {fmt(result['rate'])} ev/s ({result['seconds']:.2f}s), prober CPU "
            f"{result['prober_cpu_s']:.1f}s, drain CPU {result['drain_cpu_s']:.1f}s"
        )
    finally:
        sources.close()
    return {
        "label": label,
        "names": names,
        "api_cadence": api_cadence,
        "drain": result,
        "gate": gate,
        "samples": dict(sources.samples),
    }


def compose_interval() -> str:
    """ ": N s under the compose stack's Prometheus" (prometheus/prometheus.yml), or ""."""
    try:
        text = (ROOT / "prometheus" / "prometheus.yml").read_text()
    except OSError:
        return ""
    match = re.search(r"^\s*scrape_interval:\s*(\d+)s", text, flags=re.MULTILINE)
    return f": {match.group(1)} s under the compose stack's Prometheus" if match else ""


def where_time_goes(samples: dict[str, list[dict[str, Any]]], keys: list[str]) -> str:
    """A sentence on the source that dominates one refresh of every source during the
    drain."""
    during = {k: [s for s in samples[k] if s["phase"] == "drain"] for k in keys}
    if not during["kafka"]:
        return ""
    means = {k: statistics.fmean(s["seconds"] for s in v) for k, v in during.items()}
    total = sum(means.values())
    top = max(means, key=lambda k: means[k])
    text = (
        f"Where the time goes: of one refresh of every source (mean {ms(total)} during "
        f"the drain), `{top}` takes {means[top] / total:.0%} ("
        + ", ".join(f"{k} {ms(v)}" for k, v in means.items())
        + ")."
    )
    per_consume = [
        s["steps"]["consume"] / s["steps"]["#consume"]
        for s in during["kafka"]
        if s["steps"].get("#consume")
    ]
    per_watermark = [
        s["steps"]["get_watermark_offsets"] / s["steps"]["#get_watermark_offsets"]
        for s in during["kafka"]
        if s["steps"].get("#get_watermark_offsets")
    ]
    calls = [s["steps"].get("#consume", 0) for s in during["kafka"]]
    if top == "kafka" and per_consume and statistics.median(per_consume) >= 0.4:
        text += (
            f" In `LagProbe.lag()`, `_true_end` makes {statistics.median(calls):.0f} "
            f"`consume(10_000, 0.5)` calls per `lag()` (median), each "
            f"{ms(statistics.median(per_consume))} (median): confluent-kafka's `consume` "
            "returns when it has 10,000 messages or its 0.5 s timeout passed, so reading "
            "one lagging partition's last batch waits out the timeout once for the batch "
            "and once more for the end-of-partition event: about 1 s per partition with "
            "lag, whatever the backlog."
        )
    if top == "kafka" and per_watermark and statistics.median(per_watermark) >= 0.05:
        text += (
            f" Each `get_watermark_offsets` call took {ms(statistics.median(per_watermark))}"
            " (median)."
        )
    return text


# ------------------------------------------------------------------ report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--malformed", type=float, default=0.01)
    parser.add_argument("--reps", type=int, default=2, help="(A, B) pairs, order A B B A ...")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--max-wait", type=float, default=1500.0, help="seconds, whole run")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--output", default=str(ROOT / "docs" / "performance.md"))
    parser.add_argument("--write-docs", action="store_true", help="append/replace the section")
    args = parser.parse_args()
    # SIGTERM (or SIGINT, which a background job may have ignored) ends the run through
    # the clean-up below: the API process stopped, the databases dropped, the broker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with scratch("astra-bench-metrics-") as tmp:
        run(args, invocation("metrics_scrape.py"), tmp)


def run(args: argparse.Namespace, command: str, tmp: Path) -> None:
    n = args.events
    t_start = time.perf_counter()
    quiet = Quiet(args.max_load, args.max_wait)
    load_before = os.getloadavg()
    log(f"simulating {n:,} events ({args.malformed:.1%} malformed)")
    messages = simulate(n, args.malformed)
    dbs = Databases(args.pg)
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.embedded.yaml", home / "dagster.yaml")
    drains: list[dict[str, Any]] = []
    with EmbeddedBroker() as broker, contextlib.ExitStack() as stack:
        stack.callback(dbs.drop_all)
        serving_url = dbs.create("serving")
        now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        serve_tables(PostgresServingResource(url=serving_url), now - dt.timedelta(hours=3))
        admin = KafkaResource(bootstrap_servers=broker.bootstrap_servers)
        topic, dlq = new_topic(admin, "bench_metrics")
        log("producing")
        produced = admin.produce_all(topic, messages)
        assert produced == n, produced
        del messages
        per_partition = admin.high_watermarks(topic)
        lab = Lab(broker, topic, dlq, dbs, serving_url, home, tmp, n)
        # A B K W, W K B A, ...: drift over the run falls on every condition alike.
        probes: list[dict[str, Any]] = []
        for rep in range(1, args.reps + 1):
            kinds = ["A", "B", "K", "W"]
            for kind in kinds if rep % 2 else kinds[::-1]:
                label = f"{kind}{rep}"
                if kind in ("A", "B"):
                    drains.append(lab.drain_with_api(label, kind == "B", quiet))
                else:
                    name = "kafka" if kind == "K" else "warehouse"
                    probes.append(probe_drain(lab, quiet, label, (name,), api_cadence=True))
        sources = probe_drain(lab, quiet, "S", tuple(SOURCE_NAMES), api_cadence=False)
        sources["probes"] = probes
    total_s = time.perf_counter() - t_start
    load_after = os.getloadavg()
    report(
        args, command, n, per_partition, drains, sources, quiet, load_before, load_after, total_s
    )


def report(
    args: argparse.Namespace,
    command: str,
    n: int,
    per_partition: dict[int, int],
    drains: list[dict[str, Any]],
    sources: dict[str, Any],
    quiet: Quiet,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    total_s: float,
) -> None:
    a = [d for d in drains if not d["scraped"]]
    b = [d for d in drains if d["scraped"]]
    a_mean = statistics.fmean(d["rate"] for d in a)
    b_mean = statistics.fmean(d["rate"] for d in b)
    ratio = b_mean / a_mean
    # Adjacent pairs in the A B B A order: (A1, B1), (B2, A2), ...
    pairs = [(d1, d2) for d1, d2 in zip(drains[0::2], drains[1::2], strict=False)]
    pair_ratios = [
        (y["rate"] / x["rate"]) if y["scraped"] else (x["rate"] / y["rate"]) for x, y in pairs
    ]

    def spread(group: list[dict[str, Any]]) -> float:
        rates = [d["rate"] for d in group]
        return (max(rates) - min(rates)) / statistics.fmean(rates) if len(rates) > 1 else 0.0

    noise = max(spread(a), spread(b))
    allowed = max(SLOWDOWN_FLOOR, noise)
    slowdown_met = ratio >= 1 - allowed
    all_scrapes = [s for d in b for s in d["scrapes"]]
    ok = [s for s in all_scrapes if s["status"] == 200]
    non_200 = len(all_scrapes) - len(ok)
    sl = stats(lat(all_scrapes))
    p99_met = bool(all_scrapes) and sl["p99"] < TARGET_P99_S and non_200 == 0
    cpus = os.cpu_count() or 1

    drain_rows = [
        "| Drain (in run order) | /metrics scraped | events/s | drain() s | drain CPU s | "
        "API CPU s | broker CPU s | scrapes (non-200) | scrape p50 / p99 / max |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for d in drains:
        sc = stats(lat(d["scrapes"]))
        drain_rows.append(
            f"| {d['label']} | {'every 1 s' if d['scraped'] else 'no'} | {fmt(d['rate'])} | "
            f"{d['seconds']:.2f} | {d['drain_cpu_s']:.1f} | {d['api_cpu_s']:.2f} | "
            f"{d['broker_cpu_s']:.1f} | "
            + (
                f"{sc['n']} ({d['non_200']}) | {ms(sc['p50'])} / {ms(sc['p99'])} / "
                f"{ms(sc['max'])} |"
                if d["scraped"]
                else "- | - |"
            )
        )
    summary_rows = [
        "| Measurement | Figure | Target |",
        "|---|---:|---|",
        f"| Scrapes of /metrics during the B drains | {sl.get('n', 0)} ({non_200} not 200) | |",
        f"| Scrape latency p50 | {ms(sl['p50'])} | |" if ok else "| p50 | - | |",
        f"| Scrape latency p90 | {ms(sl['p90'])} | |" if ok else "| p90 | - | |",
        (
            f"| **Scrape latency p99** (nearest rank) | **{ms(sl['p99'])}** | < 200 ms: "
            f"**{'met' if p99_met else 'NOT met'}** |"
        )
        if ok
        else "| p99 | - | |",
        f"| Scrape latency max | {ms(sl['max'])} | |" if ok else "| max | - | |",
        f"| Ingest, A: nobody scrapes (mean of {len(a)}) | {fmt(a_mean)} ev/s | |",
        f"| Ingest, B: /metrics every 1 s (mean of {len(b)}) | {fmt(b_mean)} ev/s | |",
        (
            f"| **B / A** | **{ratio:.3f}** (per adjacent pair: "
            + ", ".join(f"{r:.3f}" for r in pair_ratios)
            + f"; same-condition spread {noise:.1%}) | no measurable slowdown (B/A >= "
            f"{1 - allowed:.3f}): **{'met' if slowdown_met else 'NOT met'}** |"
        ),
    ]
    before_rows = [
        "| Scrape outside the drains | per drain (in run order) |",
        "|---|---|",
        "| first scrape after `astra api` started (before the drain; every source read, "
        "lake attached) | " + ", ".join(ms(d["before"]["seconds"]) for d in drains) + " |",
        "| first scrape past the cache after the drain that showed lag 0 and all rows "
        "counted | "
        + ", ".join(
            f"{d['label']}: {ms(d['after']['seconds'])}"
            + (
                f" (after {len(d['after']['stale'])} stale answer(s) "
                f"{CACHE_S + 0.5:.1f} s apart: "
                + "; ".join(
                    f"lag {t['lag']:,.0f}, {t['ingested']:,.0f} ingested"
                    for t in d["after"]["stale"]
                )
                + ")"
                if d["after"].get("stale")
                else ""
            )
            for d in drains
        )
        + " |",
    ]

    samples = sources["samples"]
    probes = sources.get("probes", [])
    cadence: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for probe in probes:
        for key, values in probe["samples"].items():
            cadence[key].extend(v for v in values if v["phase"] == "drain")
    src_rows = [
        "| Source read alone during a drain | n | p50 | p99 | max | "
        "first read (before the drain) | second read (before the drain) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = SOURCE_NAMES
    for key, name in names.items():
        during = [s["seconds"] for s in samples[key] if s["phase"] == "drain"]
        first = [s["seconds"] for s in samples[key] if s["phase"] == "first"]
        again = [s["seconds"] for s in samples[key] if s["phase"] == "again"]
        st = stats(during)
        src_rows.append(
            f"| {name}, S drain | {st['n']} | {ms(st['p50'])} | {ms(st['p99'])} | "
            f"{ms(st['max'])} | {ms(first[0])} | {ms(again[0])} |"
        )
        if cadence.get(key):
            st = stats([s["seconds"] for s in cadence[key]])
            src_rows.append(
                f"| {name}, {'K' if key == 'kafka' else 'W'} drains (API cadence) | {st['n']} | "
                f"{ms(st['p50'])} | {ms(st['p99'])} | {ms(st['max'])} | | |"
            )
    sum_during = [
        sum(samples[k][i]["seconds"] for k in names)
        for i, s in enumerate(samples["kafka"])
        if s["phase"] == "drain"
    ]
    st = stats(sum_during)
    src_rows.append(
        f"| all four in a row, S drain (one refresh of every source) | {st['n']} | "
        f"{ms(st['p50'])} | {ms(st['p99'])} | {ms(st['max'])} | | |"
    )

    def steps(key: str) -> list[str]:
        during = [s for s in samples[key] if s["phase"] == "drain"] + cadence.get(key, [])
        totals: dict[str, list[float]] = defaultdict(list)
        for s in during:
            for step, seconds in s["steps"].items():
                totals[step].append(seconds)
        out = []
        for step, v in sorted(totals.items(), key=lambda kv: -statistics.fmean(kv[1])):
            if step.startswith("#"):
                continue
            calls = totals.get(f"#{step}", [0])
            out.append(
                f"`{step}` {statistics.median(calls):.0f} call(s), p50 {ms(percentile(v, 50))}, "
                f"max {ms(max(v))}"
            )
        return out

    kafka_steps = steps("kafka")
    diagnosis = where_time_goes(samples, list(names))
    warehouse_steps = steps("warehouse")
    refreshes = [s for s in samples["warehouse"] if s["phase"] == "drain"] + cadence.get(
        "warehouse", []
    )
    growth = (
        "Each `IngestTallies.refresh()` during a drain (time, with the clean rows counted so "
        "far): "
        + ", ".join(
            f"{ms(s['seconds'])} at {s['ingested']:,}"
            for s in sorted(refreshes, key=lambda s: s["ingested"])
        )
        + "."
        if refreshes
        else ""
    )
    sources_line = (
        f"The S drain: {fmt(sources['drain']['rate'])} ev/s "
        f"({sources['drain']['seconds']:.2f} s) while this process read the four sources "
        f"back to back (prober CPU {sources['drain']['prober_cpu_s']:.1f} s)."
    )

    attribution = [
        "| Drain (in run order) | read during the drain | events/s | / mean of A | "
        "CPU of the reader (API or prober) s | drain CPU s | broker CPU s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    rows: list[tuple[str, str, dict[str, Any], float]] = []
    for d in drains:
        what = "`/metrics` every 1 s (API)" if d["scraped"] else "nothing (API idle)"
        rows.append((d["label"], what, d, d["api_cpu_s"]))
    for probe in probes:
        what = f"{SOURCE_NAMES[probe['names'][0]]} alone, at the API's cadence"
        rows.append((probe["label"], what, probe["drain"], probe["drain"]["prober_cpu_s"]))
    rows.append(
        ("S", "all four sources back to back", sources["drain"], sources["drain"]["prober_cpu_s"])
    )
    for label, what, d, reader_cpu in sorted(rows, key=lambda r: r[2]["ended_at"]):
        attribution.append(
            f"| {label} | {what} | {fmt(d['rate'])} | {d['rate'] / a_mean:.3f} | "
            f"{reader_cpu:.2f} | {d['drain_cpu_s']:.1f} | {d['broker_cpu_s']:.1f} |"
        )
    kinds: dict[str, list[float]] = defaultdict(list)
    for probe in probes:
        kinds[probe["label"][0]].append(probe["drain"]["rate"])
    attribution_line = "; ".join(
        [f"B/A {ratio:.3f}"]
        + [f"{k}/A {statistics.fmean(v) / a_mean:.3f}" for k, v in sorted(kinds.items())]
        + [f"S/A {sources['drain']['rate'] / a_mean:.3f}"]
    )

    gates = "; ".join(
        f"{g['phase']}: load {g['load_1m']:.2f}"
        + (f", waited {g['waited_s']:.0f} s" if g["waited_s"] >= 1 else "")
        + (" (measured anyway: wait budget spent)" if g["forced"] else "")
        + (" (bench/api.py running)" if g["others"] else "")
        for g in quiet.phases
    )
    others_during = sorted({d["label"] for d in drains if d["others_after"]})
    machine_note = (
        f"{machine()}; 1-minute load average {load_before[0]:.1f} at the start, "
        f"{load_after[0]:.1f} at the end on {cpus} CPUs; run time {total_s:.0f} s. "
        f"Before each phase the run waited for no `bench/api.py` and a 1-minute load under "
        f"{args.max_load} (polled every 30 s, {quiet.waited_s:.0f} s waited in all"
        + (
            "; the 25-minute wait budget ran out, so some phases ran on a busy machine"
            if quiet.gave_up
            else ""
        )
        + f"). Load when each phase began: {gates}."
        + (
            f" `bench/api.py` was running at the end of drain(s) {', '.join(others_during)}."
            if others_during
            else " No `bench/api.py` ran at the end of any drain."
        )
    )

    print(
        json.dumps(
            {
                "drains": [{k: v for k, v in d.items() if k != "scrapes"} for d in drains],
                "a_mean": a_mean,
                "b_mean": b_mean,
                "ratio": ratio,
                "scrape_stats": sl,
            },
            indent=2,
            default=str,
        )
    )
    print("\n".join(summary_rows))
    print()
    print("\n".join(drain_rows))
    print()
    print("\n".join(before_rows))
    print()
    print("\n".join(src_rows))
    print()
    print("LagProbe.lag() steps: " + "; ".join(kafka_steps))
    print("IngestTallies.refresh() steps: " + "; ".join(warehouse_steps))
    print(growth)
    print(diagnosis)
    print()
    print("\n".join(attribution))
    print(attribution_line)
    print(sources_line)
    print(machine_note)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "command": command,
                    "drains": drains,
                    "sources": sources,
                    "quiet": quiet.phases,
                    "per_partition": per_partition,
                },
                indent=1,
                default=str,
            )
        )
    log(f"total {total_s:.0f}s")
    if not args.write_docs:
        return

    split = ", ".join(f"p{p}: {c:,}" for p, c in sorted(per_partition.items()))
    everything = [(d["label"], d["ended_at"]) for d in drains] + [
        (probe["label"], probe["drain"]["ended_at"]) for probe in [*probes, sources]
    ]
    order = ", ".join(label for label, _ in sorted(everything, key=lambda x: x[1]))
    slowest = sorted(all_scrapes, key=lambda s: -s["seconds"])[:5]
    slow_line = ", ".join(f"{ms(s['seconds'])} at {s['t']:.1f} s" for s in slowest)
    p99_word = "met" if p99_met else "NOT met"
    slow_word = "met" if slowdown_met else "NOT met"
    p99_text = f"{ms(sl['p99'])}, p50 {ms(sl['p50'])}, max {ms(sl['max'])}" if ok else "no scrapes"
    pairs_text = ", ".join(f"{r:.3f}" for r in pair_ratios)
    a_api_cpu = statistics.fmean(d["api_cpu_s"] for d in a)
    direction = (
        f" Every pair was below 1 (B slower each time): a slowdown of about {1 - ratio:.0%} "
        "is likely, smaller than this machine's run-to-run noise."
        if slowdown_met and pair_ratios and all(r < 1 for r in pair_ratios)
        else ""
    )
    stale_after = [d for d in drains if d["after"].get("stale")]
    stale_line = (
        f"\nAfter {len(stale_after)} of {len(drains)} drains, the first scrape past the "
        f"{CACHE_S:.0f} s cache (5.5 s after the drain's end) still answered with a reading "
        "from before the end (for an unscraped drain, the backlog as it was before the "
        "drain); the next scrape, 5.5 s later, was current. The scrape that finds a reading "
        "older than the cache starts its refresh in the background and answers with the "
        "previous reading, so what `/metrics` reports is about one scrape interval old "
        f"(plus the refresh){compose_interval()}.\n"
        if stale_after
        else ""
    )
    section = f"""{SECTION}

Measured by `bench/metrics_scrape.py` on {dt.date.today().isoformat()}, from the repository
root:

```
{command}
```

Machine: {machine_note}

One run: one embedded broker, {n:,} simulated events ({args.malformed:.0%} malformed) in a
{PARTITIONS}-partition topic ({split}), fresh databases on the local Postgres (one serving
copy with the tests' synthetic serving tables, one lake catalog per drain), an empty
Dagster instance as DAGSTER_HOME. Each drain reads the whole topic with its own consumer
group into a fresh lake: `drain()` (batch {BATCH:,}) in a child process, timed around the
call. Before each drain a real `astra api` starts with that drain's topic, consumer group
and lake, and one scrape checks it sees the whole backlog as lag ({n:,}); after each drain,
scrapes past the {CACHE_S:.0f} s cache (one every 5.5 s, at most 5) must reach lag 0 and
the drain's clean rows as ingested. A: nobody scrapes during the drain (the API idles).
B: a thread of the benchmark process GETs `/metrics` every 1 s (fixed schedule, one
keep-alive connection, like Prometheus) from the start of `drain()` to its end; latency
is the request to the end of the body. Every scrape answered with all four sources up
(kafka, warehouse, serving, dagster). Run order (with the K, W and S drains described
below): {order}.

{chr(10).join(summary_rows)}

{chr(10).join(drain_rows)}

API CPU s is the `astra api` process's CPU time (user + system) during the drain: what the
scrapes cost it. With fewer than 100 scrapes, the nearest-rank p99 is the slowest scrape.
Slowest scrapes (time from the start of the drain): {slow_line}.

{chr(10).join(before_rows)}
{stale_line}
What each source costs, and what slows the drain: more drains without an API, during
which the benchmark process itself reads the sources the collector reads (built as
`astra api` builds them, for that drain's group and lake), each read timed. K: only
`LagProbe.lag()`; W: only `IngestTallies.refresh()`; both at the API's cadence under a
1 s scrape interval (one read, then {API_CADENCE_PAUSE_S:.1f} s answered from the
{CACHE_S:.0f} s cache). S: all four sources in a row (kafka, warehouse, serving, dagster:
one refresh of every source), on a 1 s schedule, back to back when a round takes
longer. The A drains are the baseline (their API idles: {a_api_cpu:.2f} s of CPU per
drain).

{chr(10).join(attribution)}

{attribution_line}. "CPU of the reader" is the `astra api` process's CPU time during the
drain for A and B, the benchmark process's (its reader thread, with its librdkafka
threads) for K, W and S.

{chr(10).join(src_rows)}

- `LagProbe.lag()`, by step (summed per `lag()`; its `_true_end` and `_age` include the
  consumer calls made inside them): {"; ".join(kafka_steps)}.
- `IngestTallies.refresh()`, by query: {"; ".join(warehouse_steps)}. {growth}
- {sources_line}

{diagnosis}

Targets:

- Scrape p99 under 200 ms while ingest drains a {n:,}-event backlog: **{p99_word}**
  (p99 {p99_text}, {sl.get("n", 0)} scrapes, {non_200} not 200).
- No measurable slowdown of ingest with a 1 s scrape interval: **{slow_word}** (B/A
  {ratio:.3f}; pairs {pairs_text}; the two runs of one condition differ by up to
  {noise:.1%}, so a difference under {allowed:.1%} is not measurable here).{direction}
"""
    output = Path(args.output)
    old = output.read_text() if output.exists() else ""
    if SECTION in old:  # a re-run replaces its own section, keeps what follows it
        head, rest = old.split(SECTION, 1)
        following = re.search(r"^## ", rest, flags=re.MULTILINE)
        tail = rest[following.start() :] if following else ""
        old = head.rstrip() + "\n" + ("\n" + tail if tail else "")
    if old and not old.endswith("\n"):
        old += "\n"
    output.write_text(old + ("\n" if old else "") + section)
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
