"""The `astra` command: schema, broker, simulate, ingest, sql, backfill, dev.

Bad arguments and unavailable components end with a one-line message and exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import polars as pl
import yaml

from astra_pipeline.assets.features import CHURN_FEATURES
from astra_pipeline.assets.scoring import CHURN_SCORES_KEY
from astra_pipeline.assets.window_refresh import partition_key
from astra_pipeline.assets.windows import HOURLY, WINDOWED_AGGREGATES
from astra_pipeline.events import json_schema_text
from astra_pipeline.progress import Progress
from astra_pipeline.quick_sql import snapshot_arg
from astra_pipeline.replay import ReplayError, load_repair, replay
from astra_pipeline.simulator import ANOMALY_KINDS, Simulation, SimulatorConfig
from astra_pipeline.table_output import FORMATS, render, terminal_width
from resources.broker import EmbeddedBroker
from resources.dagster_api import DagsterGraphQL
from resources.deadletter_store import Selection, examples, summary
from resources.embedded_postgres import SUPERUSER, EmbeddedPostgres
from resources.errors import AstraResourceError
from resources.instance_runs import settle_runs
from resources.kafka import KafkaResource
from resources.settings import DEV_LAKE_POINTER, AstraSettings, SettingsError
from resources.truth_store import record_ground_truth, truth_frames
from resources.warehouse import DuckDBWarehouseResource, warehouse_from_settings

REPO_ROOT = Path(__file__).resolve().parent.parent

DEV_STREAM_FLAWS = ("--malformed", "0.01", "--duplicates", "0.01", "--late", "0.02")
"""What `astra dev`'s simulator mixes into its stream (bench/lake_files.py streams the
same)."""


class UsageError(Exception):
    """A command-line mistake: printed as one line."""


def _topics(settings: AstraSettings) -> dict[str, int]:
    return {
        settings.topic_raw: settings.raw_partitions,
        settings.topic_deadletter: 1,
        settings.topic_alerts: 1,
    }


def _kafka(settings: AstraSettings, bootstrap: str | None = None) -> KafkaResource:
    return KafkaResource(
        bootstrap_servers=bootstrap or settings.kafka_bootstrap_servers,
        consumer_group=settings.consumer_group,
        timeout_s=settings.kafka_timeout_s,
    )


def _warehouse(settings: AstraSettings) -> DuckDBWarehouseResource:
    """The warehouse every command uses: the settings' lake."""
    return warehouse_from_settings(settings, resolve_secrets=True)


def cmd_schema(args: argparse.Namespace, settings: AstraSettings) -> int:
    sys.stdout.write(json_schema_text() + "\n")
    return 0


def cmd_broker(args: argparse.Namespace, settings: AstraSettings) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    broker = EmbeddedBroker(port=args.port).start()
    try:
        created = _kafka(settings, broker.bootstrap_servers).create_topics(_topics(settings))
        sys.stdout.write(
            f"broker on {broker.bootstrap_servers} (pid {broker.pid}); topics created: "
            f"{', '.join(created) or 'none'}. Ctrl-C stops it.\n"
        )
        sys.stdout.flush()
        broker.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def cmd_simulate(args: argparse.Namespace, settings: AstraSettings) -> int:
    if args.count is None and args.duration is None:
        raise UsageError("give --count N or --duration SECONDS")
    rate = args.rate
    total = args.count if args.count is not None else int(args.duration * rate) if rate else None
    if total is None:
        raise UsageError("--duration needs --rate (events per second)")
    now = dt.datetime.now(dt.UTC)
    # As fast as possible: spread event times over the last total ms (or --span-hours),
    # ending now, so none of them is in the future when ingested.
    clock_rate = rate
    if args.span_hours:
        if rate:
            raise UsageError("--span-hours produces as fast as possible: drop --rate")
        clock_rate = total / (args.span_hours * 3600)
        start = now - dt.timedelta(hours=args.span_hours)
    else:
        start = now if rate else now - dt.timedelta(milliseconds=total)
    # Event ids follow from the seed: a fresh one unless asked, so two simulations never
    # produce the same ids (which ingest would drop as duplicates); printed to repeat it.
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    config = SimulatorConfig(
        devices=args.devices,
        users=args.users,
        seed=seed,
        malformed_fraction=args.malformed,
        duplicate_fraction=args.duplicates,
        late_fraction=args.late,
        start=start,
        events_per_second=clock_rate,
        declining_fraction=args.declining,
        anomaly_rate_per_device_day=args.anomalies,
        anomaly_kinds=_anomaly_kinds(args.anomaly_kinds),
    )
    kafka = _kafka(settings, args.bootstrap)
    kafka.create_topics(_topics(settings))
    counts: dict[str, int] = {}
    began = time.monotonic()
    simulation = Simulation(config, total)
    interrupted = False
    progress = Progress("astra simulate", "events", total, enabled=not args.no_progress)
    with kafka.producer() as producer:
        try:
            for index, message in enumerate(simulation):
                if rate:
                    delay = began + index / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                producer.send(settings.topic_raw, value=message.value, key=message.key)
                counts[message.kind] = counts.get(message.kind, 0) + 1
                if index % 5_000 == 0:
                    producer.poll()
                if index % 500 == 0:
                    progress.update(index)
        except KeyboardInterrupt:
            # Ctrl-C (or astra dev stopping): what was sent is delivered, then a summary.
            interrupted = True
    produced = sum(counts.values())
    progress.finish(produced, "interrupted" if interrupted else "")
    summary: dict[str, object] = {"produced": produced, "seed": seed, **counts}
    if interrupted:
        summary["interrupted"] = True
        sys.stdout.write(json.dumps(summary) + "\n")
        return 130
    if args.truth:
        # Event ids depend on the seed alone: a re-run of a seed replaces its truth.
        name = f"seed-{seed}"
        anomalies, declining = truth_frames(simulation.ground_truth, name)
        warehouse = _warehouse(settings)
        record_ground_truth(warehouse, anomalies, declining)
        summary["ground_truth"] = {
            "simulation": name,
            "anomalies": len(simulation.ground_truth.anomalies),
            "declining_users": declining.height,
        }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _anomaly_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(ANOMALY_KINDS))
    if unknown or not kinds:
        raise UsageError(
            f"--anomaly-kinds: unknown {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(ANOMALY_KINDS)}"
        )
    return kinds


def cmd_ingest(args: argparse.Namespace, settings: AstraSettings) -> int:
    from astra_pipeline.assets.ingest import IngestConfig, drain

    shards = args.shards or settings.ingest_shards
    if args.shard is not None and args.shard >= shards:
        raise UsageError(f"--shard: {args.shard} is not one of 0..{shards - 1} (--shards {shards})")
    if args.shard is None and shards > 1:
        raise UsageError(f"--shard: which of the {shards} shards to ingest (0..{shards - 1})")
    kafka = _kafka(settings, args.bootstrap)
    try:
        backlog = kafka.lag_messages(settings.topic_raw)
    except AstraResourceError:
        backlog = 0  # no total to show; drain reports what is wrong, in its own order
    progress = Progress("astra ingest", "events", backlog or None, enabled=not args.no_progress)
    totals = drain(
        kafka,
        _warehouse(settings),
        IngestConfig(
            topic=settings.topic_raw,
            deadletter_topic=settings.topic_deadletter,
            max_batch_size=settings.max_batch_size,
            time_budget_s=args.time_budget,
            shards=shards,
            shard=args.shard or 0,
        ),
        run_id=None,
        after_batch=lambda t: progress.update(t.messages, _lag_left(backlog, t.messages)),
    )
    progress.finish(totals.messages, _lag_left(backlog, totals.messages))
    sys.stdout.write(
        json.dumps(
            {
                "messages": totals.messages,
                "batches": totals.batches,
                "sensor_readings": totals.sensor_readings,
                "user_activity": totals.user_activity,
                "dead_letters": totals.dead_letters,
                "duplicates": totals.duplicates,
                "reached_eof": totals.reached_eof,
            }
        )
        + "\n"
    )
    return 0


def _lag_left(backlog: int, done: int) -> str:
    """What is left of the backlog measured at the start (nothing when it is unknown)."""
    return f"lag left {max(0, backlog - done):,}" if backlog else ""


def cmd_sql(args: argparse.Namespace, settings: AstraSettings) -> int:
    if not args.query.strip():
        raise UsageError('give a query, e.g. astra sql "SELECT count(*) FROM raw.events"')
    warehouse = _warehouse(settings)
    if args.at is None:
        frame = warehouse.query(args.query)
    else:
        with warehouse.session_at(args.at) as past:
            frame = past.query(args.query)
    sys.stdout.write(render(frame, args.format, args.max_rows, terminal_width()))
    return 0


def cmd_snapshots(args: argparse.Namespace, settings: AstraSettings) -> int:
    frame = _warehouse(settings).snapshots(args.limit)
    sys.stdout.write(render(frame, args.format, args.limit, terminal_width()))
    return 0


def cmd_import_duckdb(args: argparse.Namespace, settings: AstraSettings) -> int:
    from resources.lake_import import import_duckdb_file

    path = Path(args.path)
    if not path.is_file():
        raise UsageError(f"PATH: no DuckDB file at {path}")
    copied = import_duckdb_file(_warehouse(settings), path)
    sys.stdout.write(json.dumps({"imported": str(path), "rows": copied}) + "\n")
    return 0


def _coordinates(text: str) -> tuple[str | None, int, int]:
    """A dead letter's coordinates: PARTITION/OFFSET or TOPIC/PARTITION/OFFSET."""
    parts = text.rsplit("/", 2)
    try:
        if len(parts) == 2:
            return None, int(parts[0]), int(parts[1])
        if len(parts) == 3 and parts[0]:
            return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not PARTITION/OFFSET or TOPIC/PARTITION/OFFSET")


def _time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time (e.g. 2026-11-23T07:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _selection(args: argparse.Namespace) -> Selection:
    return Selection(reason=args.reason, ids=tuple(args.ids or ()), since=args.since)


def cmd_deadletter_list(args: argparse.Namespace, settings: AstraSettings) -> int:
    warehouse = _warehouse(settings)
    selection = _selection(args)
    with warehouse.session(read_only=True) as session:
        reasons = summary(session, selection, top=args.top)
        recent = examples(session, selection, limit=args.examples)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=200):
        sys.stdout.write(f"dead letters by reason (top {args.top}):\n{reasons}\n")
        sys.stdout.write(f"most recent {args.examples}:\n{recent}\n")
    return 0


def cmd_deadletter_replay(args: argparse.Namespace, settings: AstraSettings) -> int:
    if args.reason is None and not args.ids:
        raise UsageError("deadletter replay: give --reason PATTERN or --ids COORDINATES")
    repair = load_repair(args.transform) if args.transform else None
    report = replay(
        _kafka(settings, args.bootstrap),
        _warehouse(settings),
        target_topic=args.topic or settings.topic_raw,
        selection=_selection(args),
        repair=repair,
        repair_name=args.transform,
        dry_run=args.dry_run,
    )
    if report.preview is not None:
        with pl.Config(tbl_rows=args.examples, tbl_cols=-1, fmt_str_lengths=80):
            sys.stdout.write(f"{report.preview}\n")
    sys.stdout.write(
        json.dumps(
            {
                "selected": report.selected,
                "dry_run": args.dry_run,
                "claimed": report.claimed,
                "published": report.published,
                "settled_from_topic": report.settled,
                "repair_failures": len(report.repair_failures),
                "first_repair_failures": report.repair_failures[:5],
            }
        )
        + "\n"
    )
    return 0


def _hour(text: str) -> dt.datetime:
    """A partition key (2026-11-23-15:00) or an ISO time (2026-11-23T15:00Z) -> its hour."""
    for parse in (
        lambda t: dt.datetime.strptime(t, "%Y-%m-%d-%H:%M").replace(tzinfo=dt.UTC),
        dt.datetime.fromisoformat,
    ):
        try:
            value = parse(text)
            break
        except ValueError:
            continue
    else:
        raise UsageError(f"{text!r} is not an hour (use YYYY-MM-DD-HH:00 or an ISO time)")
    value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC)
    if value != value.replace(minute=0, second=0, microsecond=0):
        raise UsageError(f"{text!r} is not on the hour: partitions are whole hours")
    return value


def backfill_partitions(start: str, end: str, now: dt.datetime) -> list[str]:
    """The partition keys from ``start`` to ``end`` inclusive, checked against the
    partitions that exist (from HOURLY's start to the current hour)."""
    first, last = _hour(start), _hour(end)
    if last < first:
        raise UsageError(f"--to {end} is before --from {start}")
    earliest = HOURLY.start.astimezone(dt.UTC)
    current = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    if first < earliest or last > current:
        raise UsageError(
            f"partitions exist from {partition_key(earliest)} to {partition_key(current)}; "
            f"asked for {partition_key(first)} to {partition_key(last)}"
        )
    hours = int((last - first) / dt.timedelta(hours=1)) + 1
    return [partition_key(first + dt.timedelta(hours=i)) for i in range(hours)]


def cmd_backfill(args: argparse.Namespace, settings: AstraSettings) -> int:
    api = DagsterGraphQL(args.url or settings.dagster_url)
    if args.resume:
        backfill_id = api.resume_backfill(args.resume)
        print(f"resumed backfill {backfill_id}: {api.backfill_page(backfill_id)}")
    else:
        now = dt.datetime.now(dt.UTC)
        if args.last is not None:
            if args.start or args.end:
                raise UsageError("give either --last or --from and --to, not both")
            current = now.replace(minute=0, second=0, microsecond=0)
            args.start = partition_key(current - dt.timedelta(hours=args.last - 1))
            args.end = partition_key(current)
        if not (args.start and args.end):
            raise UsageError(
                "give --last HOURS, or --from and --to (partition keys or ISO hours), "
                "or --resume ID"
            )
        keys = backfill_partitions(args.start, args.end, now)
        if args.dry_run:
            print("\n".join(keys))
            print(f"{len(keys)} partitions of windowed_aggregates; dry run, nothing submitted")
            return 0
        backfill_id = api.launch_partition_backfill(
            list(WINDOWED_AGGREGATES.path),
            keys[0],
            keys[-1],
            title=f"astra backfill {keys[0]}..{keys[-1]}",
        )
        print(f"backfill {backfill_id}: {len(keys)} partitions, {api.backfill_page(backfill_id)}")
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.wait
    status = api.backfill_status(backfill_id)
    progress = Progress(
        f"backfill {backfill_id}",
        "partitions",
        status.partitions or None,
        enabled=not args.no_progress,
    )
    while not status.finished and time.monotonic() < deadline:
        progress.update(status.done, status.progress_note())
        time.sleep(1)
        status = api.backfill_status(backfill_id)
    progress.finish(status.done, status.progress_note())
    print(f"backfill {backfill_id}: {status.status}")
    return 0 if status.status in ("COMPLETED", "COMPLETED_SUCCESS") else 1


def cmd_api(args: argparse.Namespace, settings: AstraSettings) -> int:
    """The gateway and read API (docs/api.md), until Ctrl-C."""
    from astra_pipeline.api.server import serve

    return serve(settings, host=args.host, port=args.port)


def cmd_api_key_create(args: argparse.Namespace, settings: AstraSettings) -> int:
    from astra_pipeline.api.keys import create_key

    key, entry = create_key(args.scope)
    sys.stdout.write(
        f"key (shown once, give it to the client): {key}\n"
        f"add this entry to ASTRA_API_KEYS (comma-separated): {entry.line()}\n"
    )
    return 0


def cmd_dev(args: argparse.Namespace, settings: AstraSettings) -> int:
    """Embedded broker and Postgres + simulator + `dg dev`, on local files; Ctrl-C stops
    all. The terminal shows the runs' INFO lines (batches, events/s, refreshes, alerts)
    and Dagster's warnings; --debug adds every step event and Dagster's INFO lines."""
    # Relative to where it runs (the repository root for `make dev`): one checkout can
    # hold one dev session per folder.
    data = Path("data", "dev").resolve()
    home = Path(".dagster_home").resolve()
    # The embedded broker keeps nothing across restarts, so a ledger from an earlier
    # session would point past its (empty) log: each dev session starts a fresh lake
    # (its catalog lives in the session's private Postgres, which goes with it).
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    home.mkdir(exist_ok=True)
    # A SIGTERM (from a supervisor or `timeout`) stops everything just like Ctrl-C; and
    # Ctrl-C works even when started from a script that ignores SIGINT for its jobs.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    postgres = EmbeddedPostgres(data / "postgres", args.pg_port or _free_port()).start()
    try:
        broker = EmbeddedBroker(
            port=args.broker_port, log_path=data / "broker.log", own_session=True
        ).start()
    except BaseException:
        postgres.stop()
        raise
    _write_dev_instance(home / "dagster.yaml", postgres.port, postgres.create_database("dagster"))
    # The warehouse is a lake: its catalog in this Postgres, its files under data/dev;
    # the pointer file tells the commands of other shells (`astra sql`, `dg launch`)
    # where it is while this session runs.
    lake = {
        "lake_catalog": postgres.create_database("lake"),
        "lake_data_path": str(data / "lake"),
    }
    # Its tables from the start: `astra sql` answers 0 rather than "no lake" until the
    # first run has ingested.
    DuckDBWarehouseResource(
        lake_catalog=lake["lake_catalog"], lake_data_path=lake["lake_data_path"]
    ).ensure_schema()
    pointer = Path.cwd() / DEV_LAKE_POINTER
    pointer.write_text(json.dumps(lake) + "\n")
    env = {
        **os.environ,
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "ASTRA_LAKE_CATALOG": lake["lake_catalog"],
        "ASTRA_LAKE_DATA_PATH": lake["lake_data_path"],
        # Micro-batches every few seconds leave small files: compact every 5 minutes.
        "ASTRA_LAKE_MAINTENANCE_CRON": os.environ.get("ASTRA_LAKE_MAINTENANCE_CRON")
        or "*/5 * * * *",
        "DAGSTER_HOME": str(home),
        # The serving copy, kept current by the automation sensor.
        "ASTRA_PG_URL": postgres.create_database("astra"),
        "ASTRA_PG_SERVING_AUTOMATION": "true",
        # A dev session's data starts now (the README's history goes back 12 hours):
        # partitions from yesterday on, not thousands of empty ones since the default.
        "ASTRA_PARTITIONS_START": os.environ.get("ASTRA_PARTITIONS_START")
        or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat(),
    }
    _kafka(settings, broker.bootstrap_servers).create_topics(_topics(settings))
    bin_dir = Path(sys.executable).parent
    children: list[subprocess.Popen[bytes]] = []
    forwarding: threading.Thread | None = None
    stopping = threading.Event()
    try:
        children.append(
            subprocess.Popen(
                [
                    str(bin_dir / "astra"),
                    "simulate",
                    "--duration",
                    "86400",
                    "--rate",
                    str(args.rate),
                    *DEV_STREAM_FLAWS,
                    # Its terminal is dev's, shared with Dagster's lines: no bar there.
                    "--no-progress",
                ],
                env=env,
                start_new_session=True,
            )
        )
        children.append(
            subprocess.Popen(
                [
                    str(bin_dir / "dg"),
                    "dev",
                    "--log-level",
                    "debug" if args.debug else "warning",
                    "-w",
                    str(REPO_ROOT / "workspace.yaml"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(args.port),
                ],
                env=env,
                cwd=home,  # not the repository root: its dagster.yaml is the compose one
                start_new_session=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
        # The gateway and read API beside Dagster: loopback, no keys (docs/api.md).
        children.append(
            subprocess.Popen(
                [
                    str(bin_dir / "astra"),
                    "api",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(args.api_port),
                ],
                env=env,
                start_new_session=True,
            )
        )
        # Its run workers' output (they inherit dg dev's) without the step events Dagster
        # logs at DEBUG (thousands of lines an hour), unless --debug.
        forwarding = threading.Thread(
            target=_forward, args=(children[1], not args.debug, stopping), daemon=True
        )
        forwarding.start()
        threading.Thread(
            target=_first_churn_day,
            args=(DagsterGraphQL(f"http://127.0.0.1:{args.port}"),),
            daemon=True,
        ).start()
        sys.stdout.write(
            f"AstraStream dev: broker {broker.bootstrap_servers}, UI http://127.0.0.1:{args.port}, "
            f"API http://127.0.0.1:{args.api_port}/docs, "
            f"lake {lake['lake_data_path']} (catalog {lake['lake_catalog']}). "
            "Ctrl-C stops everything.\n"
        )
        sys.stdout.flush()
        while all(child.poll() is None for child in children):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        # In order, each after what depends on it: the simulator (nothing new arrives),
        # the runs in flight (they drain and end, or end canceled), Dagster, the broker.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stopping.set()
        sys.stdout.write(
            "stopping the simulator, the runs in flight, dagster, the api, the broker, "
            "postgres...\n"
        )
        sys.stdout.flush()
        simulator, *rest = children
        _stop_group(simulator, signal.SIGINT, 10)
        settled = None
        if rest and rest[0].poll() is None:
            try:
                DagsterGraphQL(f"http://127.0.0.1:{args.port}").stop_instigators()
                settled = settle_runs(home)
            except Exception as error:  # stopping goes on: dagster and the broker still stop
                sys.stdout.write(f"could not wait for the runs in flight: {error}\n")
        for child in rest:
            _stop_group(child, signal.SIGINT, 30)
        if forwarding is not None:
            forwarding.join(timeout=10)  # its last lines before the summary
        broker.stop()
        pointer.unlink(missing_ok=True)
        try:
            postgres.stop()
        except AstraResourceError as error:
            sys.stdout.write(f"{error}\n")
        for failure in settled.failed if settled else ():
            sys.stdout.write(f"failed: {failure}\n")
        runs = (
            f" ({settled.finished} runs in flight finished, {settled.canceled} canceled;"
            f" {len(settled.failed)} failed runs this session)"
            if settled
            else ""
        )
        sys.stdout.write(f"stopped: simulator, dagster, api, broker, postgres{runs}.\n")
    return 0


DEBUG_EVENT = re.compile(rb"^\S+ \S+ \S+ - dagster - DEBUG - ")
"""A run worker's DEBUG event line (timestamp, zone, logger, level)."""


def _forward(child: subprocess.Popen[bytes], drop_debug: bool, stopping: threading.Event) -> None:
    """Copy ``child``'s output to this process's, line by line, leaving out DEBUG events,
    and everything once ``stopping`` is set: the runs ended by the stop log their
    interruption with a stack trace each, and the summary line says how they ended."""
    assert child.stdout is not None
    out = sys.stdout.buffer
    for line in child.stdout:
        if stopping.is_set() or (drop_debug and DEBUG_EVENT.match(line)):
            continue
        out.write(line)
        out.flush()


def _first_churn_day(api: DagsterGraphQL, wait_s: float = 180.0) -> None:
    """Once the UI is up, a backfill of yesterday's churn features and scores: the daily
    schedule runs at 00:15 UTC, and a new dev session should see every asset materialized
    within minutes. The scores say why they were not computed (a session has no weeks of
    history to train on: `skip_reason` in the metadata)."""
    deadline = time.monotonic() + wait_s
    while not api.up():
        if time.monotonic() > deadline:
            return
        time.sleep(2)
    day = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    try:
        api.launch_backfill(
            [list(CHURN_FEATURES.path), list(CHURN_SCORES_KEY.path)],
            day,
            day,
            title=f"astra dev: churn of {day}",
        )
    except AstraResourceError as error:
        sys.stdout.write(f"could not request the churn features of {day}: {error}\n")


def _write_dev_instance(path: Path, port: int, url: str) -> None:
    """The compose stack's instance config (dagster.yaml: run queue, pools, run monitoring,
    Postgres storage), pointed at this session's private Postgres with literal values, so
    that any command run with DAGSTER_HOME=.dagster_home reaches the same instance."""
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    config["storage"]["postgres"]["postgres_db"].update(
        hostname="127.0.0.1",
        port=port,
        username=SUPERUSER,
        # Trust authentication on loopback: any password is accepted (one must be set).
        password="trust",
        db_name=url.rsplit("/", 1)[1],
    )
    header = "# Written by `astra dev` from dagster.yaml for this session's private Postgres.\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop_group(child: subprocess.Popen[bytes], sig: int, wait_s: float) -> None:
    """Signal a child's whole process group (it leads its own), and kill the group if it
    has not ended in time."""
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
    try:
        child.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _number(minimum: float, inclusive: bool) -> Callable[[str], float]:
    """A float type for argparse that names the bound (argparse adds the flag)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = value >= minimum if inclusive else value > minimum
        if not ok:  # also NaN
            bound = f"at least {minimum:g}" if inclusive else f"more than {minimum:g}"
            raise argparse.ArgumentTypeError(f"{text!r} is not a number {bound}")
        return value

    return parse


_non_negative = _number(0.0, inclusive=True)
_positive = _number(0.0, inclusive=False)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line naming the flag, exit code 2 (argparse prints the usage
    first, then the message: two lines or more)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="astra", description="AstraStream command line")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("schema", help="print the JSON Schema of the event contract").set_defaults(
        func=cmd_schema
    )

    broker = sub.add_parser("broker", help="run the embedded Kafka-compatible broker")
    broker.add_argument("--port", type=_port, default=9092)
    broker.set_defaults(func=cmd_broker)

    sim = sub.add_parser("simulate", help="produce simulated events to Kafka")
    sim.add_argument("--count", type=_positive_int)
    sim.add_argument("--duration", type=_positive, help="seconds (with --rate)")
    sim.add_argument(
        "--rate", type=_non_negative, default=0.0, help="events/s; 0 = as fast as possible"
    )
    sim.add_argument(
        "--span-hours",
        type=_positive,
        help="as fast as possible, with event times spread over the last H hours",
    )
    sim.add_argument("--devices", type=_positive_int, default=50)
    sim.add_argument("--users", type=_positive_int, default=200)
    sim.add_argument(
        "--seed",
        type=int,
        help="repeat a simulation (same events and ids); default: a new seed, printed",
    )
    sim.add_argument("--malformed", type=_fraction, default=0.0)
    sim.add_argument("--duplicates", type=_fraction, default=0.0)
    sim.add_argument("--late", type=_fraction, default=0.0)
    sim.add_argument(
        "--anomalies",
        type=_non_negative,
        default=0.0,
        metavar="RATE",
        help="injected sensor anomalies per device per simulated day (0 = none)",
    )
    sim.add_argument(
        "--anomaly-kinds",
        default=",".join(ANOMALY_KINDS),
        help=f"comma-separated, from {','.join(ANOMALY_KINDS)}",
    )
    sim.add_argument(
        "--declining", type=_fraction, default=0.0, help="share of users whose activity decays"
    )
    sim.add_argument(
        "--truth",
        action="store_true",
        help="store the ground truth (anomalies, declining users) in the warehouse at the end",
    )
    sim.add_argument("--bootstrap", help="override ASTRA_KAFKA_BOOTSTRAP_SERVERS")
    sim.set_defaults(func=cmd_simulate)

    ingest = sub.add_parser("ingest", help="drain Kafka into DuckDB once, in this process")
    ingest.add_argument("--time-budget", type=_positive, default=60.0)
    ingest.add_argument("--bootstrap")
    ingest.add_argument(
        "--shards",
        type=_positive_int,
        help="split the topic's partitions into this many shards (default: "
        "ASTRA_INGEST_SHARDS); partition p is in shard p %% shards",
    )
    ingest.add_argument(
        "--shard", type=_non_negative_int, help="the shard to ingest (with --shards > 1)"
    )
    ingest.set_defaults(func=cmd_ingest)

    sql = sub.add_parser("sql", help="run a read-only query against the warehouse")
    sql.add_argument("query")
    sql.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (fits the terminal), vertical (a record at a time), csv or json; "
        "binary columns print as hex",
    )
    sql.add_argument("--max-rows", type=_positive_int, default=50)
    sql.add_argument(
        "--at",
        type=snapshot_arg,
        metavar="SNAPSHOT_OR_TIME",
        help="query the lake as it was: a snapshot id (astra snapshots) or an ISO time",
    )
    sql.set_defaults(func=cmd_sql)

    snaps = sub.add_parser("snapshots", help="list the lake's recent commits and who made them")
    snaps.add_argument("--limit", type=_positive_int, default=20)
    snaps.add_argument("--format", choices=FORMATS, default="table")
    snaps.set_defaults(func=cmd_snapshots)

    imports = sub.add_parser(
        "import-duckdb",
        help="copy a warehouse of the former single DuckDB file (ASTRA_DUCKDB_PATH) into "
        "the empty lake: every table, the ledger included, in one commit",
    )
    imports.add_argument("path", metavar="PATH", help="the DuckDB file, e.g. data/astra.duckdb")
    imports.set_defaults(func=cmd_import_duckdb)

    backfill = sub.add_parser(
        "backfill",
        help="submit an asset backfill of windowed_aggregates to the running instance",
    )
    backfill.add_argument("--from", dest="start", help="first hour, e.g. 2026-11-23-00:00")
    backfill.add_argument("--to", dest="end", help="last hour (inclusive)")
    backfill.add_argument(
        "--last",
        type=_positive_int,
        metavar="HOURS",
        help="the last HOURS hours, the current one included (instead of --from/--to)",
    )
    backfill.add_argument("--dry-run", action="store_true", help="print the partitions only")
    backfill.add_argument("--resume", metavar="BACKFILL_ID", help="resume a stopped backfill")
    backfill.add_argument("--url", help="Dagster webserver (default ASTRA_DAGSTER_URL)")
    backfill.add_argument(
        "--wait", type=_non_negative, default=0, metavar="SECONDS", help="wait for it to finish"
    )
    backfill.set_defaults(func=cmd_backfill)
    for command in (sim, ingest, backfill):
        command.add_argument(
            "--no-progress",
            action="store_true",
            help="no progress on stderr (a bar on a terminal, else a line every 5 s)",
        )

    deadletter = sub.add_parser("deadletter", help="inspect and replay dead letters")
    dl_sub = deadletter.add_subparsers(dest="deadletter_command", required=True)
    for name, helptext in (
        ("list", "dead letters by reason, with recent examples"),
        ("replay", "re-publish selected dead letters (optionally repaired) to the input topic"),
    ):
        command = dl_sub.add_parser(name, help=helptext)
        command.add_argument(
            "--reason",
            metavar="PATTERN",
            help="part of the reason, case-insensitive; * matches anything",
        )
        command.add_argument(
            "--ids",
            nargs="+",
            type=_coordinates,
            metavar="COORDS",
            help="dead letters by PARTITION/OFFSET or TOPIC/PARTITION/OFFSET",
        )
        command.add_argument("--since", type=_time, help="ingested at or after this ISO time")
        command.add_argument("--examples", type=_positive_int, default=10, metavar="N")
    dl_list, dl_replay = dl_sub.choices["list"], dl_sub.choices["replay"]
    dl_list.add_argument("--top", type=_positive_int, default=20, metavar="N")
    dl_list.set_defaults(func=cmd_deadletter_list)
    dl_replay.add_argument(
        "--transform",
        metavar="MODULE:FUNCTION",
        help="repair each message first: FUNCTION(value: bytes, reason: str) -> bytes "
        "(MODULE importable from here, or FILE.py:FUNCTION)",
    )
    dl_replay.add_argument("--dry-run", action="store_true", help="show what would be sent")
    dl_replay.add_argument("--topic", help="target topic (default ASTRA_TOPIC_RAW)")
    dl_replay.add_argument("--bootstrap", help="override ASTRA_KAFKA_BOOTSTRAP_SERVERS")
    dl_replay.set_defaults(func=cmd_deadletter_replay)

    api = sub.add_parser("api", help="serve the HTTP/WebSocket gateway and the read API")
    api.add_argument("--host", help="address to bind (default ASTRA_API_HOST)")
    api.add_argument("--port", type=_port, help="port (default ASTRA_API_PORT)")
    api.set_defaults(func=cmd_api)
    api_key = sub.add_parser("api-key", help="create API keys for astra api")
    key_sub = api_key.add_subparsers(dest="api_key_command", required=True)
    key_create = key_sub.add_parser("create", help="print a new key once, and its setting entry")
    key_create.add_argument("--scope", choices=("ingest", "read"), required=True)
    key_create.set_defaults(func=cmd_api_key_create)

    dev = sub.add_parser("dev", help="broker, postgres, simulator and dg dev, one command")
    dev.add_argument("--port", type=_port, default=3000)
    dev.add_argument("--broker-port", type=_port, default=9092)
    dev.add_argument(
        "--debug",
        action="store_true",
        help="every step's DEBUG events and Dagster's own INFO lines (default: the runs' INFO)",
    )
    dev.add_argument(
        "--pg-port", type=_port, help="port of the session's Postgres (default: a free one)"
    )
    dev.add_argument("--rate", type=_positive, default=50.0)
    dev.add_argument(
        "--api-port", type=_port, default=8000, help="port of astra api (default 8000)"
    )
    dev.set_defaults(func=cmd_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = AstraSettings.from_env()
        return int(args.func(args, settings))
    except (UsageError, SettingsError, AstraResourceError, ReplayError, ValueError) as error:
        sys.stderr.write(f"astra {args.command}: {error}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
