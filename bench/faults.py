"""Fault injection, end to end: no message and no dead run may stop ingestion.

One embedded broker (Tansu, in memory, loopback), a fresh 6-partition topic with its
dead-letter and alerts topics, a fresh lake (DuckLake: its catalog in a private Postgres,
its Parquet files in the work folder), a fresh SQLite Dagster instance
(dagster.embedded.yaml) and `dagster-daemon run -w workspace.yaml` with every sensor on
(kafka_events_sensor every 2 s). For --produce-seconds a producer thread paces:

- simulated events (2% malformed, 2% resends, 2% late);
- adversarial messages the simulator does not make (deep nesting, 1,040,000- and
  3,000,000-byte values that are not JSON, huge numbers, NaN/Infinity, numeric-string
  timestamps, invalid UTF-8, duplicate keys, ...), spread over the run;
- seeded fuzz: random bytes and random mutations of valid events.

Meanwhile the main thread SIGKILLs the worker of --kills ingest runs (right after
RUN_START, after batch N of the pooled step, at a random moment; a few together with
the worker's code server), and a reader thread reads the lake (count of raw.events) in
a loop; a lake reader never waits for the writers, so what it saw is reported: its reads,
the counts it saw, whether one went down, its errors and its slowest read. Nobody
touches the instance: no launches, no slot freeing, no deletions.

What must happen to each message is decided here, independently of the pipeline: the
simulator's own label for simulated messages, the pydantic contract
(`astra_pipeline.events.parse_event`) for the fuzzed and adversarial ones (only messages
whose verdict cannot change with the ingestion time are produced). At the end the
warehouse, the dead-letter topic and the instance's runs are checked against it; the
exit status is non-zero if any check fails.

Usage: .venv/bin/python bench/faults.py [--events 1000000] [--fuzz 100000] [--kills 20]
       [--write-doc]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402
import polars as pl  # noqa: E402
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition  # noqa: E402
from embedded_daemon import INSTANCE_YAML, ROOT, lake_catalog, lake_env  # noqa: E402

from astra_pipeline.events import MAX_FUTURE_SKEW, EventRejected, parse_event  # noqa: E402
from astra_pipeline.jobs import INGEST_JOB_NAME  # noqa: E402
from astra_pipeline.simulator import SimulatedMessage, SimulatorConfig, generate  # noqa: E402
from resources.broker import EmbeddedBroker  # noqa: E402
from resources.errors import WarehouseError  # noqa: E402
from resources.kafka import KAFKA_DEFAULT_MAX_MESSAGE_BYTES, KafkaResource  # noqa: E402
from resources.warehouse import DuckDBWarehouseResource  # noqa: E402
from resources.warehouse_session import WarehouseSession  # noqa: E402

PARTITIONS = 6
SENSOR_INTERVAL_S = 2
LEAD_S = 30.0
"""Simulated event time runs this far ahead of the production schedule. The producer is
never early, so a valid event is at most LEAD_S + a moment ahead of its ingestion (the
contract allows 300 s), and a future_ts one (600-3600 s ahead of its event time) stays
more than 300 s ahead unless it is ingested over 330 s after its production; that case
is detected and reported (`future_ts_ingested_too_late`), not assumed away."""
STABLE_FOR_S = 3600.0
"""A fuzzed or adversarial message is produced only if the contract gives it the same
verdict at its production time and this much later: its expected fate cannot depend on
when the pipeline judges it."""
ADVERSARIAL_COPIES = 3
KILL_TIMEOUT_S = 240.0
WORKER_BOUND_S = 60.0
"""From a worker's kill to its run marked failed: test_dead_runs.py's BOUND_S."""
SERVER_BOUND_S = 20.0
"""The same when its code server died too: test_dead_runs.py's SERVER_DETECTION_BOUND_S."""
QUIET_S = 75.0
"""Settled: no run of any job queued or running for this long (the scoring sensor ticks
every 60 s)."""
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
PHASES = ("run_start", "after_batch", "random")
_BATCH_LINE = re.compile(r"^batch (\d+): \d+ messages, eof=(True|False)")
_FIELD = re.compile(rb'"([a-z_]+)":("[^"]*"|[^,}]*)')
_TOKENS = (
    b"null",
    b"true",
    b"false",
    b'""',
    b'"7"',
    b'"1764388800"',
    b"1764388800",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"-0",
    b"[]",
    b"{}",
    b'"\\ud800"',
    b'"\\u0000"',
    b'"a\\"b"',
    b"0",
    b"-61",
    b"86",
    b"100.0000001",
    b'"2026-11-23T07:45:05"',
    b'"2099-01-01T00:00:00Z"',
    b'"1970-01-01T00:00:00Z"',
    b'"sensor_reading"',
    b'"user_activity"',
    b'"purchase"',
    b"9" * 400,
    b"[" * 600 + b"]" * 600,
)
_MUTATIONS = (
    "flip",
    "insert",
    "delete",
    "truncate",
    "replace_value",
    "drop_field",
    "unknown_field",
    "duplicate_key",
    "swap_type",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the expected outcome: the contract's verdict, independent of the pipeline -------------


@dataclass(frozen=True, slots=True)
class Verdict:
    event_type: str | None
    """sensor_reading or user_activity when the contract accepts it; None: dead letter."""
    event_id: str | None
    error: str | None = None
    """An exception other than EventRejected raised by the contract (reported)."""


def judge(value: bytes | None, now: dt.datetime) -> Verdict:
    if value is None:
        return Verdict(None, None)
    try:
        event = parse_event(value, now=now)
    except EventRejected:
        return Verdict(None, None)
    except Exception as error:
        # The pipeline makes such a message a dead letter ("could not be judged"); the
        # expectation follows, and the exception is reported as a finding.
        return Verdict(None, None, f"{type(error).__name__}: {str(error)[:160]}")
    return Verdict(event.event_type, event.event_id)


def stable_verdict(value: bytes | None, now: dt.datetime) -> Verdict | None:
    """The contract's verdict, or None when it would change with the ingestion time."""
    first = judge(value, now)
    later = judge(value, now + dt.timedelta(seconds=STABLE_FOR_S))
    same = (first.event_type, first.event_id) == (later.event_type, later.event_id)
    return first if same else None


@dataclass(frozen=True, slots=True)
class Planned:
    """One message to produce and what must become of it."""

    key: bytes | None
    value: bytes | None
    label: str
    event_type: str | None
    event_id: str | None
    accept_after: float | None = None
    """future_ts only: the epoch second from which the contract would accept it."""


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def adversarial(copy: int, now: dt.datetime) -> list[tuple[str, bytes | None]]:
    """Messages the simulator never makes, each with its own event_id."""
    valid = {
        "event_type": "sensor_reading",
        "event_id": "",
        "device_id": "dev-adv",
        "ts": _iso(now - dt.timedelta(seconds=5)),
        "temperature_c": 21.4,
        "humidity_pct": 45.2,
        "battery_pct": 87.0,
        "lat": 52.52,
        "lon": 13.4,
        "status": "ok",
    }
    arrays = b"[" * 998 + b"]" * 998
    objects = b'{"a":' * 999 + b"1" + b"}" * 999
    out: list[tuple[str, bytes | None]] = []

    def add(name: str, build: Callable[[dict[str, Any], bytes], bytes | None]) -> None:
        doc = {**valid, "event_id": f"adv-{copy}-{name}"}
        out.append((name, build(doc, json.dumps(doc)[:-1].encode())))

    add("deep_arrays_998_no_type", lambda d, h: b'{"a": ' + arrays + b"}")
    add(
        "deep_arrays_998_before_type",
        lambda d, h: b'{"a": ' + arrays + b', "event_type": "sensor_reading"}',
    )
    add(
        "deep_arrays_998_after_type",
        lambda d, h: b'{"event_type": "sensor_reading", "a": ' + arrays + b"}",
    )
    add("deep_objects_999", lambda d, h: objects)
    add("deep_objects_999_in_valid_event", lambda d, h: h + b', "x": ' + objects + b"}")
    add(
        "deep_arrays_20000_in_valid_event",
        lambda d, h: h + b', "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    )
    add("not_json_1040000_bytes", lambda d, h: b"{" + b"x" * (1_040_000 - 1))
    add("not_json_3000000_bytes", lambda d, h: b"{" + b"x" * (3_000_000 - 1))
    add(
        "huge_number_temperature",
        lambda d, h: _without(d, "temperature_c") + b', "temperature_c": 1e400}',
    )
    add("huge_number_extra", lambda d, h: h + b', "extra_value": 1e400}')
    add("huge_negative_lat", lambda d, h: _without(d, "lat") + b', "lat": -1e400}')
    add("digits_5000_extra", lambda d, h: h + b', "extra_value": ' + b"1" * 5_000 + b"}")
    add("tiny_number_extra", lambda d, h: h + b', "extra_value": 1e-400}')
    add("max_double_extra", lambda d, h: h + b', "x": {"y": [1, 2.5, -0.0, 1e308]}}')
    add("nan_extra", lambda d, h: h + b', "x": NaN}')
    add("infinity_in_list_extra", lambda d, h: h + b', "x": [1, Infinity]}')
    add("negative_infinity_nested_extra", lambda d, h: h + b', "x": {"y": -Infinity}}')
    add("nan_temperature", lambda d, h: _without(d, "temperature_c") + b', "temperature_c": NaN}')
    add("ts_numeric_string_7", lambda d, h: json.dumps({**d, "ts": "7"}).encode())
    add("ts_numeric_string_epoch", lambda d, h: json.dumps({**d, "ts": "1764388800"}).encode())
    add("ts_number_epoch", lambda d, h: json.dumps({**d, "ts": 1764388800}).encode())
    add("ts_without_zone", lambda d, h: json.dumps({**d, "ts": d["ts"][:-1]}).encode())
    add("invalid_utf8_ff", lambda d, h: json.dumps(d).encode().replace(b"dev-adv", b"dev-\xff"))
    add("invalid_utf8_c328", lambda d, h: json.dumps(d).encode().replace(b"dev-adv", b"\xc3\x28"))
    add(
        "invalid_utf8_encoded_surrogate",
        lambda d, h: json.dumps(d).encode().replace(b"dev-adv", b"\xed\xa0\x80"),
    )
    add(
        "lone_surrogate_escape",
        lambda d, h: json.dumps(d).encode().replace(b"dev-adv", b"dev-\\ud800"),
    )
    add("nul_escape_in_device_id", lambda d, h: json.dumps({**d, "device_id": "a\u0000b"}).encode())
    add("raw_nul_byte", lambda d, h: json.dumps(d).encode().replace(b"dev-adv", b"dev-\x00"))
    add("duplicate_key_event_type", lambda d, h: h + b', "event_type": "user_activity"}')
    add("duplicate_key_temperature", lambda d, h: h + b', "temperature_c": 30.5}')
    add("duplicate_key_ts_numeric", lambda d, h: h + b', "ts": "7"}')
    add("duplicate_key_event_id_empty", lambda d, h: h + b', "event_id": ""}')
    add(
        "duplicate_key_event_id_other",
        lambda d, h: h + b', "event_id": "' + d["event_id"].encode() + b'-second"}',
    )
    add(
        "wide_20000_fields",
        lambda d, h: h + b", " + ", ".join(f'"f{i}": {i}' for i in range(20_000)).encode() + b"}",
    )
    add(
        "long_string_1000000_extra",
        lambda d, h: json.dumps({**d, "note": "x" * 1_000_000}).encode(),
    )
    add(
        "long_device_id_100000", lambda d, h: json.dumps({**d, "device_id": "d" * 100_000}).encode()
    )
    add("tombstone", lambda d, h: None)
    add("empty_value", lambda d, h: b"")
    add("json_array_of_events", lambda d, h: json.dumps([d, d]).encode())
    add("json_string", lambda d, h: b'"sensor_reading"')
    add("bom_prefixed", lambda d, h: b"\xef\xbb\xbf" + json.dumps(d).encode())
    return out


def _without(doc: dict[str, Any], name: str) -> bytes:
    rest = {k: v for k, v in doc.items() if k != name}
    return json.dumps(rest)[:-1].encode()


def mutate(rng: random.Random, raw: bytes) -> tuple[str, bytes]:
    """One random mutation of a compact simulator event."""
    op = _MUTATIONS[rng.randrange(len(_MUTATIONS))]
    fields = list(_FIELD.finditer(raw))
    token = _TOKENS[rng.randrange(len(_TOKENS))]
    if op == "flip":
        changed = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            changed[rng.randrange(len(changed))] = rng.randrange(256)
        return op, bytes(changed)
    if op == "insert":
        at = rng.randrange(len(raw) + 1)
        return op, raw[:at] + rng.randbytes(rng.randint(1, 4)) + raw[at:]
    if op == "delete":
        at = rng.randrange(len(raw))
        return op, raw[:at] + raw[at + rng.randint(1, 12) :]
    if op == "truncate":
        return op, raw[: rng.randrange(len(raw))]
    if op == "unknown_field":
        return op, raw[:-1] + b',"fuzz_' + str(rng.randrange(50)).encode() + b'":' + token + b"}"
    if not fields:
        return "truncate", raw[: rng.randrange(max(1, len(raw)))]
    chosen = fields[rng.randrange(len(fields))]
    if op == "replace_value":
        return op, raw[: chosen.start(2)] + token + raw[chosen.end(2) :]
    if op == "drop_field":
        start, end = chosen.span()
        if raw[end : end + 1] == b",":
            end += 1
        elif raw[start - 1 : start] == b",":
            start -= 1
        return op, raw[:start] + raw[end:]
    if op == "duplicate_key":
        return op, raw[:-1] + b',"' + chosen.group(1) + b'":' + token + b"}"
    swapped = raw.replace(b'"sensor_reading"', b'"@"').replace(
        b'"user_activity"', b'"sensor_reading"'
    )
    return op, swapped.replace(b'"@"', b'"user_activity"')


def _future_accept_after(value: bytes) -> float:
    ts = dt.datetime.fromisoformat(json.loads(value)["ts"].replace("Z", "+00:00"))
    return (ts - MAX_FUTURE_SKEW).timestamp()


class Traffic:
    """The interleaved stream, built lazily as it is produced."""

    def __init__(
        self,
        events: int,
        fuzz: int,
        copies: int,
        seed: int,
        start: dt.datetime,
        seconds: float,
    ) -> None:
        self.rng = random.Random(seed)
        self.fuzz_rng = random.Random(f"{seed}:fuzz")
        self.events = events
        self.fuzz = fuzz
        simulated = SimulatorConfig(
            seed=seed,
            start=start,
            events_per_second=events / seconds,
            malformed_fraction=0.02,
            duplicate_fraction=0.02,
            late_fraction=0.02,
        )
        bases = SimulatorConfig(
            seed=seed + 1, start=start, events_per_second=max(fuzz, 1) / seconds
        )
        self.simulated = generate(simulated, events)
        self.bases = generate(bases, fuzz)
        adversarial_count = copies * len(adversarial(0, start))
        self.total = events + fuzz + adversarial_count
        self.copies = copies
        slots = sorted(self.rng.sample(range(self.total), adversarial_count))
        self.adversarial_slots = set(slots)
        self.simulator_vs_contract: Counter[str] = Counter()
        self.contract_errors: Counter[str] = Counter()
        self.unstable_redrawn = 0
        self.adversarial_unstable: list[str] = []

    def __iter__(self) -> Iterator[Planned]:
        pending: list[tuple[str, bytes | None]] = []
        copy = 0
        left = {"simulated": self.events, "fuzz": self.fuzz}
        for slot in range(self.total):
            now = dt.datetime.now(dt.UTC)
            if slot in self.adversarial_slots:
                if not pending:
                    pending = adversarial(copy, now)
                    self.rng.shuffle(pending)
                    copy += 1
                name, value = pending.pop()
                yield self._adversarial(name, value, now)
            elif self.rng.random() * (left["simulated"] + left["fuzz"]) < left["simulated"]:
                left["simulated"] -= 1
                yield self._simulated(next(self.simulated), now)
            else:
                left["fuzz"] -= 1
                yield self._fuzzed(next(self.bases), now)

    def _simulated(self, message: SimulatedMessage, now: dt.datetime) -> Planned:
        label = f"simulated:{message.kind}"
        if message.malformed_kind:
            label += f":{message.malformed_kind}"
        accepted = message.kind in ("valid", "late", "duplicate")
        event_type = None
        if accepted:
            sensor = message.value.startswith(b'{"event_type":"sensor_reading"')
            event_type = "sensor_reading" if sensor else "user_activity"
        # The expectation is the simulator's label; the contract is asked too, and any
        # disagreement is reported (it would make the label the wrong expectation).
        verdict = judge(message.value, now)
        if (verdict.event_type, verdict.event_id) != (
            event_type,
            message.event_id if accepted else None,
        ):
            self.simulator_vs_contract[label] += 1
        if verdict.error:
            self.contract_errors[f"{label}: {verdict.error}"] += 1
        accept_after = None
        if message.malformed_kind == "future_ts":
            accept_after = _future_accept_after(message.value)
        return Planned(
            message.key,
            message.value,
            label,
            event_type,
            message.event_id if accepted else None,
            accept_after,
        )

    def _fuzzed(self, base: SimulatedMessage, now: dt.datetime) -> Planned:
        rng = self.fuzz_rng
        if rng.random() < 0.002:
            return Planned(base.key, None, "fuzz:tombstone", None, None)
        for _ in range(8):
            if rng.random() < 0.3:
                op = "random_bytes"
                value = rng.randbytes(rng.randrange(200))
                if rng.random() < 0.5:
                    value = b"{" + value
            else:
                op, value = mutate(rng, base.value)
            verdict = stable_verdict(value, now)
            if verdict is None:
                self.unstable_redrawn += 1
                continue
            if verdict.error:
                self.contract_errors[f"fuzz:{op}: {verdict.error}"] += 1
            key = base.key if rng.random() < 0.9 else None
            return Planned(key, value, f"fuzz:{op}", verdict.event_type, verdict.event_id)
        return Planned(base.key, b"\x00", "fuzz:random_bytes", None, None)

    def _adversarial(self, name: str, value: bytes | None, now: dt.datetime) -> Planned:
        verdict = stable_verdict(value, now)
        if verdict is None:
            self.adversarial_unstable.append(name)
            verdict = judge(value, now)
        if verdict.error:
            self.contract_errors[f"adversarial:{name}: {verdict.error}"] += 1
        return Planned(b"adv", value, f"adversarial:{name}", verdict.event_type, verdict.event_id)


@dataclass
class Expected:
    """Filled by the delivery reports: what Kafka holds and what must become of it."""

    partitions: dict[int, list[int]] = field(default_factory=dict)
    """partition -> [messages delivered, highest offset]"""
    sensor_ids: set[str] = field(default_factory=set)
    user_ids: set[str] = field(default_factory=set)
    accepted: int = 0
    dead: dict[tuple[int, int], str] = field(default_factory=dict)
    pointers: set[tuple[int, int]] = field(default_factory=set)
    future: dict[tuple[int, int], float] = field(default_factory=dict)
    labels: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    delivered_bytes: int = 0
    failures: list[str] = field(default_factory=list)

    def on_delivery(self, planned: Planned, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self.failures.append(f"{planned.label}: {error.str()}")
            return
        coordinate = (message.partition(), message.offset())
        entry = self.partitions.setdefault(coordinate[0], [0, -1])
        entry[0] += 1
        entry[1] = max(entry[1], coordinate[1])
        self.delivered += 1
        self.delivered_bytes += len(planned.value or b"")
        self.labels[planned.label] += 1
        if planned.event_type is None:
            self.dead[coordinate] = planned.label
            if len(planned.value or b"") > KAFKA_DEFAULT_MAX_MESSAGE_BYTES:
                self.pointers.add(coordinate)
            if planned.accept_after is not None:
                self.future[coordinate] = planned.accept_after
            return
        self.accepted += 1
        assert planned.event_id is not None
        ids = self.sensor_ids if planned.event_type == "sensor_reading" else self.user_ids
        ids.add(planned.event_id)


class Production(threading.Thread):
    """Produces the traffic on a fixed schedule (never early) and records deliveries."""

    def __init__(self, servers: str, topic: str, traffic: Traffic, t0: float, seconds: float):
        super().__init__(name="producer", daemon=True)
        self.servers = servers
        self.topic = topic
        self.traffic = traffic
        self.t0 = t0
        self.interval = seconds / max(traffic.total, 1)
        self.expected = Expected()
        self.done = threading.Event()
        self.max_behind_s = 0.0
        self.finished_at = 0.0
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._produce()
        except Exception as error:
            # Reported in the summary and failing the run; the main thread must still
            # stop the daemon and the broker.
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.finished_at = time.time()
            self.done.set()

    def _produce(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.servers,
                "linger.ms": 20,
                "message.max.bytes": 10_000_000,
                "queue.buffering.max.messages": 200_000,
                "enable.idempotence": False,
                "compression.type": "none",
                "log_level": 3,
            }
        )
        for index, planned in enumerate(self.traffic):
            ahead = self.t0 + index * self.interval - time.time()
            if ahead > 0.002:
                producer.poll(0)
                time.sleep(ahead)
            else:
                self.max_behind_s = max(self.max_behind_s, -ahead)
            callback = functools.partial(self.expected.on_delivery, planned)
            while True:
                try:
                    producer.produce(
                        self.topic, value=planned.value, key=planned.key, on_delivery=callback
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            if index % 1000 == 0:
                producer.poll(0)
        remaining = producer.flush(120)
        if remaining:
            raise RuntimeError(f"{remaining} messages not delivered within 120 s")


# --- the system under test ----------------------------------------------------------------


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    home: Path
    warehouse: DuckDBWarehouseResource
    """The daemon's lake (its catalog outlives the daemon: the checks read it after)."""
    log_path: Path


@contextlib.contextmanager
def running_daemon(
    workdir: Path, warehouse: DuckDBWarehouseResource, env_extra: dict[str, str]
) -> Iterator[Daemon]:
    home = workdir / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
    env = {
        **lake_env(warehouse),
        "DAGSTER_HOME": str(home),
        "ASTRA_SENSOR_INTERVAL_S": str(SENSOR_INTERVAL_S),
        **env_extra,
    }
    log_path = workdir / "daemon.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            env=env,
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Daemon(process, home, warehouse, log_path)
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the daemon's process group (its code servers and run workers are in it),
    then SIGKILL what is left after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class ReadOnlyReader(threading.Thread):
    """Counts raw.events in a loop, each time through a new read-only connection to the
    lake (``warehouse.query``: the latest committed snapshot)."""

    def __init__(self, warehouse: DuckDBWarehouseResource) -> None:
        super().__init__(name="reader", daemon=True)
        self.warehouse = warehouse
        self.stop = threading.Event()
        self.attempts = 0
        self.reads = 0
        self.not_ready = 0
        self.other_errors: Counter[str] = Counter()
        self.decreases = 0
        self.counts: set[int] = set()
        """The distinct counts it saw."""
        self.slowest_s = 0.0
        """The longest successful read."""
        self.last: tuple[float, int] | None = None
        """(time.time(), count) of the latest successful read."""

    def run(self) -> None:
        while not self.stop.is_set():
            self.attempts += 1
            t0 = time.perf_counter()
            try:
                count = int(self.warehouse.query("SELECT count(*) FROM raw.events").item())
            except WarehouseError as error:
                text = str(error)
                # No lake yet (before the first run created it), or no table yet.
                if text.startswith("no lake at") or isinstance(
                    error.__cause__, duckdb.CatalogException
                ):
                    self.not_ready += 1
                else:
                    self.other_errors[f"{type(error).__name__}: {text[:160]}"] += 1
            else:
                self.slowest_s = max(self.slowest_s, time.perf_counter() - t0)
                if self.last is not None and count < self.last[1]:
                    self.decreases += 1
                self.last = (time.time(), count)
                self.counts.add(count)
                self.reads += 1
            self.stop.wait(0.2)


# --- faults -------------------------------------------------------------------------------


@dataclass
class Kill:
    index: int
    phase: str
    with_server: bool
    not_before: float
    target_batch: int | None = None
    run_id: str | None = None
    pid: int | None = None
    server_pid: int | None = None
    killed_at: float | None = None
    """time.time() of the SIGKILL"""
    killed_mono: float | None = None
    batches_committed: int | None = None
    step: str | None = None
    failed_after_s: float | None = None
    """Kill to a finished status, as observed by polling (an upper bound)."""
    failure_event_after_s: float | None = None
    """Kill to the run's RUN_FAILURE event (its timestamp in the event log)."""
    final_status: str | None = None
    failure_message: str | None = None
    note: str | None = None
    children: list[str] = field(default_factory=list)
    """The worker's child processes at the kill ("pid command")."""
    children_alive_at_final_status: int | None = None


def _parent(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])


def processes() -> list[tuple[int, int, int, str]]:
    """(pid, parent pid, process group, command line) of every process."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        text = command.decode(errors="replace").strip()[:200]
        out.append((int(entry.name), int(fields[1]), int(fields[2]), text))
    return out


def orphans(group: int) -> list[str]:
    """Processes of the daemon's group whose parent is not in it (their parent died)."""
    members = [p for p in processes() if p[2] == group]
    pids = {p[0] for p in members}
    return [
        f"{pid} (parent {ppid}) {cmd}"
        for pid, ppid, _, cmd in members
        if ppid not in pids and pid != group
    ]


class Injector:
    """Kills ingest run workers at planned phases; looks at the instance, never changes it."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        daemon_pid: int,
        production: Production,
        kills: list[Kill],
        rng: random.Random,
    ) -> None:
        self.instance = instance
        self.daemon_pid = daemon_pid
        self.production = production
        self.kills = kills
        self.rng = rng
        self.killed: set[str] = set()
        self.pending: list[Kill] = []
        self.starts: dict[str, tuple[int, float]] = {}
        self.idle_since: float | None = None
        self.last_pending_check = 0.0

    def run(self) -> None:
        for kill in self.kills:
            while time.time() < kill.not_before:
                self.check_pending()
                time.sleep(0.1)
            if not self._perform(kill):
                log(f"kill {kill.index} ({kill.phase}) not performed: {kill.note}")
                if self._stream_over():
                    break
            else:
                log(
                    f"kill {kill.index}: {kill.phase}"
                    f"{' + code server' if kill.with_server else ''} run {kill.run_id} "
                    f"pid {kill.pid}, batches committed {kill.batches_committed}, "
                    f"step {kill.step}"
                )

    def _stream_over(self) -> bool:
        """Production has ended and no ingest run is queued or running: nothing to kill."""
        if not self.production.done.is_set():
            self.idle_since = None
            return False
        active = self.instance.get_runs(
            filters=dg.RunsFilter(job_name=INGEST_JOB_NAME, statuses=ACTIVE), limit=1
        )
        if active:
            self.idle_since = None
            return False
        if self.idle_since is None:
            self.idle_since = time.monotonic()
        return time.monotonic() - self.idle_since > 3 * SENSOR_INTERVAL_S + 10

    def _started_runs(self) -> list[tuple[dg.DagsterRun, int, float]]:
        runs = self.instance.get_runs(
            filters=dg.RunsFilter(job_name=INGEST_JOB_NAME, statuses=[dg.DagsterRunStatus.STARTED])
        )
        out = []
        for run in runs:
            if run.run_id in self.killed:
                continue
            start = self.starts.get(run.run_id)
            if start is None:
                records = self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
                if not records or records[0].dagster_event is None:
                    continue
                pid = records[0].dagster_event.pid
                if not pid:
                    continue
                start = (int(pid), records[0].timestamp)
                self.starts[run.run_id] = start
            out.append((run, *start))
        return out

    def _perform(self, kill: Kill) -> bool:
        deadline = time.monotonic() + KILL_TIMEOUT_S
        passed: set[str] = set()
        accept_last = False
        fire_at: dict[str, float] = {}
        if kill.phase == "after_batch":
            kill.target_batch = self.rng.choice((1, 1, 2, 3))
        while time.monotonic() < deadline:
            self.check_pending()
            if self._stream_over():
                kill.note = "production over and no ingest run left to kill"
                return False
            for run, pid, started in self._started_runs():
                if run.run_id in passed:
                    continue
                if kill.phase == "run_start":
                    # Within 1.5 s of RUN_START and before the run's first commit.
                    if time.time() - started <= 1.5 and not self._progress(run.run_id)[0]:
                        return self._kill(kill, run, pid)
                    passed.add(run.run_id)
                elif kill.phase == "after_batch":
                    # Inside the drain: batch N committed and more to come. Runs that end
                    # before lower N, then accept batch N being the run's last.
                    batches, eof, step_over = self._progress(run.run_id)
                    assert kill.target_batch is not None
                    reached = batches >= kill.target_batch
                    if reached and not step_over and (not eof or accept_last):
                        return self._kill(kill, run, pid)
                    if step_over or (reached and eof):
                        passed.add(run.run_id)
                        if kill.target_batch > 1:
                            kill.target_batch -= 1
                        else:
                            accept_last = True
                else:
                    at = fire_at.setdefault(run.run_id, time.time() + self.rng.uniform(0, 8))
                    if time.time() >= at:
                        return self._kill(kill, run, pid)
            time.sleep(0.05)
        kill.note = f"no suitable ingest run within {KILL_TIMEOUT_S:.0f}s"
        return False

    def _progress(self, run_id: str) -> tuple[int, bool, bool]:
        """Batches committed so far by the run's ingest step, whether the last one logged
        reached the end, and whether the step is over."""
        batches = 0
        eof = step_over = False
        for record in self.instance.all_logs(run_id):
            match = _BATCH_LINE.match(record.user_message or "")
            if match:
                batches = max(batches, int(match.group(1)))
                eof = eof or match.group(2) == "True"
            event = record.dagster_event
            if (
                event is not None
                and record.step_key == "ingest_events"
                and event.event_type
                in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
            ):
                step_over = True
        return batches, eof, step_over

    def _kill(self, kill: Kill, run: dg.DagsterRun, pid: int) -> bool:
        try:
            # Only processes of the daemon this benchmark started (its own process group).
            if os.getpgid(pid) != self.daemon_pid:
                kill.note = f"pid {pid} of run {run.run_id} is not in the daemon's group"
                self.killed.add(run.run_id)
                return False
            server = _parent(pid)
            kill.children = [f"{p} {cmd}" for p, ppid, _, cmd in processes() if ppid == pid]
            if kill.with_server:
                if server != self.daemon_pid and os.getpgid(server) == self.daemon_pid:
                    os.kill(server, signal.SIGKILL)
                    kill.server_pid = server
                else:
                    kill.note = f"worker's parent {server} is not a code server of ours"
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, FileNotFoundError):
            self.killed.add(run.run_id)
            kill.note = f"pid {pid} of run {run.run_id} was already gone"
            return False
        kill.killed_mono = time.monotonic()
        kill.killed_at = time.time()
        kill.run_id = run.run_id
        kill.pid = pid
        self.killed.add(run.run_id)
        # Read after the kill: a dead worker logs nothing more, so this is its state then.
        batches, _, _ = self._progress(run.run_id)
        kill.batches_committed = batches
        kill.step = self._step(run.run_id)
        self.pending.append(kill)
        return True

    def _step(self, run_id: str) -> str | None:
        current = None
        for record in self.instance.all_logs(run_id):
            event = record.dagster_event
            if event is None:
                continue
            if event.event_type == dg.DagsterEventType.STEP_START:
                current = record.step_key
            elif (
                event.event_type
                in (
                    dg.DagsterEventType.STEP_SUCCESS,
                    dg.DagsterEventType.STEP_FAILURE,
                )
                and current == record.step_key
            ):
                current = f"after {record.step_key}"
        return current

    def check_pending(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_pending_check < 0.25:
            return
        self.last_pending_check = time.monotonic()
        still = []
        for kill in self.pending:
            assert kill.run_id is not None and kill.killed_mono is not None
            run = self.instance.get_run_by_id(kill.run_id)
            status = run.status if run else None
            if status is not None and run is not None and run.is_finished:
                kill.failed_after_s = round(time.monotonic() - kill.killed_mono, 2)
                kill.final_status = status.value
                kill.children_alive_at_final_status = sum(
                    Path(f"/proc/{child.split()[0]}").exists() for child in kill.children
                )
            else:
                still.append(kill)
        self.pending = still

    def finish(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            self.check_pending(force=True)
            time.sleep(0.25)
        for kill in self.kills:
            if kill.run_id is None:
                continue
            run = self.instance.get_run_by_id(kill.run_id)
            if run is not None and kill.final_status is None:
                kill.final_status = run.status.value
            failures = self.instance.all_logs(kill.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            if failures:
                kill.failure_message = (failures[-1].message or "")[:300]
                if kill.killed_at is not None:
                    kill.failure_event_after_s = round(failures[-1].timestamp - kill.killed_at, 2)


def plan_kills(count: int, t0: float, seconds: float, rng: random.Random) -> list[Kill]:
    phases = [PHASES[i % len(PHASES)] for i in range(count)]
    rng.shuffle(phases)
    servers = max(1, round(count * 0.15)) if count else 0
    with_server = {int((i + 0.5) * count / servers) for i in range(servers)}
    return [
        Kill(
            index=i + 1,
            phase=phases[i],
            with_server=i in with_server,
            # The last one well before production ends: after it, no lag, no runs.
            not_before=t0 + (i + 1) * seconds / (count + 2),
        )
        for i in range(count)
    ]


# --- checks ---------------------------------------------------------------------------------


@dataclass
class Checks:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, passed: bool, detail: str) -> None:
        self.results[name] = {"passed": bool(passed), "detail": detail}

    @property
    def passed(self) -> bool:
        return all(r["passed"] for r in self.results.values())


def read_deadletter_topic(servers: str, topic: str) -> dict[str, Any]:
    """Every record of the (1-partition) dead-letter topic: sources, pointers, count."""
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"faults-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "log_level": 3,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    sources: Counter[str] = Counter()
    pointers: set[str] = set()
    records = 0
    last_message = time.monotonic()
    eof = False
    try:
        # The embedded broker's watermark may trail the true end by a producer batch:
        # after EOF keep polling a little before believing it.
        while time.monotonic() - last_message < (5 if eof else 30):
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    eof = True
                    continue
                raise KafkaException(message.error())
            last_message = time.monotonic()
            records += 1
            headers = dict(message.headers() or [])
            source = (headers.get("source") or b"").decode()
            sources[source] += 1
            if headers.get("astra-pointer") == b"1":
                pointers.add(source)
    finally:
        consumer.close()
    return {"records": records, "sources": sources, "pointers": pointers, "eof": eof}


def replays(
    session: WarehouseSession, topic: str, replayed: dict[str, int]
) -> list[dict[str, Any]]:
    """Group the dead letters sent more than once by partition and by the ledger batch
    (run) that finally committed them."""
    ledger = session.query(
        'SELECT "partition", start_offset, end_offset, run_id, committed_at,'
        " epoch(committed_at) FROM ops.ingest_ledger WHERE topic = ?",
        [topic],
    ).rows()
    groups: dict[tuple[int, str], dict[str, Any]] = {}
    for source in replayed:
        _, partition_text, offset_text = source.rsplit("/", 2)
        partition, offset = int(partition_text), int(offset_text)
        row = next((r for r in ledger if r[0] == partition and r[1] <= offset < r[2]), None)
        run_id = row[3] if row else None
        group = groups.setdefault(
            (partition, str(run_id)),
            {
                "partition": partition,
                "offsets": [offset, offset],
                "sources": 0,
                "committed_by_run": run_id,
                "committed_at": row[4].isoformat() if row else None,
                "committed_at_epoch": float(row[5]) if row else 0.0,
            },
        )
        group["offsets"] = [min(group["offsets"][0], offset), max(group["offsets"][1], offset)]
        group["sources"] += 1
    return sorted(groups.values(), key=lambda g: (g["committed_at_epoch"], g["partition"]))


def _where(session: WarehouseSession, partition: int, offset: int) -> dict[str, Any]:
    """Where one message ended up in the warehouse (for the evidence of a failed check)."""
    out: dict[str, Any] = {"partition": partition, "offset": offset}
    for table in (
        "raw.events",
        "clean.sensor_readings",
        "clean.user_activity",
        "clean.duplicate_events",
    ):
        count = session.scalar(
            f'SELECT count(*) FROM {table} WHERE "partition" = ? AND "offset" = ?',
            [partition, offset],
        )
        out[table] = int(count or 0)
    dead = session.query(
        'SELECT reason FROM clean.dead_letter_events WHERE "partition" = ? AND "offset" = ?',
        [partition, offset],
    ).rows()
    out["dead_letter_reasons"] = [r[0][:200] for r in dead]
    return out


def verify(
    session: WarehouseSession,
    topic: str,
    expected: Expected,
    dlq: dict[str, Any],
) -> tuple[Checks, dict[str, Any]]:
    checks = Checks()
    figures: dict[str, Any] = {}
    produced = expected.delivered

    def scalar(sql: str, params: list[Any] | None = None) -> int:
        value = session.scalar(sql, params)
        return int(value) if value is not None else 0

    contiguous = all(count == top + 1 for count, top in expected.partitions.values())
    checks.add(
        "topic_holds_exactly_what_was_produced",
        contiguous and not expected.failures,
        f"{produced:,} delivered, offsets contiguous from 0 in every partition: {contiguous}; "
        f"delivery failures: {len(expected.failures)}",
    )

    raw = scalar("SELECT count(*) FROM raw.events")
    raw_distinct = scalar(
        'SELECT count(*) FROM (SELECT DISTINCT "partition", "offset" FROM raw.events)'
    )
    figures["raw_events"] = raw
    checks.add(
        "raw_events_equal_produced",
        raw == produced and raw_distinct == raw,
        f"raw.events {raw:,} (distinct coordinates {raw_distinct:,}), produced {produced:,}",
    )

    ledger = scalar("SELECT coalesce(sum(message_count), 0) FROM ops.ingest_ledger")
    figures["ledger_messages"] = ledger
    rows = session.query(
        'SELECT "partition", start_offset, end_offset FROM ops.ingest_ledger WHERE topic = ?'
        " ORDER BY 1, 2",
        [topic],
    ).rows()
    gaps = 0
    ends: dict[int, int] = {}
    for partition, start, end in rows:
        if start != ends.get(partition, 0):
            gaps += 1
        ends[partition] = end
    complete = all(ends.get(p, 0) == top + 1 for p, (_, top) in expected.partitions.items())
    figures["ledger_batches"] = len(rows)
    checks.add(
        "ledger_sum_equals_produced",
        ledger == produced and gaps == 0 and complete,
        f"sum(message_count) {ledger:,}, produced {produced:,}; ledger rows {len(rows):,}, "
        f"gaps or overlaps {gaps}, every partition ends at its last offset + 1: {complete}",
    )

    sensor = session.frame("SELECT event_id FROM clean.sensor_readings")["event_id"]
    user = session.frame("SELECT event_id FROM clean.user_activity")["event_id"]
    got_sensor, got_user = set(sensor.to_list()), set(user.to_list())
    want = len(expected.sensor_ids) + len(expected.user_ids)
    figures["clean_rows"] = sensor.len() + user.len()
    figures["clean_sensor_readings"] = sensor.len()
    figures["clean_user_activity"] = user.len()
    missing = (expected.sensor_ids - got_sensor) | (expected.user_ids - got_user)
    extra = (got_sensor - expected.sensor_ids) | (got_user - expected.user_ids)
    evidence = ""
    if missing or extra:
        sample_missing = sorted(missing)[:5]
        sample_extra = sorted(extra)[:5]
        dup_rows = []
        for event_id in sample_missing:
            dup_rows += session.query(
                'SELECT event_id, "partition", "offset" FROM clean.duplicate_events'
                " WHERE event_id = ?",
                [event_id],
            ).rows()
        evidence = (
            f"; missing (sample) {sample_missing}, of which in duplicate_events {dup_rows};"
            f" unexpected (sample) {[i[:80] for i in sample_extra]}"
        )
    checks.add(
        "clean_rows_equal_expected_valid_ids",
        figures["clean_rows"] == want and not missing and not extra,
        f"clean rows {figures['clean_rows']:,} (sensor {sensor.len():,}, user "
        f"{user.len():,}), expected distinct valid ids {want:,}; missing {len(missing):,}, "
        f"unexpected {len(extra):,}{evidence}",
    )
    twice = (sensor.len() - len(got_sensor)) + (user.len() - len(got_user))
    both = len(got_sensor & got_user)
    expected_both = len(expected.sensor_ids & expected.user_ids)
    checks.add(
        "no_event_id_twice_in_clean_tables",
        twice == 0 and both == expected_both,
        f"repeated ids within a table {twice}; ids in both tables {both} "
        f"(expected {expected_both})",
    )

    dead = session.frame('SELECT "partition", "offset" FROM clean.dead_letter_events')
    dead_set = set(zip(dead["partition"].to_list(), dead["offset"].to_list(), strict=True))
    figures["dead_letters"] = dead.height
    want_dead = set(expected.dead)
    missing_dead = sorted(want_dead - dead_set)
    extra_dead = sorted(dead_set - want_dead)
    evidence = ""
    if missing_dead or extra_dead:
        evidence = (
            f"; expected but not dead-lettered (sample): "
            f"{[(expected.dead[c], _where(session, *c)) for c in missing_dead[:5]]}"
            f"; dead-lettered but expected clean (sample): "
            f"{[_where(session, *c) for c in extra_dead[:5]]}"
        )
    checks.add(
        "dead_letters_equal_expected",
        dead.height == len(want_dead) and not missing_dead and not extra_dead,
        f"dead_letter_events {dead.height:,} (distinct coordinates {len(dead_set):,}), "
        f"expected {len(want_dead):,}; missing {len(missing_dead)}, unexpected "
        f"{len(extra_dead)}{evidence}",
    )

    duplicates = scalar("SELECT count(*) FROM clean.duplicate_events")
    figures["duplicate_events"] = duplicates
    want_duplicates = expected.accepted - want
    checks.add(
        "every_message_in_exactly_one_place",
        figures["clean_rows"] + duplicates + dead.height == raw and duplicates == want_duplicates,
        f"clean {figures['clean_rows']:,} + duplicates {duplicates:,} (expected "
        f"{want_duplicates:,}) + dead letters {dead.height:,} = "
        f"{figures['clean_rows'] + duplicates + dead.height:,}; raw {raw:,}",
    )

    late = 0
    if expected.future:
        frame = session.frame(
            'SELECT "partition", "offset", epoch(ingested_at) AS at FROM raw.events'
        )
        future = pl.DataFrame(
            {
                "partition": [c[0] for c in expected.future],
                "offset": [c[1] for c in expected.future],
                "after": list(expected.future.values()),
            },
            schema={"partition": pl.Int32, "offset": pl.Int64, "after": pl.Float64},
        )
        joined = future.join(frame, on=["partition", "offset"], how="inner")
        late = joined.filter(pl.col("at") >= pl.col("after")).height
    figures["future_ts_expected_dead"] = len(expected.future)
    figures["future_ts_ingested_too_late"] = late
    checks.add(
        "future_ts_expectations_held",
        late == 0,
        f"{late} of {len(expected.future):,} future_ts messages were ingested when the "
        "contract would already accept them (their expectation would be void)",
    )

    want_sources = {f"{topic}/{p}/{o}" for p, o in want_dead}
    sources: Counter[str] = dlq["sources"]
    replayed = {s: n for s, n in sources.items() if n > 1}
    figures["deadletter_topic_records"] = dlq["records"]
    figures["deadletter_topic_distinct_sources"] = len(sources)
    figures["deadletter_topic_pointers"] = len(dlq["pointers"])
    figures["deadletter_topic_replayed_records"] = sum(replayed.values()) - len(replayed)
    figures["deadletter_topic_replays"] = replays(session, topic, replayed)
    checks.add(
        "deadletter_topic_has_every_dead_letter",
        set(sources) == want_sources,
        f"distinct sources {len(sources):,}, expected {len(want_sources):,}; missing "
        f"{len(want_sources - set(sources))}, unexpected {len(set(sources) - want_sources)}",
    )
    checks.add(
        "deadletter_topic_one_record_per_dead_letter",
        dlq["records"] == len(want_sources) and not replayed,
        f"records {dlq['records']:,}, dead letters {len(want_sources):,}; sources with more "
        f"than one record {len(replayed)} (sample {sorted(replayed.items())[:5]})",
    )
    want_pointers = {f"{topic}/{p}/{o}" for p, o in expected.pointers}
    checks.add(
        "pointer_records_exactly_for_oversized_dead_letters",
        dlq["pointers"] == want_pointers,
        f"pointer records (header astra-pointer=1) {len(dlq['pointers'])}, dead letters over "
        f"{KAFKA_DEFAULT_MAX_MESSAGE_BYTES:,} bytes {len(want_pointers)}",
    )
    return checks, figures


# --- the run --------------------------------------------------------------------------------


CODE_FOLDERS = ("astra_pipeline", "resources", "sensors")
CODE_FILES = ("workspace.yaml", "dagster.embedded.yaml", "pyproject.toml")


def code_fingerprint() -> dict[str, str]:
    """A hash per file of the code under test: each run worker imports it from disk when
    it starts, so an edit during the benchmark changes what is being measured."""
    paths = [p for folder in CODE_FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))]
    paths += [ROOT / name for name in CODE_FILES]
    return {
        str(path.relative_to(ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for path in paths
        if path.exists()
    }


def _changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    names = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    out = []
    for name in names:
        path = ROOT / name
        when = (
            dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat(timespec="seconds")
            if path.exists()
            else "deleted"
        )
        out.append(f"{name} (modified {when})")
    return out


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem_kb = int(line.split()[1])
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }


def run_benchmark(args: argparse.Namespace, command: str) -> dict[str, Any]:
    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="astra-faults-"))
    rng = random.Random(f"{args.seed}:faults")
    summary: dict[str, Any] = {
        "command": command,
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {
            "events": args.events,
            "fuzz": args.fuzz,
            "adversarial_copies": args.adversarial_copies,
            "kills": args.kills,
            "produce_seconds": args.produce_seconds,
            "max_batch_size": args.max_batch_size or "product default",
            "seed": args.seed,
            "sensor_interval_s": SENSOR_INTERVAL_S,
            "simulated_fractions": {"malformed": 0.02, "duplicate": 0.02, "late": 0.02},
        },
        "workdir": str(workdir),
    }
    checks = Checks()
    code_before = code_fingerprint()
    summary["code_fingerprint"] = hashlib.sha256(
        json.dumps(code_before, sort_keys=True).encode()
    ).hexdigest()[:16]
    broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
    catalog = contextlib.ExitStack()
    try:
        # The lake's catalog outlives the daemon: the checks read the lake after it.
        warehouse, _ = catalog.enter_context(lake_catalog(workdir)).new()
        servers = broker.bootstrap_servers
        topic = f"faults_{uuid.uuid4().hex[:8]}"
        dlq_topic, alerts = f"{topic}_dlq", f"{topic}_alerts"
        KafkaResource(bootstrap_servers=servers).create_topics(
            {topic: PARTITIONS, dlq_topic: 1, alerts: 1}
        )
        env = {
            "ASTRA_KAFKA_BOOTSTRAP_SERVERS": servers,
            "ASTRA_TOPIC_RAW": topic,
            "ASTRA_TOPIC_DEADLETTER": dlq_topic,
            "ASTRA_TOPIC_ALERTS": alerts,
            "ASTRA_CONSUMER_GROUP": f"g-{topic}",
        }
        if args.max_batch_size:
            env["ASTRA_MAX_BATCH_SIZE"] = str(args.max_batch_size)
        summary["topics"] = {"raw": topic, "deadletter": dlq_topic, "alerts": alerts}
        with running_daemon(workdir, warehouse, env) as daemon:
            log(f"daemon pid {daemon.process.pid}, broker {servers}, workdir {workdir}")
            instance = dg.DagsterInstance.from_config(str(daemon.home))
            t0 = time.time() + 2.0
            start = dt.datetime.fromtimestamp(t0 + LEAD_S, dt.UTC)
            traffic = Traffic(
                args.events,
                args.fuzz,
                args.adversarial_copies,
                args.seed,
                start,
                args.produce_seconds,
            )
            production = Production(servers, topic, traffic, t0, args.produce_seconds)
            reader = ReadOnlyReader(daemon.warehouse)
            kills = plan_kills(args.kills, t0, args.produce_seconds, rng)
            injector = Injector(instance, daemon.process.pid, production, kills, rng)
            log(f"producing {traffic.total:,} messages over {args.produce_seconds:.0f}s")
            reader.start()
            production.start()
            injector.run()
            while production.is_alive():
                injector.check_pending()
                time.sleep(0.1)
            if production.error:
                log(f"production failed: {production.error}")
            last_fault = max((k.killed_at for k in kills if k.killed_at), default=None)
            produced = production.expected.delivered
            log(f"produced {produced:,}; waiting for the warehouse to catch up")
            caught_up_seen = None
            deadline = time.time() + args.catch_up_timeout
            while time.time() < deadline:
                injector.check_pending()
                if reader.last is not None and reader.last[1] >= produced:
                    caught_up_seen = reader.last[0]
                    break
                time.sleep(0.25)
            injector.finish(timeout_s=120)
            log("waiting for the instance to settle")
            settled_after, leftover = settle(instance, args.settle_timeout)
            summary["orphan_processes_after_settling"] = orphans(daemon.process.pid)
            reader.stop.set()
            reader.join(timeout=30)
            runs = runs_by_job(instance, {k.run_id for k in kills if k.run_id})
            instance.dispose()
        log("daemon stopped; verifying")
        summary["produced"] = {
            "messages": production.expected.delivered,
            "bytes": production.expected.delivered_bytes,
            "planned": traffic.total,
            "by_source": _by_source(production.expected.labels),
            "by_label": dict(sorted(production.expected.labels.items())),
            "delivery_failures": production.expected.failures[:10],
            "production_error": production.error,
            "seconds": round(production.finished_at - t0, 1),
            "max_behind_schedule_s": round(production.max_behind_s, 2),
            "fuzz_redrawn_for_time_dependent_verdict": traffic.unstable_redrawn,
            "adversarial_time_dependent": traffic.adversarial_unstable,
            "simulator_label_vs_contract_disagreements": dict(traffic.simulator_vs_contract),
            "contract_errors_other_than_rejection": dict(traffic.contract_errors.most_common(10)),
        }
        expected = production.expected
        summary["expected"] = {
            "clean_rows": len(expected.sensor_ids) + len(expected.user_ids),
            "sensor_readings": len(expected.sensor_ids),
            "user_activity": len(expected.user_ids),
            "duplicates": expected.accepted - len(expected.sensor_ids) - len(expected.user_ids),
            "dead_letters": len(expected.dead),
            "pointer_dead_letters": len(expected.pointers),
        }
        dlq = read_deadletter_topic(servers, dlq_topic)
        with daemon.warehouse.session(read_only=True) as session:
            checks, figures = verify(session, topic, expected, dlq)
            last_commit_epoch = session.scalar(
                "SELECT epoch(max(committed_at)) FROM ops.ingest_ledger"
            )
        summary["warehouse"] = figures
        for replay in figures["deadletter_topic_replays"]:
            before = [
                k for k in kills if k.killed_at and k.killed_at < replay["committed_at_epoch"]
            ]
            replay["last_kill_before"] = before[-1].index if before else None
        last_commit = float(last_commit_epoch) if last_commit_epoch else None
        summary["kills"] = [_kill_record(k) for k in kills]
        summary["kill_summary"] = kill_summary(kills)
        caught_up = figures["ledger_messages"] == produced and last_commit is not None
        summary["catch_up"] = {
            "last_fault_at": _iso_or_none(last_fault),
            "last_message_produced_at": _iso_or_none(production.finished_at),
            "caught_up_at_last_ledger_commit": _iso_or_none(last_commit if caught_up else None),
            "last_fault_to_caught_up_s": _delta(last_fault, last_commit if caught_up else None),
            "last_fault_to_last_message_s": _delta(last_fault, production.finished_at),
            "last_message_to_caught_up_s": _delta(
                production.finished_at, last_commit if caught_up else None
            ),
            "reader_saw_caught_up_s_after_last_fault": _delta(last_fault, caught_up_seen),
        }
        summary["reader"] = {
            "attempts": reader.attempts,
            "successful_reads": reader.reads,
            "distinct_counts_seen": len(reader.counts),
            "last_count_seen": reader.last[1] if reader.last else None,
            "slowest_read_s": round(reader.slowest_s, 3),
            "lake_or_table_not_there_yet": reader.not_ready,
            "other_errors": dict(reader.other_errors),
            "count_decreased": reader.decreases,
        }
        summary["runs"] = runs
        summary["settle"] = {"quiet_after_s": settled_after, "left_active": leftover}
        _add_run_checks(checks, summary, kills, args.kills, caught_up, caught_up_seen, reader)
        changed = _changed(code_before, code_fingerprint())
        summary["code_changed_during_run"] = changed
        checks.add(
            "code_under_test_unchanged_during_run",
            not changed,
            f"files of {', '.join(CODE_FOLDERS)} and {', '.join(CODE_FILES)} changed while "
            f"the benchmark ran: {changed or 'none'}",
        )
        if production.error or expected.failures:
            checks.add("production_completed", False, production.error or expected.failures[0])
    finally:
        catalog.close()
        broker.stop()
    summary["checks"] = checks.results
    summary["passed"] = checks.passed
    summary["load_average_at_end"] = list(os.getloadavg())
    summary["wall_seconds"] = round(time.time() - started, 1)
    if summary["passed"] and not args.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
        summary["workdir"] += " (removed)"
    return summary


def _by_source(labels: Counter[str]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for label, count in labels.items():
        out[label.split(":", 1)[0]] += count
    return dict(out)


def _iso_or_none(moment: float | None) -> str | None:
    if moment is None:
        return None
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat(timespec="milliseconds")


def _delta(since: float | None, until: float | None) -> float | None:
    if since is None or until is None:
        return None
    return round(until - since, 2)


def _kill_record(kill: Kill) -> dict[str, Any]:
    return {
        "index": kill.index,
        "phase": kill.phase,
        "target_batch": kill.target_batch,
        "with_code_server": kill.with_server,
        "run_id": kill.run_id,
        "worker_pid": kill.pid,
        "server_pid": kill.server_pid,
        "killed_at": _iso_or_none(kill.killed_at),
        "batches_committed_before_kill": kill.batches_committed,
        "step_at_kill": kill.step,
        "final_status": kill.final_status,
        "kill_to_failure_event_s": kill.failure_event_after_s,
        "kill_to_status_observed_s": kill.failed_after_s,
        "failure_message": kill.failure_message,
        "note": kill.note,
        "worker_children_at_kill": kill.children,
        "worker_children_alive_at_final_status": kill.children_alive_at_final_status,
    }


def _to_failure(kill: Kill) -> float | None:
    """Kill to the RUN_FAILURE event's timestamp; else to the finished status as polled."""
    if kill.failure_event_after_s is not None:
        return kill.failure_event_after_s
    return kill.failed_after_s


def kill_summary(kills: list[Kill]) -> dict[str, Any]:
    done = [k for k in kills if k.killed_at is not None]
    failed = [k for k in done if k.final_status == dg.DagsterRunStatus.FAILURE.value]
    with_server = {k.index for k in done if k.server_pid is not None}
    seconds = {k.index: _to_failure(k) for k in failed}
    times = [t for t in seconds.values() if t is not None]
    worker = [t for i, t in seconds.items() if t is not None and i not in with_server]
    server = [t for i, t in seconds.items() if t is not None and i in with_server]
    return {
        "requested": len(kills),
        "performed": len(done),
        "by_phase": dict(Counter(k.phase for k in done)),
        "with_code_server": sum(k.server_pid is not None for k in done),
        "marked_failure": len(failed),
        "kill_to_failure_max_s": max(times) if times else None,
        "kill_to_failure_median_s": round(statistics.median(times), 2) if times else None,
        "worker_only_max_s": max(worker) if worker else None,
        "with_server_max_s": max(server) if server else None,
    }


def settle(instance: dg.DagsterInstance, timeout_s: float) -> tuple[float | None, list[str]]:
    """Wait until no run of any job is queued or running for QUIET_S."""
    began = time.monotonic()
    quiet_since: float | None = None
    active: list[dg.DagsterRun] = []
    while time.monotonic() - began < timeout_s:
        active = list(instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE)))
        if active:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET_S:
            return round(quiet_since - began, 1), []
        time.sleep(1)
    return None, [f"{r.job_name} {r.run_id} {r.status.value}" for r in active]


def runs_by_job(instance: dg.DagsterInstance, killed: set[str | None]) -> dict[str, Any]:
    counts: dict[str, Counter[str]] = {}
    unexpected: list[dict[str, Any]] = []
    for run in instance.get_runs():
        counts.setdefault(run.job_name, Counter())[run.status.value] += 1
        if run.status == dg.DagsterRunStatus.FAILURE and run.run_id not in killed:
            failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            steps = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
            events = instance.all_logs(run.run_id)
            unexpected.append(
                {
                    "job": run.job_name,
                    "run_id": run.run_id,
                    "message": (failures[-1].message or "")[:300] if failures else None,
                    "step_errors": [(s.step_key, _step_error(s)) for s in steps[:3]],
                    "last_events": [
                        f"{_stamp(e.timestamp)} {e.dagster_event_type}: {(e.message or '')[:200]}"
                        for e in events[-6:]
                    ],
                }
            )
    return {
        "by_job_and_status": {job: dict(c) for job, c in sorted(counts.items())},
        "failed_runs_not_killed_by_us": unexpected,
    }


def _stamp(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%H:%M:%S.%f")[:-3]


def _step_error(record: Any) -> str | None:
    event = record.dagster_event
    data = getattr(event, "event_specific_data", None) if event is not None else None
    error = getattr(data, "error", None)
    if error is None:
        return None
    return f"{error.cls_name}: {error.message[:240]}"


def _add_run_checks(
    checks: Checks,
    summary: dict[str, Any],
    kills: list[Kill],
    requested: int,
    caught_up: bool,
    caught_up_seen: float | None,
    reader: ReadOnlyReader,
) -> None:
    ks = summary["kill_summary"]
    checks.add(
        "every_planned_kill_performed",
        ks["performed"] == requested,
        f"{ks['performed']} of {requested} kills performed; by phase {ks['by_phase']}; "
        f"with the code server {ks['with_code_server']}",
    )
    checks.add(
        "warehouse_caught_up",
        caught_up and caught_up_seen is not None,
        f"last fault to caught up {summary['catch_up']['last_fault_to_caught_up_s']} s "
        f"(last ledger commit); last message to caught up "
        f"{summary['catch_up']['last_message_to_caught_up_s']} s",
    )
    settle_info = summary["settle"]
    checks.add(
        "no_run_left_queued_or_running",
        settle_info["quiet_after_s"] is not None and not settle_info["left_active"],
        f"no active run for {QUIET_S:.0f}s reached after {settle_info['quiet_after_s']} s; "
        f"left active: {settle_info['left_active'][:5]}",
    )
    checks.add(
        "killed_runs_marked_failure",
        ks["marked_failure"] == ks["performed"],
        f"{ks['marked_failure']} of {ks['performed']} killed runs FAILURE; statuses "
        f"{dict(Counter(k.final_status for k in kills if k.killed_at))}",
    )
    late = [
        k.index
        for k in kills
        if k.killed_at is not None
        and (
            (seconds := _to_failure(k)) is None
            or seconds > (SERVER_BOUND_S if k.server_pid else WORKER_BOUND_S)
        )
    ]
    checks.add(
        "kill_to_failure_within_test_bounds",
        not late,
        f"max {ks['kill_to_failure_max_s']} s, median {ks['kill_to_failure_median_s']} s "
        f"(bounds: {WORKER_BOUND_S:.0f} s worker only, {SERVER_BOUND_S:.0f} s with its code "
        f"server, as in test_dead_runs.py); over the bound: kills {late}",
    )
    checks.add(
        "read_only_reader_never_saw_the_count_go_down",
        reader.reads > 0 and reader.decreases == 0 and not reader.other_errors,
        f"{reader.reads:,} reads of {reader.attempts:,} attempts ({reader.not_ready:,} before "
        f"the lake or its tables existed), {len(reader.counts):,} distinct counts, slowest "
        f"read {reader.slowest_s:.2f} s, other errors {dict(reader.other_errors)}, decreases "
        f"{reader.decreases}",
    )


# --- the document ---------------------------------------------------------------------------


def write_doc(summary: dict[str, Any], path: Path) -> None:
    m = summary["machine"]
    c = summary["config"]
    p = summary["produced"]
    e = summary["expected"]
    w = summary.get("warehouse", {})
    ks = summary["kill_summary"]
    cu = summary["catch_up"]
    per_copy = p["by_source"].get("adversarial", 0) // max(c["adversarial_copies"], 1)
    lines = [
        "# Fault injection: no message and no dead run may stop ingestion",
        "",
        "Measured by `bench/faults.py`: the whole system (embedded broker, `dagster-daemon`",
        "with the sensors on, a fresh SQLite instance from `dagster.embedded.yaml`, a fresh",
        "lake: its catalog in a private Postgres, its Parquet files in the work folder),",
        "traffic with malformed, adversarial and fuzzed messages, and ingest run workers",
        "SIGKILLed while it runs. Nobody touches the instance.",
        "",
        "## Command",
        "",
        "```",
        summary["command"],
        "```",
        "",
        f"Run from the repository root, started {summary['started_at']}, "
        f"{summary['wall_seconds']:.0f} s wall clock. Result: "
        f"**{'PASSED' if summary['passed'] else 'FAILED'}** "
        f"({sum(r['passed'] for r in summary['checks'].values())} of "
        f"{len(summary['checks'])} checks passed).",
        "",
        f"Code under test: fingerprint `{summary['code_fingerprint']}` (sha256 over the files "
        "of astra_pipeline/, resources/, sensors/, workspace.yaml, dagster.embedded.yaml and "
        "pyproject.toml); changed while the benchmark ran: "
        f"{', '.join(summary.get('code_changed_during_run', [])) or 'none'}.",
        "",
        "## Machine",
        "",
        f"{m['cores']} cores, CPU: {m['cpu_model']} (from /proc/cpuinfo), "
        f"{m['memory_gib']} GiB RAM, {m['system']}, Python {m['python']}. The machine is "
        "shared with another engineer who runs tests on it (not controlled here); load "
        f"average (1/5/15 min) {_loads(m['load_average_at_start'])} at the start, "
        f"{_loads(summary['load_average_at_end'])} at the end.",
        "",
        "## Traffic",
        "",
        f"- {c['events']:,} simulated events (seed {c['seed']}; 2% malformed, 2% resends, "
        "2% late), paced over "
        f"{c['produce_seconds']:.0f} s; {c['fuzz']:,} fuzzed messages (random bytes, "
        "mutations of valid events, tombstones); "
        f"{c['adversarial_copies']} copies of {per_copy} "
        "adversarial messages, all interleaved by one producer thread "
        "(`message.max.bytes` 10,000,000).",
        f"- Produced: {p['messages']:,} messages, {p['bytes'] / 1e6:,.1f} MB, in "
        f"{p['seconds']:.0f} s (at most {p['max_behind_schedule_s']} s behind schedule); "
        f"by source {p['by_source']}.",
        f"- Expected (computed by the benchmark: simulator labels, and "
        "`parse_event` for the others): "
        f"{e['clean_rows']:,} clean rows ({e['sensor_readings']:,} sensor, "
        f"{e['user_activity']:,} user), {e['duplicates']:,} duplicates, "
        f"{e['dead_letters']:,} dead letters ({e['pointer_dead_letters']} over "
        f"{KAFKA_DEFAULT_MAX_MESSAGE_BYTES:,} bytes, to be published as pointers).",
        f"- Simulator label vs contract disagreements: "
        f"{p['simulator_label_vs_contract_disagreements'] or 'none'}; contract exceptions other "
        f"than a rejection: {p['contract_errors_other_than_rejection'] or 'none'}; fuzz "
        f"mutations redrawn because their verdict depended on the ingestion time: "
        f"{p['fuzz_redrawn_for_time_dependent_verdict']}.",
        f"- Ingest batch size: {c['max_batch_size']} (`ASTRA_MAX_BATCH_SIZE`, so that runs "
        "commit several batches and a kill can land after batch N); sensor interval "
        f"{c['sensor_interval_s']} s.",
        "",
        "## Faults",
        "",
        f"{ks['performed']} of {ks['requested']} planned SIGKILLs of an ingest run's worker "
        f"(by phase {ks['by_phase']}; {ks['with_code_server']} together with the worker's "
        "code server). Kill to the run marked FAILURE: "
        f"median {ks['kill_to_failure_median_s']} s, max {ks['kill_to_failure_max_s']} s "
        f"(worker only: max {ks['worker_only_max_s']} s; with its code server: max "
        f"{ks['with_server_max_s']} s); {ks['marked_failure']} of {ks['performed']} killed "
        "runs marked FAILURE. A read-only reader of the lake ran throughout (a lake reader "
        "never waits for the writers): "
        f"{summary['reader']['successful_reads']:,} reads of "
        f"{summary['reader']['attempts']:,} attempts, "
        f"{summary['reader']['distinct_counts_seen']:,} distinct counts of raw.events seen, "
        f"the count went down {summary['reader']['count_decreased']} times, slowest read "
        f"{summary['reader']['slowest_read_s']} s, other errors "
        f"{len(summary['reader']['other_errors'])}.",
        "",
        "| # | Phase | Code server too | Batches committed | Step at kill | Status "
        "| Kill to RUN_FAILURE (s) |",
        "|---:|---|---|---:|---|---|---:|",
    ]
    for k in summary["kills"]:
        phase = k["phase"] + (f" (batch {k['target_batch']})" if k["target_batch"] else "")
        lines.append(
            f"| {k['index']} | {phase} | {'yes' if k['server_pid'] else 'no'} | "
            f"{_dash(k['batches_committed_before_kill'])} | {_dash(k['step_at_kill'])} | "
            f"{_dash(k['final_status'] or k['note'])} | {_dash(k['kill_to_failure_event_s'])} |"
        )
    lines += [
        "",
        "## Results",
        "",
        "| Figure | Value |",
        "|---|---:|",
        f"| Messages produced | {p['messages']:,} |",
        f"| raw.events rows | {_num(w.get('raw_events'))} |",
        f"| ops.ingest_ledger sum(message_count) | {_num(w.get('ledger_messages'))} |",
        f"| Clean rows (expected {e['clean_rows']:,}) | {_num(w.get('clean_rows'))} |",
        f"| Duplicate rows (expected {e['duplicates']:,}) | {_num(w.get('duplicate_events'))} |",
        f"| Dead letters in the table (expected {e['dead_letters']:,}) | "
        f"{_num(w.get('dead_letters'))} |",
        f"| Dead-letter topic records | {_num(w.get('deadletter_topic_records'))} |",
        f"| Dead-letter topic distinct sources | "
        f"{_num(w.get('deadletter_topic_distinct_sources'))} |",
        f"| Dead-letter topic pointer records | {_num(w.get('deadletter_topic_pointers'))} |",
        f"| Last fault to caught up (last ledger commit) | "
        f"{_dash(cu['last_fault_to_caught_up_s'])} s |",
        f"| Last message produced to caught up | {_dash(cu['last_message_to_caught_up_s'])} s |",
        f"| (Last fault to last message produced) | "
        f"{_dash(cu['last_fault_to_last_message_s'])} s |",
        f"| Instance settled (no active run for {QUIET_S:.0f} s) after | "
        f"{_dash(summary['settle']['quiet_after_s'])} s |",
        "",
        "Runs by job and status: "
        + "; ".join(
            f"`{job}` {statuses}" for job, statuses in summary["runs"]["by_job_and_status"].items()
        )
        + ". Failed runs not killed by the benchmark: "
        + str(len(summary["runs"]["failed_runs_not_killed_by_us"]))
        + ".",
        *[
            f"- `{r['job']}` run `{r['run_id']}`: {r['message']}"
            for r in summary["runs"]["failed_runs_not_killed_by_us"]
        ],
        "",
        "Dead letters sent to the dead-letter topic more than once: "
        f"{_num(w.get('deadletter_topic_replayed_records'))} extra records"
        + (
            " (below by partition and by the run whose ledger batch holds them)."
            if w.get("deadletter_topic_replays")
            else "."
        ),
        *[
            f"- partition {r['partition']}, offsets {r['offsets'][0]:,}-{r['offsets'][1]:,}: "
            f"{r['sources']:,} sources sent twice or more, committed by run "
            f"`{r['committed_by_run']}` at {r['committed_at']}; the last kill before that "
            f"commit: #{r['last_kill_before']}"
            for r in w.get("deadletter_topic_replays", [])
        ],
        "",
        "Processes of the daemon's group left without their parent after settling: "
        f"{len(summary.get('orphan_processes_after_settling', []))}"
        + "".join(f"; `{o}`" for o in summary.get("orphan_processes_after_settling", [])[:5])
        + ".",
        "",
        "## Checks",
        "",
        "| Check | Result | Detail |",
        "|---|---|---|",
    ]
    for name, result in summary["checks"].items():
        detail = result["detail"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {name} | {'pass' if result['passed'] else '**FAIL**'} | {detail} |")
    lines += [
        "",
        "## How it is measured",
        "",
        "- Expected outcome: for simulated messages the simulator's own `kind` (valid, late",
        "  and resends are accepted, malformed ones are dead letters); the contract is asked",
        "  too and disagreements are reported above. For fuzzed and adversarial messages",
        "  `parse_event(value, now=...)` (EventRejected = dead letter), and only messages",
        f"  whose verdict is the same now and {STABLE_FOR_S:.0f} s later are produced. Each",
        "  message's partition and offset come from its delivery report.",
        f"- Simulated event time runs {LEAD_S:.0f} s ahead of the production schedule; a",
        "  future_ts message ingested after the contract would accept it is counted",
        "  (`future_ts_expectations_held`).",
        "- Kill phases: `run_start` within 1.5 s of the run's RUN_START event and before",
        "  its first batch commit; `after_batch` once the run logged `batch N:` (the batch",
        "  is committed) for the drawn N, with more batches to come (each run that ends",
        "  first lowers N, then allows the run's last batch); `random` 0-8 s after the run",
        "  is first seen STARTED. The worker pid is the RUN_START event's; the code server",
        "  is the worker's parent. Only processes in the daemon's own process group are",
        "  signalled.",
        "- Kill to FAILURE: the timestamp of the run's RUN_FAILURE event minus the time of",
        "  the SIGKILL (same clock); the status is also polled (every 0.25 s) to see that",
        "  it is FAILURE. Caught up: the time of the last ledger commit, when the ledger",
        "  sum equals the messages produced.",
        "- Dead-letter topic: read from offset 0 to the end after the run; records, distinct",
        "  `source` headers, and records with header `astra-pointer=1`.",
        "  `deadletter_topic_one_record_per_dead_letter` checks that no dead letter was sent",
        "  twice (docs/exactly-once.md: exactly once, by an outbox in the dead-letter table),",
        "  `deadletter_topic_has_every_dead_letter` that none is missing.",
        "- The run's files (daemon log, instance, the lake's Parquet files and, unless run "
        f"as root, its catalog's Postgres data) are in `{summary['workdir']}`.",
        "",
    ]
    path.write_text("\n".join(lines))


def _loads(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--fuzz", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--adversarial-copies", type=int, default=ADVERSARIAL_COPIES)
    parser.add_argument(
        "--produce-seconds",
        type=float,
        default=None,
        help="pace the traffic over this long (default: 36 s per kill, at least 120 s)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=10_000,
        help="ASTRA_MAX_BATCH_SIZE for the daemon (0: the product default)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--catch-up-timeout", type=float, default=600.0)
    parser.add_argument("--settle-timeout", type=float, default=600.0)
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--write-doc", action="store_true", help="write docs/faults.md")
    args = parser.parse_args()
    if args.produce_seconds is None:
        args.produce_seconds = max(120.0, 36.0 * args.kills)
    command = ".venv/bin/python bench/faults.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    summary = run_benchmark(args, command.strip())
    print(json.dumps(summary, indent=2, default=str))
    if args.write_doc:
        write_doc(summary, ROOT / "docs" / "faults.md")
        log("wrote docs/faults.md")
    sys.exit(0 if summary["passed"] else 1)


if __name__ == "__main__":
    main()
