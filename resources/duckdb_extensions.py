"""Loading DuckDB's extensions on a machine that cannot download them.

DuckDB fetches an extension from its repository on first `INSTALL`/`LOAD`; offline
machines and CI cannot. The PyPI wheels `duckdb-extension-<name>` ship the binaries
built for one DuckDB release (`<package>/extensions/v<release>/<name>.duckdb_extension`),
which is why pyproject.toml pins duckdb to that release. An extension is loaded from its
wheel when the wheel is installed and matches the running DuckDB, else through DuckDB's
own INSTALL/LOAD; when neither works the error names the package to install.

DuckDB checks an extension's signature each time a database loads it, by hashing the
whole file: ducklake and postgres_scanner are 78 MB together, and their check cost 0.15 s
idle (0.3-0.4 s on a busy machine) of every new connection, more than half of what
`astra sql` needs besides Python's imports. ``connect`` skips that check when every
extension asked for comes from its installed wheel: those files are the signed binaries
PyPI serves, whose integrity is pip's (pin the wheels with hashes where that matters). It
keeps the check when any extension must come through INSTALL. The setting is DuckDB's
``allow_unsigned_extensions``, for the in-memory DuckDB that attaches the lake; nothing
that reaches that DuckDB loads extensions of its own choosing (`astra sql` runs the
user's query with the user's own rights).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb

from resources.errors import WarehouseError

PACKAGES = {
    "ducklake": "duckdb-extension-ducklake",
    "postgres_scanner": "duckdb-extension-postgres-scanner",
    "httpfs": "duckdb-extension-httpfs",
}
"""The extensions the platform uses, and the PyPI package that ships each."""


class ExtensionMissing(WarehouseError):
    """A DuckDB extension is neither installed from its wheel nor downloadable."""


def wheel_extension(name: str, version: str | None = None) -> Path | None:
    """The extension file the installed wheel of ``name`` ships for DuckDB ``version``
    (default: the running one), or None."""
    package = PACKAGES.get(name, f"duckdb-extension-{name}").replace("-", "_")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    release = version or duckdb.__version__
    for location in spec.submodule_search_locations:
        found = Path(location, "extensions", f"v{release}", f"{name}.duckdb_extension")
        if found.is_file():
            return found
    return None


def load_extension(connection: duckdb.DuckDBPyConnection, name: str) -> str:
    """Load extension ``name`` into ``connection``; say where it came from."""
    shipped = wheel_extension(name)
    if shipped is not None:
        try:
            connection.execute(f"LOAD '{shipped}'")
            return str(shipped)
        except duckdb.Error as error:
            raise ExtensionMissing(
                f"DuckDB extension {name} from {shipped} does not load: {error}"
            ) from None
    try:
        connection.execute(f"INSTALL {name}")
        connection.execute(f"LOAD {name}")
        return "DuckDB's extension repository"
    except duckdb.Error as error:
        package = PACKAGES.get(name, f"duckdb-extension-{name}")
        raise ExtensionMissing(
            f"DuckDB extension {name} is not available (no {package} wheel for DuckDB "
            f"{duckdb.__version__} installed, and downloading it failed: "
            f"{str(error).splitlines()[0]}); pip install '{package}=={duckdb.__version__}'"
        ) from None


def connect(extensions: tuple[str, ...]) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB with ``extensions`` loaded (see the module's docstring for
    when their signature check is skipped)."""
    from_wheels = all(wheel_extension(name) is not None for name in extensions)
    connection = duckdb.connect(config={"allow_unsigned_extensions": "true"} if from_wheels else {})
    try:
        for name in extensions:
            load_extension(connection, name)
    except BaseException:
        connection.close()
        raise
    return connection
