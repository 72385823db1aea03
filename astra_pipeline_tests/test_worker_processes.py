"""A run's worker pid counts as alive only while it names a process that started no
later than the run (real processes, /proc of this machine)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time

from resources.worker_processes import process_started_at, worker_alive


def test_a_living_worker_a_dead_one_and_a_reused_number() -> None:
    before = dt.datetime.now(dt.UTC)
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = process_started_at(child.pid)
        assert started is not None
        # /proc counts in clock ticks from boot: the start is within a second of now.
        assert abs((started - before).total_seconds()) < 1.5
        assert worker_alive(child.pid, dt.datetime.now(dt.UTC))
        # A run that started well before this process: the number is not its worker.
        assert not worker_alive(child.pid, before - dt.timedelta(minutes=5))
    finally:
        child.kill()
        child.wait()
    time.sleep(0.1)
    assert process_started_at(child.pid) is None
    assert not worker_alive(child.pid, dt.datetime.now(dt.UTC))
    assert worker_alive(os.getpid(), dt.datetime.now(dt.UTC))
