"""Dead-letter replay: send selected dead letters again, optionally repaired, exactly once.

A dead letter is only useful if it can be fixed and sent again. `astra deadletter replay`
re-publishes the raw message of each selected dead letter (through a user's repair
function, if given) to the input topic, with headers naming where it came from:

    astra-replay-id      one id per replayed dead letter
    astra-replay-of      topic/partition/offset of the dead letter
    astra-replay-reason  why it was a dead letter

Ingest treats it like any message: valid, it becomes a clean row (and ingest's
de-duplication by event_id makes a repaired event that was already stored a duplicate);
still invalid, it becomes a new dead letter, linked to the one it replays through
``ops.deadletter_replays`` (its target coordinates).

Exactly once, with the same outbox idea as the alerts (astra_pipeline/assets/alerts.py):

1. claim: one transaction records, per selected dead letter not yet replayed, the
   message to publish and the topic's ends before sending (the table's key refuses a
   dead letter claimed twice);
2. publish the claimed messages through an idempotent producer and wait for the broker;
3. record where each landed.

A run killed before 1 replays nothing; killed between 1 and 3, it leaves claims without
acknowledgement: the next run looks for their replay ids on the topic from the recorded
ends, records the ones it finds, and sends only the others. So each dead letter is marked
replayed once and published once, however often the command is killed and run again.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from resources.deadletter_store import (
    Selection,
    claim,
    mark_published,
    replayable,
    search_start,
    unpublished,
)
from resources.kafka import KafkaResource, Outgoing
from resources.warehouse import DuckDBWarehouseResource

REPLAY_ID_HEADER = "astra-replay-id"
REPLAY_OF_HEADER = "astra-replay-of"
REPLAY_REASON_HEADER = "astra-replay-reason"

Repair = Callable[[bytes, str], bytes]
"""A user's repair: (raw message value, dead-letter reason) -> the value to send."""


class ReplayError(ValueError):
    """A replay request that cannot be carried out (a bad transform, say)."""


@dataclass
class ReplayReport:
    selected: int = 0
    """Dead letters matching the selection and not replayed before."""
    claimed: int = 0
    published: int = 0
    """Sent and acknowledged by this run (earlier claims included)."""
    settled: int = 0
    """Claims of interrupted runs found already on the topic (not sent again)."""
    repair_failures: list[tuple[str, str]] = field(default_factory=list)
    """(coordinates, error) of dead letters the repair function raised on: not claimed."""
    preview: pl.DataFrame | None = None
    """With dry_run: what would be sent (coordinates, reason, value bytes before/after)."""


def load_repair(spec: str) -> Repair:
    """``module:function`` (importable from the working folder) or ``path.py:function``."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ReplayError(f"--transform {spec!r}: use MODULE:FUNCTION or FILE.py:FUNCTION")
    try:
        if target.endswith(".py"):
            path = Path(target)
            loaded = importlib.util.spec_from_file_location(path.stem, path)
            if loaded is None or loaded.loader is None or not path.exists():
                raise ReplayError(f"--transform: no Python file {target}")
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")
            module = importlib.import_module(target)
    except ReplayError:
        raise
    except Exception as error:
        raise ReplayError(f"--transform {spec}: cannot load {target}: {error}") from error
    function = getattr(module, name, None)
    if not callable(function):
        raise ReplayError(f"--transform {spec}: {target} has no function {name}")
    return function  # type: ignore[no-any-return]


def replay(
    kafka: KafkaResource,
    warehouse: DuckDBWarehouseResource,
    target_topic: str,
    selection: Selection,
    repair: Repair | None = None,
    repair_name: str | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    warehouse.ensure_schema()
    report = ReplayReport()
    if not dry_run:
        # Finish what an interrupted run left first, so its claims are not sent twice.
        _deliver(kafka, warehouse, report, fresh_attempt=None)
    with warehouse.session(read_only=dry_run) as session:
        candidates = replayable(session, selection)
    report.selected = candidates.height
    claims = _repaired(candidates, repair, report)
    if dry_run:
        report.preview = claims.select(
            "source_topic",
            "source_partition",
            "source_offset",
            pl.col("reason").str.slice(0, 60),
            pl.col("original_bytes"),
            pl.col("value").bin.size().alias("sent_bytes"),
        )
        return report
    if claims.height == 0:
        return report
    attempt_id = uuid.uuid4().hex
    search_from = kafka.high_watermarks(target_topic)
    with warehouse.transaction() as tx:
        report.claimed = claim(
            tx,
            claims.drop("original_bytes"),
            attempt_id,
            target_topic,
            search_from,
            repair_name,
            dt.datetime.now(dt.UTC),
        )
    _deliver(kafka, warehouse, report, fresh_attempt=attempt_id)
    return report


def _repaired(
    candidates: pl.DataFrame, repair: Repair | None, report: ReplayReport
) -> pl.DataFrame:
    rows = []
    for row in candidates.iter_rows(named=True):
        value: bytes = row["value"] or b""
        if repair is not None:
            try:
                value = repair(value, row["reason"])
                if not isinstance(value, bytes):
                    raise TypeError(f"returned {type(value).__name__}, not bytes")
            except Exception as error:
                where = f"{row['topic']}/{row['partition']}/{row['offset']}"
                report.repair_failures.append((where, f"{type(error).__name__}: {error}"))
                continue
        rows.append(
            {
                "source_topic": row["topic"],
                "source_partition": row["partition"],
                "source_offset": row["offset"],
                "replay_id": uuid.uuid4().hex,
                "key": row["key"],
                "value": value,
                "reason": row["reason"],
                "original_bytes": len(row["value"] or b""),
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "source_topic": pl.String,
            "source_partition": pl.Int32,
            "source_offset": pl.Int64,
            "replay_id": pl.String,
            "key": pl.Binary,
            "value": pl.Binary,
            "reason": pl.String,
            "original_bytes": pl.Int64,
        },
    )


def _deliver(
    kafka: KafkaResource,
    warehouse: DuckDBWarehouseResource,
    report: ReplayReport,
    fresh_attempt: str | None,
) -> None:
    """Publish every claimed, unacknowledged replay once; claims of other (interrupted)
    attempts are first looked for on the topic."""
    with warehouse.session() as session:
        pending = unpublished(session)
    if pending.height == 0:
        return
    for topic in pending["target_topic"].unique().to_list():
        rows = pending.filter(pl.col("target_topic") == topic)
        earlier = rows.filter(pl.col("attempt_id") != (fresh_attempt or ""))
        found = kafka.find_header_values(
            topic,
            search_start(earlier) if earlier.height else {},
            REPLAY_ID_HEADER,
            set(earlier["replay_id"].to_list()),
        )
        if found:
            with warehouse.transaction() as tx:
                report.settled += mark_published(tx, found, dt.datetime.now(dt.UTC))
        to_send = rows.filter(~pl.col("replay_id").is_in(list(found)))
        landed = kafka.publish_acknowledged(
            topic,
            (_message(row) for row in to_send.iter_rows(named=True)),
        )
        with warehouse.transaction() as tx:
            report.published += mark_published(tx, landed, dt.datetime.now(dt.UTC))


def _message(row: dict[str, object]) -> Outgoing:
    source = f"{row['source_topic']}/{row['source_partition']}/{row['source_offset']}"
    return Outgoing(
        id=str(row["replay_id"]),
        key=row["key"],  # type: ignore[arg-type]
        value=row["value"],  # type: ignore[arg-type]
        headers=[
            (REPLAY_ID_HEADER, str(row["replay_id"]).encode()),
            (REPLAY_OF_HEADER, source.encode()),
            (REPLAY_REASON_HEADER, str(row["reason"]).encode()),
        ],
    )
