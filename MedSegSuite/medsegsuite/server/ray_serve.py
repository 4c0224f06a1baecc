"""The same HTTP API on Ray Serve (``medsegsuite serve --ray``): one replica per GPU, sessions pinned.

Each *replica* is a Ray Serve deployment of its own (``medsegsuite-replica-N``, one actor) that runs
the unchanged app of :func:`.app.create_app` in its process: keys, roles, limits, Host check, audit and
the single worker thread per device are exactly the plain server's. An *ingress* deployment receives
every HTTP request from Ray's proxy and forwards it to one replica:

* a request with a session header goes to the replica whose server instance issued that session (a
  session id starts with its instance id), so a session's images, embeddings and jobs stay together;
  an id no replica knows goes to any replica, which answers 410 ``server_restarted`` as the plain
  server does;
* ``POST /sessions`` goes to the replica holding fewest sessions; other session-less requests
  (health, handshake, task and model lists) go round-robin.

Bodies are read by the ingress under the same upload and stall limits the app applies; a body over
64 KiB is only read after the target replica has accepted the request's key (``GET /whoami`` with the
same headers), so an unauthenticated client cannot make the ingress buffer an upload. TLS is served by
Ray's proxy with the server's certificate, and the plain server's bind rules are checked first
(:meth:`.config.ServerConfig.check_bind`). Limits that count per server (sessions, sessions and
long-polls per user) count per replica.
"""
from __future__ import annotations

import asyncio
import itertools
import logging

from .. import protocol as P
from .config import ServerConfig

log = logging.getLogger(__name__)
APP_NAME = "medsegsuite"
PREFLIGHT_BYTES = 64 * 1024


class _AsgiCall:
    """One HTTP request run through an ASGI app in-process; the reply as (status, headers, body)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, method: str, path: str, query: bytes, headers: list, body: bytes,
                       client: tuple | None) -> tuple[int, list, bytes]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode("latin-1"), "query_string": query,
                 "root_path": "", "headers": headers, "client": client, "server": ("127.0.0.1", 0)}
        finished = asyncio.Event()
        sent_body = False
        status, out_headers, chunks = 500, [], []

        async def receive():
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status, out_headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    finished.set()

        try:
            await self.app(scope, receive, send)
        finally:
            finished.set()
        return status, out_headers, b"".join(chunks)


def _deployments():
    """The two deployment classes (built on first use, so importing this module needs no Ray)."""
    from ray import serve
    from starlette.responses import JSONResponse, Response

    @serve.deployment(max_ongoing_requests=1000, health_check_period_s=10)
    class Replica:
        """One server (app + LocalBackend + sessions) in one Ray actor: on a GPU node, its GPU."""

        def __init__(self, config: ServerConfig, task_modules: tuple = (), threads: int = 0):
            import importlib

            from ..engine.device import resolve_device, set_threads
            from .app import create_app

            for m in task_modules:  # tasks a deployment adds (tests, site plug-ins) register on import
                importlib.import_module(m)
            set_threads(threads or None)
            config.device = resolve_device(config.device)
            self.app = create_app(config)
            self.call = _AsgiCall(self.app)
            self._lifespan = None

        async def _started(self):
            if self._lifespan is None:  # the app's own start-up (thread-pool size for long-polls)
                self._lifespan = self.app.router.lifespan_context(self.app)
                await self._lifespan.__aenter__()

        async def handle(self, method, path, query, headers, body, client):
            await self._started()
            return await self.call(method, path, query, headers, body, client)

        def instance(self) -> str:
            return self.app.state.mss.sessions.instance

        def load(self) -> int:
            return len(self.app.state.mss.sessions.sessions)

        def __del__(self):
            try:
                self.app.state.mss.close()
            except Exception as e:  # noqa: BLE001 - shutting down: say so, carry on
                log.debug("closing a replica: %s", e)

    @serve.deployment(max_ongoing_requests=1000)
    class Ingress:
        """Routes each HTTP request to the replica that holds its session."""

        def __init__(self, config: ServerConfig, *replicas):
            self.config = config
            self.replicas = list(replicas)
            self.instances: dict[str, int] = {}
            self.learned = 0.0  # when the replicas' instance ids were last asked (at most once a second)
            self.rr = itertools.count()
            self.max_body = max(config.max_upload_bytes, config.max_model_bytes)

        async def _learn_instances(self) -> None:
            import time

            if time.monotonic() - self.learned < 1.0:  # unknown ids (forged, or old) cannot flood replicas
                return
            self.learned = time.monotonic()
            ids = await asyncio.gather(*(r.instance.remote() for r in self.replicas))
            self.instances = {inst: i for i, inst in enumerate(ids)}

        async def _pick(self, method: str, path: str, sid: str | None) -> int:
            if sid:
                inst = sid.split(".")[0]
                if inst not in self.instances:  # a replica restarted, or first use
                    await self._learn_instances()
                if inst in self.instances:
                    return self.instances[inst]
            if method == "POST" and path.rstrip("/") == P.PREFIX + "/sessions":
                loads = await asyncio.gather(*(r.load.remote() for r in self.replicas))
                start = next(self.rr)
                order = [(start + k) % len(loads) for k in range(len(loads))]
                return min(order, key=lambda i: loads[i])
            return next(self.rr) % len(self.replicas)

        async def _read_body(self, request) -> bytes | Response:
            chunks, n = [], 0
            stream = request.stream().__aiter__()
            while True:
                try:
                    c = await asyncio.wait_for(stream.__anext__(), self.config.body_timeout)
                except StopAsyncIteration:
                    return b"".join(chunks)
                except asyncio.TimeoutError:
                    return JSONResponse({"error": P.E_TIMEOUT, "message": f"the request body stalled for over "
                                         f"{self.config.body_timeout:g} s; send it again"}, 408)
                n += len(c)
                if n > self.max_body:
                    return JSONResponse({"error": P.E_TOO_LARGE, "message": f"a request body over "
                                         f"{self.max_body / 2**20:g} MiB is over this server's limit "
                                         "(medsegsuite serve --max-upload-mb / --max-model-mb)"}, 413)
                chunks.append(c)

        async def __call__(self, request):
            headers = [(k.lower(), v) for k, v in request.headers.raw]
            sid = request.headers.get(P.SESSION_HEADER)
            method, path = request.method, request.url.path
            query = request.url.query.encode("latin-1")
            client = (request.client.host, request.client.port) if request.client else None
            target = self.replicas[await self._pick(method, path, sid)]
            length = request.headers.get("content-length")
            if method in ("POST", "PUT", "PATCH") and (length is None or not length.isdigit()
                                                       or int(length) > PREFLIGHT_BYTES):
                if length is not None and length.isdigit() and int(length) > self.max_body:
                    return JSONResponse({"error": P.E_TOO_LARGE, "message": f"a request body of "
                                         f"{int(length) / 2**20:.1f} MiB is over this server's limit"}, 413)
                # the key first: the same check the app makes, before any body is buffered here
                st, hd, bd = await target.handle.remote("GET", P.PREFIX + "/whoami", b"", headers, b"", client)
                if st != 200:
                    r = Response(content=bd, status_code=st)
                    r.raw_headers = hd
                    return r
            body = await self._read_body(request)
            if isinstance(body, Response):
                return body
            st, hd, bd = await target.handle.remote(method, path, query, headers, body, client)
            r = Response(content=bd, status_code=st)
            r.raw_headers = hd
            return r

    return Replica, Ingress


def build_app(config: ServerConfig, replicas: int = 1, num_gpus: float = 0.0, num_cpus: float = 1.0,
              task_modules: tuple = (), threads: int = 0):
    """The Serve application: ``replicas`` one-actor deployments behind one ingress."""
    Replica, Ingress = _deployments()
    res = {"num_gpus": num_gpus, "num_cpus": num_cpus} if num_gpus else {"num_cpus": num_cpus}
    handles = [Replica.options(name=f"medsegsuite-replica-{i}", num_replicas=1, ray_actor_options=res)
               .bind(config, tuple(task_modules), threads) for i in range(replicas)]
    return Ingress.options(ray_actor_options={"num_cpus": 0}).bind(config, *handles)


def default_replicas() -> tuple[int, float]:
    """One replica per GPU of the cluster; without GPUs, one per node: (replicas, GPUs each)."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return gpus, 1.0
    return max(1, len([n for n in ray.nodes() if n.get("Alive")])), 0.0


def start_on_ray(config: ServerConfig, replicas: int | None = None, address: str | None = None,
                 num_cpus: float = 1.0, task_modules: tuple = (), init_kwargs: dict | None = None,
                 threads: int = 0) -> str:
    """Deploy the server on Ray (connecting to ``address``, or starting a local Ray) and return its
    URL; :func:`stop_on_ray` ends it. The plain server's bind rules are checked first."""
    import ray
    from ray import serve

    config.check_bind()
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, **(init_kwargs or {}))
    n, gpus = default_replicas()
    n = replicas or n
    http = {"host": config.host, "port": config.port, "keep_alive_timeout_s": 15,
            "request_timeout_s": None}
    if config.tls:
        http.update(ssl_certfile=config.ssl_certfile, ssl_keyfile=config.ssl_keyfile)
    serve.start(http_options=http, proxy_location="HeadOnly")
    serve.run(build_app(config, n, gpus, num_cpus, task_modules, threads), name=APP_NAME, route_prefix="/")
    host = f"[{config.host}]" if ":" in config.host else config.host
    log.info("medsegsuite on Ray Serve: %d replica(s)%s", n, f", {gpus:g} GPU each" if gpus else " on CPU")
    return f"{'https' if config.tls else 'http'}://{host}:{config.port}"


def stop_on_ray() -> None:
    from ray import serve

    serve.delete(APP_NAME)
    serve.shutdown()


def serve_forever_on_ray(config: ServerConfig, replicas: int | None = None, address: str | None = None,
                         num_cpus: float = 1.0, threads: int = 0) -> None:
    """``medsegsuite serve --ray``: deploy, then wait until interrupted."""
    import time

    start_on_ray(config, replicas, address, num_cpus, threads=threads)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop_on_ray()
