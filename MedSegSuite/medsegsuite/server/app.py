"""The FastAPI application: the `Backend` interface over HTTP, around one `LocalBackend`.

Interactive model work runs on the LocalBackend's single persistent worker thread (one per device),
queued round-robin per session, with its model and embedding caches shared by every client; training
jobs run in their own processes. No parameter may name a file on the server (``allow_paths=False``):
models are named by registry id, and an admin adds one with ``PUT /models/{id}``. Request
handlers only parse, validate and copy; anything heavier than a dict lookup runs in the thread pool
so the event loop stays responsive for heartbeats and progress polls.

Every request but ``/health`` carries a key naming a user (`users`), whose role the task or endpoint
must allow; sessions belong to the user who opened them; each job is written to the audit log. Sizes
are checked from the declared array shapes before anything is inflated (request, image, session
budgets), and server paths never leave in an answer (`redact_paths`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import anyio
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__, wire
from .. import protocol as P
from ..engine import LocalBackend
from ..engine.interface import TERMINAL_STATES, JobState
from ..errors import Forbidden, InputError, MedSegError
from ..volume import Geometry, Volume
from .audit import AuditLog, sanitize
from .config import ServerConfig, is_loopback, key_matches
from .guard import LOOPBACK_NAMES, GuardMiddleware
from .sessions import ApiError, SessionManager
from .users import User, UserStore, role_allows

log = logging.getLogger(__name__)
_PATH = re.compile(r"(?<![\w.:/~-])(?:[A-Za-z]:\\|/)(?:[^\s/\\'\"(),;]+[/\\])+([^\s/\\'\"(),;]*)")


def redact_paths(text: str) -> str:
    """Server file paths in a message or report, reduced to their last part: what a client needs to
    recognise a file, without the server's layout."""
    return _PATH.sub(lambda m: m.group(1) or "<folder>", text) if isinstance(text, str) else text


def _redact(obj):
    if isinstance(obj, str):
        return redact_paths(obj)
    if isinstance(obj, dict):
        return {k: _redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact(v) for v in obj]
    return obj


def _err(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


class ServerState:
    """Everything a request handler needs: config, backend, sessions, users, audit, wire limits."""

    def __init__(self, config: ServerConfig, backend: LocalBackend | None = None):
        self.config = config
        self.owns_backend = backend is None
        self.backend = backend or LocalBackend(config.device, max_images=10**9, allow_paths=False)
        # the server's rules travel with each of its jobs, also on a backend shared with local use
        self.policy = {"dyna_queue": config.dyna_queue, "retention_days": config.retention_days}
        self.import_lock = threading.Lock()
        self.users = UserStore(config.users_file) if config.users_file else None
        self.audit = AuditLog(config.audit_log)
        self.sessions = SessionManager(self.backend, config.lease_ttl, config.max_sessions,
                                       config.max_images_per_session, config.max_sessions_per_user,
                                       config.job_time_limit, config.training_time_limit, config.image_idle_ttl,
                                       self.audit)
        self.limits = wire.Limits(max_body_bytes=config.max_upload_bytes,
                                  max_array_bytes=config.max_request_bytes, max_total_bytes=config.max_request_bytes)
        # reading a header only: sizes are judged by the server's budgets, with their own messages
        self.header_limits = wire.Limits(max_body_bytes=config.max_upload_bytes, max_array_bytes=2**62,
                                         max_total_bytes=2**62)
        self.longpolls: dict[str, int] = {}
        self.longpoll_lock = threading.Lock()
        self.started = time.time()

    @property
    def auth_required(self) -> bool:
        return bool(self.config.api_key) or self.users is not None

    def close(self):
        self.sessions.stop()
        if self.owns_backend:
            self.backend.close()


def allowed_hosts(config: ServerConfig) -> set[str] | None:
    """Host names the server answers to: the configured ones; on a loopback bind, loopback names only;
    on a network bind without a list, any (a key is needed there anyway)."""
    if config.allowed_hosts:
        return set(config.allowed_hosts) | LOOPBACK_NAMES
    if is_loopback(config.host):
        return LOOPBACK_NAMES | {config.host.strip("[]").lower()}
    return None


def create_app(config: ServerConfig, backend: LocalBackend | None = None) -> FastAPI:
    """The app; ``backend`` lets tests share a LocalBackend, otherwise the server builds its own."""
    state = ServerState(config, backend)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # long-polls and uploads run in the thread pool; leave room for many clients
        anyio.to_thread.current_default_thread_limiter().total_tokens = max(
            40, 4 * config.max_sessions + 8)
        yield
        state.close()

    app = FastAPI(title="MedSegSuite inference server", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.mss = state
    app.add_middleware(GuardMiddleware, allowed_hosts=allowed_hosts(config))

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return _err(e.status, e.code, e.message, e.headers)

    @app.exception_handler(Forbidden)
    async def _forbidden(request, e: Forbidden):
        return _err(403, P.E_FORBIDDEN, redact_paths(str(e)))

    @app.exception_handler(MedSegError)
    async def _medseg_error(request, e: MedSegError):
        return _err(400, P.E_BAD_REQUEST, redact_paths(str(e)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _err(400, P.E_BAD_REQUEST, f"malformed request: {where}: {first.get('msg', e)}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        return _err(e.status_code, P.E_NOT_FOUND if e.status_code == 404 else P.E_BAD_REQUEST, str(e.detail))

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _err(500, P.E_INTERNAL, f"internal server error ({type(e).__name__}); the server keeps "
                    "running: see its log")

    # -- authentication: before any handler reads a body or touches the backend ---------------
    def _peer(request: Request) -> str:
        return request.client.host if request.client else "?"

    async def require_key(request: Request) -> User:
        if not state.auth_required:
            request.state.user = User("local", "admin")  # loopback only (ServerConfig.check_bind)
            return request.state.user
        given = None
        auth = request.headers.get(P.KEY_HEADER)
        if auth and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        given = given or request.headers.get(P.ALT_KEY_HEADER)
        if not given:
            raise ApiError(401, P.E_AUTH_MISSING, "this server needs an API key: pass --api-key-file F "
                           "(or set MEDSEGSUITE_API_KEY) on the client", {"WWW-Authenticate": "Bearer"})
        user = None
        if state.users is not None:  # a new key costs one scrypt: off the event loop
            user = state.users.cached(given) or await run_in_threadpool(state.users.authenticate, given)
        if user is None and config.api_key and key_matches(config.api_key, given):
            user = User("shared", config.api_key_role)
        if user is None:
            state.audit.write("auth", "refused", peer=_peer(request), path=request.url.path)
            raise ApiError(403, P.E_AUTH_WRONG, "the API key was refused (unknown, revoked or mistyped): ask "
                           "the server's administrator for your key")
        request.state.user = user
        return user

    def need_role(request: Request, role: str, what: str) -> None:
        user = request.state.user
        if not role_allows(user.role, role):
            state.audit.write("denied", "refused", user=user.name, role=user.role, what=what)
            raise ApiError(403, P.E_FORBIDDEN, f"{what} needs the {role} role; {user.name} is a {user.role}. "
                           "Ask the server's administrator")

    async def session(request: Request):
        s = state.sessions.get(request.headers.get(P.SESSION_HEADER))
        user = request.state.user
        if s.user != user.name:
            state.audit.write("session", "refused", user=user.name, session=s.id[:13], peer=_peer(request))
            raise ApiError(403, P.E_FORBIDDEN, "this session belongs to another user")
        return s

    async def read_body(request: Request, limit: int | None = None, what: str = "upload",
                        option: str = "--max-upload-mb") -> bytes:
        limit = limit or config.max_upload_bytes
        cl = request.headers.get("content-length")
        too_big = cl is not None and cl.isdigit() and int(cl) > limit
        chunks, n = [], 0
        stream = request.stream().__aiter__()
        while True:
            try:  # a body that stalls holds a connection and a buffer: bounded pause per chunk
                c = await asyncio.wait_for(stream.__anext__(), config.body_timeout)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise ApiError(408, P.E_TIMEOUT, f"the request body stalled for over {config.body_timeout:g} s; "
                               "send it again", {"Connection": "close"}) from None
            n += len(c)
            if n > limit:
                too_big = True
                if n > limit + 64 * 2**20:  # stop draining: the connection will be closed
                    break
                continue
            chunks.append(c)
        if too_big:
            raise ApiError(413, P.E_TOO_LARGE,
                           f"{what} of {max(n, int(cl or 0)) / 2**20:.1f} MiB is over this server's limit of "
                           f"{limit / 2**20:g} MiB (medsegsuite serve {option})"
                           + ("; crop the image to the region you segment" if what == "upload" else ""))
        return b"".join(chunks)

    def check_request_size(entries: list) -> int:
        """The decompressed bytes an array message declares, refused over the request budget (before
        any array is inflated)."""
        total = sum(wire.declared_bytes(e, state.limits) for e in entries)
        if total > config.max_request_bytes:
            raise ApiError(413, P.E_TOO_LARGE,
                           f"this request's arrays would take {total / 2**20:.0f} MiB once unpacked, over this "
                           f"server's budget of {config.max_request_mb:g} MiB per request (medsegsuite serve "
                           "--max-request-mb); crop the image or send fewer inputs")
        return total

    @contextlib.contextmanager
    def longpoll_slot(user: User, wait: float):
        """A long-poll holds a thread: a user may hold a few at once, so nobody can starve the rest."""
        if wait <= 0:
            yield
            return
        with state.longpoll_lock:
            n = state.longpolls.get(user.name, 0)
            if n >= config.max_longpolls_per_user:
                raise ApiError(429, P.E_BUSY, f"{user.name} already waits on {n} long-polls (the per-user limit, "
                               "medsegsuite serve --max-longpolls-per-user); wait on fewer jobs at once",
                               {"Retry-After": "1"})
            state.longpolls[user.name] = n + 1
        try:
            yield
        finally:
            with state.longpoll_lock:
                state.longpolls[user.name] -= 1

    open_routes = APIRouter(prefix=P.PREFIX)
    api = APIRouter(prefix=P.PREFIX, dependencies=[Depends(require_key)])

    @open_routes.get("/health")
    def health():
        return {"status": "ok", "api_version": P.API_VERSION, "instance": state.sessions.instance}

    def handshake_dict() -> dict:
        d = state.backend.handshake()
        d.update(capabilities=P.CAPABILITIES, instance=state.sessions.instance,
                 lease_ttl=config.lease_ttl, heartbeat_interval=config.heartbeat_interval,
                 max_upload_bytes=config.max_upload_bytes, max_sessions=config.max_sessions,
                 sessions=len(state.sessions.sessions), uptime=round(time.time() - state.started, 1))
        return d

    @api.get("/handshake")
    def handshake():
        return handshake_dict()

    @api.get("/whoami")
    def whoami(request: Request):
        u = request.state.user
        return {"user": u.name, "role": u.role}

    @api.post("/sessions", status_code=201)
    def open_session(request: Request, client: str = "client"):
        client_api = request.headers.get(P.API_HEADER)
        if client_api is None or not P.compatible(client_api, P.API_VERSION):
            raise ApiError(426, P.E_VERSION,
                           f"client API version {client_api} does not match this server's {P.API_VERSION} "
                           f"(medsegsuite {__version__}); install the same major version on both sides")
        user = request.state.user
        s = state.sessions.open(sanitize(client), user.name, user.role,  # the client name is only its claim
                                capped=state.users is not None and user.name not in ("shared", "local"))
        state.audit.write("session.open", user=user.name, role=user.role, session=s.id[:13], client=s.client_name,
                          peer=_peer(request))
        d = handshake_dict()
        d.update(session=s.id, user=user.name, role=user.role)
        return d

    @api.post("/sessions/heartbeat")
    def heartbeat(s=Depends(session)):
        return {"expires_in": config.lease_ttl}

    @api.delete("/sessions", status_code=204)
    def close_session(request: Request):
        sid = request.headers.get(P.SESSION_HEADER)
        s = state.sessions.sessions.get(sid) if sid else None
        if s is not None and s.user == request.state.user.name:
            state.sessions.close(sid, "closed by client")
            state.audit.write("session.close", user=s.user, session=sid[:13])
        return Response(status_code=204)

    @api.delete("/sessions/state/{name}", status_code=204)
    def close_interactive(name: str, s=Depends(session)):
        """Forget one interactive session (image, last result, clicks) of this client."""
        state.backend.close_session(name, client=s.id)
        return Response(status_code=204)

    @api.get("/tasks")
    def tasks():
        return _redact(state.backend.list_tasks())

    @api.get("/models")
    def models(task: str | None = None):
        return _redact(state.backend.list_models(task))

    def _import_model(model_id: str, body: bytes) -> dict:
        from ..models.registry import check_model_id

        check_model_id(model_id)
        limits = wire.Limits(max_body_bytes=config.max_model_bytes, max_array_bytes=2**62, max_total_bytes=2**62)
        _, entries, _ = wire.read_header(body, limits)
        total = sum(wire.declared_bytes(e, limits) for e in entries)
        if total > config.max_model_bytes:  # compressed small, but too big unpacked: refused before inflating
            raise ApiError(413, P.E_TOO_LARGE, f"model file of {total / 2**20:.1f} MiB is over this server's limit "
                           f"of {config.max_model_mb:g} MiB (medsegsuite serve --max-model-mb)")
        meta, arrays = wire.unpack(body, limits, check_finite=False)
        if set(arrays) != {"checkpoint"} or arrays["checkpoint"].dtype != "uint8" or arrays["checkpoint"].ndim != 1:
            raise InputError("a model upload holds exactly one uint8 array named 'checkpoint' (the file's bytes)")
        if arrays["checkpoint"].nbytes > config.max_model_bytes:  # compressed small, but too big unpacked
            raise ApiError(413, P.E_TOO_LARGE, f"model file of {arrays['checkpoint'].nbytes / 2**20:.1f} MiB is over "
                           f"this server's limit of {config.max_model_mb:g} MiB (medsegsuite serve --max-model-mb)")
        with state.import_lock:
            if any(m["id"] == model_id for m in state.backend.list_models()):
                raise ApiError(409, P.E_MODEL_EXISTS, f"this server already has a model '{model_id}'; "
                               "choose another id")
            tmp = Path(tempfile.mkdtemp(prefix="medsegsuite-upload-"))
            try:
                f = tmp / "upload.pt"
                f.write_bytes(arrays["checkpoint"].tobytes())
                del arrays
                structures = meta.get("structures")
                if structures is not None and not (isinstance(structures, list)
                                                   and all(isinstance(x, str) for x in structures)):
                    raise InputError("structures must be a list of strings")
                return state.backend.import_model(  # loads it with weights_only=True first
                    f, model_id, meta.get("architecture") or None, str(meta.get("task") or "")[:80],
                    structures, str(meta.get("description") or "")[:500])
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    @api.put("/models/{model_id}", status_code=201)
    async def model_put(model_id: str, request: Request):
        """Register an uploaded checkpoint under ``model_id`` (it must load with weights_only=True);
        deploying a model is an admin's decision."""
        need_role(request, "admin", "adding a model to the server")
        body = await read_body(request, config.max_model_bytes, "model upload", "--max-model-mb")
        entry = await run_in_threadpool(_import_model, model_id, body)
        state.audit.write("model.import", user=request.state.user.name, model=model_id)
        return _redact(entry)

    # -- images --------------------------------------------------------------------------------
    def image_info(image_id: str) -> dict:
        v = state.backend.images.get(image_id)
        if v is None or image_id not in state.sessions.holders:
            raise ApiError(404, P.E_IMAGE_UNKNOWN, f"the server does not hold image {image_id}; upload it")
        return {"id": image_id, "dtype": v.array.dtype.name, "geometry": v.geometry.to_dict(), "name": v.name}

    @api.head("/images/{image_id}")
    def image_head(image_id: str, s=Depends(session)):
        image_info(image_id)
        return Response(status_code=200)

    @api.get("/images/{image_id}")
    def image_get(image_id: str, s=Depends(session)):
        info = image_info(image_id)
        return info if image_id in s.images else {k: info[k] for k in ("id", "dtype", "geometry")}

    @api.post("/images/{image_id}/attach")
    def image_attach(image_id: str, s=Depends(session)):
        with state.sessions.lock:
            info = image_info(image_id)
            v = state.backend.images[image_id]
            if image_id not in s.images:
                _make_room(s, v.array.nbytes)
            state.sessions.attach(s, image_id)
        return info

    def _make_room(s, need: int) -> None:
        """Fit ``need`` more bytes into the session's budget by letting its oldest idle images go;
        413 when even that is not enough."""
        def held():
            return sum(v.array.nbytes for i in s.images if (v := state.backend.images.get(i)) is not None)

        if need > config.max_session_bytes:
            raise ApiError(413, P.E_TOO_LARGE,
                           f"an image of {need / 2**20:.0f} MiB is over this session's memory budget of "
                           f"{config.max_session_mb:g} MiB (medsegsuite serve --max-session-mb); crop it")
        for old in state.sessions.idle_images(s):
            if held() + need <= config.max_session_bytes:
                break
            state.sessions.detach(s, old)
        if held() + need > config.max_session_bytes:
            raise ApiError(413, P.E_TOO_LARGE,
                           f"this session holds {held() / 2**20:.0f} MiB of images in use; another "
                           f"{need / 2**20:.0f} MiB is over its memory budget of {config.max_session_mb:g} MiB "
                           "(medsegsuite serve --max-session-mb); wait for its jobs or release images")

    def _store_image(s, image_id: str, body: bytes, user: User) -> dict:
        meta, entries, _ = wire.read_header(body, state.header_limits)
        if len(entries) != 1 or entries[0].get("name") != "image":
            raise InputError("an image upload holds exactly one array named 'image'")
        shape = entries[0].get("shape")
        voxels = int(np.prod(shape)) if isinstance(shape, list) and all(isinstance(x, int) for x in shape) else 0
        if voxels > config.max_image_voxels:
            raise ApiError(413, P.E_TOO_LARGE,
                           f"an image of {voxels:,} voxels is over this server's limit of {config.max_image_voxels:,} "
                           "voxels (medsegsuite serve --max-image-voxels); crop it to the region you segment")
        need = check_request_size(entries)
        with state.sessions.lock:
            _make_room(s, need)
        meta, arrays = wire.unpack(body, state.limits)
        geometry = Geometry.from_dict(meta.get("geometry") or {})
        a = arrays["image"]
        if a.ndim != 3 or tuple(a.shape) != geometry.shape:
            raise InputError(f"image array of shape {tuple(a.shape)} does not match its geometry's shape "
                             f"{geometry.shape}")
        v = Volume.from_geometry(a, geometry, name=str(meta.get("name", "volume"))[:120]).require_finite()
        fp = v.fingerprint()
        if fp != image_id:
            raise InputError(f"the uploaded image's fingerprint {fp} differs from the id {image_id} it was "
                             "sent under (corrupted in transit, or a different medsegsuite version)")
        with state.sessions.lock:
            state.backend.images.setdefault(fp, v)
            state.sessions.attach(s, fp)
        state.audit.write("image.upload", user=user.name, session=s.id[:13], image=fp, voxels=voxels)
        return {"id": fp}

    @api.put("/images/{image_id}", status_code=201)
    async def image_put(image_id: str, request: Request, s=Depends(session)):
        body = await read_body(request)
        return await run_in_threadpool(_store_image, s, image_id, body, request.state.user)

    def _store_dicom(s, body: bytes, series: str | None, user: User) -> dict:
        """A DICOM series sent as a zip (dicom/archive.py checks it as untrusted input): read into an image
        held for this session, like an uploaded array. No path crosses the API either way."""
        from ..dicom.archive import ArchiveTooLarge, read_series_archive

        try:
            v = read_series_archive(body, series, max_files=config.max_dicom_files,
                                    max_bytes=config.max_request_bytes, max_voxels=config.max_image_voxels)
        except ArchiveTooLarge as e:
            state.audit.write("image.dicom", "refused", user=user.name, session=s.id[:13], reason="too large")
            raise ApiError(413, P.E_TOO_LARGE, redact_paths(str(e))) from None
        except InputError:
            state.audit.write("image.dicom", "refused", user=user.name, session=s.id[:13], reason="bad input")
            raise
        fp = v.fingerprint()
        with state.sessions.lock:
            if fp not in s.images:
                _make_room(s, v.array.nbytes)
            state.backend.images.setdefault(fp, v)
            state.sessions.attach(s, fp)
        d = v.meta["dicom"]
        state.audit.write("image.dicom", user=user.name, session=s.id[:13], image=fp, voxels=int(v.array.size),
                          files=len(d["sop_instance_uids"]))
        return {"id": fp, "dtype": v.array.dtype.name, "geometry": v.geometry.to_dict(), "name": v.name,
                "dicom": {k: d[k] for k in d if k != "files"}}

    @api.post("/images/dicom", status_code=201)
    async def image_dicom(request: Request, series: str | None = None, s=Depends(session)):
        """Upload one DICOM series as a zip of its files (``series``: which one, when it holds several)."""
        body = await read_body(request)
        return await run_in_threadpool(_store_dicom, s, body, series, request.state.user)

    @api.delete("/images/{image_id}", status_code=204)
    def image_delete(image_id: str, s=Depends(session)):
        state.sessions.detach(s, image_id)
        return Response(status_code=204)

    # -- jobs ----------------------------------------------------------------------------------
    def _start_job(s, body: bytes, user: User) -> dict:
        meta, entries, _ = wire.read_header(body, state.header_limits)
        need = check_request_size(entries)
        with state.sessions.lock:
            live = sum(sum(getattr(v, "nbytes", 0) for v in j.inputs.values()) for jid in s.jobs
                       if (j := state.backend.worker.jobs.get(jid)) is not None and j.state not in TERMINAL_STATES)
        if live + need > config.max_session_bytes:
            raise ApiError(413, P.E_TOO_LARGE,
                           f"this session's queued jobs hold {live / 2**20:.0f} MiB of inputs; another "
                           f"{need / 2**20:.0f} MiB is over its budget of {config.max_session_mb:g} MiB "
                           "(medsegsuite serve --max-session-mb); wait for them to finish")
        meta, inputs = wire.unpack(body, state.limits)
        task, image_id, params = meta.get("task"), meta.get("image_id"), meta.get("params") or {}
        if not isinstance(task, str) or not isinstance(params, dict) or not (
                image_id is None or isinstance(image_id, str)):
            raise InputError("a job needs meta {'task': str, 'image_id': str | null, 'params': {...}}")
        with state.sessions.lock:
            if image_id is not None:
                image = state.backend.images.get(image_id)
                if image is None or image_id not in s.images:
                    raise ApiError(404, P.E_IMAGE_UNKNOWN,
                                   f"the server does not hold image {image_id} for this session; upload it again")
                state.sessions.touch_image(image_id)
                # (input shapes are the task's to check: some take other cases' images and scribbles)
            # client=s.id: interactive session state is this client's alone; no parameter names a server file
            try:
                job_id = state.backend.start_job(task, image_id, params, inputs, client=s.id, allow_paths=False,
                                                 user=user.name, role=user.role, policy=state.policy)
            except MedSegError as e:
                state.audit.write("job.start", "refused", user=user.name, role=user.role, session=s.id[:13],
                                  client=s.client_name, task=task, image=image_id, reason=type(e).__name__)
                raise
            state.sessions.add_job(s, job_id)
        state.audit.write("job.start", user=user.name, role=user.role, session=s.id[:13], client=s.client_name,
                          task=task, image=image_id, job=job_id)
        return {"job": job_id}

    @api.post("/jobs", status_code=201)
    async def job_start(request: Request, s=Depends(session)):
        body = await read_body(request)
        return await run_in_threadpool(_start_job, s, body, request.state.user)

    def _job_state(job) -> dict:
        with job._lock:
            last = job.events[-1] if job.events else None
        return {"job": job.id, "state": job.state.value, "error": redact_paths(job.error),
                "fraction": last.fraction if last else 0.0, "message": redact_paths(last.message) if last else ""}

    @api.get("/jobs/{job_id}")
    def job_get(job_id: str, s=Depends(session)):
        return _job_state(state.sessions.job_of(s, job_id))

    @api.get("/jobs/{job_id}/events")
    def job_events(request: Request, job_id: str, since: int = 0, wait: float = 0.0, until: str = "event",
                   s=Depends(session)):
        """Events with seq > since; waits up to ``wait`` seconds (long-poll) for one to arrive, or, with
        ``until=end`` (a client that shows no progress, e.g. a click), for the job to end: one round
        trip instead of one per event."""
        job = state.sessions.job_of(s, job_id)
        wait = max(0.0, min(wait, config.longpoll_max))
        with longpoll_slot(request.state.user, wait):
            # both sleep on the job (woken when it ends or emits): no polling beside a running click
            if until == "end":
                job.done_event.wait(wait)
            else:
                job.events_after(since, wait)
            with job._lock:
                evs = [dict(e.to_dict(), message=redact_paths(e.message)) for e in job.events if e.seq > since]
                return {"state": job.state.value, "events": evs}

    @api.post("/jobs/{job_id}/cancel")
    def job_cancel(job_id: str, s=Depends(session)):
        job = state.sessions.job_of(s, job_id)
        state.backend.cancel(job.id)
        return _job_state(job)

    @api.get("/jobs/{job_id}/result")
    def job_result(request: Request, job_id: str, wait: float = 0.0, s=Depends(session)):
        """The result of a done job; ``wait`` > 0 first waits (long-poll, bounded) for the job to end,
        so a client that shows no progress gets its answer in one round trip."""
        job = state.sessions.job_of(s, job_id)
        if wait > 0:
            with longpoll_slot(request.state.user, wait):
                job.done_event.wait(max(0.0, min(wait, config.longpoll_max)))
        if job.state == JobState.DONE:
            r = job.result
            if job.image_id is not None and r is not None:
                state.sessions.touch_image(job.image_id)  # a result fetched is a use of its image
            if r is None:
                raise ApiError(410, P.E_RESULT_DROPPED, f"the result of job {job_id} was dropped (its image was "
                               "unused for longer than the server keeps images); run the job again")
            arrays = {f"mask/{k}": wire.Crop(v) for k, v in r.masks.items()}
            arrays.update({f"array/{k}": v for k, v in r.arrays.items()})
            # crops travel as they are, with their offsets: the client applies them, nothing is rebuilt
            arrays.update({f"crop/{k}": np.asarray(v[1]) for k, v in r.crops.items()})
            body = wire.pack({"info": _redact(r.info),
                              "crops": {k: [int(o) for o in v[0]] for k, v in r.crops.items()}}, arrays)
            return Response(content=body, media_type=wire.CONTENT_TYPE)
        if job.state == JobState.FAILED:
            raise ApiError(409, P.E_JOB_FAILED, redact_paths(job.error) or f"job {job_id} failed")
        if job.state == JobState.CANCELLED:
            raise ApiError(409, P.E_JOB_CANCELLED, redact_paths(job.error) or f"job {job_id} was cancelled")
        raise ApiError(409, P.E_JOB_NOT_DONE, f"job {job_id} is still {job.state.value}")

    app.include_router(open_routes)
    app.include_router(api)
    return app
