"""The benchmarks' child programs start the way the benchmarks start them.

bench/ingest.py measures peak memory in a child (`python -c CHILD`, working folder the
repository root, no PYTHONPATH): a child importing a module that lives only in bench/
failed there, so the documented command could not reproduce docs/performance.md's
memory figures. The child's imports are run here exactly that way.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _child_program(script: str, name: str) -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{script}", ROOT / "bench" / script)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return str(getattr(module, name))


def test_the_ingest_benchmarks_memory_child_imports_from_the_repository_root() -> None:
    child = _child_program("ingest.py", "CHILD")
    imports = "\n".join(
        line for line in child.splitlines() if line.startswith(("import ", "from "))
    )
    done = subprocess.run(
        [sys.executable, "-c", imports], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
