"""Moving a warehouse of the single DuckDB file (the storage path before issue 12) into a
lake: every table's rows, in one lake transaction.

The ledger comes with the rows (``ops.ingest_ledger``), so ingest goes on from where the
file's last batch ended, exactly once; the windows, features, scores and their partition
records come too, so nothing has to be recomputed. The lake's own bookkeeping is not
copied: the turn tables (``*_turns*``), which only order concurrent writers of the lake.
Only an empty lake takes an import: rows already there (ingested, or written by any
other command) could collide with the file's, and none is overwritten.
"""

from __future__ import annotations

from pathlib import Path

from resources.errors import WarehouseError
from resources.lake import sql_literal
from resources.tables import TABLES, TURN_TABLES
from resources.warehouse import DuckDBWarehouseResource, WarehouseSession

SOURCE = "duckdb_file"
"""The name the file is attached under, read-only, beside the lake."""

COPIED = tuple(table for table in TABLES if table not in TURN_TABLES)
"""Every table but the lake's turns (the ingest turns per partition are not in TABLES)."""


def import_duckdb_file(warehouse: DuckDBWarehouseResource, path: Path) -> dict[str, int]:
    """Copy every table of the DuckDB file at ``path`` into the (empty) lake; the rows
    copied per table. Nothing is copied unless all of it is."""
    if not path.is_file():
        raise WarehouseError(f"no DuckDB file at {path}")
    warehouse.ensure_schema()
    # Attached outside the transaction (DuckDB detaches nothing a transaction has used),
    # for the process's DuckDB: the transaction's own connection sees it.
    with warehouse.session() as attach:
        try:
            attach.execute(f"ATTACH {sql_literal(str(path.resolve()))} AS {SOURCE} (READ_ONLY)")
        except WarehouseError as error:
            reason = str(error).split(" -- while running")[0].splitlines()[0]
            raise WarehouseError(f"cannot read {path} as a DuckDB file: {reason}") from None
        try:
            with warehouse.transaction() as tx:
                held = tx.scalar(
                    "SELECT " + " + ".join(f"(SELECT count(*) FROM {t})" for t in COPIED)
                )
                if held:
                    raise WarehouseError(
                        f"{warehouse.describe()} already holds {held:,} rows: import into an "
                        "empty lake"
                    )
                copied = {table: _copy(tx, table) for table in COPIED}
                tx.commit_message("astra import-duckdb", f"import of {path}")
        finally:
            attach.execute(f"DETACH {SOURCE}")
    return {table: rows for table, rows in copied.items() if rows is not None}


def _copy(tx: WarehouseSession, table: str) -> int | None:
    """The rows of ``table`` copied from the file (the columns both have), or None when
    the file has no such table (one made before it existed)."""
    schema, name = table.split(".")
    found = tx.query(
        "SELECT f.column_name FROM duckdb_columns() AS f JOIN duckdb_columns() AS l "
        "ON l.column_name = f.column_name AND l.schema_name = f.schema_name "
        "AND l.table_name = f.table_name AND l.database_name = current_database() "
        "WHERE f.database_name = ? AND f.schema_name = ? AND f.table_name = ? "
        "ORDER BY f.column_index",
        [SOURCE, schema, name],
    )
    if found.height == 0:
        return None
    columns = ", ".join(f'"{c}"' for c in found["column_name"])
    return int(
        tx.scalar(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {SOURCE}.{schema}.{name}")
    )
