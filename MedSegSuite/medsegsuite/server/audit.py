"""The audit log: who ran what on which image, one JSON record per line, no patient data.

A record names the user (from the key, never self-declared), their role, the session, the client's
name (sanitised: it is chosen by the client), the action, the task, the image's content fingerprint
and the job id, and the outcome. Image names, parameters, pixel data and keys are never written. The
file is created owner-only (0600). JSON lines cannot be forged by a client: every string is escaped.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._/@:+()-]")


def sanitize(text, limit: int = 80) -> str:
    """A client-chosen string made safe for logs: printable ASCII from a small set, one line, short."""
    return _UNSAFE.sub("_", str(text or ""))[:limit]


class AuditLog:
    def __init__(self, path: str | os.PathLike | None = None, keep: int = 1000):
        self.path = Path(path).expanduser() if path else None
        self.recent: deque = deque(maxlen=keep)  # the last records, for tests and the admin
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)
            os.chmod(self.path, 0o600)

    def write(self, action: str, status: str = "ok", **fields) -> None:
        rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": action, "status": status}
        rec.update({k: (v if isinstance(v, (int, float, bool)) or v is None else sanitize(v, 120))
                    for k, v in fields.items()})
        line = json.dumps(rec, ensure_ascii=True)
        with self._lock:
            self.recent.append(rec)
            if self.path is None:
                return
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
            except OSError as e:  # the audit must never take the server down; say so loudly
                log.error("cannot write the audit log %s: %s", self.path, e)
