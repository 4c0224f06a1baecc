"""`RemoteBackend`: the Backend interface over HTTP, so panels and CLI never know where a job runs.

What it does for its caller:

* opens a session (a lease) after a version handshake, and renews it from a background heartbeat
  thread, so the server frees this client's images and jobs if the client vanishes;
* uploads an image once: ``set_image`` sends the Volume's fingerprint first and the pixels only when
  the server does not hold them yet (a second client with the same image uploads nothing);
* sends job inputs and receives masks as compressed binary arrays (masks as bounding-box crops);
* turns every HTTP failure into a `MedSegError` whose message says what to do (`client.errors`);
* after a server restart or an expired lease, the job that was running fails with `SessionLost`
  ("reconnect"), and the next ``start_job`` re-opens a session and re-uploads its image by itself
  (``auto_reconnect=False`` makes it raise instead).

The hub panel shows :meth:`connection_state` (no network call, cheap to poll) and
:meth:`handshake` (device name, server version), and may call :meth:`ping` for a live check.
"""
from __future__ import annotations

import logging
import platform
import threading
import time
from collections import OrderedDict

import httpx
import numpy as np

from .. import __version__
from .. import protocol as P
from .. import wire
from ..protocol import normalize_url
from ..engine.interface import TERMINAL_STATES, JobEvent, JobFailed, JobResult, JobState
from ..errors import InputError
from ..volume import Volume
from .errors import AuthError, RemoteError, ServerBusy, ServerUnreachable, SessionLost, VersionMismatch

log = logging.getLogger(__name__)

# connection states shown by the hub panel
CONNECTED, CONNECTING, DISCONNECTED, SESSION_LOST, AUTH_FAILED, INCOMPATIBLE, CLOSED = (
    "connected", "connecting", "disconnected", "session lost", "auth failed", "incompatible", "closed")

if logging.getLogger("httpx").level == logging.NOTSET:  # one INFO line per poll would drown the CLI's output
    logging.getLogger("httpx").setLevel(logging.WARNING)

_RESULT_LIMITS = wire.Limits(max_body_bytes=2**40, max_array_bytes=2**40, max_arrays=4096, max_total_bytes=2**42)


def _is_loopback_url(url: str) -> bool:
    from urllib.parse import urlsplit

    from ..server.config import is_loopback

    return is_loopback(urlsplit(url).hostname or "")


class RemoteBackend:
    """``RemoteBackend(url, api_key=None)``; implements `medsegsuite.engine.Backend`."""

    api_version = P.API_VERSION
    max_images = 16  # volumes kept client-side for a transparent re-upload (like LocalBackend's cache)

    restart_grace = 30.0  # seconds wait() keeps trying an unreachable server before giving up

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0,
                 client_name: str | None = None, heartbeat: bool = True, auto_reconnect: bool = True,
                 verify=True, connect: bool = True, compress_level: int = 1):
        """``verify``: True (the system's CAs), or the path of a CA/self-signed certificate to trust
        (``MEDSEGSUITE_CA_CERT`` when True and set). Certificates are always checked."""
        import os

        self.url = normalize_url(url)
        if verify is True and os.environ.get("MEDSEGSUITE_CA_CERT"):
            verify = os.environ["MEDSEGSUITE_CA_CERT"]
        if isinstance(verify, (str, os.PathLike)):
            import ssl

            ca = os.path.expanduser(str(verify))
            if not os.path.isfile(ca):
                raise InputError(f"CA certificate {ca} does not exist (copy the server's certificate there)")
            verify = ssl.create_default_context(cafile=ca)
        if api_key and self.url.startswith("http://") and not _is_loopback_url(self.url):
            log.warning("warning: sending the API key to %s over plain HTTP; anyone on the network can read it "
                        "(use https:// or an SSH tunnel)", self.url)
        self.timeout = timeout
        self.client_name = client_name or f"{platform.node() or 'client'}/medsegsuite-{__version__}"
        self.auto_reconnect = auto_reconnect
        self.compress_level = compress_level
        self._use_heartbeat = heartbeat
        headers = {P.API_HEADER: self.api_version, "User-Agent": f"medsegsuite/{__version__}"}
        if api_key:
            headers[P.KEY_HEADER] = f"Bearer {api_key}"
        base = self.url + P.PREFIX
        self._http = httpx.Client(base_url=base, headers=headers, timeout=timeout, verify=verify)
        self._hb_http = httpx.Client(base_url=base, headers=headers, timeout=min(timeout, 10.0), verify=verify)
        self._lock = threading.RLock()
        self._images: OrderedDict[str, Volume] = OrderedDict()  # recently set: re-uploaded after a reconnect
        self._dicom: OrderedDict[str, tuple] = OrderedDict()  # image id -> (zip, series) of DICOM uploads
        self._on_server: set[str] = set()      # image ids the current session holds
        self._jobs: dict[str, str] = {}        # job id -> session it was started in
        self._ready: dict[str, bytes] = {}     # job id -> result body already received by wait()
        self.session_id: str | None = None
        self.server_info: dict = {}
        self._state, self._error, self._last_ok = DISCONNECTED, "", None
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self.stats = {"requests": 0, "bytes_sent": 0, "bytes_received": 0}
        if connect:
            try:
                self.connect()
            except BaseException:
                self._http.close()
                self._hb_http.close()
                raise

    def __repr__(self):  # never shows the key
        return f"RemoteBackend({self.url!r}, state={self._state!r})"

    # -- HTTP plumbing -------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, content: bytes | None = None, params=None,
                 session: bool = True, timeout: float | None = None, http=None) -> httpx.Response:
        http = http or self._http
        headers = {}
        if session:
            if self.session_id is None:
                raise SessionLost(f"no session with {self.url}: call reconnect()", None, "no_session")
            headers[P.SESSION_HEADER] = self.session_id
        if content is not None:
            headers["Content-Type"] = wire.CONTENT_TYPE
        try:
            r = http.request(method, path, content=content, params=params, headers=headers,
                             timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.TimeoutException as e:
            self._set_state(DISCONNECTED, f"timed out: {e}")
            raise ServerUnreachable(f"the server at {self.url} did not answer in time ({type(e).__name__}); "
                                    "it may be overloaded or the network is down") from None
        except httpx.ConnectError as e:
            self._set_state(DISCONNECTED, str(e))
            if "CERTIFICATE" in str(e).upper():
                raise ServerUnreachable(f"the server at {self.url} presented a certificate this client does not "
                                        f"trust ({e}): if it is the server's own (self-signed) certificate, pass "
                                        "it as the CA (--ca-cert F; in Slicer: MEDSEGSUITE_CA_CERT=F)") from None
            raise ServerUnreachable(f"cannot reach the medsegsuite server at {self.url} ({e}). Is "
                                    "`medsegsuite serve` running there, is the port right and open, and "
                                    "does the URL start with http:// or https:// as the server expects?") from None
        except httpx.TransportError as e:
            self._set_state(DISCONNECTED, str(e))
            raise ServerUnreachable(f"cannot reach the medsegsuite server at {self.url} ({e}). Is "
                                    "`medsegsuite serve` running there, is the port right and open, and "
                                    "does the URL start with http:// or https:// as the server expects?") from None
        if http is self._http:  # heartbeats are not counted: they are not part of an interaction
            self._count(r, content, path)
        if r.status_code >= 400:
            self._raise_for(r)
        if r.status_code < 300:
            self._last_ok = time.monotonic()
        return r

    def _count(self, r, content, path):
        self.stats["requests"] += 1
        self.stats["bytes_sent"] += len(content or b"") + _header_bytes(r.request.headers) + len(path) + 16
        self.stats["bytes_received"] += len(r.content) + _header_bytes(r.headers) + 16

    def _raise_for(self, r: httpx.Response):
        try:
            body = r.json()
            code, msg = body.get("error"), body.get("message") or r.text
        except ValueError:
            code, msg = None, r.text[:300] or r.reason_phrase
        s = r.status_code
        where = f"server {self.url}"
        if s == 403 and code == P.E_FORBIDDEN:  # the key is fine; this user's role may not do that
            raise AuthError(f"{where} refused: {msg}", s, code)
        if s in (401, 403):
            self._set_state(AUTH_FAILED, msg)
            raise AuthError(f"{where} refused the request ({s}): {msg}", s, code)
        if s == 410:
            self._set_state(SESSION_LOST, msg)
            with self._lock:
                self._on_server.clear()
            raise SessionLost(f"{where}: {msg}", s, code)
        if s == 426:
            self._set_state(INCOMPATIBLE, msg)
            raise VersionMismatch(f"{where}: {msg}", s, code)
        if s in (429, 503):
            raise ServerBusy(f"{where} is busy ({s}): {msg}", s, code)
        if s == 409 and code in (P.E_JOB_FAILED, P.E_JOB_CANCELLED):
            raise JobFailed(msg, JobState.FAILED if code == P.E_JOB_FAILED else JobState.CANCELLED)
        if s in (400, 413, 422):
            raise InputError(msg)
        raise RemoteError(f"{where} answered {s}: {msg}", s, code)

    def _set_state(self, state: str, error: str = "") -> None:
        self._state, self._error = state, error
        if state == CONNECTED:
            self._last_ok = time.monotonic()

    # -- connection ----------------------------------------------------------------------------
    def connect(self) -> dict:
        """Handshake (version check) and open a session; starts the heartbeat thread."""
        self._set_state(CONNECTING)
        info = self._request("GET", "/handshake", session=False).json()
        server_api = str(info.get("api_version"))
        if not P.compatible(server_api, self.api_version):
            msg = (f"the server at {self.url} speaks API {server_api} (medsegsuite "
                   f"{info.get('server_version')}) but this client speaks {self.api_version} (medsegsuite "
                   f"{__version__}): install the same major version on the client and the server")
            self._set_state(INCOMPATIBLE, msg)
            raise VersionMismatch(msg, None, P.E_VERSION)
        info = self._request("POST", "/sessions", params={"client": self.client_name}, session=False).json()
        with self._lock:
            self.session_id = info["session"]
            self.server_info = info
            self._on_server.clear()
        self._set_state(CONNECTED)
        if self._use_heartbeat and (self._hb_thread is None or not self._hb_thread.is_alive()):
            self._hb_stop.clear()
            self._hb_thread = threading.Thread(target=self._heartbeat_loop, name="medsegsuite-heartbeat",
                                               daemon=True)
            self._hb_thread.start()
        return info

    def reconnect(self) -> dict:
        """A fresh session after a restart or an expired lease; images are re-sent when next used."""
        with self._lock:
            self.session_id = None
            self._on_server.clear()
        return self.connect()

    def _heartbeat_loop(self):
        while not self._hb_stop.wait(float(self.server_info.get("heartbeat_interval", 15.0))):
            if self.session_id is None:
                continue
            try:
                self._request("POST", "/sessions/heartbeat", http=self._hb_http)
                if self._state != CONNECTED:
                    self._set_state(CONNECTED)
            except SessionLost:
                pass  # state already says so; the next job reconnects
            except Exception as e:  # noqa: BLE001 - the heartbeat must never die
                if self._state == CONNECTED:
                    log.warning("heartbeat to %s failed: %s", self.url, e)

    def stop_heartbeat(self) -> None:
        """Stop renewing the lease (tests; a client that wants its session to lapse)."""
        self._hb_stop.set()

    def connection_state(self) -> dict:
        """What the hub panel shows; no network call, so a timer may call it often."""
        info = self.server_info
        return {"state": self._state, "url": self.url, "device": info.get("device"),
                "device_name": info.get("device_name"), "server_version": info.get("server_version"),
                "api_version": info.get("api_version"), "session": self.session_id, "error": self._error,
                "seconds_since_ok": None if self._last_ok is None else round(time.monotonic() - self._last_ok, 1)}

    def ping(self) -> dict:
        """A live round trip (renews the lease): ``{"ok", "latency_ms", "state", "error"}``."""
        t0 = time.perf_counter()
        try:
            if self.session_id is not None:
                self._request("POST", "/sessions/heartbeat", http=self._hb_http)
                self._set_state(CONNECTED)
            else:  # reachable, but no session: reconnect() opens one
                self._request("GET", "/health", session=False, http=self._hb_http)
        except RemoteError:
            pass  # the state and error say what went wrong
        return {"ok": self._state == CONNECTED, "latency_ms": round(1000 * (time.perf_counter() - t0), 2),
                "state": self._state, "error": self._error}

    # -- Backend interface ---------------------------------------------------------------------
    def handshake(self) -> dict:
        """The server's ``{"api_version", "server_version", "device", "device_name", "tasks",
        "capabilities", ...}`` plus ``url``, ``session`` and ``state``."""
        info = self._request("GET", "/handshake", session=False).json()
        self.server_info.update(info)
        return dict(info, url=self.url, session=self.session_id, state=self._state)

    def _session_call(self, fn):
        """Run ``fn``; after a lost session, reconnect once (if allowed) and run it again."""
        if self.session_id is None and self.auto_reconnect:
            self.reconnect()
        try:
            return fn()
        except SessionLost:
            if not self.auto_reconnect:
                raise
            log.warning("session with %s was lost; reconnecting", self.url)
            self.reconnect()
            return fn()

    def set_image(self, volume: Volume) -> str:
        if not isinstance(volume, Volume):
            raise InputError("set_image takes a medsegsuite Volume")
        volume.require_finite()
        image_id = volume.fingerprint()
        with self._lock:
            self._images[image_id] = volume
            self._images.move_to_end(image_id)
            while len(self._images) > self.max_images:  # keep references to recent images only
                self._images.popitem(last=False)
        self._session_call(lambda: self._ensure_image(image_id))
        return image_id

    def _ensure_image(self, image_id: str, force: bool = False) -> None:
        with self._lock:
            if image_id in self._on_server and not force:
                return
            volume = self._images.get(image_id)
            dicom = self._dicom.get(image_id)
        if volume is None and dicom is None:
            raise InputError(f"unknown image id '{image_id}' (released or never set); set the image again")
        try:
            self._request("POST", f"/images/{image_id}/attach")
        except RemoteError as e:
            if e.code != P.E_IMAGE_UNKNOWN:
                raise
            if volume is None:  # a DICOM upload: the same zip again
                self._post_dicom(*dicom)
            else:
                body = wire.pack({"geometry": volume.geometry.to_dict(), "name": volume.name},
                                 {"image": volume.array}, self.compress_level)
                self._check_size(body, f"image '{volume.name}'")
                self._request("PUT", f"/images/{image_id}", content=body)
        with self._lock:
            self._on_server.add(image_id)

    def set_dicom(self, source, series: str | None = None) -> dict:
        """Send one DICOM series as a zip of its files; the server reads it into an image (no path crosses
        the API; the server checks the zip as untrusted input, dicom/archive.py). ``source``: a folder,
        ``FOLDER#SERIES_UID``, a .zip file, or zip bytes; ``series`` picks one of several. Returns the
        server's answer: ``id`` (the image id for start_job), ``geometry``, ``dtype``, ``dicom`` (UIDs)."""
        from ..dicom.archive import pack_series
        from ..dicom.series import split_series_spec

        if isinstance(source, (bytes, bytearray)):
            body = bytes(source)
        else:
            folder, uid = split_series_spec(source)
            series = series or uid
            body = folder.read_bytes() if folder.is_file() else pack_series(folder)
        self._check_size(body, "DICOM series")
        info = self._session_call(lambda: self._post_dicom(body, series))
        with self._lock:
            self._dicom[info["id"]] = (body, series)
            while len(self._dicom) > self.max_images:
                self._dicom.popitem(last=False)
        return info

    def _post_dicom(self, body: bytes, series: str | None) -> dict:
        info = self._request("POST", "/images/dicom", content=body, params={"series": series} if series else None,
                             timeout=max(self.timeout, 600.0)).json()
        with self._lock:
            self._on_server.add(info["id"])
        return info

    def _check_size(self, body: bytes, what: str) -> None:
        limit = self.server_info.get("max_upload_bytes")
        if limit and len(body) > limit:
            raise InputError(f"{what} is {len(body) / 2**20:.1f} MiB compressed, over the server's upload limit "
                             f"of {limit / 2**20:.0f} MiB (medsegsuite serve --max-upload-mb); crop it first")

    def release_image(self, image_id: str) -> None:
        with self._lock:
            self._images.pop(image_id, None)
            self._dicom.pop(image_id, None)
            held = image_id in self._on_server
            self._on_server.discard(image_id)
        if held and self.session_id is not None:
            try:
                self._request("DELETE", f"/images/{image_id}")
            except (SessionLost, ServerUnreachable):
                pass

    def list_models(self, task: str | None = None) -> list[dict]:
        return self._request("GET", "/models", params={"task": task} if task else None, session=False).json()

    def list_tasks(self) -> list[dict]:
        """The server's tasks with their typed parameters (``GET /tasks``)."""
        return self._request("GET", "/tasks", session=False).json()

    def import_model(self, path, model_id: str, architecture: str | None = None, task: str = "",
                     structures=None, description: str = "") -> dict:
        """Upload a checkpoint file and register it on the server under ``model_id``; the server
        refuses it unless it loads with weights_only=True (no pickled code), and refuses ids it has."""
        from pathlib import Path

        from ..models.registry import check_model_id

        check_model_id(model_id)
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"checkpoint {p} does not exist")
        data = np.fromfile(p, dtype=np.uint8)
        body = wire.pack({"architecture": architecture, "task": task, "description": description,
                          "structures": list(structures) if structures is not None else None},
                         {"checkpoint": data}, self.compress_level)
        return self._request("PUT", f"/models/{model_id}", content=body, session=False,
                             timeout=max(self.timeout, 600.0)).json()

    def close_session(self, name: str) -> None:
        """Forget the interactive session ``name`` (last result, clicks) on the server."""
        if self.session_id is not None:
            from urllib.parse import quote

            self._request("DELETE", f"/sessions/state/{quote(str(name), safe='')}")

    def start_job(self, task: str, image_id: str | None = None, params: dict | None = None,
                  inputs: dict | None = None, client: str | None = None) -> str:
        """Queue a job on the server (``client`` is ignored: the server queues per session)."""
        arrays = {}
        for name, a in (inputs or {}).items():
            a = np.asarray(a)
            # sparse masks and scribbles: only their bounding box travels
            arrays[str(name)] = wire.Crop(a) if a.ndim >= 2 and a.dtype.kind in "bui" else a
        body = wire.pack({"task": task, "image_id": image_id, "params": params or {}}, arrays, self.compress_level)

        def submit():
            if image_id is not None:
                self._ensure_image(image_id)
            self._check_size(body, f"inputs of job '{task}'")
            try:
                r = self._request("POST", "/jobs", content=body)
            except RemoteError as e:
                if e.code != P.E_IMAGE_UNKNOWN or image_id is None:
                    raise
                self._ensure_image(image_id, force=True)  # the server let it go: send it again, once
                r = self._request("POST", "/jobs", content=body)
            return r.json()["job"]

        job_id = self._session_call(submit)
        with self._lock:
            self._jobs[job_id] = self.session_id
        return job_id

    def _job_request(self, job_id: str, method: str, path: str, survive: bool = False, **kw) -> httpx.Response:
        """A request about one job; ``survive``: ride out a server that is briefly away (see
        `_await_server`) instead of failing at once."""
        tries = 3 if survive else 1
        for attempt in range(tries):
            try:
                return self._job_request_once(job_id, method, path, **kw)
            except ServerUnreachable:
                if attempt == tries - 1:
                    raise
                self._await_server(job_id)

    def _job_request_once(self, job_id: str, method: str, path: str, **kw) -> httpx.Response:
        with self._lock:
            sid = self._jobs.get(job_id)
        if sid is None:
            raise InputError(f"unknown job id '{job_id}'")
        if sid != self.session_id:
            raise SessionLost(f"job {job_id} was lost: the session it ran in on {self.url} is gone (server "
                              "restarted or lease expired); run it again", 410, "job_lost")
        try:
            return self._request(method, path, **kw)
        except SessionLost as e:
            raise SessionLost(f"job {job_id} was lost: {e} Run it again (the client reconnects by itself).",
                              e.status, e.code) from None

    def _await_server(self, job_id: str) -> None:
        """The server went away while a job ran: wait up to `restart_grace` for it to answer. The same
        server process back (a network blip): carry on; a new one (restarted): the job is gone, so
        `SessionLost`; none in time: `ServerUnreachable`."""
        deadline = time.monotonic() + self.restart_grace
        instance = self.server_info.get("instance")
        while True:
            try:
                # with the session: on a scaled-out server (Ray) it reaches the replica holding the session
                r = self._hb_http.get("/health", timeout=2.0, headers={P.SESSION_HEADER: self.session_id}
                                      if self.session_id else None)
                now = r.json().get("instance") if r.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                now = None
            if now is not None:
                if instance is not None and now != instance:
                    self._set_state(SESSION_LOST, "the server restarted")
                    with self._lock:
                        self._on_server.clear()
                    raise SessionLost(f"job {job_id} was lost: the server at {self.url} restarted while it ran; "
                                      "run it again (the client reconnects by itself)", 410, P.E_SERVER_RESTARTED)
                return
            if time.monotonic() > deadline:
                raise ServerUnreachable(f"the server at {self.url} has not answered for {self.restart_grace:g} s "
                                        f"while job {job_id} ran; it may be down")
            time.sleep(0.25)

    def events(self, job_id: str, since: int = 0, wait: float = 0.0) -> list[JobEvent]:
        r = self._job_request(job_id, "GET", f"/jobs/{job_id}/events", params={"since": since, "wait": wait},
                              timeout=self.timeout + wait)
        return [JobEvent.from_dict(e) for e in r.json()["events"]]

    def state(self, job_id: str) -> JobState:
        return JobState(self._job_request(job_id, "GET", f"/jobs/{job_id}").json()["state"])

    def wait(self, job_id: str, timeout: float | None = None, on_event=None) -> JobState:
        """Long-polls progress events until the job ends (each poll returns as soon as one arrives)."""
        seen, state = 0, JobState.QUEUED
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 5.0 if deadline is None else max(0.0, min(5.0, deadline - time.monotonic()))
            if on_event is None:  # nobody shows progress (a click): ask for the result itself, one round trip
                ended = self._wait_for_result(job_id, left)
                if ended is not None:
                    return ended
            q = {"since": seen, "wait": left}
            if on_event is None:  # nobody shows progress: one long-poll until the job ends
                q["until"] = "end"
            r = self._job_request(job_id, "GET", f"/jobs/{job_id}/events", params=q, timeout=self.timeout + left,
                                  survive=True).json()
            for d in r["events"]:
                e = JobEvent.from_dict(d)
                seen = max(seen, e.seq)
                if on_event is not None:
                    on_event(e)
            state = JobState(r["state"])
            if state in TERMINAL_STATES and not r["events"]:
                return state
            if state in TERMINAL_STATES and any(d["state"] == state.value for d in r["events"]):
                return state
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {state.value} after {timeout} s")

    def _wait_for_result(self, job_id: str, wait: float) -> JobState | None:
        """Long-poll ``/result`` (the server waits until the job ends): DONE with the body kept for
        `result`, FAILED/CANCELLED, or None when it is still running (or the server does not wait)."""
        try:
            r = self._job_request(job_id, "GET", f"/jobs/{job_id}/result", params={"wait": wait},
                                  timeout=self.timeout + wait, survive=True)
        except JobFailed as e:  # the server said failed or cancelled
            return e.state
        except RemoteError as e:
            if e.code == P.E_JOB_FAILED:
                return JobState.FAILED
            if e.code == P.E_JOB_CANCELLED:
                return JobState.CANCELLED
            if e.code == P.E_JOB_NOT_DONE:
                return None
            raise
        with self._lock:
            self._ready[job_id] = r.content
            while len(self._ready) > 8:  # results nobody fetched: keep a few
                self._ready.pop(next(iter(self._ready)))
        return JobState.DONE

    def cancel(self, job_id: str) -> None:
        self._job_request(job_id, "POST", f"/jobs/{job_id}/cancel")

    def result(self, job_id: str) -> JobResult:
        with self._lock:
            body = self._ready.pop(job_id, None)
        if body is None:
            try:
                body = self._job_request(job_id, "GET", f"/jobs/{job_id}/result").content
            except RemoteError as e:
                if e.code == P.E_JOB_NOT_DONE:
                    raise JobFailed(str(e), self.state(job_id)) from None
                raise
        meta, arrays = wire.unpack(body, _RESULT_LIMITS, check_finite=False)
        masks = {k[5:]: v for k, v in arrays.items() if k.startswith("mask/")}
        extra = {k[6:]: v for k, v in arrays.items() if k.startswith("array/")}
        offsets = meta.get("crops") or {}
        crops = {k: (tuple(int(o) for o in offsets[k]), arrays[f"crop/{k}"]) for k in offsets if f"crop/{k}" in arrays}
        return JobResult(masks=masks, arrays=extra, info=meta.get("info", {}), crops=crops)

    def close(self) -> None:
        self._hb_stop.set()
        if self.session_id is not None and self._state not in (CLOSED,):
            try:
                self._request("DELETE", "/sessions", timeout=5.0)
            except Exception:  # noqa: BLE001 - closing must not fail
                pass
        self.session_id = None
        if self._hb_thread is not None:
            self._hb_thread.join(2.0)
        self._http.close()
        self._hb_http.close()
        self._set_state(CLOSED)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _header_bytes(headers) -> int:
    return sum(len(k) + len(v) + 4 for k, v in headers.raw)
