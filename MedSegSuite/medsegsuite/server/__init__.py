"""The HTTP inference server (``medsegsuite serve``): many clients share one device's worker.

* :mod:`.app` — the FastAPI application (the `Backend` interface over HTTP, around a `LocalBackend`).
* :mod:`.sessions` — leases, per-client images and jobs, the reaper (vanished clients, idle images,
  job time limits).
* :mod:`.users` — per-user keys (hashed) and roles; :mod:`.audit` — who ran what on which image.
* :mod:`.guard` — header timeout, Host check, no keys in URLs; :mod:`.tls` — trial certificates.
* :mod:`.config` — settings and the rules a network bind must meet (keys, TLS).
* :mod:`.runner` — uvicorn in the foreground or in a thread.

The wire format is :mod:`medsegsuite.wire`; paths and error codes are :mod:`medsegsuite.protocol`.
"""
from .app import create_app
from .config import ServerConfig, is_loopback, key_matches, load_key_file
from .runner import RunningServer, serve_forever, start_in_thread
from .users import UserStore

__all__ = ["create_app", "ServerConfig", "is_loopback", "key_matches", "load_key_file", "RunningServer",
           "serve_forever", "start_in_thread", "UserStore"]
