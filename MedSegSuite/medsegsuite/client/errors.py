"""What a remote client can run into, as `MedSegError`s whose messages say what to do."""
from __future__ import annotations

from ..errors import MedSegError


class RemoteError(MedSegError):
    """A request to the server failed; ``status`` and ``code`` are the HTTP status and protocol code."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code


class ServerUnreachable(RemoteError):
    """No answer from the server (not running, wrong URL/port, firewall, network down)."""


class AuthError(RemoteError):
    """The server wants an API key (401) or refused the one given (403)."""


class VersionMismatch(RemoteError):
    """Client and server speak different major API versions."""


class ServerBusy(RemoteError):
    """The server is at its session limit (503/429); try again later."""


class SessionLost(RemoteError):
    """The server restarted or this client's lease expired: its images and jobs there are gone.
    Reconnect (`RemoteBackend.reconnect()`, or just start the next job: the client re-opens a session
    and re-uploads the image by itself) and run the lost job again."""
