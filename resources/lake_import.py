"""Moving a warehouse of the single DuckDB file (the storage path before issue 12) into a
lake: every table's rows, in one lake transaction.

The ledger comes with the rows (``ops.ingest_ledger``), so ingest goes on from where the
file's last batch ended, exactly once; the windows, features, scores and their partition
records come too, so nothing has to be recomputed. The lake's own bookkeeping is not
copied: the turn tables (``*_turns*``), which only order concurrent writers of the lake.
Only an empty lake takes an import: rows already there could collide with the file's.
"""

from __future__ import annotations

from pathlib import Path

from resources.errors import WarehouseError
from resources.tables import INGEST_LEDGER, RAW_EVENTS, TABLES
from resources.warehouse import DuckDBWarehouseResource, WarehouseSession

SOURCE = "duckdb_file"
"""The name the file is attached under, read-only, beside the lake."""


def import_duckdb_file(warehouse: DuckDBWarehouseResource, path: Path) -> dict[str, int]:
    """Copy every table of the DuckDB file at ``path`` into the (empty) lake; the rows
    copied per table. Nothing is copied unless all of it is."""
    if not path.is_file():
        raise WarehouseError(f"no DuckDB file at {path}")
    warehouse.ensure_schema()
    literal = "'" + str(path.resolve()).replace("'", "''") + "'"
    # Attached outside the transaction (DuckDB detaches nothing a transaction has used),
    # for the process's DuckDB: the transaction's own connection sees it.
    with warehouse.session() as attach:
        try:
            attach.execute(f"ATTACH {literal} AS {SOURCE} (READ_ONLY)")
        except WarehouseError as error:
            reason = str(error).split(" -- while running")[0].splitlines()[0]
            raise WarehouseError(f"cannot read {path} as a DuckDB file: {reason}") from None
        try:
            with warehouse.transaction() as tx:
                held = tx.scalar(
                    f"SELECT (SELECT count(*) FROM {RAW_EVENTS}) "
                    f"+ (SELECT count(*) FROM {INGEST_LEDGER})"
                )
                if held:
                    raise WarehouseError(
                        f"{warehouse.describe()} already holds ingested rows: import into an "
                        "empty lake"
                    )
                copied = {table: _copy(tx, table) for table in TABLES if "_turns" not in table}
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
    tx.execute(f"DELETE FROM {table}")  # what an empty lake may hold (no ingested rows)
    tx.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {SOURCE}.{schema}.{name}")
    return int(tx.scalar(f"SELECT count(*) FROM {table}"))
