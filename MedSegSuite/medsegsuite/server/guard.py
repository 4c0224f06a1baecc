"""What stands in front of the application: connection timeouts, the Host check, no keys in URLs.

* `TimedH11Protocol` — uvicorn's HTTP/1.1 protocol with a deadline for a request's headers: a
  connection that opens and says nothing, or trickles its headers (slowloris), is closed after
  ``header_timeout`` seconds instead of being held for ever. (Body pauses are bounded in the app.)
* `GuardMiddleware` — answers 421 to a Host header the server does not serve (DNS rebinding: a web
  page whose name resolves to 127.0.0.1 reaches a loopback server with its own Host), and 400 to a
  key sent in the query string (URLs end up in logs, proxies and browser history).
* `QueryStringFilter` — the access log shows paths without their query strings.
"""
from __future__ import annotations

import json
import logging
from urllib.parse import parse_qsl

from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import protocol as P

KEY_PARAMS = {"api_key", "apikey", "api-key", "key", "token", "access_token", "auth", "authorization"}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


class TimedH11Protocol(H11Protocol):
    header_timeout = 10.0  # set per server by `protocol_class`

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._header_timer = None
        self._arm()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        waiting = self.cycle is None or self.cycle.response_complete  # for a request's headers
        if waiting and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # headers are in: the app bounds the body and the job
        else:
            self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()
        self._arm()  # the next request's headers (or an idle keep-alive connection) get the same deadline

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol_class(header_timeout: float) -> type:
    return type("MedSegSuiteH11Protocol", (TimedH11Protocol,), {"header_timeout": float(header_timeout)})


def host_name(host_header: str) -> str:
    """'Example.org:8765' -> 'example.org'; '[::1]:8765' -> '::1'."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class GuardMiddleware:
    """Pure ASGI: runs before routing, authentication and any body read."""

    def __init__(self, app, allowed_hosts: set[str] | None):
        self.app = app
        self.allowed = {h.lower() for h in allowed_hosts} if allowed_hosts is not None else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.allowed is not None and "*" not in self.allowed:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if host_name(host) not in self.allowed:
                return await _reply(send, 421, P.E_BAD_HOST,
                                    "this server does not answer to that host name (Host header); an "
                                    "administrator adds names with medsegsuite serve --allowed-host")
        qs = scope.get("query_string") or b""
        if qs and any(k.lower() in KEY_PARAMS for k, _ in parse_qsl(qs.decode("latin-1"), keep_blank_values=True)):
            return await _reply(send, 400, P.E_KEY_IN_URL,
                                "an API key never goes in the URL: send it in the Authorization header "
                                "(Bearer KEY); the key in this URL may now be in logs: ask for a new one")
        return await self.app(scope, receive, send)


async def _reply(send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class QueryStringFilter(logging.Filter):
    """Drops the query string from uvicorn access-log records: (client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = args[:2] + (args[2].split("?", 1)[0],) + args[3:]
        return True


def install_log_filter() -> None:
    lg = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, QueryStringFilter) for f in lg.filters):
        lg.addFilter(QueryStringFilter())
