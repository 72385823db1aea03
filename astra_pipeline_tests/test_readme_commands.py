"""The README's "Using it" commands, verbatim, against a running dev platform.

The commands are read from README.md (so the README cannot drift from what is tested)
and run with bash, as typed, from a folder laid out like a checkout (its `.venv` is this
one's) while `astra dev` runs there. Each answer must be about the data that platform
ingested: the same warehouse, the same broker, the same Dagster instance. At the end,
Ctrl-C stops the platform with one summary line, no traceback, and the summary counts
no failed run in the session's instance (its private Postgres stops with it).

Two settings point the commands at this platform's free ports instead of 9092 and
3000 (ASTRA_KAFKA_BOOTSTRAP_SERVERS, ASTRA_DAGSTER_URL): the commands' text is not
changed. `<backfill id>` is the one placeholder: it gets the id the backfill before it
printed.

It takes about three minutes, so it is not part of `make test` (kept under ten
minutes): `make test-readme` runs it, and so does CI.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)  # this virtualenv
pytestmark = pytest.mark.readme
CHECKOUT_ENTRIES = (
    "pyproject.toml",
    "workspace.yaml",
    "dagster.yaml",
    "dagster.embedded.yaml",
    "astra_pipeline",
    "resources",
    "sensors",
)
"""What the checkout folder links to in this one (the dg project and its code)."""


def readme_commands(text: str) -> list[str]:
    """The shell commands of the README's "Using it" section: its indented lines that
    are not comments, with backslash continuations joined."""
    section = text.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    pending = ""
    for line in section.splitlines():
        if not line.startswith("    ") or line.strip().startswith("#"):
            continue
        part = line.strip()
        if part.endswith("\\"):
            pending += part[:-1].rstrip() + " "
            continue
        commands.append(pending + part)
        pending = ""
    return commands


def test_readme_commands_are_extracted_whole() -> None:
    commands = readme_commands((REPO / "README.md").read_text())
    assert commands and all(c.startswith((".venv/bin/", "DAGSTER_HOME=")) for c in commands)
    assert not any(c.endswith("\\") for c in commands)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(predicate, timeout_s: float, what: str, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _ui_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


ASSETS = """
{ assetsOrError { ... on AssetConnection { nodes {
    key { path } assetMaterializations(limit: 1) { timestamp } } } } }
"""


def _never_materialized(url: str) -> list[str]:
    """The assets of the running instance that have no materialization yet."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": ASSETS}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        nodes = json.load(response)["data"]["assetsOrError"]["nodes"]
    return ["/".join(n["key"]["path"]) for n in nodes if not n["assetMaterializations"]]


class Shell:
    """Runs commands with bash in the checkout folder, with the platform's settings."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env

    def run(self, command: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert "Traceback" not in done.stderr, f"{command}\n{done.stderr[-3000:]}"
        assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stderr[-3000:]}"
        return done

    def interrupted(
        self, command: str, after_s: float, ready: str | None = None
    ) -> tuple[int, str, str]:
        """Start ``command``, Ctrl-C it (as a terminal would: the whole foreground group)
        ``after_s`` after it printed a line containing ``ready`` (or after it started, with
        no ``ready``), and return its exit code and output. Waiting for its own word, not
        a fixed time: on a loaded machine the CLI takes seconds to import."""
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        lines: list[str] = []
        said = threading.Event()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if ready is not None and ready in line:
                    said.set()
            said.set()  # the output ended: the process is ending

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if ready is not None:
            said.wait(timeout=120)
        time.sleep(after_s)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
        reader.join(timeout=10)
        assert "Traceback" not in err, f"{command}\n{err[-3000:]}"
        return process.returncode, "".join(lines), err

    def sql(self, query: str) -> list[dict[str, object]]:
        done = self.run(f".venv/bin/astra sql --format json {json.dumps(query)}")
        return list(json.loads(done.stdout))


def _count(shell: Shell, table: str) -> int:
    return int(shell.sql(f"SELECT count(*) AS n FROM {table}")[0]["n"])


@pytest.mark.timeout(1500)
def test_readme_commands_against_a_running_dev_platform(tmp_path: Path) -> None:
    commands = readme_commands((REPO / "README.md").read_text())
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(VENV)
    for entry in CHECKOUT_ENTRIES:
        (checkout / entry).symlink_to(REPO / entry)
    ui_port, broker_port, api_port = _free_port(), _free_port(), _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ASTRA_", "DAGSTER_"))
    }
    env |= {
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
        "ASTRA_DAGSTER_URL": f"http://127.0.0.1:{ui_port}",
    }
    shell = Shell(checkout, env)
    log = tmp_path / "dev.log"
    with log.open("w") as sink:
        dev = subprocess.Popen(
            [str(checkout / ".venv/bin/astra"), "dev", "--port", str(ui_port)]
            + ["--broker-port", str(broker_port), "--api-port", str(api_port)],
            cwd=checkout,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for(lambda: _ui_up(env["ASTRA_DAGSTER_URL"]), 120, "the dev UI")
        _wait_for(
            lambda: (
                (checkout / "data" / "dev" / "lake.json").exists()
                and _count(shell, "raw.events") > 0
            ),
            120,
            "the dev platform's first ingest",
            interval_s=3,
        )
        _run_readme(shell, commands, checkout)
        _use_the_api(f"http://127.0.0.1:{api_port}")
        # Every asset of the UI has been materialized once (issue 11, item 10).
        _wait_for(
            lambda: not _never_materialized(env["ASTRA_DAGSTER_URL"]),
            300,
            "every asset's first materialization",
            interval_s=5,
        )
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
    output = log.read_text()
    assert dev.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "Stack Trace" not in output, output[-5000:]
    summary = output.rstrip().splitlines()[-1]
    assert summary.startswith("stopped: ") and "; 0 failed runs this session" in summary, output[
        -5000:
    ]


def _use_the_api(url: str) -> None:
    """`make dev` serves `astra api` (docs/api.md): ready, takes an event over HTTP, and
    reads it back once the sensor's next ingest run stored it."""
    _wait_for(
        lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 200, 60, "astra api ready"
    )
    event = {
        "event_type": "sensor_reading",
        "device_id": "readme-api-device",
        "ts": dt.datetime.now(dt.UTC).isoformat(),
        "temperature_c": 21.5,
        "humidity_pct": 40.0,
        "battery_pct": 90.0,
        "lat": 1.0,
        "lon": 2.0,
        "status": "ok",
    }
    posted = httpx.post(f"{url}/v1/events", json=event, timeout=30)
    assert posted.status_code == 200 and posted.json()["results"][0]["status"] == "accepted"
    latest = f"{url}/v1/devices/readme-api-device/latest"
    _wait_for(lambda: httpx.get(latest, timeout=10).status_code == 200, 120, "the posted event")
    reading = httpx.get(latest, timeout=10).json()["reading"]
    assert reading["event_id"] == posted.json()["results"][0]["event_id"], reading
    alerts = httpx.get(f"{url}/v1/alerts", params={"limit": 5}, timeout=10)
    assert alerts.status_code == 200, alerts.text


def _run_readme(shell: Shell, commands: list[str], checkout: Path) -> None:
    seen: set[str] = set()

    def command(prefix: str) -> str:
        found = [c for c in commands if c.startswith(prefix)]
        assert len(found) == 1, (prefix, found)
        seen.add(found[0])
        return found[0]

    schema = json.loads(shell.run(command(".venv/bin/astra schema")).stdout)
    assert "sensor_reading" in json.dumps(schema)

    # The embedded broker alone: it runs until Ctrl-C, or says in one line that its port
    # is taken (a developer's own broker on 9092).
    code, out, err = shell.interrupted(
        command(".venv/bin/astra broker"), after_s=1, ready="broker on"
    )
    assert (code == 0 and "broker on" in out) or (code == 2 and len(err.splitlines()) == 1)

    raw_before = _count(shell, "raw.events")
    done = shell.run(command(".venv/bin/astra simulate --count 100000"))
    assert re.search(r'"seed": \d+', done.stdout), done.stdout
    code, out, err = shell.interrupted(command(".venv/bin/astra simulate --duration"), after_s=5)
    assert code == 130, (code, err[-2000:])
    shell.run(command(".venv/bin/astra simulate --count 200000"), timeout_s=600)
    # Stored where the pipeline's checks read it (the dev warehouse).
    assert _count(shell, "ml.anomaly_ground_truth") > 0
    assert _count(shell, "ml.declining_users_truth") > 0

    shell.run(command(".venv/bin/astra ingest"), timeout_s=600)
    raw_after = _count(shell, "raw.events")
    assert raw_after >= raw_before + 300_000, (raw_before, raw_after)

    listed = shell.run(command(".venv/bin/astra deadletter list")).stdout
    # The table's rows: reason, dead letters, ... (the dev simulator keeps adding some,
    # so the listed counts add up to at most what the table holds a moment later).
    per_reason = [int(m) for m in re.findall(r"^│ .+? ┆ (\d+) +┆", listed, re.MULTILINE)]
    dead = _count(shell, "clean.dead_letter_events")
    assert per_reason and 0 < sum(per_reason) <= dead, listed
    shell.run(command(".venv/bin/astra deadletter replay"))

    statuses = shell.run(command('.venv/bin/astra sql "SELECT status, count(*)')).stdout
    readings = _count(shell, "clean.sensor_readings")
    assert readings > 0 and set(re.findall(r"\b(ok|degraded|fault)\b", statuses)) >= {"ok"}
    csv = shell.run(command(".venv/bin/astra sql --format csv")).stdout.splitlines()
    assert len(csv) == 11 and "reason" in csv[0], csv[:2]

    # The live hour's windows come with the ingest runs; the other 11 hours of the
    # --span-hours 12 history from the windows sensor; alerts from the scoring sensor.
    windows = shell.run(command('.venv/bin/astra sql "SELECT * FROM agg.sensor_1m')).stdout
    assert "dev-" in windows, windows
    _wait_for(lambda: _count(shell, "ml.alerts") > 0, 300, "alerts", interval_s=5)
    alerts = shell.run(command('.venv/bin/astra sql "SELECT device_id, ts, score')).stdout
    assert "dev-" in alerts, alerts

    dry = shell.run(command(".venv/bin/astra backfill --last 12 --dry-run")).stdout
    assert "12 partitions" in dry, dry
    done = shell.run(command(".venv/bin/astra backfill --last 12 --wait"), timeout_s=700)
    backfill_id = re.search(r"backfill (\S+):", done.stdout)
    assert backfill_id and "COMPLETED" in done.stdout, done.stdout
    # Its progress on stderr: plain lines here (not a terminal), all 12 partitions done.
    assert "12/12 partitions" in done.stderr.splitlines()[-1], done.stderr[-2000:]
    resume = command(".venv/bin/astra backfill --resume")
    done = subprocess.run(
        ["bash", "-c", resume.replace("<backfill id>", backfill_id.group(1))],
        cwd=checkout,
        env=shell.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # A completed backfill has nothing to resume: one line saying so, no traceback.
    assert "Traceback" not in done.stderr and done.returncode in (0, 2), done.stderr
    assert len((done.stdout + done.stderr).strip().splitlines()) == 1, done.stdout + done.stderr

    materialized = shell.run(command("DAGSTER_HOME="), timeout_s=600)
    assert "RUN_SUCCESS" in materialized.stdout + materialized.stderr, materialized.stderr[-2000:]

    assert seen == set(commands), set(commands) - seen
