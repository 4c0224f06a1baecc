"""The local backend of the web front end: a `medsegsuite serve` child process on 127.0.0.1.

The page's process renders with VTK (EGL, Mesa's LLVM); torch in the same process contends for the GIL
with rendering (the views stalled for minutes on a loaded 2-core machine) and its triton import crashed
next to Mesa's LLVM. A child process keeps torch out of the page: jobs go over loopback with a one-time
key that only this process knows (a few ms per job), and the child stops with the page.
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def backend_python() -> str:
    """The interpreter of the backend's environment (the project's `.venv`), not the web environment."""
    env = os.environ.get("MEDSEGSUITE_BACKEND_PYTHON")
    if env:
        return env
    root = Path(__file__).resolve().parents[2]
    for cand in (root / ".venv" / "bin" / "python", root / ".venv" / "Scripts" / "python.exe"):
        if cand.exists():
            return str(cand)
    return sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BackendProcess:
    """Start on construction; :meth:`backend` returns a connected RemoteBackend; :meth:`stop` ends it."""

    def __init__(self, device: str = "auto", start_timeout: float = 300.0):
        self.key = secrets.token_urlsafe(32)
        self._dir = tempfile.TemporaryDirectory(prefix="medsegsuite-web-")
        self.key_file = key_file = Path(self._dir.name) / "key"
        key_file.write_text(self.key)
        key_file.chmod(0o600)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(Path(self._dir.name) / "serve.log", "w")
        env = dict(os.environ, MEDSEGSUITE_HOME=os.environ.get("MEDSEGSUITE_HOME") or
                   str(Path.home() / ".medsegsuite"))
        self.proc = subprocess.Popen(
            [backend_python(), "-m", "medsegsuite", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--api-key-file", str(key_file), "--device", device],
            stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._deadline = time.time() + start_timeout

    def wait_ready(self) -> None:
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/v1/health", timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.time() > self._deadline:
                    self._log.flush()
                    tail = (Path(self._dir.name) / "serve.log").read_text()[-2000:]
                    raise RuntimeError(f"the local backend did not start:\n{tail}") from None
                time.sleep(0.3)

    def backend(self):
        from medsegsuite.client import RemoteBackend

        self.wait_ready()
        return RemoteBackend(self.url, api_key=self.key, client_name="medsegsuite-web")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
        self._dir.cleanup()
