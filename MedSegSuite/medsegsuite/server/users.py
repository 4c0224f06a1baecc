"""People, not one shared key: per-user API keys stored hashed, each with a role (`engine.roles`:
clinician, annotator, admin).

A key looks like ``mss_<id>_<secret>``: ``id`` finds the user's record, the secret is checked
against its salted scrypt hash with a constant-time compare. The file (``users.json``, mode 0600)
holds names, roles, salts and hashes, never a key; ``medsegsuite users add`` prints a new key once.
The server re-reads the file when it changes, so ``users revoke`` takes effect at the next request.
A verified key is remembered in memory (as an HMAC under a per-process secret, not as the key) so
the slow hash runs once per key, not once per click.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..engine.roles import ROLES, check_role, role_allows  # noqa: F401  (re-exported)
from ..errors import InputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_KEY = re.compile(r"^mss_([0-9a-f]{8})_([A-Za-z0-9_-]{20,128})$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"user name {name!r} must be 1-64 letters, digits or . _ @ - (no spaces), "
                         "starting with a letter or digit")
    return name


def _hash(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, maxmem=64 * 2**20, **_SCRYPT).hex()


@dataclass(frozen=True)
class User:
    name: str
    role: str


class UserStore:
    """The users file: add, list, revoke, authenticate."""

    def __init__(self, path):
        self.path = Path(path).expanduser()
        self._lock = threading.RLock()
        self._mtime = None
        self._records: list[dict] = []
        self._verified: dict[bytes, tuple[str, float]] = {}  # HMAC(key) -> (key id, when)
        self._pepper = secrets.token_bytes(32)

    # -- file ----------------------------------------------------------------------------------
    def _load(self) -> list[dict]:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                self._records, self._mtime = [], None
                self._verified.clear()
                return self._records
            if mtime != self._mtime:
                try:
                    data = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as e:
                    raise InputError(f"cannot read the users file {self.path}: {e}") from None
                self._records, self._mtime = list(data.get("users", [])), mtime
                self._verified.clear()  # a revoked or re-keyed user is checked afresh
            return self._records

    def _save(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "users": records}, f, indent=1)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self._mtime = None

    # -- administration ------------------------------------------------------------------------
    def add(self, name: str, role: str) -> str:
        """Create ``name`` with ``role`` (or give an existing user a new key and role); returns the key,
        which is not stored and cannot be shown again."""
        check_name(name)
        check_role(role)
        with self._lock:
            records = [r for r in self._load() if r["name"] != name]
            used = {r["key_id"] for r in records}
            key_id = secrets.token_hex(4)
            while key_id in used:
                key_id = secrets.token_hex(4)
            secret = secrets.token_urlsafe(32)
            salt = secrets.token_bytes(16)
            records.append({"name": name, "role": role, "key_id": key_id, "salt": salt.hex(),
                            "scrypt": _hash(secret, salt), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "revoked": None})
            self._save(records)
        return f"mss_{key_id}_{secret}"

    def revoke(self, name: str) -> None:
        with self._lock:
            records = self._load()
            match = [r for r in records if r["name"] == name and not r.get("revoked")]
            if not match:
                raise InputError(f"no active user '{name}' in {self.path}")
            for r in match:
                r["revoked"] = time.strftime("%Y-%m-%d %H:%M:%S")
            self._save(records)

    def list(self) -> list[dict]:
        """Names, roles, dates and key ids (the first part of the key: tells keys apart, proves nothing)."""
        return [{k: r.get(k) for k in ("name", "role", "key_id", "created", "revoked")} for r in self._load()]

    def active(self) -> int:
        return sum(1 for r in self._load() if not r.get("revoked"))

    # -- authentication ------------------------------------------------------------------------
    def cached(self, key: str | None) -> User | None:
        """The user of a key verified before (no hashing: cheap enough for the event loop), else None."""
        m = _KEY.match(key or "")
        if not m:
            return None
        with self._lock:
            rec = next((r for r in self._load() if r["key_id"] == m.group(1)), None)
            if rec is None or rec.get("revoked"):
                return None
            tag = hmac.new(self._pepper, key.encode(), hashlib.sha256).digest()
            return User(rec["name"], rec["role"]) if self._verified.get(tag, ("", 0))[0] == m.group(1) else None

    def authenticate(self, key: str | None) -> User | None:
        """The user holding ``key``, or None (unknown, malformed, revoked)."""
        if not key:
            return None
        m = _KEY.match(key)
        if not m:
            return None
        key_id, secret = m.groups()
        with self._lock:
            records = self._load()
            rec = next((r for r in records if r["key_id"] == key_id), None)
            if rec is None or rec.get("revoked"):
                return None
            tag = hmac.new(self._pepper, key.encode(), hashlib.sha256).digest()
            if self._verified.get(tag, ("", 0))[0] == key_id:
                return User(rec["name"], rec["role"])
        ok = hmac.compare_digest(_hash(secret, bytes.fromhex(rec["salt"])), rec["scrypt"])
        if not ok:
            return None
        with self._lock:
            if len(self._verified) > 4096:
                self._verified.clear()
            self._verified[tag] = (key_id, time.time())
        return User(rec["name"], rec["role"])
