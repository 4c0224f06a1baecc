"""``medsegsuite web``: the browser front end (trame-slicer), run in its own environment (.venv-web)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import MissingDataError


def web_python() -> Path:
    root = Path(__file__).resolve().parents[3]
    for p in (root / ".venv-web" / "bin" / "python", root / ".venv-web" / "Scripts" / "python.exe"):
        if p.exists():
            return p
    raise MissingDataError("the web front end's environment .venv-web is missing: run `make setup` "
                           "(scripts/setup.sh creates it; trame-slicer needs its own slicer-core 5.11)")


def register(sub):
    p = sub.add_parser("web", help="MedSegSuite in the browser: the three panels on Slicer's core (trame-slicer)",
                       description="Serve the web front end: Slicer's slice and 3D views, the segment editor and "
                       "the CoSAM, ScribbleSeg, TestTimeAdapt and backend panels. Opens LiTS-117 when no image "
                       "is given. Binds 127.0.0.1 by default (put a TLS reverse proxy in front to share it: "
                       "docs/web.md).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--image", help="an image file or a DICOM series folder (default: LiTS-117)")
    p.add_argument("--server", metavar="URL", help="run jobs on this MedSegSuite server instead of locally")
    p.add_argument("--api-key-file", metavar="F", help="the server's API key (stays on this machine)")
    p.add_argument("--device", default="auto", help="device of the local backend (auto, cpu, cuda)")
    p.set_defaults(func=run)
    q = sub.add_parser("web-launcher", help="the web front end for several users: one page process per browser session",
                       description="One `medsegsuite web` process per browser session behind one address; idle "
                       "sessions are closed, at most --max-sessions run, and the backend's API key stays on this "
                       "machine. Binds 127.0.0.1 by default (docs/web.md).")
    q.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    q.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    q.add_argument("--max-sessions", type=int, default=4, help="page processes at most (each ~0.5-1 GB; default 4)")
    q.add_argument("--idle-timeout", type=float, default=1800.0, metavar="S",
                   help="close a session after S seconds without activity in its browser (default 1800)")
    q.add_argument("--image", help="what every session opens (default: LiTS-117)")
    q.add_argument("--server", metavar="URL", help="the MedSegSuite server all sessions use (default: one local backend)")
    q.add_argument("--api-key-file", metavar="F", help="its API key (stays on this machine)")
    q.add_argument("--device", default="auto", help="device of the local backend (auto, cpu, cuda)")
    q.set_defaults(func=run_launcher)


def run_launcher(args) -> int:
    argv = [str(web_python()), "-m", "MedSegSuiteWeb.launcher", "--host", args.host, "--port", str(args.port),
            "--max-sessions", str(args.max_sessions), "--idle-timeout", str(args.idle_timeout), "--device", args.device]
    for flag, value in (("--image", args.image), ("--server", args.server), ("--api-key-file", args.api_key_file)):
        if value:
            argv += [flag, str(Path(value).resolve()) if flag != "--server" else value]
    return subprocess.call(argv, env=dict(os.environ, MEDSEGSUITE_BACKEND_PYTHON=sys.executable))


def run(args) -> int:
    argv = [str(web_python()), "-m", "MedSegSuiteWeb", "--host", args.host, "--port", str(args.port),
            "--device", args.device]
    for flag, value in (("--image", args.image), ("--server", args.server), ("--api-key-file", args.api_key_file)):
        if value:
            argv += [flag, str(Path(value).resolve()) if flag != "--server" else value]
    env = dict(os.environ, MEDSEGSUITE_BACKEND_PYTHON=sys.executable)
    return subprocess.call(argv, env=env)
