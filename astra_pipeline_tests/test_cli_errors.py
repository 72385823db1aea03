"""Command-line mistakes and unavailable components: one line naming the cause, exit
code 2, no traceback and no librdkafka log lines (which librdkafka writes to the stderr
file descriptor itself: captured here at that level)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from astra_pipeline import cli
from resources.broker import free_port


def one_line(args: list[str], capfd: pytest.CaptureFixture[str]) -> str:
    try:
        code = cli.main(args)
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    out, err = capfd.readouterr()
    assert code == 2, (code, out, err)
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


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
        (["ingest", "--shards", "1", "--shard", "3"], "--shard"),
        (["ingest", "--shard", "-1"], "--shard"),
        (["api", "--port", "0"], "--port"),
        (["import-duckdb", "/nonexistent/astra.duckdb"], "PATH"),
        (["api-key", "create", "--scope", "admin"], "--scope"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(
    args: list[str], flag: str, capfd: pytest.CaptureFixture[str]
) -> None:
    message = one_line(args, capfd)
    assert message.startswith(f"astra {args[0]}") and flag in message


def test_the_api_refuses_to_serve_beyond_loopback_without_keys(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASTRA_API_KEYS", raising=False)
    message = one_line(["api", "--host", "0.0.0.0"], capfd)
    assert "ASTRA_API_HOST=0.0.0.0" in message and "ASTRA_API_KEYS" in message
    monkeypatch.setenv("ASTRA_API_KEYS", "read:abc:zz:00")
    assert "ASTRA_API_KEYS entry 1" in one_line(["api"], capfd)


def test_the_broker_refuses_a_taken_port_in_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = one_line(["broker", "--port", str(port)], capfd)
    assert f"port {port}" in message and "taken" in message


def test_an_unreachable_broker_is_one_line_without_librdkafka_noise(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASTRA_KAFKA_TIMEOUT_S", "2")
    address = f"127.0.0.1:{free_port()}"
    message = one_line(["simulate", "--count", "5", "--bootstrap", address], capfd)
    assert address in message and "is the broker running?" in message


def test_ctrl_c_while_the_cli_is_still_starting_is_one_line_and_130() -> None:
    """A Ctrl-C that comes while `astra` imports (seconds on a loaded machine) is the
    user's too: exit 130 and one line, no KeyboardInterrupt traceback."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from astra_pipeline.entry import main; "
            "sys.argv = ['astra', 'simulate', '--count', '5']; sys.exit(main())",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.4)  # inside the full CLI's imports (dagster alone takes about a second)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert err == "astra simulate: interrupted\n"
