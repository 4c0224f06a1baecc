"""Running the app under uvicorn: in the foreground (``medsegsuite serve``) or in a thread (tests,
notebooks, benchmarks)."""
from __future__ import annotations

import socket
import threading
import time

from .app import create_app
from .config import ServerConfig


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), reusable at once after a restart on the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it: no 40 ms Nagle stalls
    sock.bind((host.strip("[]"), port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app, config: ServerConfig, access_log: bool, log_level: str):
    import uvicorn

    from .guard import install_log_filter, protocol_class

    if access_log:
        install_log_filter()  # paths only: a query string never reaches the log
    ssl = {"ssl_certfile": config.ssl_certfile, "ssl_keyfile": config.ssl_keyfile} if config.tls else {}
    return uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level,
                          access_log=access_log, timeout_keep_alive=15, lifespan="on",
                          server_header=False, http=protocol_class(config.header_timeout),
                          h11_max_incomplete_event_size=64 * 1024, **ssl)


class RunningServer:
    """A server on a background thread; ``url`` to reach it, ``stop()`` to end it."""

    def __init__(self, config: ServerConfig, backend=None, log_level: str = "warning"):
        import uvicorn

        self.config = config
        self.sock = bind_socket(config.host, config.port)
        config.port = self.sock.getsockname()[1]
        self.app = create_app(config, backend)
        self.state = self.app.state.mss
        self.server = uvicorn.Server(_uvicorn_config(self.app, config, config.access_log, log_level))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="medsegsuite-uvicorn", daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if not self.thread.is_alive() or time.time() - t0 > 30:
                raise RuntimeError("the medsegsuite server did not start")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{'https' if self.config.tls else 'http'}://{host}:{self.config.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_in_thread(config: ServerConfig | None = None, backend=None, log_level: str = "warning") -> RunningServer:
    return RunningServer(config or ServerConfig(port=0), backend, log_level)


def serve_forever(config: ServerConfig, log_level: str = "info") -> None:
    import uvicorn

    config.check_bind()
    app = create_app(config)
    uvicorn.Server(_uvicorn_config(app, config, config.access_log, log_level)).run()
