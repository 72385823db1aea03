"""Whether a run's worker process still lives on this machine (the dead-run watchdog).

A run worker's pid is in its RUN_START event. The pid alone is not proof: after the
worker died, the system may give the number to a new process. The process is the worker
only when it started no later than the run did (its start time, from /proc).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _boot_time() -> dt.datetime:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return dt.datetime.fromtimestamp(int(line.split()[1]), dt.UTC)
    raise OSError("no btime in /proc/stat")


def process_started_at(pid: int) -> dt.datetime | None:
    """When process ``pid`` started, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 22 (starttime, clock ticks after boot); the command name (field 2) may hold
    # spaces and parentheses, so count from the last ")".
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return _boot_time() + dt.timedelta(seconds=ticks / _TICKS)


def worker_alive(pid: int, run_started_at: dt.datetime, slack_s: float = 2.0) -> bool:
    """Whether ``pid`` is still the worker that started the run at ``run_started_at``
    (a process started later under the same number is not)."""
    started = process_started_at(pid)
    return started is not None and started <= run_started_at + dt.timedelta(seconds=slack_s)
