"""Server settings, the API-key check and the rule that keeps an unprotected server on loopback."""
from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

KEY_ENV = "MEDSEGSUITE_API_KEY"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str | None = None        # None: no key (loopback only)
    device: str = "auto"
    max_sessions: int = 16
    max_images_per_session: int = 8
    max_upload_mb: float = 512.0      # compressed body; decompressed arrays may be up to 8x that
    max_model_mb: float = 1024.0      # a checkpoint uploaded with PUT /models/{id}
    lease_ttl: float = 60.0           # seconds a session lives without a request or heartbeat
    longpoll_max: float = 10.0        # longest events long-poll, seconds

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_model_bytes(self) -> int:
        return int(self.max_model_mb * 2**20)

    @property
    def heartbeat_interval(self) -> float:
        return max(self.lease_ttl / 4.0, 0.05)

    def check_bind(self) -> None:
        """A server reachable from the network must have a key: refuse otherwise."""
        if not self.api_key and not is_loopback(self.host):
            raise InputError(
                f"refusing to listen on {self.host} without an API key: anyone on the network could run "
                "jobs and read images. Create a key file (e.g. `python -c \"import secrets; "
                "print(secrets.token_urlsafe(32))\" > ~/.medsegsuite.key && chmod 600 ~/.medsegsuite.key`) "
                f"and pass --api-key-file, or set {KEY_ENV}; or bind to 127.0.0.1 and use an SSH tunnel")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_key_file(path: str | os.PathLike) -> str:
    """The key in a file (surrounding whitespace stripped); clear errors for missing/empty files."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"API key file {p} does not exist; create it with a long random key "
                         "(e.g. python -c \"import secrets; print(secrets.token_urlsafe(32))\")")
    key = p.read_text(encoding="utf-8").strip()
    if not key:
        raise InputError(f"API key file {p} is empty")
    if len(key) < 16:
        raise InputError(f"the API key in {p} is too short ({len(key)} characters); use at least 16")
    return key


def key_file_is_private(path: str | os.PathLike) -> bool:
    """False when group or others may read the key file (worth a warning, not a refusal)."""
    try:
        return not (Path(path).expanduser().stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return True


def key_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison, so response timing reveals nothing about the key."""
    if expected is None:
        return True
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))
