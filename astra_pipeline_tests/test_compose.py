"""The compose stack, validated as far as a machine without a Docker engine allows.

A YAML-level check always runs; `docker compose config` (or Debian's `docker-compose
config`) runs when a client is installed; the two init scripts run for real against the
local Postgres and a stub of kafka-topics.sh.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from astra_pipeline_tests.helpers import PostgresServer
from resources.settings import LAKE_SECRET_ENVS, PG_PASSWORD_ENV, env_var_defaults

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
OUR_IMAGE = "astra-pipeline:local"


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    return {key: value for key, value in pairs}


def dagster_yaml_env_vars() -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"}:
                found.add(node["env"])
            for value in node.values():
                walk(value)

    walk(yaml.safe_load((REPO / "dagster.yaml").read_text()))
    return found


def variables_the_code_reads() -> set[str]:
    """resources/settings.py's variables, the secrets, dagster.yaml's and DAGSTER_HOME."""
    return {
        *env_var_defaults(),
        PG_PASSWORD_ENV,
        *LAKE_SECRET_ENVS.values(),
        *dagster_yaml_env_vars(),
        "DAGSTER_HOME",
    }


def ours(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("image") == OUR_IMAGE}


def test_every_service_has_an_image_or_an_existing_build_context() -> None:
    services = load_compose()["services"]
    assert {
        "kafka",
        "kafka-init",
        "postgres",
        "codeserver",
        "webserver",
        "daemon",
        "simulator",
    } <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            build = service["build"]
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert (context / dockerfile).is_file(), f"{name}: no {context / dockerfile}"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "healthcheck" in services["postgres"]


def test_published_ports_bind_to_loopback_only() -> None:
    published = {
        name: port
        for name, service in load_compose()["services"].items()
        for port in service.get("ports", [])
    }
    assert published, "the UI must be published"
    for name, port in published.items():
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
    assert "127.0.0.1:3000:3000" in load_compose()["services"]["webserver"]["ports"]


def test_dockerfile_copies_the_packages_and_the_instance_config() -> None:
    copies = [
        shlex.split(line)[1:]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
    ]
    sources = {src for args in copies for src in args[:-1]}
    assert {"pyproject.toml", "astra_pipeline", "resources", "sensors"} <= sources
    assert {"dagster.yaml", "workspace.compose.yaml"} <= sources
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert source not in ignored, f"COPY {source}: excluded by .dockerignore"
    assert ".env" in ignored, "secrets must never enter the build context"


def test_code_servers_modules_load_and_workspace_points_at_them(tmp_path: Path) -> None:
    """The main code location and the watchdog's, each a gRPC code server service."""
    services = load_compose()["services"]
    workspace = yaml.safe_load((REPO / "workspace.compose.yaml").read_text())
    entries = {e["grpc_server"]["host"]: e["grpc_server"] for e in workspace["load_from"]}
    assert set(entries) == {"codeserver", "watchdog"}
    # The watchdog sees the code server's run workers: the same process namespace.
    assert services["watchdog"]["pid"] == "service:codeserver"
    for name in ("webserver", "daemon"):
        assert "workspace.compose.yaml" in services[name]["command"]
    # The same loader the code servers use, on the modules the compose file names.
    # Default settings; a SQLite instance (without DAGSTER_HOME the CLI would read the
    # Postgres dagster.yaml from the working directory).
    shutil.copy(REPO / "dagster.embedded.yaml", tmp_path / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASTRA_", "DAGSTER_"))}
    env["DAGSTER_HOME"] = str(tmp_path)
    for host, entry in entries.items():
        command = services[host]["command"]
        assert command[:3] == ["dagster", "api", "grpc"]
        module = command[command.index("--module-name") + 1]
        assert entry["port"] == int(command[command.index("--port") + 1])
        result = subprocess.run(
            [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-m", module],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_env_example_lists_exactly_what_the_code_reads() -> None:
    listed = env_example()
    assert set(listed) == variables_the_code_reads()
    defaults = env_var_defaults()
    assert {k: v for k, v in listed.items() if k in defaults} == defaults
    assert dagster_yaml_env_vars() == {
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_PORT",
        "DAGSTER_PG_USER",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_DB",
    }


def test_compose_passes_only_variables_the_code_reads() -> None:
    text = COMPOSE.read_text()
    services = load_compose()["services"]
    readable = variables_the_code_reads()
    for name, service in ours(services).items():
        assert service["env_file"] == ".env", name
        unknown = set(service.get("environment", {})) - readable
        assert not unknown, f"{name} passes variables nothing reads: {unknown}"
    assert set(ours(services)) == {
        "codeserver",
        "watchdog",
        "webserver",
        "daemon",
        "simulator",
        "api",
    }
    # Interpolated (${VAR}) and container-shell ($${VAR}, $$VAR) references alike.
    referenced = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", text))
    container_own = {"POSTGRES_USER", "POSTGRES_DB", "PGUSER", "PGPASSWORD", "PGDATABASE"}
    unknown = referenced - set(env_example()) - container_own
    assert not unknown, f"compose refers to variables .env.example does not list: {unknown}"


def compose_client() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_config_validates(tmp_path: Path) -> None:
    client = compose_client()
    if client is None:
        pytest.skip("no docker compose client here (the YAML-level checks above still ran)")
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    shutil.copy(REPO / ".env.example", tmp_path / ".env")  # a user's .env is never touched
    (tmp_path / "Dockerfile").symlink_to(REPO / "Dockerfile")
    result = subprocess.run(
        [*client, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    readable = variables_the_code_reads()
    for name, service in ours(resolved).items():
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        assert set(environment) <= readable, name
        assert set(environment) >= set(env_example()), f"{name} misses .env variables"
        assert environment["DAGSTER_PG_HOST"] == "postgres"
        assert environment["ASTRA_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"


def container_script(service: str) -> str:
    """The service's `sh -c` script as the container runs it ($$ is compose's escape)."""
    spec = load_compose()["services"][service]
    assert spec["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = spec["command"]
    return script.replace("$$", "$")


def test_kafka_init_creates_the_three_topics(tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stub.chmod(0o755)
    script = container_script("kafka-init").replace("/opt/kafka/bin/kafka-topics.sh", str(stub))
    env = {"PATH": os.environ["PATH"], **env_example(), "ASTRA_RAW_PARTITIONS": "6"}
    subprocess.run(["/bin/sh", "-c", script], env=env, check=True, timeout=30)
    created = [line.split() for line in calls.read_text().splitlines()]
    topics = {c[c.index("--topic") + 1]: int(c[c.index("--partitions") + 1]) for c in created}
    assert topics == {"events_raw": 6, "events_deadletter": 1, "events_alerts": 1}
    assert all("--if-not-exists" in c and "kafka:19092" in c for c in created)


@pytest.mark.skipif(shutil.which("psql") is None, reason="needs the psql client")
def test_postgres_init_creates_the_serving_role_and_database_idempotently(
    postgres_server: PostgresServer,
) -> None:
    name = f"astra_ci_{uuid.uuid4().hex[:10]}"
    password = 'it\'s a "secret" $HOME'
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": postgres_server.host,
        "PGPORT": str(postgres_server.port),
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": "postgres",
        "ASTRA_PG_USER": name,
        "ASTRA_PG_PASSWORD": password,
        "ASTRA_PG_DATABASE": name,
    }
    try:
        for _ in range(2):  # runs on every `docker compose up`
            subprocess.run(
                ["/bin/sh", "-c", container_script("postgres-init")],
                env=env,
                check=True,
                capture_output=True,
                timeout=60,
            )
        with psycopg.connect(postgres_server.conninfo()) as conn:
            owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            login = conn.execute(
                "SELECT rolcanlogin, rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s",
                (name,),
            ).fetchone()
            lake_owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                (f"{name}_lake",),
            ).fetchone()
        assert owner == (name,)
        assert lake_owner == (name,), "the lake's catalog database, owned by the same role"
        assert login == (True, True)
    finally:
        with psycopg.connect(postgres_server.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP DATABASE IF EXISTS "{name}_lake" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{name}"')
