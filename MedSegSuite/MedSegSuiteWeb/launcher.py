"""``medsegsuite web-launcher``: one ``medsegsuite web`` process per browser session behind one address.

One page process holds one MRML scene, so users must not share one. The launcher gives each browser
(an HttpOnly session cookie) its own page process on a free 127.0.0.1 port and relays HTTP and the
page's websocket to it (aiohttp, which trame's wslink already brings). Sessions without a request or
a message from their browser for ``idle_timeout`` seconds are stopped; at ``max_sessions`` a new
browser gets a page saying so (HTTP 503) instead of a process.

All sessions share one MedSegSuite backend: ``--server URL`` with ``--api-key-file``, or else one
``medsegsuite serve`` child on 127.0.0.1 with a one-time key. Either key is read only by the page
processes (``--api-key-file``): no page, asset or websocket message carries it to a browser.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import html
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, WSMsgType, web

COOKIE = "medsegsuite_session"
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
       "transfer-encoding", "upgrade", "host", "content-length", "content-encoding", "cookie"}
SOURCE = Path(__file__).resolve().parents[1]   # the folder that holds MedSegSuiteWeb/ (children run from it)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_label(token: str) -> str:
    """A short name for a session in the log (never the cookie itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:10]


@dataclass
class Session:
    token: str
    port: int
    proc: subprocess.Popen
    log: Path
    last_seen: float = field(default_factory=time.monotonic)
    ready: bool = False
    sockets: set = field(default_factory=set)

    @property
    def label(self) -> str:
        return session_label(self.token)

    def touch(self) -> None:
        self.last_seen = time.monotonic()


def _page(title: str, body: str, status: int = 200, refresh: float | None = None, role: str = "status") -> web.Response:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    text = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>{meta}<title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:4em auto;max-width:36em;color:#222}"
            "h1{font-size:1.4em}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><p role='{role}'>{body}</p></body></html>")
    return web.Response(text=text, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store"})


class Launcher:
    """The relay and the session table. ``web_args``: what every page process gets besides its port."""

    def __init__(self, web_args: list[str], max_sessions: int = 4, idle_timeout: float = 1800.0,
                 start_timeout: float = 300.0, log_dir: Path | None = None):
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.web_args = list(web_args)
        self.max_sessions, self.idle_timeout, self.start_timeout = max_sessions, idle_timeout, start_timeout
        self._tmp = None if log_dir else tempfile.TemporaryDirectory(prefix="medsegsuite-launcher-")
        self.log_dir = Path(log_dir or self._tmp.name)
        self.sessions: dict[str, Session] = {}
        self.ended: dict[str, str] = {}   # token -> why its session ended (for the next page it asks for)
        self.client: ClientSession | None = None
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.app.on_startup.append(self._startup)
        self.app.on_cleanup.append(self._cleanup)

    # -- sessions -----------------------------------------------------------------------------------
    def start_session(self) -> Session:
        token = secrets.token_urlsafe(32)
        port = _free_port()
        log = self.log_dir / f"session-{session_label(token)}.log"
        with open(log, "w") as f:
            proc = subprocess.Popen([sys.executable, "-m", "MedSegSuiteWeb", "--host", "127.0.0.1", "--port", str(port),
                                     *self.web_args], cwd=SOURCE, stdout=f, stderr=subprocess.STDOUT)
        s = self.sessions[token] = Session(token, port, proc, log)
        print(f"[launcher] session {s.label} started: pid {proc.pid}, port {port}", flush=True)
        asyncio.get_event_loop().create_task(self._wait_ready(s))
        return s

    async def _wait_ready(self, s: Session) -> None:
        deadline = time.monotonic() + self.start_timeout
        while s.token in self.sessions and s.proc.poll() is None and time.monotonic() < deadline:
            try:
                async with self.client.get(f"http://127.0.0.1:{s.port}/", timeout=ClientTimeout(total=5)) as r:
                    if r.status == 200:
                        s.ready = True
                        s.touch()   # the idle clock starts when the page can be used
                        print(f"[launcher] session {s.label} ready", flush=True)
                        return
            except (OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.5)
        if s.token in self.sessions:
            await self.stop_session(s, "it did not start")

    async def stop_session(self, s: Session, why: str) -> None:
        self.sessions.pop(s.token, None)
        self.ended[s.token] = why
        while len(self.ended) > 1000:   # only for the note on the next visit: keep the latest
            self.ended.pop(next(iter(self.ended)))
        for ws in list(s.sockets):
            await ws.close(message=f"session closed: {why}".encode())
        if s.proc.poll() is None:
            s.proc.terminate()
            try:
                await asyncio.to_thread(s.proc.wait, 20)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                await asyncio.to_thread(s.proc.wait)
        print(f"[launcher] session {s.label} stopped ({why})", flush=True)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, min(5.0, self.idle_timeout / 4)))
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if s.proc.poll() is not None:
                    await self.stop_session(s, f"its process ended (exit code {s.proc.returncode})")
                elif s.ready and now - s.last_seen > self.idle_timeout:
                    await self.stop_session(s, f"idle for more than {self.idle_timeout:g} s")

    async def _startup(self, app) -> None:
        self.client = ClientSession(auto_decompress=True)
        app["reaper"] = asyncio.get_event_loop().create_task(self._reap_loop())

    async def _cleanup(self, app) -> None:
        app["reaper"].cancel()
        for s in list(self.sessions.values()):
            await self.stop_session(s, "the launcher stopped")
        await self.client.close()

    # -- requests -----------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        token = request.cookies.get(COOKIE, "")
        s = self.sessions.get(token)
        if s is None:
            return self._new_session(request, self.ended.pop(token, None))
        s.touch()
        if not s.ready:
            return _page("Starting your MedSegSuite session…", "Loading Slicer's views and the image; this page "
                         "reloads by itself.", refresh=2)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._relay_ws(request, s)
        return await self._relay_http(request, s)

    def _new_session(self, request: web.Request, ended: str | None) -> web.Response:
        if request.method != "GET" or request.path not in ("/", "/index.html"):
            return _page("No MedSegSuite session", "This browser has no session (or it has ended). "
                         "<a href='/'>Start one</a>.", status=404, role="alert")
        if len(self.sessions) >= self.max_sessions:
            t = self.idle_timeout
            after = f"{t:g} s" if t < 120 else f"{t / 60:.0f} min"
            return _page("MedSegSuite is busy", f"All {self.max_sessions} sessions are in use. Please try again in "
                         f"a few minutes; a session without activity is closed after {after}.", status=503,
                         role="alert")
        s = self.start_session()
        note = f"Your previous session was closed ({html.escape(ended)}). " if ended else ""
        resp = _page("Starting your MedSegSuite session…", f"{note}Loading Slicer's views and the image; this "
                     "page reloads by itself.", refresh=2)
        resp.set_cookie(COOKIE, s.token, httponly=True, samesite="Strict", path="/")
        return resp

    async def _relay_http(self, request: web.Request, s: Session) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        url = f"http://127.0.0.1:{s.port}{request.path_qs}"
        try:
            async with self.client.request(request.method, url, headers=headers, data=await request.read(),
                                           allow_redirects=False) as r:
                body = await r.read()
                out = {k: v for k, v in r.headers.items() if k.lower() not in HOP}
                return web.Response(body=body, status=r.status, headers=out)
        except OSError as e:
            return _page("Session not reachable", f"Your session's process did not answer ({html.escape(str(e))}). "
                         "<a href='/'>Reload</a>.", status=502, role="alert")

    async def _relay_ws(self, request: web.Request, s: Session) -> web.WebSocketResponse:
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        browser = web.WebSocketResponse(max_msg_size=0, protocols=protocols, autoping=True)
        await browser.prepare(request)
        s.sockets.add(browser)
        try:
            async with self.client.ws_connect(f"ws://127.0.0.1:{s.port}{request.path_qs}", max_msg_size=0,
                                              protocols=protocols) as page:
                async def down():   # page process -> browser
                    async for msg in page:
                        if msg.type == WSMsgType.TEXT:
                            await browser.send_str(msg.data)
                        elif msg.type == WSMsgType.BINARY:
                            await browser.send_bytes(msg.data)
                        else:
                            break
                    await browser.close()

                relay = asyncio.get_event_loop().create_task(down())
                async for msg in browser:   # browser -> page process: this is activity
                    s.touch()
                    if msg.type == WSMsgType.TEXT:
                        await page.send_str(msg.data)
                    elif msg.type == WSMsgType.BINARY:
                        await page.send_bytes(msg.data)
                relay.cancel()
        except OSError:
            pass
        finally:
            s.sockets.discard(browser)
        return browser


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="medsegsuite web-launcher", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-sessions", type=int, default=4, help="page processes at most (each ~0.5-1 GB)")
    p.add_argument("--idle-timeout", type=float, default=1800.0,
                   help="seconds without a request or message from its browser before a session is closed")
    p.add_argument("--image", help="what every session opens (default: the LiTS-117 sample)")
    p.add_argument("--server", help="the MedSegSuite server all sessions use (default: one local backend child)")
    p.add_argument("--api-key-file", help="its API key (read by the page processes, never sent to a browser)")
    p.add_argument("--device", default="auto", help="device of the local backend when no --server is given")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    backend = None
    if a.server:
        web_args = ["--server", a.server]
        if a.api_key_file:
            web_args += ["--api-key-file", str(Path(a.api_key_file).resolve())]
    else:   # one shared backend child for all sessions, with a one-time key in a 0600 file
        from .backend_process import BackendProcess

        backend = BackendProcess(a.device)
        web_args = ["--server", backend.url, "--api-key-file", str(backend.key_file)]
    if a.image:
        web_args += ["--image", str(Path(a.image).resolve())]
    launcher = Launcher(web_args, max_sessions=a.max_sessions, idle_timeout=a.idle_timeout)
    print(f"MedSegSuite web launcher on http://{a.host}:{a.port}/ (at most {a.max_sessions} sessions, "
          f"idle timeout {a.idle_timeout:g} s)", flush=True)
    try:
        web.run_app(launcher.app, host=a.host, port=a.port, print=None, shutdown_timeout=5)
    finally:
        if backend is not None:
            backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
