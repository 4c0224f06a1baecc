"""Where the hub keeps a remote server's API key — never in Slicer's plain settings (.ini).

1. The operating system's keyring (macOS Keychain, Windows Credential Locker, Secret Service on
   Linux) through the `keyring` package, when it is installed and has a usable backend;
2. otherwise ``$MEDSEGSUITE_HOME/api-keys.json`` (default ``~/.medsegsuite``), created with mode
   0600 in a 0700 folder, so only the user can read it (as ``~/.ssh`` keys are kept).

``MEDSEGSUITE_KEYRING=0`` forces the file (e.g. on a headless server without a keyring daemon).
Keys are stored per server URL. The CLI reads ``--api-key-file`` or ``$MEDSEGSUITE_API_KEY``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from medsegsuite.errors import InputError
from medsegsuite.models.registry import user_home

SERVICE = "MedSegSuite"


def _keyring():
    if os.environ.get("MEDSEGSUITE_KEYRING", "1") == "0":
        return None
    try:
        import keyring
        from keyring.backends import fail

        kr = keyring.get_keyring()
        if isinstance(kr, fail.Keyring) or getattr(kr, "priority", 1) <= 0:
            return None
        return keyring
    except Exception:  # noqa: BLE001 - no keyring package or no usable backend
        return None


def key_file() -> Path:
    return user_home() / "api-keys.json"


def _read_file() -> dict:
    p = key_file()
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the API key file {p} ({e}); delete it and enter the key again") from None


def _write_file(data: dict) -> None:
    p = key_file()
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(p.parent, 0o700)
    except OSError:
        pass
    tmp = p.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)


def _norm(url: str) -> str:
    from medsegsuite.protocol import normalize_url  # the client's own rule: https:// unless loopback

    url = normalize_url(url)
    if not url:
        raise InputError("enter the server URL first")
    return url


def store_api_key(url: str, key: str) -> str:
    """Store ``key`` for server ``url``; returns where ("keyring" or the file path)."""
    url = _norm(url)
    key = (key or "").strip()
    kr = _keyring()
    if kr is not None:
        if key:
            kr.set_password(SERVICE, url, key)
        else:
            try:
                kr.delete_password(SERVICE, url)
            except Exception:  # noqa: BLE001 - nothing stored
                pass
        return "keyring"
    data = _read_file()
    if key:
        data[url] = key
    else:
        data.pop(url, None)
    _write_file(data)
    return str(key_file())


def load_api_key(url: str) -> str | None:
    url = _norm(url)
    kr = _keyring()
    if kr is not None:
        return kr.get_password(SERVICE, url) or None
    return _read_file().get(url) or None


def delete_api_key(url: str) -> None:
    store_api_key(url, "")


def storage_description() -> str:
    return "the system keyring" if _keyring() is not None else f"{key_file()} (readable only by you)"
