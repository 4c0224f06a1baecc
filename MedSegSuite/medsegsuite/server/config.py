"""Server settings, the API-key check, and the rules a network bind must meet (keys, TLS)."""
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
    api_key: str | None = None        # one shared key (a single-person set-up); None: none
    api_key_role: str = "admin"       # the role the shared key carries
    users_file: str | None = None     # per-user keys (server.users); takes precedence over api_key
    audit_log: str | None = None      # JSON-lines audit file (None: kept in memory only)
    device: str = "auto"
    max_sessions: int = 16
    max_sessions_per_user: int = 4
    max_images_per_session: int = 8
    max_upload_mb: float = 512.0      # compressed body
    max_request_mb: float = 2048.0    # all arrays of one request, decompressed, checked before inflating
    max_session_mb: float = 4096.0    # images one session holds, decompressed
    max_image_voxels: int = 2**29     # one image
    max_model_mb: float = 1024.0      # a checkpoint uploaded with PUT /models/{id}
    max_dicom_files: int = 5000       # files in one DICOM series upload (POST /images/dicom)
    lease_ttl: float = 60.0           # seconds a session lives without a request or heartbeat
    longpoll_max: float = 10.0        # longest events long-poll, seconds
    max_longpolls_per_user: int = 8   # long-polls one user may hold open at once (more: 429)
    job_time_limit: float = 1800.0    # seconds an interactive job may run
    training_time_limit: float = 6 * 3600.0  # seconds a training job may run
    image_idle_ttl: float = 1800.0    # an image (and its results) unused this long is dropped
    header_timeout: float = 10.0      # a request's headers must arrive within this
    body_timeout: float = 30.0        # longest pause while a body is read
    allowed_hosts: tuple = ()         # Host header names accepted (empty: loopback names on loopback)
    dyna_queue: bool = False          # keep DyNA day cases on this server (opt-in)
    retention_days: float = 7.0       # queued DyNA cases older than this are deleted
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    insecure_http: bool = False       # allow plain HTTP off loopback (loudly)
    access_log: bool = False

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_model_bytes(self) -> int:
        return int(self.max_model_mb * 2**20)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 2**20)

    @property
    def max_session_bytes(self) -> int:
        return int(self.max_session_mb * 2**20)

    @property
    def heartbeat_interval(self) -> float:
        return max(self.lease_ttl / 4.0, 0.05)

    @property
    def tls(self) -> bool:
        return bool(self.ssl_certfile and self.ssl_keyfile)

    def has_users(self) -> bool:
        if not self.users_file:
            return False
        from .users import UserStore

        return UserStore(self.users_file).active() > 0

    def check_bind(self) -> None:
        """A server reachable from the network needs keys and TLS (or an explicit --insecure-http)."""
        if is_loopback(self.host):
            return
        if not self.api_key and not self.has_users():
            raise InputError(
                f"refusing to listen on {self.host} without API keys: anyone on the network could run "
                "jobs and read images. Add users (`medsegsuite users add NAME --role clinician`) and pass "
                f"--users-file, or bind to 127.0.0.1 and use an SSH tunnel")
        if not self.tls and not self.insecure_http:
            raise InputError(
                f"refusing to listen on {self.host} without TLS: keys and images would cross the network "
                "in clear text. Pass --ssl-certfile/--ssl-keyfile (your CA's certificate), --self-signed "
                "(a trial certificate), put a TLS reverse proxy in front and bind 127.0.0.1, or, on a "
                "network you fully trust, --insecure-http")


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
