"""`RemoteBackend`: the `medsegsuite.engine.Backend` interface over HTTP (``medsegsuite serve``).

    from medsegsuite.client import RemoteBackend, read_api_key
    backend = RemoteBackend("http://gpu-box:8765", api_key=read_api_key(None))
"""
from .errors import AuthError, RemoteError, ServerBusy, ServerUnreachable, SessionLost, VersionMismatch
from .keys import read_api_key
from .remote import RemoteBackend

__all__ = ["RemoteBackend", "read_api_key", "RemoteError", "ServerUnreachable", "AuthError", "VersionMismatch",
           "ServerBusy", "SessionLost"]
