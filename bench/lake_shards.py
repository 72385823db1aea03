"""Ingest shards on a lake: one `astra ingest` process against two side by side.

One embedded broker, one simulated data set, one private Postgres holding every lake's
catalog (``bench/lake.py``'s set-up), in one run:

1. librdkafka's raw consume rate (``bench/ingest.py``'s ``raw_consume``): the ceiling;
2. one shard: ``astra ingest --shards 1 --shard 0`` drains the whole topic into a fresh
   lake, one process;
3. two shards: ``astra ingest --shards 2 --shard 0`` and ``--shard 1`` started at the
   same moment, both into the same fresh lake; wall time from the start of both to the
   end of the last; events/s = N / wall time.

One and two alternate (one, two, one, two with ``--reps 2``); each rep has a fresh lake
and its own consumer group, process start-up included in both. After each drain the lake
must hold exactly N raw rows (count(*) and count(DISTINCT (partition, offset)) of
raw.events), or the run stops. CPU time (user + system) of each ``astra ingest`` process
(with its reaped helpers, from wait4), of the broker and of Postgres (postmaster and
its ended backends, from /proc) is taken per drain.

Usage: .venv/bin/python bench/lake_shards.py --events 1000000 [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench_util import fmt, free_port, invocation, log, machine, proc_cpu, scratch
from embedded_daemon import Lakes, lake_env
from ingest import PARTITIONS, new_topic, raw_consume, simulate

from resources.broker import EmbeddedBroker
from resources.embedded_postgres import EmbeddedPostgres
from resources.kafka import KafkaResource
from resources.warehouse import DuckDBWarehouseResource

ROOT = Path(__file__).resolve().parent.parent
ASTRA = ROOT / ".venv" / "bin" / "astra"
BATCH = 100_000
SECTION = "## Ingest shards on a lake"


def postmaster_pid(postgres: EmbeddedPostgres) -> int | None:
    try:
        return int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def verify(warehouse: DuckDBWarehouseResource, n: int, label: str) -> dict[str, int]:
    frame = warehouse.query(
        'SELECT count(*) AS rows, count(DISTINCT ("partition", "offset")) AS distinct_rows '
        "FROM raw.events"
    )
    rows, distinct = (int(v) for v in frame.row(0))
    if rows != n or distinct != n:
        raise SystemExit(
            f"VERIFICATION FAILED ({label}): raw.events holds {rows:,} rows, "
            f"{distinct:,} distinct (partition, offset); expected {n:,} of each"
        )
    return {"raw_rows": rows, "distinct_rows": distinct}


def run_shards(
    servers: str,
    topic: str,
    dlq: str,
    warehouse: DuckDBWarehouseResource,
    shards: int,
    tmp: Path,
    label: str,
) -> dict[str, Any]:
    """``astra ingest`` of every shard of ``shards``, all started at once, into
    ``warehouse``; waits for all; wall time, each process's result and CPU time."""
    env = lake_env(warehouse)
    env.update(
        {
            "ASTRA_TOPIC_RAW": topic,
            "ASTRA_TOPIC_DEADLETTER": dlq,
            "ASTRA_CONSUMER_GROUP": f"shards-{label}-{uuid.uuid4().hex[:8]}",
            "ASTRA_KAFKA_BOOTSTRAP_SERVERS": servers,
            "ASTRA_MAX_BATCH_SIZE": str(BATCH),
        }
    )
    children: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for shard in range(shards):
        out = open(tmp / f"{label}-{shard}.out", "w+")  # noqa: SIM115 (closed below)
        err = open(tmp / f"{label}-{shard}.err", "w+")  # noqa: SIM115
        process = subprocess.Popen(
            [str(ASTRA), "ingest", "--shards", str(shards), "--shard", str(shard)]
            + ["--time-budget", "3600"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        children.append({"shard": shard, "process": process, "out": out, "err": err})

    def reap(child: dict[str, Any]) -> None:
        _, status, usage = os.wait4(child["process"].pid, 0)
        child["end"] = time.perf_counter()
        child["process"].returncode = os.waitstatus_to_exitcode(status)
        child["user_s"] = usage.ru_utime
        child["sys_s"] = usage.ru_stime
        child["maxrss_mib"] = usage.ru_maxrss / 1024

    threads = [threading.Thread(target=reap, args=(c,)) for c in children]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = max(c["end"] for c in children) - t0

    results = []
    failures = []
    for child in children:
        child["out"].seek(0)
        child["err"].seek(0)
        stdout, stderr = child["out"].read(), child["err"].read()
        child["out"].close()
        child["err"].close()
        code = child["process"].returncode
        totals: dict[str, Any] = {}
        lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
        if lines:
            totals = json.loads(lines[-1])
        if code != 0 or not totals.get("reached_eof"):
            failures.append(
                f"shard {child['shard']}/{shards}: exit {code}, totals {totals}; "
                f"stderr: {stderr.strip()[-2000:]}"
            )
        results.append(
            {
                "shard": child["shard"],
                "seconds": child["end"] - t0,
                "cpu_s": child["user_s"] + child["sys_s"],
                "user_s": child["user_s"],
                "sys_s": child["sys_s"],
                "maxrss_mib": child["maxrss_mib"],
                **totals,
            }
        )
    if failures:
        raise SystemExit(f"DRAIN FAILED ({label}):\n" + "\n".join(failures))
    return {"wall_s": wall, "processes": results}


def import_cost(reps: int = 3) -> list[dict[str, float]]:
    """Wall and CPU time of a process that only imports what `astra ingest` imports
    (the CLI and the ingest asset module), then exits: start-up without any work."""
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", "import astra_pipeline.cli, astra_pipeline.assets.ingest"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit("the import-only process failed")
        runs.append({"wall_s": time.perf_counter() - t0, "cpu_s": usage.ru_utime + usage.ru_stime})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--malformed", type=float, default=0.01)
    parser.add_argument("--raw-reps", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2, help="(one shard, two shards) pairs")
    parser.add_argument("--metadata-schema", default="astra_lake")
    parser.add_argument("--output", default=str(ROOT / "docs" / "performance.md"))
    parser.add_argument("--write", action="store_true", help="append the section to --output")
    args = parser.parse_args()
    with scratch("astra-bench-shards-") as tmp:
        run(args, invocation("lake_shards.py"), tmp)


def run(args: argparse.Namespace, command: str, tmp: Path) -> None:
    n = args.events
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    log(f"simulating {n:,} events ({args.malformed:.1%} malformed)")
    messages = simulate(n, args.malformed)

    postgres = EmbeddedPostgres(tmp / "pg", free_port())
    with EmbeddedBroker() as broker, contextlib.ExitStack() as stack:
        postgres.start()
        stack.callback(postgres.stop)
        pg_pid = postmaster_pid(postgres)
        lakes = Lakes(postgres, tmp / "lakes", args.metadata_schema)
        servers = broker.bootstrap_servers
        admin = KafkaResource(bootstrap_servers=servers)
        topic, dlq = new_topic(admin, "bench_shards")
        log("producing")
        produced = admin.produce_all(topic, messages)
        assert produced == n, produced
        del messages
        per_partition = admin.high_watermarks(topic)

        log(f"ceiling: librdkafka raw consume x{args.raw_reps}")
        raw_runs = [n / raw_consume(servers, topic, n) for _ in range(args.raw_reps)]
        raw_rate = statistics.median(raw_runs)
        log(f"raw consume: {', '.join(fmt(r) for r in raw_runs)} ev/s")

        log("start-up: import-only process x3")
        imports = import_cost()

        drains: list[dict[str, Any]] = []
        for rep in range(1, args.reps + 1):
            for kind, shards in (("one", 1), ("two", 2)):
                label = f"{kind}{rep}"
                warehouse, _ = lakes.new()
                warehouse.ensure_schema()
                log(f"rep {rep}: {kind} shard(s)")
                broker_cpu, pg_cpu = proc_cpu(broker.pid), proc_cpu(pg_pid)
                result = run_shards(servers, topic, dlq, warehouse, shards, tmp, label)
                time.sleep(0.5)  # let the drains' Postgres backends end and be reaped
                result["broker_cpu_s"] = proc_cpu(broker.pid) - broker_cpu
                result["postgres_cpu_s"] = proc_cpu(pg_pid) - pg_cpu
                messages_total = sum(p.get("messages", 0) for p in result["processes"])
                if messages_total != n:
                    raise SystemExit(
                        f"DRAIN FAILED ({label}): the processes report {messages_total:,} "
                        f"messages, expected {n:,}"
                    )
                result.update(verify(warehouse, n, label))
                result.update(kind=kind, shards=shards, rep=rep, rate=n / result["wall_s"])
                cpu = sum(p["cpu_s"] for p in result["processes"])
                result["ingest_cpu_s"] = cpu
                result["all_cpu_s"] = cpu + result["broker_cpu_s"] + result["postgres_cpu_s"]
                log(
                    f"  {fmt(result['rate'])} ev/s ({result['wall_s']:.2f}s wall; ingest CPU "
                    f"{cpu:.1f}s, broker {result['broker_cpu_s']:.1f}s, postgres "
                    f"{result['postgres_cpu_s']:.1f}s); verified {n:,} rows"
                )
                drains.append(result)

    total_s = time.perf_counter() - t_start
    load_after = os.getloadavg()
    cpus = os.cpu_count() or 1
    one = [d for d in drains if d["kind"] == "one"]
    two = [d for d in drains if d["kind"] == "two"]
    one_med = statistics.median(d["rate"] for d in one)
    two_med = statistics.median(d["rate"] for d in two)
    ratio = two_med / one_med
    pair_ratios = [t["rate"] / o["rate"] for o, t in zip(one, two, strict=True)]
    load = (
        f"1-minute load average {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the "
        f"end on {cpus} CPUs; run time {total_s:.0f} s"
    )
    summary = {
        "command": command,
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "events": n,
        "per_partition": per_partition,
        "raw_consume_rates": raw_runs,
        "raw_consume_median": raw_rate,
        "drains": drains,
        "one_median": one_med,
        "two_median": two_med,
        "two_over_one": ratio,
        "two_over_one_per_pair": pair_ratios,
        "imports": imports,
        "load": load,
    }
    print(json.dumps(summary, indent=2, default=str))

    table = [
        "| Measurement | events/s (median) | per rep | fraction of raw (median) |",
        "|---|---:|---|---:|",
        f"| librdkafka raw consume (ceiling) | {fmt(raw_rate)} | "
        + ", ".join(fmt(r) for r in raw_runs)
        + " | 1.00 |",
        f"| one shard: 1 `astra ingest` process | {fmt(one_med)} | "
        + ", ".join(fmt(d["rate"]) for d in one)
        + f" | {one_med / raw_rate:.2f} |",
        f"| two shards: 2 `astra ingest` processes, same lake | {fmt(two_med)} | "
        + ", ".join(fmt(d["rate"]) for d in two)
        + f" | {two_med / raw_rate:.2f} |",
        f"| **two / one** | **{ratio:.2f}** | per pair: "
        + ", ".join(f"{r:.2f}" for r in pair_ratios)
        + " | |",
    ]
    cpu_rows = [
        "| Drain | wall | `astra ingest` CPU (user+sys) per process | broker CPU | "
        f"Postgres CPU | all CPU / (wall x {cpus}) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for d in drains:
        procs = "; ".join(
            f"shard {p['shard']}: {p['cpu_s']:.1f} s ({p['user_s']:.1f}+{p['sys_s']:.1f}), "
            f"{p['messages']:,} msgs, ends at {p['seconds']:.1f} s"
            for p in d["processes"]
        )
        cpu_rows.append(
            f"| {d['kind']} shard{'s' if d['shards'] > 1 else ''}, rep {d['rep']} | "
            f"{d['wall_s']:.1f} s | {procs} | {d['broker_cpu_s']:.1f} s | "
            f"{d['postgres_cpu_s']:.1f} s | {d['all_cpu_s'] / (d['wall_s'] * cpus):.0%} |"
        )
    imp_wall = statistics.median(i["wall_s"] for i in imports)
    imp_cpu = statistics.median(i["cpu_s"] for i in imports)
    imports_line = (
        f"Start-up alone (a process importing `astra_pipeline.cli` and "
        f"`astra_pipeline.assets.ingest`, then exiting; median of {len(imports)}): "
        f"{imp_wall:.2f} s wall, {imp_cpu:.2f} s CPU."
    )
    print("\n".join(table))
    print()
    print("\n".join(cpu_rows))
    print()
    print(imports_line)
    log(f"total {total_s:.0f}s; every drain verified ({n:,} raw rows, all distinct)")

    if not args.write:
        return
    split = ", ".join(f"p{p}: {c:,}" for p, c in sorted(per_partition.items()))
    section = f"""{SECTION}

Measured by `bench/lake_shards.py` on {dt.date.today().isoformat()}, from the repository root:

```
{command}
```

Machine: {machine()}; {load}.

One run: one embedded broker, {n:,} simulated events ({args.malformed:.0%} malformed) in a
{PARTITIONS}-partition topic ({split}), one private Postgres holding each lake's catalog.
Each drain is the real CLI, `astra ingest --shards S --shard K --time-budget 3600`
(`ASTRA_MAX_BATCH_SIZE={BATCH:,}`), into a fresh lake (`ensure_schema()` done first) with a
consumer group of its own; process start-up is included in both cases. One shard: one
process, `--shards 1`. Two shards: `--shard 0` and `--shard 1` of 2 started at the same
moment into the same lake; events/s = {n:,} / wall time from the start of both to the end
of the last. Reps alternate (one, two, one, two). After every drain raw.events held
exactly {n:,} rows and {n:,} distinct (partition, offset).

{chr(10).join(table)}

CPU time per drain (`astra ingest` with its reaped helper process, from wait4; the broker
and Postgres from /proc, during the drain):

{chr(10).join(cpu_rows)}

{imports_line}
"""
    output = Path(args.output)
    old = output.read_text() if output.exists() else ""
    if SECTION in old:  # a re-run replaces its own (last) section
        old = old[: old.index(SECTION)].rstrip() + "\n"
    if old and not old.endswith("\n"):
        old += "\n"
    output.write_text(old + ("\n" if old else "") + section)
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
