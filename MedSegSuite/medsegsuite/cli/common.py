"""Options every model-running command shares: where to run (local device or a server)."""
from __future__ import annotations

from ..progress import ProgressPrinter  # noqa: F401  (the commands import it from here)


def add_backend_options(p) -> None:
    g = p.add_argument_group("backend")
    g.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu, for local runs")
    g.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: all cores)")
    g.add_argument("--server", metavar="URL", help="run on a medsegsuite server (medsegsuite serve) instead of locally")
    g.add_argument("--api-key-file", metavar="F",
                   help="file holding your API key for the server (default: env MEDSEGSUITE_API_KEY)")
    g.add_argument("--ca-cert", metavar="F",
                   help="trust this certificate for the server (its self-signed or in-house CA certificate; "
                        "default: env MEDSEGSUITE_CA_CERT, else the system's CAs)")


def make_backend(args):
    """LocalBackend, or RemoteBackend when --server is given. Both implement engine.Backend."""
    from ..engine.device import set_threads

    set_threads(getattr(args, "threads", 0) or None)
    if getattr(args, "server", None):
        from ..client import RemoteBackend, read_api_key

        return RemoteBackend(args.server, api_key=read_api_key(getattr(args, "api_key_file", None)),
                             verify=getattr(args, "ca_cert", None) or True)
    from ..engine import LocalBackend

    return LocalBackend(getattr(args, "device", "auto"))
