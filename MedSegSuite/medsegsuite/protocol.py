"""Names the HTTP server and `RemoteBackend` agree on: paths, headers, error codes, version rule.

Every error response is JSON ``{"error": CODE, "message": "what happened and what to do"}``.
"""
from __future__ import annotations

from .engine.interface import API_VERSION

PREFIX = "/v1"
KEY_HEADER = "Authorization"          # "Bearer <key>" (X-API-Key is accepted too)
ALT_KEY_HEADER = "X-API-Key"
SESSION_HEADER = "X-MedSegSuite-Session"
API_HEADER = "X-MedSegSuite-API"      # the client's API version, checked when a session opens

CAPABILITIES = ["images.fingerprint-reuse", "arrays.zlib", "arrays.bitpacked-bool", "arrays.crop",
                "results.mask-crops", "jobs.events-longpoll", "jobs.cancel", "sessions.lease",
                "tasks.schemas", "results.crops", "models.import", "sessions.interactive-state",
                "auth.users-roles", "limits.budgets",
                "images.dicom-upload"]

# error codes (HTTP status in brackets)
E_BAD_REQUEST = "bad_request"            # [400] malformed payload, bad params, NaN, wrong dtype/geometry
E_AUTH_MISSING = "auth_missing"          # [401]
E_AUTH_WRONG = "auth_wrong"              # [403]
E_FORBIDDEN = "forbidden"                # [403] the key is fine; its role may not do this, or not its session
E_KEY_IN_URL = "key_in_url"              # [400] a key in the query string (refused, never logged)
E_BAD_HOST = "host_not_allowed"          # [421] a Host header the server does not serve (DNS rebinding)
E_TIMEOUT = "timeout"                    # [408] a body that stalled
E_BUSY = "busy"                          # [429] this user's long-polls or sessions are at their cap
E_NOT_FOUND = "not_found"                # [404]
E_IMAGE_UNKNOWN = "image_unknown"        # [404] upload the image (again)
E_JOB_UNKNOWN = "job_unknown"            # [404]
E_JOB_NOT_DONE = "job_not_done"          # [409]
E_JOB_FAILED = "job_failed"              # [409]
E_JOB_CANCELLED = "job_cancelled"        # [409]
E_SESSION_EXPIRED = "session_expired"    # [410] lease not renewed in time
E_SERVER_RESTARTED = "server_restarted"  # [410] the session belongs to an earlier server process
E_RESULT_DROPPED = "result_dropped"      # [410] a result dropped with its idle image: run the job again
E_SESSION_MISSING = "session_missing"    # [400] request without a session header
E_TOO_LARGE = "too_large"                # [413]
E_MODEL_EXISTS = "model_exists"          # [409] PUT /models/{id} with an id the server already has
E_VERSION = "version_mismatch"           # [426]
E_SERVER_FULL = "server_full"            # [503] --max-sessions reached
E_INTERNAL = "internal"                  # [500]


def normalize_url(url: str) -> str:
    """A server URL with its scheme: https:// unless one is given, except for this machine itself
    (127.0.0.1, ::1, localhost: an SSH tunnel's end), which may stay http://. The client, the hub's
    key store and the docs all use this one rule."""
    from urllib.parse import urlsplit

    from .server.config import is_loopback

    url = (url or "").strip().rstrip("/")
    if url and not url.startswith(("http://", "https://")):
        host = urlsplit("//" + url).hostname or ""
        url = ("http://" if is_loopback(host) else "https://") + url
    return url


def major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return -1


def compatible(a: str, b: str) -> bool:
    """Client and server interoperate when their API major versions agree."""
    return major(a) == major(b) and major(a) >= 0


__all__ = ["API_VERSION", "PREFIX", "normalize_url", "KEY_HEADER", "ALT_KEY_HEADER", "SESSION_HEADER", "API_HEADER",
           "CAPABILITIES", "major", "compatible"]
