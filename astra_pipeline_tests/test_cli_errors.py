"""Command-line mistakes and unavailable components: one line naming the cause, exit
code 2, no traceback and no librdkafka log lines."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from resources.broker import free_port

ASTRA = str(Path(sys.executable).parent / "astra")


def astra(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ASTRA, *args], capture_output=True, text=True, timeout=90)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["simulate", "--count", "5", "--rate", "-10"], "--rate"),
        (["simulate", "--count", "5", "--span-hours", "-3"], "--span-hours"),
        (["simulate", "--count", "0"], "--count"),
        (["simulate", "--count", "5", "--devices", "x"], "--devices"),
        (["broker", "--port", "70000"], "--port"),
        (["sql", "SELECT 1", "--max-rows", "-1"], "--max-rows"),
        (["backfill", "--wait", "-5"], "--wait"),
        (["deadletter", "list", "--since", "yesterday"], "--since"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(args: list[str], flag: str) -> None:
    assert flag in one_line(astra(*args))


def test_the_broker_refuses_a_taken_port_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = one_line(astra("broker", "--port", str(port)))
    assert f"port {port}" in message and "taken" in message


def test_an_unreachable_broker_is_one_line_without_librdkafka_noise() -> None:
    message = one_line(astra("simulate", "--count", "5", "--bootstrap", f"127.0.0.1:{free_port()}"))
    assert "is the broker running?" in message
