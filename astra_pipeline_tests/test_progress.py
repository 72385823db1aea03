"""Progress of long commands: a bar on a terminal (a real pseudo-terminal here), plain
periodic lines elsewhere; results stay alone on stdout."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from astra_pipeline.progress import Progress
from astra_pipeline_tests.helpers import lake_env
from resources.broker import EmbeddedBroker
from resources.warehouse import DuckDBWarehouseResource

ASTRA = str(Path(sys.executable).parent / "astra")


def test_plain_lines_by_hand() -> None:
    out = io.StringIO()
    progress = Progress("astra simulate", "events", 200, stream=out, tty=False, line_every_s=0)
    assert progress.render(50, "", 2.0) == "astra simulate: 25% 50/200 events 25 events/s"
    assert (
        progress.render(0, "lag left 9", 0.0)
        == "astra simulate: 0% 0/200 events 0 events/s lag left 9"
    )
    unknown = Progress("astra ingest", "events", None, stream=out, tty=False)
    assert unknown.render(7, "", 1.0) == "astra ingest: 7 events 7 events/s"
    bar = Progress("b", "partitions", 4, stream=out, tty=True)
    assert bar.render(1, "", 1.0).startswith("b: [######..................] 25% 1/4 partitions")


def _env(broker: EmbeddedBroker, topic: str) -> dict[str, str]:
    return {
        **os.environ,
        "ASTRA_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "ASTRA_TOPIC_RAW": topic,
        "ASTRA_TOPIC_DEADLETTER": f"{topic}_dlq",
        "ASTRA_CONSUMER_GROUP": f"g-{topic}",
    }


def test_simulate_draws_a_bar_on_a_terminal(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [ASTRA, "simulate", "--count", "20000"],
        env=_env(broker, topic),
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        screen += chunk
    stdout, _ = process.communicate(timeout=120)
    os.close(leader)
    assert process.returncode == 0
    assert json.loads(stdout)["produced"] == 20_000  # stdout: the result alone
    text = screen.decode()
    assert "\r\x1b[2K" in text and "[########################] 100% 20,000/20,000 events" in text


def test_ingest_prints_plain_progress_lines_when_not_on_a_terminal(
    broker: EmbeddedBroker, topic: str, warehouse: DuckDBWarehouseResource
) -> None:
    env = {**_env(broker, topic), **lake_env(warehouse)}
    subprocess.run([ASTRA, "simulate", "--count", "5000"], env=env, check=True, capture_output=True)
    done = subprocess.run([ASTRA, "ingest"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["messages"] == 5000
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("astra ingest: 100% 5,000/5,000 events"), lines
    assert lines[-1].endswith("lag left 0"), lines
    assert "\r" not in done.stderr
