"""Options every model-running command shares: where to run (local device or a server)."""
from __future__ import annotations

import os
import sys


def add_backend_options(p) -> None:
    g = p.add_argument_group("backend")
    g.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu, for local runs")
    g.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: all cores)")
    g.add_argument("--server", metavar="URL", help="run on a medsegsuite server (medsegsuite serve) instead of locally")
    g.add_argument("--api-key-file", metavar="F",
                   help="file holding the server's API key (default: env MEDSEGSUITE_API_KEY)")


def make_backend(args):
    """LocalBackend, or RemoteBackend when --server is given. Both implement engine.Backend."""
    from ..engine.device import set_threads

    set_threads(getattr(args, "threads", 0) or None)
    if getattr(args, "server", None):
        from ..client import RemoteBackend, read_api_key

        return RemoteBackend(args.server, api_key=read_api_key(getattr(args, "api_key_file", None)))
    from ..engine import LocalBackend

    return LocalBackend(getattr(args, "device", "auto"))


class ProgressPrinter:
    """Prints job progress on one terminal line (or plain lines when not a TTY)."""

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
