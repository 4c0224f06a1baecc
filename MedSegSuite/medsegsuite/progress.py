"""Printing job progress on a terminal: used by the CLI and by library entry points that run jobs for a
person at a terminal (the demo). It lives in the library so the library never imports the CLI."""
from __future__ import annotations

import os
import sys


class ProgressPrinter:
    """Prints job progress on one terminal line (or plain lines, every 10 %, when not a TTY)."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() and not os.environ.get("CI")
        self._last = -1

    def __call__(self, event) -> None:
        pct = int(event.fraction * 100)
        if self.tty:
            self.stream.write(f"\r{self.label}: {pct:3d}% {event.message[:60]:<60}")
            if event.state.value in ("done", "failed", "cancelled"):
                self.stream.write("\n")
        elif pct // 10 != self._last // 10 or event.state.value != "running":
            self.stream.write(f"{self.label}: {pct:3d}% {event.state.value} {event.message}\n")
        self._last = pct
        self.stream.flush()
