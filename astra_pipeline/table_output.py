"""How `astra sql` prints a result: every column type in every format.

Binary columns (raw messages, keys) print as hex in every format, since neither CSV nor
JSON has bytes; nested values (lists, structs) print as JSON text in CSV. The table format
fits the terminal's width; `vertical` prints one `column | value` line per field, a
record at a time, for results too wide for any terminal.
"""

from __future__ import annotations

import json
import shutil

import polars as pl

FORMATS = ("table", "vertical", "csv", "json")


def render(frame: pl.DataFrame, fmt: str, max_rows: int) -> str:
    frame = _printable(frame, nested_as_json=fmt == "csv")
    if fmt == "csv":
        return frame.write_csv()
    if fmt == "json":
        return frame.write_json() + "\n"
    if fmt == "vertical":
        return _vertical(frame.head(max_rows)) + _cut_note(frame, max_rows)
    width = shutil.get_terminal_size((120, 24)).columns
    with pl.Config(
        tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=max(width, 40)
    ):
        return f"{frame}\n"


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
