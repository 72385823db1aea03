"""The watchdog code location: dead_run_watchdog alone (sensors/dead_runs.py).

A code location of its own, beside astra_pipeline.definitions in workspace.yaml and in
the compose stack: when the main code server dies with its runs, this one still runs
and reports them failed.
"""

import dagster as dg

from resources.settings import AstraSettings
from sensors.dead_runs import build_dead_run_watchdog


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        sensors=[build_dead_run_watchdog(AstraSettings.from_env().sensor_interval_s)]
    )
