"""`astra sql` without importing Dagster.

The command analysts run most is also the one whose time is mostly start-up: the full
CLI imports Dagster (about a second) before it opens anything. This path opens the lake
with DuckDB alone (settings, the lake's location and secrets, one read-only attach, the
query, the table) and leaves everything else to the full CLI: no lake configured,
``--help``, and any argument it does not accept, so the messages and exit codes are the
full CLI's.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from collections.abc import Sequence
from typing import NoReturn

from astra_pipeline.table_output import FORMATS, render, terminal_width
from resources.errors import AstraResourceError
from resources.lake import lake_location, open_lake
from resources.settings import AstraSettings, SettingsError, lake_secret_sources
from resources.warehouse_session import WarehouseSession


def snapshot_arg(text: str) -> int | str:
    """A snapshot id (a whole number) or an ISO time (the snapshot current then)."""
    if text.strip().isdigit():
        return int(text)
    try:
        return dt.datetime.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time (e.g. 2026-11-23T07:00Z)"
        ) from None


class _NotHere(Exception):
    """An argument this path does not take: the full CLI parses (and reports) it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _NotHere(message)


def _rows(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def run(argv: Sequence[str]) -> int | None:
    """Run ``astra sql ARGV`` here and return its exit code, or None when the full CLI
    should (see the module's docstring)."""
    if any(arg in ("-h", "--help") for arg in argv):
        return None
    parser = _Parser(prog="astra sql", add_help=False)
    parser.add_argument("query")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--max-rows", type=_rows, default=50)
    parser.add_argument("--at", type=snapshot_arg)
    try:
        args = parser.parse_args(list(argv))
        settings = AstraSettings.from_env()
    except (_NotHere, SettingsError):
        return None
    if not settings.lake_catalog or not args.query.strip():
        return None
    secrets = {k: str(v) for k, v in lake_secret_sources(resolve=True).items()}
    location = lake_location(settings, secrets)
    if args.at is not None:
        location = dataclasses.replace(location, at=args.at)
    try:
        con = open_lake(location, read_only=True)
        try:
            frame = WarehouseSession(con).query(args.query)
        finally:
            con.close()
    except AstraResourceError as error:
        sys.stderr.write(f"astra sql: {error}\n")
        return 2
    sys.stdout.write(render(frame, args.format, args.max_rows, terminal_width()))
    return 0
