"""`astra api` benchmark: the ingestion gateway and the read API, in one run.

One embedded (Tansu, in-memory) broker, one fresh Postgres database on --pg (dropped at
the end), one real `astra api` process (uvicorn, loopback, no keys, rate limit 1e9) whose
warehouse is an empty lake of its own (a second fresh database on --pg as its catalog,
dropped at the end, and a temporary folder; nothing here reads it):

1. serving tables loaded through PostgresServingResource.replace_partition (the serving
   copy's own DELETE + COPY), then VACUUM ANALYZEd: agg.sensor_1m with DEVICES x MINUTES rows
   (1,000 x 1,000 = 1,000,000), ml.alerts (1,000 per device: 1,000,000),
   ml.churn_scores and features.user_churn (100,000 users x 10 days: 1,000,000 each).
   `astra api` starts after them and makes its read indexes at start; the bench waits
   for that round (its log line) and records which exist;
2. batch POSTs: POST /v1/events with JSON arrays of 500 distinct sensor readings from
   --batch-conns concurrent connections (a Python httpx client in a process of its own)
   for --batch-seconds; events/s = events answered "accepted" / wall time;
3. baseline: the direct confluent-kafka Producer (acks=all, idempotent, linger.ms=5 like
   the gateway's) producing the same number of the same event bytes (same keys, same
   x-request-id header) to a fresh topic of the same broker, twice, in a process of its
   own; ratio = gateway / the faster direct run (the physical ceiling);
4. single-event POSTs with `hey` at a fixed rate (--single-rate, default 200 requests/s)
   and concurrency (--single-conns, 20): evenly spaced (20 `hey -c 1 -q 10` processes
   started 5 ms apart) and as one `hey -c 20 -q 10` (hey's -q is per worker, and its
   workers fire together: bursts of 20 every 100 ms); then the 20 workers unthrottled
   (saturated); requests/s and p50/p99 latency. The floor: the direct producer with the
   gateway's settings, one message at a time at the same rate, produce -> delivery;
5. WebSocket /v1/ws/events: --ws-conns connections, each sending arrays of 500 events and
   awaiting the ack of each message before the next (the `websockets` client);
6. reads with `wrk` (a Lua script picks a random device or user per request): windows
   (/v1/devices/{id}/windows?resolution=1m, a 100-minute range, limit=100: 100 rows),
   alerts (/v1/alerts?device_id=..&limit=100) and churn (/v1/users/{id}/churn), each
   paced (10 connections, random pauses of mean 50 ms between a connection's requests:
   below 200 requests/s) and saturated (--read-conns connections, no pause); p50/p99
   from wrk --latency. If `astra api` did not make all its read indexes, the bench
   makes the missing ones (same names and columns) and measures those endpoints again.

CPU time (user + system) of the gateway process and of the broker is read from /proc
around each phase; each load process reports its own. Every event answered "accepted"
must be in the gateway's topic at the end (counted by consuming the topic: Tansu's high
watermarks trail a little), else the run fails. The run waits for a 1-minute load
average under --max-load first.

With --py-spy PATH (py-spy installed anywhere, e.g. a throwaway venv), the gateway is
profiled during the batch phase and the saturated single-event phase.

Usage: .venv/bin/python bench/api.py [--write-docs] [--py-spy /tmp/pyspy-venv/bin/py-spy]
Needs `hey` and `wrk` (Debian: apt-get install -y hey wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import csv
import datetime as dt
import io
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench_util import TICKS, fmt, invocation, latency_ms, log, machine, proc_cpu

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## astra api (gateway and read API)"
END_MARK = "<!-- end of bench/api.py output: notes below this line are kept on rewrite -->"
PARTITIONS = 6
BATCH = 500
MARK = "@@@@@@@@@@@@"  # replaced per batch: distinct event ids in every request
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)  # the read tables' first minute / day
TARGET_BATCH = 50_000
TARGET_SINGLE_P99_MS = 25.0
TARGET_READ_P99_MS = 20.0
PACED_CONNS = 10
PACED_PAUSE_MS = 50
WINDOW_SPAN_MIN = 100
READ_KINDS = {  # read load -> the serving tables it queries
    "windows": ("sensor_1m",),
    "alerts": ("alerts",),
    "churn": ("churn_scores", "user_churn"),
}


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all CPUs) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / TICKS  # less idle and iowait


def reaped() -> float:
    """CPU seconds of this process's children that ended (load processes, hey, wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- events


def batch_template(devices: int, ts: str) -> tuple[list[bytes], list[bytes]]:
    """BATCH sensor readings as the gateway produces them (msgspec, insertion order) and
    their keys; every event_id holds MARK, replaced per batch."""
    import msgspec

    values, keys = [], []
    for i in range(BATCH):
        device = f"dev-{(i * 7) % devices:05d}"
        event = {
            "event_type": "sensor_reading",
            "event_id": f"ev-{MARK}-{i:03d}",
            "device_id": device,
            "ts": ts,
            "temperature_c": round(15 + (i % 100) / 10, 1),
            "humidity_pct": 40.0 + i % 20,
            "battery_pct": 90.0,
            "lat": 1.0,
            "lon": 2.0,
            "status": "ok",
        }
        values.append(msgspec.json.encode(event))
        keys.append(device.encode())
    return values, keys


def array_body(values: list[bytes]) -> bytes:
    return b"[" + b",".join(values) + b"]"


# ---------------------------------------------------------------- load processes


def child_post(params: dict[str, Any]) -> dict[str, Any]:
    """POST arrays of BATCH events from ``conns`` connections for ``seconds``."""
    import httpx

    body = array_body([v.encode() for v in params["values"]])
    mark = MARK.encode()
    conns, seconds = params["conns"], params["seconds"]
    stats: dict[str, Any] = {"accepted": 0, "requests": 0, "statuses": collections.Counter()}
    latencies: list[float] = []

    async def run() -> float:
        limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
        async with httpx.AsyncClient(base_url=params["url"], limits=limits, timeout=60) as client:
            deadline = time.perf_counter() + seconds

            async def worker(w: int) -> None:
                n = 0
                while time.perf_counter() < deadline:
                    payload = body.replace(mark, f"pb{w:02x}{n:08x}".encode())
                    began = time.perf_counter()
                    r = await client.post(
                        "/v1/events", content=payload, headers={"content-type": "application/json"}
                    )
                    latencies.append(time.perf_counter() - began)
                    stats["requests"] += 1
                    stats["statuses"][r.status_code] += 1
                    if r.status_code == 200:
                        stats["accepted"] += r.content.count(b'"accepted"')
                    n += 1

            began = time.perf_counter()
            await asyncio.gather(*(worker(w) for w in range(conns)))
            return time.perf_counter() - began

    wall = asyncio.run(run())
    return {
        "wall_s": wall,
        "accepted": stats["accepted"],
        "requests": stats["requests"],
        "statuses": {str(k): v for k, v in stats["statuses"].items()},
        **latency_ms(latencies),
    }


def child_ws(params: dict[str, Any]) -> dict[str, Any]:
    """Arrays of BATCH events over ``conns`` WebSockets, one ack awaited per message."""
    import websockets

    body = array_body([v.encode() for v in params["values"]])
    mark = MARK.encode()
    conns, seconds = params["conns"], params["seconds"]
    stats: dict[str, Any] = {"accepted": 0, "messages": 0, "errors": collections.Counter()}
    latencies: list[float] = []

    async def run() -> float:
        deadline = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            async with websockets.connect(
                params["url"],
                max_size=None,
                compression="deflate" if params["compression"] else None,
            ) as sock:
                n = 0
                while time.perf_counter() < deadline:
                    payload = body.replace(mark, f"ws{w:02x}{n:08x}".encode())
                    began = time.perf_counter()
                    await sock.send(payload)
                    reply = await sock.recv()
                    latencies.append(time.perf_counter() - began)
                    text = reply if isinstance(reply, str) else reply.decode()
                    stats["messages"] += 1
                    if text.startswith('{"results"'):
                        stats["accepted"] += text.count('"accepted"')
                    else:
                        stats["errors"][text[:120]] += 1
                    n += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(conns)))
        return time.perf_counter() - began

    wall = asyncio.run(run())
    return {
        "wall_s": wall,
        "accepted": stats["accepted"],
        "messages": stats["messages"],
        "errors": dict(stats["errors"]),
        **latency_ms(latencies),
    }


def child_direct(params: dict[str, Any]) -> dict[str, Any]:
    """The same events straight to Kafka: confluent-kafka, acks=all, idempotent."""
    from confluent_kafka import Producer

    values = [v.encode() for v in params["values"]]
    keys = [k.encode() for k in params["keys"]]
    mark = MARK.encode()
    errors = [0]

    def on_delivery(error: Any, message: Any) -> None:
        if error is not None:
            errors[0] += 1

    producer = Producer(
        {
            "bootstrap.servers": params["servers"],
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 200_000,
            "delivery.report.only.error": True,
            "on_delivery": on_delivery,
            "log_level": 3,
        }
    )
    topic = params["topic"]
    producer.list_topics(topic, timeout=10)  # connected before the clock starts
    batches = -(-params["events"] // BATCH)
    began = time.perf_counter()
    for n in range(batches):
        tag = f"dr{0:02x}{n:08x}".encode()
        headers = [("x-request-id", uuid.uuid4().hex.encode())]
        for value, key in zip(values, keys, strict=True):
            while True:
                try:
                    producer.produce(
                        topic, value=value.replace(mark, tag), key=key, headers=headers
                    )
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(60)
    wall = time.perf_counter() - began
    return {"wall_s": wall, "events": batches * BATCH, "errors": errors[0], "unflushed": left}


def child_direct_latency(params: dict[str, Any]) -> dict[str, Any]:
    """The floor of a single event's latency: the same producer settings as the gateway,
    one message at a time at ``rate`` per second, each awaited (produce -> delivery)."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": params["servers"],
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "log_level": 3,
        }
    )
    topic = params["topic"]
    producer.list_topics(topic, timeout=10)
    value = params["values"][0].replace(MARK, "latency00000").encode()
    key = params["keys"][0].encode()
    warm: list[int] = []  # the idempotent producer's id and the partition's leader first
    producer.produce(topic, value=value, key=key, on_delivery=lambda e, m: warm.append(1))
    while not warm:
        producer.poll(0.05)
    latencies: list[float] = []
    count = int(params["rate"] * params["seconds"])
    began = time.perf_counter()
    for n in range(count):
        while time.perf_counter() < began + n / params["rate"]:
            time.sleep(0.0005)
        done: list[float] = []
        sent = time.perf_counter()
        producer.produce(
            topic,
            value=value,
            key=key,
            on_delivery=lambda e, m, d=done: d.append(time.perf_counter()),
        )
        while not done:
            producer.poll(0.05)
        latencies.append((done[0] - sent) * 1000)
    producer.flush(10)
    latencies.sort()
    return {
        "events": count,
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99)],
        "slowest_ms": latencies[-1],
    }


CHILDREN = {
    "post": child_post,
    "ws": child_ws,
    "direct": child_direct,
    "direct_latency": child_direct_latency,
}


def count_messages(servers: str, topic: str, timeout_s: float = 180) -> int:
    """The messages in ``topic``, read from offset 0 (Tansu's high watermarks trail the
    true end by a little: counting them is not a check)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"bench-api-count-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        count, empty, deadline = 0, 0, time.monotonic() + timeout_s
        while empty < 3 and time.monotonic() < deadline:
            messages = consumer.consume(10_000, 1.0)
            good = sum(1 for m in messages if m.error() is None)
            count += good
            empty = empty + 1 if not good else 0
        return count
    finally:
        consumer.close()


GC_WRAPPER = """
import gc, sys, time
_began = [0.0]
def _gc(phase, info):
    if info["generation"] != 2:
        return
    if phase == "start":
        _began[0] = time.perf_counter()
    else:
        print(f"astra-bench-gc {time.time():.3f} {1000 * (time.perf_counter() - _began[0]):.1f}",
              file=sys.stderr, flush=True)
gc.callbacks.append(_gc)
sys.argv = ["astra", *sys.argv[1:]]
from astra_pipeline.entry import main
sys.exit(main())
"""


def gc_logged_api_class() -> Any:
    from astra_pipeline_tests.api_server import ApiProcess

    class GcLogged(ApiProcess):
        """`astra api` through GC_WRAPPER: the same process, its gen2 collections logged."""

        def __init__(self, env: dict[str, str], log_path: Path) -> None:
            from astra_pipeline_tests.api_server import free_port

            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self._log = log_path.open("wb")
            self.log_path = log_path
            self.process = subprocess.Popen(
                [sys.executable, "-c", GC_WRAPPER, "api", "--port", str(self.port)],
                env={**os.environ, **env},
                cwd=ROOT,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    return GcLogged


def gc_pauses(api: Any) -> Any:
    """A function of a phase's (perf_counter) start and end: the gateway's gen2
    collections in it, as {"count", "total_ms", "max_ms"}."""
    offset = time.time() - time.perf_counter()

    def between(start: float, end: float) -> dict[str, float]:
        pauses = [
            float(ms)
            for _, at, ms in re.findall(r"^(astra-bench-gc) ([\d.]+) ([\d.]+)$", api.log(), re.M)
            if start + offset <= float(at) <= end + offset
        ]
        return {
            "count": len(pauses),
            "total_ms": round(sum(pauses), 1),
            "max_ms": max(pauses, default=0.0),
        }

    return between


def run_child(mode: str, params: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """A load process of its own (so its CPU is its own); its JSON result, with its CPU."""
    spec = tmp / f"{mode}-{uuid.uuid4().hex[:6]}.json"
    spec.write_text(json.dumps(params))
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise SystemExit(f"load process {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(mode: str, spec: str) -> None:
    params = json.loads(Path(spec).read_text())
    result = CHILDREN[mode](params)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["client_cpu_s"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(result))


# ---------------------------------------------------------------- hey and wrk

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_hey(text: str) -> dict[str, Any]:
    def number(pattern: str) -> float:
        found = re.search(pattern, text)
        return float(found.group(1)) if found else float("nan")

    percentiles = {int(p): float(v) * 1000 for p, v in re.findall(r"(\d+)% in ([\d.]+) secs", text)}
    statuses = {k: int(v) for k, v in re.findall(r"\[(\d+)\]\s+(\d+) responses", text)}
    errors = re.findall(r"\[(\d+)\]\s+(Post|Get) .*", text)
    return {
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "total_s": number(r"Total:\s+([\d.]+) secs"),
        "p50_ms": percentiles.get(50, float("nan")),
        "p90_ms": percentiles.get(90, float("nan")),
        "p99_ms": percentiles.get(99, float("nan")),
        "slowest_ms": number(r"Slowest:\s+([\d.]+) secs") * 1000,
        "statuses": statuses,
        "errors": sum(int(n) for n, _ in errors),
    }


def parse_wrk(text: str) -> dict[str, Any]:
    percentiles = {
        int(p): float(v) * UNITS[u]
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    }
    requests = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {
        "rps": float(rps.group(1)) if rps else float("nan"),
        "requests": int(requests.group(1)) if requests else 0,
        "p50_ms": percentiles.get(50, float("nan")),
        "p90_ms": percentiles.get(90, float("nan")),
        "p99_ms": percentiles.get(99, float("nan")),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


WRK_SCRIPT = """
local kind, pause = "%(kind)s", %(pause)d
local devices, minutes, users, span = %(devices)d, %(minutes)d, %(users)d, %(span)d
local t0 = %(t0)d
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end
local function iso(t) return os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", t) end
function request()
  local path
  if kind == "windows" then
    local m = math.random(0, minutes - span)
    path = string.format(
      "/v1/devices/dev-%%05d/windows?resolution=1m&from=%%s&to=%%s&limit=100",
      math.random(0, devices - 1), iso(t0 + m * 60), iso(t0 + (m + span) * 60))
  elseif kind == "alerts" then
    path = string.format("/v1/alerts?device_id=dev-%%05d&limit=100", math.random(0, devices - 1))
  else
    path = string.format("/v1/users/user-%%06d/churn", math.random(0, users - 1))
  end
  return wrk.format("GET", path)
end
if pause > 0 then
  -- random (exponential) pauses: the connections do not fire in lockstep
  function delay() return math.floor(-math.log(1 - math.random()) * pause) end
end
"""


def run_wrk(
    wrk: str, url: str, kind: str, conns: int, pause: int, seconds: int, args: Any, tmp: Path
) -> dict[str, Any]:
    script = tmp / f"wrk-{kind}-{pause}.lua"
    script.write_text(
        WRK_SCRIPT
        % {
            "kind": kind,
            "pause": pause,
            "devices": args.devices,
            "minutes": args.minutes,
            "users": args.users,
            "span": WINDOW_SPAN_MIN,
            "t0": int(T0.timestamp()),
        }
    )
    threads = min(2, conns)
    command = [wrk, f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script)]
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed: {done.stderr}")
    result = parse_wrk(done.stdout)
    result["command"] = " ".join(shlex.quote(c) for c in [*command, url])
    return result


# ---------------------------------------------------------------- serving tables


def load_serving(pg: str, args: argparse.Namespace) -> dict[str, Any]:
    """The read tables through the serving copy's own replace (DELETE + COPY)."""
    import polars as pl

    from astra_pipeline.assets.serving import (
        AGG_SPECS,
        ALERTS_SPEC,
        CHURN_SCORES_SPEC,
        USER_CHURN_SPEC,
    )
    from resources.serving import PostgresServingResource, ServingTableSpec

    serving = PostgresServingResource(url=pg)
    sensor = next(s for s in AGG_SPECS if s.table == "agg.sensor_1m")
    loaded: dict[str, Any] = {}

    def load(spec: ServingTableSpec, frame: pl.DataFrame, start: dt.datetime, end: Any) -> None:
        began = time.perf_counter()
        serving.ensure_table(spec)
        serving.replace_partition(spec, frame.select(spec.column_names), start=start, end=end)
        loaded[spec.table] = {"rows": frame.height, "seconds": time.perf_counter() - began}
        log(f"  {spec.table}: {frame.height:,} rows in {loaded[spec.table]['seconds']:.1f}s")

    d, m = args.devices, args.minutes
    i = pl.int_range(0, d * m, eager=True).alias("i").to_frame()
    device = pl.format("dev-{}", (pl.col("i") % d).cast(pl.String).str.zfill(5))
    noise = (pl.col("i") * 7919 % 1000).cast(pl.Float64) / 100
    minute = pl.lit(T0) + pl.duration(minutes=pl.col("i") // d)
    stats = {
        f"{metric}_{stat}": base + noise + shift
        for metric, base in (("temperature_c", 15.0), ("humidity_pct", 40.0))
        for stat, shift in (
            ("mean", 0.0),
            ("min", -2.0),
            ("max", 2.0),
            ("stddev", -14.0),
            ("p95", 1.5),
        )
    }
    windows = i.select(
        device.alias("device_id"),
        minute.alias("window_start"),
        (minute + pl.duration(minutes=1)).alias("window_end"),
        (pl.col("i") % 60 + 1).alias("reading_count"),
        *(expr.alias(name) for name, expr in stats.items()),
        (100 - noise).alias("battery_min"),
        (pl.col("i") % 60 + 1).alias("count_ok"),
        pl.lit(0, pl.Int64).alias("count_degraded"),
        pl.lit(0, pl.Int64).alias("count_fault"),
    )
    load(sensor, windows, T0, T0 + dt.timedelta(minutes=m))
    del windows

    a = args.alerts_per_device
    j = pl.int_range(0, d * a, eager=True).alias("i").to_frame()
    span_s = m * 60
    alert_ts = pl.lit(T0) + pl.duration(seconds=(pl.col("i") // d) * span_s // a)
    alerts = j.select(
        pl.format("alert-{}", pl.col("i")).alias("alert_id"),
        pl.format("ev-{}", pl.col("i")).alias("event_id"),
        device.alias("device_id"),
        alert_ts.alias("ts"),
        (5 + noise).alias("score"),
        pl.lit("robust_z").alias("driver"),
        pl.lit("temperature_c").alias("metric"),
        pl.lit("temperature far from its baseline").alias("reason"),
        pl.lit("events_raw").alias("topic"),
        (pl.col("i") % PARTITIONS).cast(pl.Int32).alias("partition"),
        pl.col("i").alias("offset"),
        pl.lit("r1").alias("rule_version"),
        pl.lit(4.0).alias("threshold"),
        alert_ts.alias("created_at"),
        pl.lit(None, pl.String).alias("run_id"),
        pl.lit(None, pl.String).alias("publish_attempt"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("published_at"),
    )
    load(ALERTS_SPEC, alerts, T0, T0 + dt.timedelta(minutes=m))
    del alerts

    u, days = args.users, args.days
    k = pl.int_range(0, u * days, eager=True).alias("i").to_frame()
    user = pl.format("user-{}", (pl.col("i") % u).cast(pl.String).str.zfill(6))
    day = pl.lit(T0.date()) + pl.duration(days=pl.col("i") // u)
    day_end = T0 + dt.timedelta(days=days)
    scores = k.select(
        user.alias("user_id"),
        day.cast(pl.Date).alias("as_of_day"),
        (noise / 10).alias("churn_probability"),
        (noise > 5).alias("churn_predicted"),
        pl.lit("m1").alias("model_version"),
    )
    load(CHURN_SCORES_SPEC, scores, T0, day_end)
    del scores
    numbers = {
        c.name: (pl.col("i") % 30 if c.type == "bigint" else noise)
        for c in USER_CHURN_SPEC.columns
        if c.name not in ("user_id", "as_of_day", "max_event_ts")
    }
    features = k.select(
        user.alias("user_id"),
        day.cast(pl.Date).alias("as_of_day"),
        *(expr.alias(name) for name, expr in numbers.items()),
        pl.lit(T0).alias("max_event_ts"),
    )
    load(USER_CHURN_SPEC, features, T0, day_end)
    del features

    import psycopg

    began = time.perf_counter()
    with psycopg.connect(pg, autocommit=True) as conn:
        for table in loaded:  # now, not by autovacuum in the middle of a phase
            conn.execute(f"VACUUM ANALYZE {table}")
    log(f"  VACUUM ANALYZE: {time.perf_counter() - began:.1f}s")
    return loaded


def read_indexes(pg: str) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """The read indexes `astra api` means to make (resources/serving_reads.py) on the
    tables that exist: {index name: (schema, table, columns)}."""
    import psycopg

    from resources.serving_reads import READ_INDEXES

    with psycopg.connect(pg) as conn:
        return {
            f"api_{table}_{'_'.join(columns)}": (schema, table, columns)
            for schema, table, columns in READ_INDEXES
            if conn.execute("SELECT to_regclass(%s)", (f"{schema}.{table}",)).fetchone()[0]
        }


def existing_indexes(pg: str) -> set[str]:
    import psycopg

    with psycopg.connect(pg) as conn:
        return {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes").fetchall()}


def wait_read_indexes(api: Any, pg: str, timeout_s: float) -> dict[str, Any]:
    """Wait for the end of `astra api`'s first round of read indexes (made at start: its
    log says which, or why not); which of the indexes it means to make exist then."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        text = api.log()
        if "read index on" in text or "read indexes not created yet" in text:
            break
        time.sleep(0.5)
    else:
        raise SystemExit(f"astra api logged no read-index round in {timeout_s:.0f}s")
    wanted, present = read_indexes(pg), existing_indexes(pg)
    warning = next(
        (line for line in api.log().splitlines() if "read indexes not created yet" in line), None
    )
    return {
        "seconds": time.monotonic() - began,
        "made": sorted(set(wanted) & present),
        "missing": sorted(set(wanted) - present),
        "warning": warning,
        "wanted": wanted,
    }


def create_indexes(pg: str, wanted: dict[str, tuple[str, str, tuple[str, ...]]]) -> float:
    """The read indexes `astra api` did not make, made here with its own names and columns."""
    import psycopg
    from psycopg import sql

    began = time.perf_counter()
    with psycopg.connect(pg, autocommit=True) as conn:
        for name, (schema, table, columns) in wanted.items():
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                    sql.Identifier(name),
                    sql.Identifier(schema, table),
                    sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                )
            )
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table)))
    return time.perf_counter() - began


def api_backends(pg: str) -> list[int]:
    import psycopg

    with psycopg.connect(pg) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'astra-api'"
        ).fetchall()
    return [int(r[0]) for r in rows]


# ---------------------------------------------------------------- py-spy


def profile_summary(raw: Path, top: int = 25) -> list[tuple[str, float, float]]:
    """(function, inclusive share, self share) of the samples of a py-spy raw file."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return []
    return [(f, c / total, own[f] / total) for f, c in inclusive.most_common(top)]


# ---------------------------------------------------------------- the run


def wait_idle(max_load: float, wait_s: float) -> None:
    began = time.monotonic()
    while os.getloadavg()[0] > max_load:
        if time.monotonic() - began > wait_s:
            log(f"load still {os.getloadavg()[0]:.2f} after {wait_s:.0f}s: measuring anyway")
            return
        log(f"1-minute load average {os.getloadavg()[0]:.2f} > {max_load}: waiting 30 s")
        time.sleep(30)


def create_database(pg: str) -> tuple[str, str]:
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"astra_bench_api_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, make_conninfo(pg, dbname=name)


def drop_database(pg: str, name: str) -> None:
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--batch-seconds", type=int, default=20)
    parser.add_argument("--batch-conns", type=int, default=4)
    parser.add_argument("--direct-reps", type=int, default=2)
    parser.add_argument("--single-seconds", type=int, default=20)
    parser.add_argument("--single-rate", type=int, default=200, help="requests/s, total")
    parser.add_argument("--single-conns", type=int, default=20)
    parser.add_argument("--saturated-seconds", type=int, default=10)
    parser.add_argument("--ws-seconds", type=int, default=15)
    parser.add_argument("--ws-conns", type=int, default=2)
    parser.add_argument("--ws-compression", action="store_true", help="permessage-deflate")
    parser.add_argument("--read-seconds", type=int, default=10)
    parser.add_argument("--read-conns", type=int, default=8)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--minutes", type=int, default=1_000)
    parser.add_argument("--alerts-per-device", type=int, default=1_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument(
        "--no-complete-indexes",
        dest="complete_indexes",
        action="store_false",
        help="do not create (and measure with) the read indexes astra api failed to make",
    )
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--wait-idle", type=float, default=600, help="seconds, at most")
    parser.add_argument("--py-spy", help="py-spy binary: profile the gateway in the batch phase")
    parser.add_argument(
        "--gc-log",
        action="store_true",
        help="start the gateway through a wrapper that logs its full (gen2) garbage "
        "collections (gc.callbacks), and count them per phase",
    )
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--output", default=str(ROOT / "docs" / "performance.md"))
    parser.add_argument("--write-docs", action="store_true", help=f"write '{SECTION}'")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(*args.child)
        return
    command = invocation("api.py")
    tools = {name: shutil.which(name) for name in ("hey", "wrk")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        raise SystemExit(
            f"{' and '.join(missing)} not found on PATH: this bench drives `astra api` with "
            "hey (single-event POSTs) and wrk (reads). Debian: apt-get install -y hey wrk"
        )
    tmp = Path(tempfile.mkdtemp(prefix="astra-bench-api-"))
    try:
        run(args, command, tools, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, command: str, tools: dict[str, Any], tmp: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from astra_pipeline_tests.api_server import ApiProcess
    from resources.broker import EmbeddedBroker

    GcLoggedApi = gc_logged_api_class()
    from resources.kafka import KafkaResource

    wait_idle(args.max_load, args.wait_idle)
    load_before = os.getloadavg()
    started = time.perf_counter()
    db, pg = create_database(args.pg)
    lake_db = ""
    results: dict[str, Any] = {"command": command, "machine": machine()}
    api: ApiProcess | None = None
    try:
        # Not the lake of the environment: one of its own, empty (no lake is made in it).
        lake_db, lake_catalog = create_database(args.pg)
        log(f"loading the serving tables into database {db}")
        results["tables"] = load_serving(pg, args)
        with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
            servers = broker.bootstrap_servers
            kafka = KafkaResource(bootstrap_servers=servers)
            topic = f"bench_api_{uuid.uuid4().hex[:8]}"
            direct_topics = [f"{topic}_direct{r}" for r in range(args.direct_reps)]
            kafka.create_topics({topic: PARTITIONS, **{t: PARTITIONS for t in direct_topics}})
            env = {
                "ASTRA_KAFKA_BOOTSTRAP_SERVERS": servers,
                "ASTRA_TOPIC_RAW": topic,
                "ASTRA_PG_URL": pg,
                "ASTRA_LAKE_CATALOG": lake_catalog,
                "ASTRA_LAKE_DATA_PATH": str(tmp / "lake"),
                "ASTRA_LAKE_METADATA_SCHEMA": "astra_lake",
                "ASTRA_API_KEYS": "",
                "ASTRA_API_RATE_LIMIT_PER_S": "1e9",
            }
            api = (GcLoggedApi if args.gc_log else ApiProcess)(env, tmp / "api.log").wait_ready()
            log(f"astra api up on {api.url} (pid {api.process.pid})")
            indexes = wait_read_indexes(api, pg, 300)
            results["indexes"] = indexes
            log(
                f"astra api's read indexes after {indexes['seconds']:.1f}s: made "
                f"{indexes['made']}, missing {indexes['missing']}"
            )
            if indexes["warning"]:
                log(f"astra api warned: {indexes['warning']}")
            results.update(
                measure(args, api, broker, servers, topic, direct_topics, tools, pg, indexes, tmp)
            )
            log("checking that every accepted event is in the topic (consuming it)")
            in_topic = count_messages(servers, topic)
            answered = (
                results["warmup"]["accepted"]
                + results["batch"]["accepted"]
                + results["single"]["statuses"].get("200", 0)
                + results["single_burst"]["statuses"].get("200", 0)
                + results["single_saturated"]["statuses"].get("200", 0)
                + results["ws"]["accepted"]
            )
            results["in_topic"], results["answered_accepted"] = in_topic, answered
            results["high_watermarks_sum"] = sum(kafka.high_watermarks(topic).values())
            if in_topic != answered:
                raise SystemExit(
                    f"CHECK FAILED: {answered:,} events answered accepted, {in_topic:,} in topic"
                )
            api.stop()
            api = None
    finally:
        if api is not None:
            api.stop()
        drop_database(args.pg, db)
        if lake_db:
            drop_database(args.pg, lake_db)
    load_after = os.getloadavg()
    results["load"] = (
        f"1-minute load average {load_before[0]:.2f} at the start, {load_after[0]:.2f} at the "
        f"end on {os.cpu_count()} CPUs; run time {time.perf_counter() - started:.0f} s"
    )
    report(args, results)


def measure(
    args: argparse.Namespace,
    api: Any,
    broker: Any,
    servers: str,
    topic: str,
    direct_topics: list[str],
    tools: dict[str, Any],
    pg: str,
    indexes: dict[str, Any],
    tmp: Path,
) -> dict[str, Any]:
    api_pid, broker_pid = api.process.pid, broker.pid
    api_gc = gc_pauses(api) if args.gc_log else None
    out: dict[str, Any] = {}
    ts = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    values, keys = batch_template(args.devices, ts)
    params = {"values": [v.decode() for v in values], "keys": [k.decode() for k in keys]}
    out["event_bytes"] = len(values[0].replace(MARK.encode(), b"pb0000000000"))
    out["batch_body_bytes"] = len(array_body(values).replace(MARK.encode(), b"pb0000000000"))

    def cpu_around(label: str, action: Any, pg_pids: tuple[int, ...] = ()) -> dict[str, Any]:
        """The phase's result with the CPU seconds of the gateway, the broker, the
        Postgres backends given, and of every other process on the machine (busy time
        from /proc/stat less ours, load processes and hey/wrk included as our children)."""
        cpu_api, cpu_broker = proc_cpu(api_pid), proc_cpu(broker_pid)
        cpu_pg, busy, children = sum(proc_cpu(x) for x in pg_pids), machine_busy(), reaped()
        began = time.perf_counter()
        result = action()
        wall = time.perf_counter() - began
        result["api_cpu_s"] = proc_cpu(api_pid) - cpu_api
        result["broker_cpu_s"] = proc_cpu(broker_pid) - cpu_broker
        result["pg_cpu_s"] = sum(proc_cpu(x) for x in pg_pids) - cpu_pg
        ours = result["api_cpu_s"] + result["broker_cpu_s"] + result["pg_cpu_s"]
        result["load_cpu_s"] = reaped() - children
        result["other_cpu_s"] = max(0.0, machine_busy() - busy - ours - result["load_cpu_s"])
        result["phase_wall_s"] = wall
        if api_gc is not None:
            result["gc_gen2"] = api_gc(began, began + wall)
        log(f"  {label}: {json.dumps({k: v for k, v in result.items() if k != 'command'})}")
        return result

    # Warm-up: connections, the producer's metadata, first-call imports.
    out["warmup"] = run_child("post", {**params, "url": api.url, "conns": 1, "seconds": 2}, tmp)

    profiles: dict[str, Any] = {}

    def spy(label: str, seconds: int) -> Any:
        """py-spy on the gateway for ``seconds``; call the result to collect it."""
        if not args.py_spy:
            return lambda: None
        raw = tmp / f"gateway-{label}.pyspy.txt"
        proc = subprocess.Popen(
            [args.py_spy, "record", "--pid", str(api_pid), "--duration", str(max(1, seconds)),
             "--rate", "200", "--format", "raw", "--nonblocking", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def collect() -> None:
            proc.wait(timeout=seconds + 60)
            if raw.exists():
                profiles[label] = profile_summary(raw, 60)
                kept = Path(tempfile.gettempdir()) / f"astra-bench-api-{label}.pyspy.txt"
                shutil.copy(raw, kept)
                log(f"  py-spy profile of the gateway ({label}): {kept}")

        return collect

    log(f"batch POSTs: {BATCH} events per request, {args.batch_conns} connections")
    spied = spy("batch", args.batch_seconds - 2)
    batch = cpu_around(
        "batch",
        lambda: run_child(
            "post",
            {**params, "url": api.url, "conns": args.batch_conns, "seconds": args.batch_seconds},
            tmp,
        ),
    )
    batch["events_per_s"] = batch["accepted"] / batch["wall_s"]
    out["batch"] = batch
    spied()

    direct = []
    n = max(BATCH, batch["accepted"])
    for rep, direct_topic in enumerate(direct_topics):
        log(f"direct producer, rep {rep + 1}: {n:,} events")
        result = cpu_around(
            "direct",
            lambda t=direct_topic: run_child(
                "direct", {**params, "servers": servers, "topic": t, "events": n}, tmp
            ),
        )
        if result["errors"] or result["unflushed"]:
            raise SystemExit(f"CHECK FAILED: direct producer: {result}")
        result["events_per_s"] = result["events"] / result["wall_s"]
        direct.append(result)
    out["direct"] = direct

    single_body = tmp / "single.json"
    single_body.write_bytes(values[0].replace(MARK.encode(), b"single000000"))
    hey = tools["hey"]
    per_worker = args.single_rate / args.single_conns

    def run_hey(seconds: int, rate: float | None) -> dict[str, Any]:
        command = [hey, "-z", f"{seconds}s", "-c", str(args.single_conns)]
        if rate:
            command += ["-q", f"{rate:g}"]
        command += ["-m", "POST", "-T", "application/json", "-D", str(single_body)]
        command.append(f"{api.url}/v1/events")
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
        result = parse_hey(done.stdout)
        result["command"] = " ".join(shlex.quote(c) for c in command).replace(str(tmp), "$TMP")
        return result

    def run_hey_spread(seconds: int) -> dict[str, Any]:
        """``single_conns`` hey processes of one worker each, started 1/rate s apart:
        the same rate and concurrency, requests evenly spaced (not in bursts)."""
        each = args.single_rate / args.single_conns
        command = [hey, "-z", f"{seconds}s", "-c", "1", "-q", f"{each:g}", "-o", "csv"]
        command += ["-m", "POST", "-T", "application/json", "-D", str(single_body)]
        command.append(f"{api.url}/v1/events")
        procs = []
        for _ in range(args.single_conns):
            procs.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            )
            time.sleep(1 / args.single_rate)
        rows = []
        for proc in procs:
            text = proc.communicate(timeout=seconds + 120)[0].decode()
            rows += list(csv.DictReader(io.StringIO(text)))
        lat = sorted(float(row["response-time"]) * 1000 for row in rows)
        statuses = collections.Counter(row["status-code"] for row in rows)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(len(lat) * q))] if lat else float("nan")

        shown = " ".join(shlex.quote(c) for c in command).replace(str(tmp), "$TMP")
        return {
            "rps": len(rows) / seconds,
            "requests": len(rows),
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "slowest_ms": lat[-1] if lat else float("nan"),
            "statuses": dict(statuses),
            "errors": 0,
            "command": f"{args.single_conns} x `{shown}`, started {1000 / args.single_rate:g} "
            "ms apart",
        }

    log(f"direct producer latency: one message at a time, {args.single_rate}/s")
    out["direct_latency"] = run_child(
        "direct_latency",
        {**params, "servers": servers, "topic": direct_topics[0], "rate": args.single_rate,
         "seconds": min(10, args.single_seconds)},
        tmp,
    )  # fmt: skip
    log(f"  {out['direct_latency']}")
    log(f"single-event POSTs at {args.single_rate}/s, evenly spaced ({args.single_conns} hey)")
    out["single"] = cpu_around("single", lambda: run_hey_spread(args.single_seconds))
    log(f"single-event POSTs at {args.single_rate}/s, hey -c {args.single_conns} -q {per_worker:g}")
    out["single_burst"] = cpu_around(
        "single burst", lambda: run_hey(args.single_seconds, per_worker)
    )
    log(f"single-event POSTs, {args.single_conns} workers, no rate limit")
    spied = spy("single", args.saturated_seconds - 1)
    out["single_saturated"] = cpu_around(
        "single saturated", lambda: run_hey(args.saturated_seconds, None)
    )
    spied()
    out["profiles"] = profiles

    log(f"WebSocket: {args.ws_conns} connections, {BATCH} events per message")
    ws_url = api.url.replace("http://", "ws://") + "/v1/ws/events"
    ws = cpu_around(
        "ws",
        lambda: run_child(
            "ws",
            {
                **params,
                "url": ws_url,
                "conns": args.ws_conns,
                "seconds": args.ws_seconds,
                "compression": args.ws_compression,
            },
            tmp,
        ),
    )
    ws["events_per_s"] = ws["accepted"] / ws["wall_s"]
    out["ws"] = ws

    log("reads: warm-up")
    for kind in READ_KINDS:
        run_wrk(tools["wrk"], api.url, kind, args.read_conns, 0, 2, args, tmp)
    backends = api_backends(pg)
    out["pg_backends"] = len(backends)

    def reads(kinds: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for kind in kinds:
            for mode, conns, pause in (
                ("paced", PACED_CONNS, PACED_PAUSE_MS),
                ("saturated", args.read_conns, 0),
            ):
                result = cpu_around(
                    f"{kind} {mode}",
                    lambda k=kind, c=conns, p=pause: run_wrk(
                        tools["wrk"], api.url, k, c, p, args.read_seconds, args, tmp
                    ),
                    tuple(backends),
                )
                result["command"] = result["command"].replace(str(tmp), "$TMP")
                found[f"{kind}_{mode}"] = result
        return found

    out["reads"] = reads(list(READ_KINDS))
    missing = indexes["missing"]
    if missing and args.complete_indexes:
        tables = {indexes["wanted"][name][1] for name in missing}
        kinds = [k for k, uses in READ_KINDS.items() if tables & set(uses)]
        log(f"creating the read indexes astra api did not make: {missing}")
        out["complete_indexes_s"] = create_indexes(
            pg, {name: indexes["wanted"][name] for name in missing}
        )
        if kinds:
            for kind in kinds:  # warm the new indexes
                run_wrk(tools["wrk"], api.url, kind, args.read_conns, 0, 2, args, tmp)
            out["reads_all_indexes"] = reads(kinds)
    return out


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    batch, single, sat, ws = r["batch"], r["single"], r["single_saturated"], r["ws"]
    ceiling = max(d["events_per_s"] for d in r["direct"])
    ratio = batch["events_per_s"] / ceiling

    def cpu(x: dict[str, Any], server: str = "broker_cpu_s") -> str:
        """gateway / broker (or Postgres) / load generator / every other process, in cores."""
        keys = ("api_cpu_s", server, "load_cpu_s", "other_cpu_s")
        cell = " / ".join(f"{x[k] / x['phase_wall_s']:.2f}" for k in keys)
        gc = x.get("gc_gen2")
        if gc:
            cell += f"; gen2 GCs: {gc['count']}, {gc['total_ms']:.0f} ms (max {gc['max_ms']:.0f})"
        return cell

    def codes(result: dict[str, Any]) -> str:
        return ", ".join(f"{k}: {v:,}" for k, v in sorted(result["statuses"].items()))

    rows = [
        "| Measurement | Figure | Detail | CPU cores: gateway / broker / load client / others |",
        "|---|---:|---|---|",
        f"| POST /v1/events, arrays of {BATCH}, {args.batch_conns} connections | "
        f"**{fmt(batch['events_per_s'])} events/s** | {batch['accepted']:,} events accepted "
        f"in {batch['wall_s']:.1f} s, {batch['requests']:,} requests ({codes(batch)}); "
        f"request p50 {batch['p50_ms']:.0f} ms, p99 {batch['p99_ms']:.0f} ms | "
        f"{cpu(batch)} |",
    ]
    for rep, d in enumerate(r["direct"], 1):
        rows.append(
            f"| direct confluent-kafka Producer (acks=all, idempotent), same events, rep {rep} | "
            f"{fmt(d['events_per_s'])} events/s | {d['events']:,} events in {d['wall_s']:.2f} s, "
            f"{d['errors']} delivery errors | {cpu(d)} |"
        )
    rows.append(f"| **gateway / direct (the faster rep)** | **{ratio:.2f}** | | |")
    burst = r["single_burst"]
    per_worker = args.single_rate / args.single_conns
    for label, s in (
        (
            f"single-event POSTs, {args.single_rate}/s evenly spaced ({args.single_conns} hey "
            f"processes `-c 1 -q {per_worker:g}`, started {1000 / args.single_rate:g} ms apart)",
            single,
        ),
        (
            f"single-event POSTs, {args.single_rate}/s as `hey -c {args.single_conns} -q "
            f"{per_worker:g}` (its {args.single_conns} workers fire together: bursts of "
            f"{args.single_conns} every {1000 / per_worker:g} ms)",
            burst,
        ),
        (f"single-event POSTs, `hey -c {args.single_conns}`, no rate limit", sat),
    ):
        rows.append(
            f"| {label} | {s['rps']:,.1f} requests/s | p50 {s['p50_ms']:.1f} ms, p90 "
            f"{s['p90_ms']:.1f} ms, **p99 {s['p99_ms']:.1f} ms**, slowest "
            f"{s['slowest_ms']:.0f} ms; status {codes(s)}"
            f"{'; errors ' + str(s['errors']) if s['errors'] else ''} | {cpu(s)} |"
        )
    lat = r["direct_latency"]
    rows.append(
        f"| floor: direct producer (gateway's settings, linger.ms=5), one message at a time, "
        f"{args.single_rate}/s | p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms | "
        f"{lat['events']:,} messages, produce -> delivery report; slowest "
        f"{lat['slowest_ms']:.1f} ms | |"
    )
    compression = "permessage-deflate" if args.ws_compression else "no compression"
    rows.append(
        f"| WebSocket /v1/ws/events, arrays of {BATCH}, {args.ws_conns} connections "
        f"({compression}) | **{fmt(ws['events_per_s'])} events/s** | {ws['accepted']:,} events "
        f"in {ws['wall_s']:.1f} s, {ws['messages']:,} messages"
        f"{', errors ' + json.dumps(ws['errors']) if ws['errors'] else ''}; ack p50 "
        f"{ws['p50_ms']:.0f} ms, p99 {ws['p99_ms']:.0f} ms | {cpu(ws)} |"
    )
    names = {
        "windows": "GET /v1/devices/{id}/windows?resolution=1m (100 rows)",
        "alerts": "GET /v1/alerts?device_id=..&limit=100 (100 rows)",
        "churn": "GET /v1/users/{id}/churn",
    }
    header = [
        "| Read endpoint (random device / user) | load | requests/s | p50 | p90 | p99 | "
        "non-2xx | CPU cores: gateway / Postgres (its backends) / wrk / others |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]

    def read_table(found: dict[str, dict[str, Any]]) -> list[str]:
        lines = list(header)
        for kind, name in names.items():
            for mode in ("paced", "saturated"):
                x = found.get(f"{kind}_{mode}")
                if x is None:
                    continue
                load = (
                    f"paced: {PACED_CONNS} connections, pauses ~{PACED_PAUSE_MS} ms"
                    if mode == "paced"
                    else f"saturated: {args.read_conns} connections"
                )
                p99 = f"**{x['p99_ms']:.1f} ms**" if mode == "paced" else f"{x['p99_ms']:.1f} ms"
                errors = f" {x['socket_errors']}" if x["socket_errors"] else ""
                lines.append(
                    f"| {name} | {load} | {x['rps']:,.0f} | {x['p50_ms']:.1f} ms | "
                    f"{x['p90_ms']:.1f} ms | {p99} | {x['non2xx']}{errors} | "
                    f"{cpu(x, 'pg_cpu_s')} |"
                )
        return lines

    read_rows = read_table(r["reads"])
    all_rows = read_table(r["reads_all_indexes"]) if r.get("reads_all_indexes") else []
    idx = r["indexes"]
    index_note = (
        f"`astra api` made {len(idx['made'])} of the {len(idx['wanted'])} read indexes it "
        f"means to make on these tables ({', '.join(idx['made']) or 'none'})"
        + (f"; missing: {', '.join(idx['missing'])}" if idx["missing"] else "")
        + (f". Its log: `{idx['warning'].split(' ', 2)[-1]}`" if idx["warning"] else "")
        + "."
    )
    if all_rows:
        index_note += (
            f" The bench then created the missing ones itself (same names and columns, "
            f"{r['complete_indexes_s']:.1f} s) and measured the endpoints on those tables again:"
        )
    paced_p99 = max(r["reads"][f"{k}_paced"]["p99_ms"] for k in names)
    again = [v["p99_ms"] for k, v in r.get("reads_all_indexes", {}).items() if "paced" in k]
    others = [
        r["reads"][f"{k}_paced"]["p99_ms"]
        for k in names
        if f"{k}_paced" not in r.get("reads_all_indexes", {})
    ]
    all_p99 = max(again + others) if again else None
    paced_rates = ", ".join(fmt(r["reads"][f"{k}_paced"]["rps"]) for k in names)

    def single_ok(x: dict[str, Any]) -> bool:
        return x["p99_ms"] < TARGET_SINGLE_P99_MS and x["rps"] >= 0.95 * args.single_rate

    targets = [
        f"- POST /v1/events with batches of {BATCH} >= {TARGET_BATCH:,} events/s: "
        f"{verdict(batch['events_per_s'] >= TARGET_BATCH)} ({fmt(batch['events_per_s'])} "
        f"events/s; {ratio:.2f} of the direct producer's {fmt(ceiling)} events/s on the same "
        "broker, the physical ceiling of this machine).",
        f"- Single-event POSTs: p99 < {TARGET_SINGLE_P99_MS:.0f} ms at {args.single_rate} "
        f"requests/s: evenly spaced {verdict(single_ok(single))} (p99 {single['p99_ms']:.1f} "
        f"ms at {single['rps']:,.1f} requests/s achieved); in bursts of {args.single_conns} "
        f"(hey -c {args.single_conns} -q {per_worker:g}) {verdict(single_ok(burst))} (p99 "
        f"{burst['p99_ms']:.1f} ms at {burst['rps']:,.1f} requests/s).",
        f"- Read endpoints p99 < {TARGET_READ_P99_MS:.0f} ms (paced, ~200 requests/s): "
        f"{verdict(paced_p99 < TARGET_READ_P99_MS)} (worst p99 {paced_p99:.1f} ms; achieved "
        f"{paced_rates} requests/s for windows, alerts, churn)"
        + (f"; with every read index: worst p99 {all_p99:.1f} ms." if all_p99 is not None else "."),
        "- WebSocket: no target; "
        f"{fmt(ws['events_per_s'])} events/s ({ws['events_per_s'] / ceiling:.2f} of the direct "
        "producer).",
    ]
    tables = ", ".join(f"{t} {v['rows']:,} rows" for t, v in r["tables"].items())
    print(json.dumps(r, indent=1, default=str), file=sys.stderr)
    print(f"Machine: {r['machine']}; {r['load']}\n")
    print("\n".join(rows) + "\n")
    print("\n".join(read_rows) + "\n")
    print(index_note + "\n")
    if all_rows:
        print("\n".join(all_rows) + "\n")
    print("\n".join(targets))
    for label, profile in r.get("profiles", {}).items():
        print(f"\nGateway profile (py-spy, {label} phase): inclusive / self share of samples")
        for frame, inc, own in profile:
            print(f"  {inc:6.1%} {own:6.1%}  {frame}")
    print(f"\nEvery accepted event is in the topic: {r['in_topic']:,} = {r['answered_accepted']:,}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1, default=str))
    if not args.write_docs:
        return
    section = f"""{SECTION}

Measured by `bench/api.py` on {dt.date.today().isoformat()}, from the repository root:

```
{r["command"]}
```

Machine: {r["machine"]}; {r["load"]}. hey and wrk from Debian.

One run: one embedded (Tansu, in-memory) broker, a {PARTITIONS}-partition topic, a fresh
Postgres database on 127.0.0.1 (Debian's PostgreSQL, TCP), one `astra api` process
(uvicorn, one worker, loopback, no keys, `ASTRA_API_RATE_LIMIT_PER_S=1e9`). Events are
sensor readings of {r["event_bytes"]} bytes with distinct event ids (the single-event
body is one fixed event: hey repeats it). A batch request is a JSON array of {BATCH}
({r["batch_body_bytes"]:,} bytes); its answer comes after
Kafka acknowledged all {BATCH} (acks=all, idempotent). The batch and WebSocket load are
Python clients (httpx, websockets) in a process of their own, the single-event load is
`hey`, the read load `wrk` with a Lua script picking a random device or user per request.
CPU columns: CPU seconds during the phase / its wall seconds (1.00 = one of the two
cores) of the gateway, of the broker (for reads: the gateway's Postgres backends), of the
load generator (the load process, hey or wrk) and of everything else on the machine
(/proc/stat's busy time less those: other processes of a shared host, Postgres's own
background work, the bench's parent process). At the end the topic held every event
answered accepted ({r["in_topic"]:,}, counted by consuming it), and each direct run ended
with no delivery error and nothing unflushed.

{chr(10).join(rows)}

Read endpoints on serving tables loaded through `PostgresServingResource.replace_partition`
and VACUUM ANALYZEd ({tables}), before `astra api` started (it makes its read indexes at start;
the bench waits for that round). Windows: a
random 100-minute range of a random device of {args.devices:,} (100 rows per answer); alerts:
a random device's first 100 alerts; churn: a random user of {args.users:,} (the latest of
{args.days} daily scores, with that day's features). "Paced": {PACED_CONNS} connections, each
waiting a random (exponential, mean {PACED_PAUSE_MS} ms) pause between an answer and its next
request (below 200 requests/s by the answers' own time);
"saturated": {args.read_conns} connections, no pause. Latencies are wrk's (per request, from
its send to the end of the answer).

{chr(10).join(read_rows)}

{index_note}
{(chr(10) + chr(10).join(all_rows) + chr(10)) if all_rows else ""}
Targets (issue):

{chr(10).join(targets)}

{END_MARK}
"""
    output = Path(args.output)
    old = output.read_text() if output.exists() else ""
    if SECTION in old:  # replace this bench's output; keep notes after END_MARK
        head, rest = old.split(SECTION, 1)
        if END_MARK in rest:
            rest = rest.split(END_MARK, 1)[1].lstrip("\n")
        else:  # no mark: the old section runs to the next "## " heading
            nxt = re.search(r"^## ", rest, re.M)
            rest = rest[nxt.start() :] if nxt else ""
        new = head + section + ("\n" + rest if rest else "")
    else:
        new = old.rstrip("\n") + "\n\n" + section
    output.write_text(new)
    log(f"wrote {output}")


if __name__ == "__main__":
    # SIGTERM (timeout, kill) runs the clean-up too: astra api, the broker, the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
