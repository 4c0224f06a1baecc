"""The FastAPI application: the `Backend` interface over HTTP, around one `LocalBackend`.

Interactive model work runs on the LocalBackend's single persistent worker thread (one per device),
queued round-robin per session, with its model and embedding caches shared by every client; training
jobs run in their own processes. No parameter may name a file on the server (``allow_paths=False``):
models are named by registry id, and a client adds one with ``PUT /models/{id}``. Request
handlers only parse, validate and copy; anything heavier than a dict lookup runs in the thread pool
so the event loop stays responsive for heartbeats and progress polls.
"""
from __future__ import annotations

import contextlib
import logging
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

from .. import __version__
from .. import protocol as P
from .. import wire
from ..engine import LocalBackend
from ..engine.interface import TERMINAL_STATES, JobState
from ..errors import InputError, MedSegError
from ..volume import Geometry, Volume
from .config import ServerConfig, key_matches
from .sessions import ApiError, SessionManager

log = logging.getLogger(__name__)


def _err(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


class ServerState:
    """Everything a request handler needs: config, backend, sessions, wire limits."""

    def __init__(self, config: ServerConfig, backend: LocalBackend | None = None):
        self.config = config
        self.owns_backend = backend is None
        self.backend = backend or LocalBackend(config.device, max_images=10**9, allow_paths=False)
        self.import_lock = threading.Lock()
        self.sessions = SessionManager(self.backend, config.lease_ttl, config.max_sessions,
                                       config.max_images_per_session)
        self.limits = wire.Limits(max_body_bytes=config.max_upload_bytes,
                                  max_array_bytes=max(8 * config.max_upload_bytes, 64 * 2**20))
        self.started = time.time()

    def close(self):
        self.sessions.stop()
        if self.owns_backend:
            self.backend.close()


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

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return _err(e.status, e.code, e.message, e.headers)

    @app.exception_handler(MedSegError)
    async def _medseg_error(request, e: MedSegError):
        return _err(400, P.E_BAD_REQUEST, str(e))

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
    async def require_key(request: Request) -> None:
        if config.api_key is None:
            return
        given = None
        auth = request.headers.get(P.KEY_HEADER)
        if auth and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        given = given or request.headers.get(P.ALT_KEY_HEADER)
        if not given:
            raise ApiError(401, P.E_AUTH_MISSING, "this server needs an API key: pass --api-key-file F "
                           "(or set MEDSEGSUITE_API_KEY) on the client", {"WWW-Authenticate": "Bearer"})
        if not key_matches(config.api_key, given):
            raise ApiError(403, P.E_AUTH_WRONG, "the API key was refused: check the key file on the client "
                           "matches the server's")

    async def session(request: Request):
        return state.sessions.get(request.headers.get(P.SESSION_HEADER))

    async def read_body(request: Request, limit: int | None = None, what: str = "upload",
                        option: str = "--max-upload-mb") -> bytes:
        limit = limit or config.max_upload_bytes
        cl = request.headers.get("content-length")
        too_big = cl is not None and cl.isdigit() and int(cl) > limit
        chunks, n = [], 0
        async for c in request.stream():
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

    @api.post("/sessions", status_code=201)
    def open_session(request: Request, client: str = "client"):
        client_api = request.headers.get(P.API_HEADER)
        if client_api is None or not P.compatible(client_api, P.API_VERSION):
            raise ApiError(426, P.E_VERSION,
                           f"client API version {client_api} does not match this server's {P.API_VERSION} "
                           f"(medsegsuite {__version__}); install the same major version on both sides")
        s = state.sessions.open(client)
        d = handshake_dict()
        d.update(session=s.id)
        return d

    @api.post("/sessions/heartbeat")
    def heartbeat(s=Depends(session)):
        return {"expires_in": config.lease_ttl}

    @api.delete("/sessions", status_code=204)
    def close_session(request: Request):
        sid = request.headers.get(P.SESSION_HEADER)
        if sid:
            state.sessions.close(sid, "closed by client")
        return Response(status_code=204)

    @api.delete("/sessions/state/{name}", status_code=204)
    def close_interactive(name: str, s=Depends(session)):
        """Forget one interactive session (image, last result, clicks) of this client."""
        state.backend.close_session(name, client=s.id)
        return Response(status_code=204)

    @api.get("/tasks")
    def tasks():
        return state.backend.list_tasks()

    @api.get("/models")
    def models(task: str | None = None):
        return state.backend.list_models(task)

    def _import_model(model_id: str, body: bytes) -> dict:
        from ..models.registry import check_model_id

        check_model_id(model_id)
        meta, arrays = wire.unpack(body, state.limits, check_finite=False)
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
        """Register an uploaded checkpoint under ``model_id`` (it must load with weights_only=True)."""
        body = await read_body(request, config.max_model_bytes, "model upload", "--max-model-mb")
        return await run_in_threadpool(_import_model, model_id, body)

    # -- images --------------------------------------------------------------------------------
    def image_info(image_id: str) -> dict:
        v = state.backend.images.get(image_id)
        if v is None:
            raise ApiError(404, P.E_IMAGE_UNKNOWN, f"the server does not hold image {image_id}; upload it")
        return {"id": image_id, "dtype": v.array.dtype.name, "geometry": v.geometry.to_dict(), "name": v.name}

    @api.head("/images/{image_id}")
    def image_head(image_id: str, s=Depends(session)):
        image_info(image_id)
        return Response(status_code=200)

    @api.get("/images/{image_id}")
    def image_get(image_id: str, s=Depends(session)):
        return image_info(image_id)

    @api.post("/images/{image_id}/attach")
    def image_attach(image_id: str, s=Depends(session)):
        with state.sessions.lock:
            info = image_info(image_id)
            state.sessions.attach(s, image_id)
        return info

    def _store_image(s, image_id: str, body: bytes) -> dict:
        meta, arrays = wire.unpack(body, state.limits)
        if set(arrays) != {"image"}:
            raise InputError("an image upload holds exactly one array named 'image'")
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
        return {"id": fp}

    @api.put("/images/{image_id}", status_code=201)
    async def image_put(image_id: str, request: Request, s=Depends(session)):
        body = await read_body(request)
        return await run_in_threadpool(_store_image, s, image_id, body)

    @api.delete("/images/{image_id}", status_code=204)
    def image_delete(image_id: str, s=Depends(session)):
        state.sessions.detach(s, image_id)
        return Response(status_code=204)

    # -- jobs ----------------------------------------------------------------------------------
    def _start_job(s, body: bytes) -> dict:
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
                # (input shapes are the task's to check: some take other cases' images and scribbles)
            # client=s.id: interactive session state is this client's alone; no parameter names a server file
            job_id = state.backend.start_job(task, image_id, params, inputs, client=s.id, allow_paths=False)
            state.sessions.add_job(s, job_id)
        return {"job": job_id}

    @api.post("/jobs", status_code=201)
    async def job_start(request: Request, s=Depends(session)):
        body = await read_body(request)
        return await run_in_threadpool(_start_job, s, body)

    def _job_state(job) -> dict:
        with job._lock:
            last = job.events[-1] if job.events else None
        return {"job": job.id, "state": job.state.value, "error": job.error,
                "fraction": last.fraction if last else 0.0, "message": last.message if last else ""}

    @api.get("/jobs/{job_id}")
    def job_get(job_id: str, s=Depends(session)):
        return _job_state(state.sessions.job_of(s, job_id))

    @api.get("/jobs/{job_id}/events")
    def job_events(job_id: str, since: int = 0, wait: float = 0.0, until: str = "event", s=Depends(session)):
        """Events with seq > since; waits up to ``wait`` seconds (long-poll) for one to arrive, or, with
        ``until=end`` (a client that shows no progress, e.g. a click), for the job to end: one round
        trip instead of one per event."""
        job = state.sessions.job_of(s, job_id)
        deadline = time.monotonic() + max(0.0, min(wait, config.longpoll_max))
        to_end = until == "end"
        while True:
            with job._lock:
                evs = [e.to_dict() for e in job.events if e.seq > since]
            if (evs and not to_end) or job.state in TERMINAL_STATES or time.monotonic() >= deadline:
                return {"state": job.state.value, "events": evs}
            # until the end: sleep on the job's done event (no polling beside a running click)
            job.done_event.wait(max(0.0, deadline - time.monotonic()) if to_end else 0.005)

    @api.post("/jobs/{job_id}/cancel")
    def job_cancel(job_id: str, s=Depends(session)):
        job = state.sessions.job_of(s, job_id)
        state.backend.cancel(job.id)
        return _job_state(job)

    @api.get("/jobs/{job_id}/result")
    def job_result(job_id: str, wait: float = 0.0, s=Depends(session)):
        """The result of a done job; ``wait`` > 0 first waits (long-poll, bounded) for the job to end,
        so a client that shows no progress gets its answer in one round trip."""
        job = state.sessions.job_of(s, job_id)
        if wait > 0:
            job.done_event.wait(max(0.0, min(wait, config.longpoll_max)))
        if job.state == JobState.DONE:
            r = job.result
            arrays = {f"mask/{k}": wire.Crop(v) for k, v in r.masks.items()}
            arrays.update({f"array/{k}": v for k, v in r.arrays.items()})
            # crops travel as they are, with their offsets: the client applies them, nothing is rebuilt
            arrays.update({f"crop/{k}": np.asarray(v[1]) for k, v in r.crops.items()})
            body = wire.pack({"info": r.info, "crops": {k: [int(o) for o in v[0]] for k, v in r.crops.items()}},
                             arrays)
            return Response(content=body, media_type=wire.CONTENT_TYPE)
        if job.state == JobState.FAILED:
            raise ApiError(409, P.E_JOB_FAILED, job.error or f"job {job_id} failed")
        if job.state == JobState.CANCELLED:
            raise ApiError(409, P.E_JOB_CANCELLED, job.error or f"job {job_id} was cancelled")
        raise ApiError(409, P.E_JOB_NOT_DONE, f"job {job_id} is still {job.state.value}")

    app.include_router(open_routes)
    app.include_router(api)
    return app
