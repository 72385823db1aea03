"""lower_cpu_priority renices the run's process (in a child process, not pytest's)."""

import subprocess
import sys

SCRIPT = """
import os, types
from astra_pipeline.assets.run_priority import lower_cpu_priority
log = types.SimpleNamespace(info=print, warning=print)
def context(tags):
    return types.SimpleNamespace(run=types.SimpleNamespace(tags=tags), log=log)
start = os.nice(0)
lower_cpu_priority(context({}))
untagged = os.nice(0)
lower_cpu_priority(context({"astra/cpu_niceness": str(start + 10)}))
lower_cpu_priority(context({"astra/cpu_niceness": str(start + 10)}))  # not twice
tagged = os.nice(0)
lower_cpu_priority(context({"astra/cpu_niceness": str(start)}))  # never raised back
lower_cpu_priority(context({"astra/cpu_niceness": "high"}))
print("NICE", start, untagged, tagged, os.nice(0))
"""


def test_a_tagged_run_lowers_its_cpu_priority_once_and_never_raises_it() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    start, untagged, tagged, last = map(int, out.split("NICE")[1].split())
    assert untagged == start
    assert tagged == last == min(start + 10, 19)
    assert "ignoring astra/cpu_niceness='high'" in out
