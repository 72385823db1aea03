"""How `astra sql` prints a result: every column type in every format.

Binary columns (raw messages, keys) print as hex in every format, since neither CSV nor
JSON has bytes; nested values (lists, structs) print as JSON text in CSV. `vertical`
prints one `column | value` line per field, a record at a time. The table format is one
line per row: on a terminal too narrow for it the result prints vertically instead
(cells wrapped into many narrow lines are unreadable), and into a pipe or a file it has
no width limit.
"""

from __future__ import annotations

import json
import shutil
import sys

import polars as pl

FORMATS = ("table", "vertical", "csv", "json")
UNLIMITED = 65_535
"""The widest table polars draws (its width is a 16-bit number)."""


def render(frame: pl.DataFrame, fmt: str, max_rows: int, width: int | None = None) -> str:
    """``frame`` in format ``fmt``, at most ``max_rows`` rows for table and vertical;
    ``width`` the terminal's (None: not a terminal, no limit)."""
    frame = _printable(frame, nested_as_json=fmt == "csv")
    if fmt == "csv":
        return frame.write_csv()
    if fmt == "json":
        return frame.write_json() + "\n"
    if fmt == "vertical":
        return _vertical(frame.head(max_rows)) + _cut_note(frame, max_rows)
    with pl.Config(tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=UNLIMITED):
        table = f"{frame}\n"
    if width is not None and max(map(len, table.splitlines())) > width:
        return _vertical(frame.head(max_rows)) + _cut_note(frame, max_rows)
    return table


def terminal_width() -> int | None:
    """The terminal's width when standard output is one, else None."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size((120, 24)).columns


def _printable(frame: pl.DataFrame, nested_as_json: bool) -> pl.DataFrame:
    columns: list[pl.Expr | pl.Series] = []
    for name, dtype in frame.schema.items():
        if dtype == pl.Binary:
            columns.append(pl.col(name).bin.encode("hex"))
        elif nested_as_json and isinstance(dtype, (pl.List, pl.Array, pl.Struct)):
            columns.append(
                pl.Series(name, [_json(v) for v in frame[name].to_list()], dtype=pl.String)
            )
        else:
            columns.append(pl.col(name))
    return frame.select(columns)


def _json(value: object) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def _vertical(frame: pl.DataFrame) -> str:
    width = max((len(name) for name in frame.columns), default=0)
    lines: list[str] = []
    for index, row in enumerate(frame.iter_rows(named=True), 1):
        lines.append(f"-[ RECORD {index} ]" + "-" * max(0, width - 8))
        lines.extend(f"{name.ljust(width)} | {value}" for name, value in row.items())
    return "\n".join(lines) + ("\n" if lines else "(0 rows)\n")


def _cut_note(frame: pl.DataFrame, max_rows: int) -> str:
    hidden = frame.height - max_rows
    return f"({hidden} more rows: --max-rows)\n" if hidden > 0 else ""
