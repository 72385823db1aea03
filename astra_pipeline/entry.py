"""The `astra` command: `astra sql` on a lake starts without Dagster (quick_sql), every
other command is the full CLI (cli.py)."""

from __future__ import annotations

import sys


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["sql"]:
        from astra_pipeline.quick_sql import run

        done = run(argv[1:])
        if done is not None:
            return done
    from astra_pipeline.cli import main as full

    return full(argv)


if __name__ == "__main__":
    sys.exit(main())
