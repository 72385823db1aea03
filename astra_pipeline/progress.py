"""Progress of long commands (`astra simulate`, `astra ingest`, `astra backfill --wait`)
on stderr, so stdout keeps their results: on a terminal a bar redrawn in place at most
10 times a second; elsewhere (CI, logs, a pipe) one plain line every few seconds."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR = 24


class Progress:
    def __init__(
        self,
        label: str,
        unit: str,
        total: int | None,
        stream: TextIO | None = None,
        line_every_s: float = 5.0,
        tty: bool | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.label = label
        self.unit = unit
        self.total = total
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._every = 0.1 if self._tty else line_every_s
        self._began = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self._every):
            return
        self._last = now
        text = self.render(done, note, now - self._began)
        if self._tty:
            self._stream.write("\r\x1b[2K" + text)
            self._drawn = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def render(self, done: int, note: str, elapsed_s: float) -> str:
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
        count = f"{done:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}"
        parts = [f"{self.label}:"]
        if self.total:
            share = min(1.0, done / self.total)
            if self._tty:
                filled = int(share * BAR)
                parts.append("[" + "#" * filled + "." * (BAR - filled) + "]")
            parts.append(f"{share:.0%}")
        parts += [count, f"{rate:,.0f} {self.unit}/s"]
        if note:
            parts.append(note)
        return " ".join(parts)

    def finish(self, done: int, note: str = "") -> None:
        """The last state, always shown; ends the terminal's bar line."""
        self.update(done, note, force=True)
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
