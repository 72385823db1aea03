"""The `astra` command: `astra sql` starts without Dagster (quick_sql), every
other command is the full CLI (cli.py). Ctrl-C at any moment, even while the CLI is
still importing, ends it with exit code 130 and one line, not a traceback."""

from __future__ import annotations

import sys


def main() -> int:
    argv = sys.argv[1:]
    try:
        if argv[:1] == ["sql"]:
            from astra_pipeline.quick_sql import run

            done = run(argv[1:])
            if done is not None:
                return done
        from astra_pipeline.cli import main as full

        return full(argv)
    except KeyboardInterrupt:
        command = f"astra {argv[0]}" if argv else "astra"
        sys.stderr.write(f"{command}: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
