"""Background runs give the CPU to the runs a user waits for.

A run tagged ``astra/cpu_niceness`` lowers its process's CPU priority to that niceness
(never raising it) before its heavy step. The scoring sensor tags its runs so: scoring
a busy hour takes tens of seconds of CPU, and on two cores it stretched the ingest runs
that freshness is measured on (bench/freshness.py, docs/freshness.md).
"""

import os

import dagster as dg

NICENESS_TAG = "astra/cpu_niceness"


def lower_cpu_priority(context: dg.AssetExecutionContext) -> None:
    """Renice this process to the run's ``astra/cpu_niceness`` tag, if it has one."""
    value = context.run.tags.get(NICENESS_TAG)
    if not value:
        return
    try:
        target = int(value)
    except ValueError:
        context.log.warning(f"ignoring {NICENESS_TAG}={value!r}: not an integer")
        return
    current = os.nice(0)
    if target > current:
        os.nice(target - current)
        context.log.info(f"CPU niceness {current} -> {os.nice(0)} ({NICENESS_TAG})")
