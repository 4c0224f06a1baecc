"""The hub's backend choice, shared by every MedSegSuite panel in one Slicer session.

Settings (local or remote, server URL, device) live in ``$MEDSEGSUITE_HOME/settings.json``
(default ``~/.medsegsuite``), readable by the CLI as well; the API key is *not* there but in
:mod:`.apikeys`. :func:`get_backend` returns one backend for all panels (a `LocalBackend` owning
the device on its worker thread, or a `RemoteBackend`), created on first use and rebuilt when the
settings change.
"""
from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass

from medsegsuite.errors import InputError
from medsegsuite.models.registry import user_home

from . import apikeys

DEVICES = ("auto", "cuda", "mps", "cpu")
MODES = ("local", "remote")


@dataclass
class BackendSettings:
    mode: str = "local"
    url: str = ""
    device: str = "auto"

    def validate(self) -> "BackendSettings":
        if self.mode not in MODES:
            raise InputError(f"backend must be one of {MODES}, got '{self.mode}'")
        if self.device not in DEVICES:
            raise InputError(f"device must be one of {DEVICES}, got '{self.device}'")
        if self.mode == "remote" and not self.url.strip():
            raise InputError("enter the server URL (e.g. https://gpu-server:8765) for the remote backend")
        return self


def settings_file():
    return user_home() / "settings.json"


def load_settings() -> BackendSettings:
    p = settings_file()
    if not p.exists():
        return BackendSettings()
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        return BackendSettings(**{k: d[k] for k in ("mode", "url", "device") if k in d})
    except (OSError, ValueError, TypeError):
        return BackendSettings()


def save_settings(s: BackendSettings, api_key: str | None = None) -> None:
    """Save the settings; an ``api_key`` goes to the keyring/key file, never into settings.json."""
    s.validate()
    p = settings_file()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(asdict(s), indent=1), encoding="utf-8")
    if api_key is not None and s.mode == "remote":
        apikeys.store_api_key(s.url, api_key)
    reset_backend()


_lock = threading.Lock()
_backend = None
_backend_key = None
_owned = False  # only a backend made here is closed here


def make_backend(s: BackendSettings):
    s.validate()
    if s.mode == "remote":
        try:
            from medsegsuite.client import RemoteBackend
        except ImportError as e:
            raise InputError(f"the remote client is not available in this installation ({e})") from None
        return RemoteBackend(s.url, api_key=apikeys.load_api_key(s.url))
    from medsegsuite.engine import LocalBackend

    return LocalBackend(s.device)


def get_backend():
    """The session's shared backend (created on first use from the saved settings)."""
    global _backend, _backend_key, _owned
    s = load_settings()
    key = (s.mode, s.url, s.device)
    with _lock:
        if _backend is None or _backend_key != key:
            if _backend is not None and _owned:
                _backend.close()
            _backend, _backend_key, _owned = make_backend(s), key, True
        return _backend


def set_backend(backend) -> None:
    """Use ``backend`` for every panel (tests, batch scripts, or a custom server client)."""
    global _backend, _backend_key, _owned
    with _lock:
        _backend, _owned = backend, False
        s = load_settings()
        _backend_key = (s.mode, s.url, s.device)


def connection_state() -> dict:
    """What the hub shows, without any network call: the live backend's state and device.

    A remote backend reports ``connected`` / ``connecting`` / ``disconnected`` / ``session lost`` /
    ``auth failed`` / ``incompatible`` (from `RemoteBackend.connection_state`); a backend not created
    yet reports ``not connected``."""
    s = load_settings()
    with _lock:
        b = _backend
    if b is None:
        return {"state": "not connected", "mode": s.mode, "device": "", "url": s.url}
    if hasattr(b, "connection_state"):
        st = dict(b.connection_state())
        st.setdefault("mode", "remote")
        return st
    dev = getattr(b, "device", "")
    return {"state": "local", "mode": "local", "device": dev, "url": ""}


def format_connection_state(st: dict) -> str:
    if st.get("mode") == "local" or st.get("state") == "local":
        return f"Local backend on {st.get('device') or 'the chosen device'}"
    text = f"{st.get('state', 'unknown')}"
    if st.get("url"):
        text += f" — {st['url']}"
    if st.get("device_name") or st.get("device"):
        text += f" (server device: {st.get('device_name') or st.get('device')})"
    if st.get("error"):
        text += f": {st['error']}"
    return text


def reset_backend() -> None:
    global _backend, _backend_key
    with _lock:
        if _backend is not None and _owned:
            try:
                _backend.close()
            except Exception:  # noqa: BLE001
                pass
        _backend, _backend_key = None, None


def describe(s: BackendSettings) -> str:
    """One line for the hub: what runs where, with the CPU warning when it applies."""
    if s.mode == "remote":
        return f"remote server {s.url}"
    try:
        from medsegsuite.engine.device import CPU_WARNING, resolve_device

        dev = resolve_device(s.device)
    except (RuntimeError, ValueError) as e:  # InputError: a device this machine does not have
        return f"device problem: {e}"
    except (ImportError, OSError):  # a broken torch install must not break the hub's panel
        from .dependencies import torch_problem

        return f"device problem: {torch_problem() or 'torch does not load'}"
    return f"local, {dev}" + (f" — {CPU_WARNING}" if dev == "cpu" else "")
