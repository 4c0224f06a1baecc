"""``medsegsuite serve``: the inference server many Slicer seats and CLI clients share."""
from __future__ import annotations

import argparse
import logging
import os

DESCRIPTION = """\
Serve the MedSegSuite backend over HTTP, so Slicer seats and scripts without a GPU run their jobs on
this machine's device. All jobs run on one persistent worker thread per device (GPU work serialised),
queued fairly per client, sharing one model cache and one slice-embedding cache.

On the GPU machine:
  python -c "import secrets; print(secrets.token_urlsafe(32))" > ~/.medsegsuite.key
  chmod 600 ~/.medsegsuite.key
  medsegsuite serve --host 0.0.0.0 --port 8765 --api-key-file ~/.medsegsuite.key --device cuda

  (Without a key the server only listens on 127.0.0.1; reach it through an SSH tunnel:
   ssh -N -L 8765:127.0.0.1:8765 user@gpu-box, then use http://127.0.0.1:8765 on the client.
   The key travels in a header: over an untrusted network use the tunnel or --ssl-certfile/--ssl-keyfile.)

From another machine (copy the key file there, readable only by you):
  medsegsuite demo --out demo_out --server http://gpu-box:8765 --api-key-file ~/.medsegsuite.key
  MEDSEGSUITE_API_KEY=... medsegsuite cosam --server http://gpu-box:8765 ...
  python: RemoteBackend("http://gpu-box:8765", api_key=read_api_key("~/.medsegsuite.key"))

In 3D Slicer: MedSegSuite hub module -> Backend: Remote, URL http://gpu-box:8765, key file; the panel
shows the connection state and the server's device. Every method panel then runs on the server.
Images are uploaded once per server (by content fingerprint); a client that disappears loses its
session after --lease-ttl seconds and its images and queued jobs are freed."""


def register(sub):
    p = sub.add_parser("serve", help="run the inference server (GPU machine) for Slicer and CLI clients",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other address needs an API key)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765)")
    p.add_argument("--api-key-file", metavar="F",
                   help="file holding the API key clients must send (default: env MEDSEGSUITE_API_KEY)")
    p.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N, mps or cpu")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: all cores)")
    p.add_argument("--max-sessions", type=int, default=16, help="most clients connected at once (default 16)")
    p.add_argument("--max-images-per-session", type=int, default=8,
                   help="images one client may hold; its oldest is freed beyond that (default 8)")
    p.add_argument("--max-upload-mb", type=float, default=512.0,
                   help="largest compressed upload in MiB (default 512); larger gets HTTP 413")
    p.add_argument("--max-model-mb", type=float, default=1024.0,
                   help="largest checkpoint a client may import (PUT /models/ID), in MiB (default 1024)")
    p.add_argument("--lease-ttl", type=float, default=60.0,
                   help="seconds without a heartbeat before a client's session is released (default 60)")
    p.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--ssl-keyfile", help="private key of --ssl-certfile (PEM)")
    p.add_argument("--access-log", action="store_true", help="log every request (paths only, never the key)")
    p.set_defaults(func=run)


def run(args):
    from ..engine.device import describe_device, resolve_device, set_threads
    from ..errors import InputError
    from ..server.config import KEY_ENV, ServerConfig, key_file_is_private, load_key_file
    from ..server.runner import serve_forever

    log = logging.getLogger("medsegsuite.serve")
    key = None
    if args.api_key_file:
        key = load_key_file(args.api_key_file)
        if not key_file_is_private(args.api_key_file):
            log.warning("warning: %s is readable by other users; chmod 600 it", args.api_key_file)
    elif os.environ.get(KEY_ENV, "").strip():
        key = os.environ[KEY_ENV].strip()
        if len(key) < 16:
            raise InputError(f"the API key in {KEY_ENV} is too short ({len(key)} characters); use at least 16")
    if args.max_sessions < 1 or args.max_upload_mb <= 0 or args.lease_ttl <= 0 or args.max_model_mb <= 0:
        raise InputError("--max-sessions, --max-upload-mb, --max-model-mb and --lease-ttl must be positive")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise InputError("--ssl-certfile and --ssl-keyfile go together")
    config = ServerConfig(host=args.host, port=args.port, api_key=key, device=args.device,
                          max_sessions=args.max_sessions, max_images_per_session=args.max_images_per_session,
                          max_upload_mb=args.max_upload_mb, lease_ttl=args.lease_ttl,
                          max_model_mb=args.max_model_mb)
    config.check_bind()
    set_threads(args.threads or None)
    try:
        device = resolve_device(args.device)
    except RuntimeError as e:
        raise InputError(str(e)) from None
    config.device = device
    scheme = "https" if args.ssl_certfile else "http"
    log.info("medsegsuite server on %s://%s:%d, device %s (%s), API key %s, max %d sessions",
             scheme, args.host, args.port, device, describe_device(device),
             "required" if key else "none (loopback only)", args.max_sessions)
    if device == "cpu":
        log.warning("note: the server runs on the CPU: SAM-family encoders take seconds per slice; start it with "
                    "a CUDA build of torch on a GPU machine for interactive speed")
    serve_forever(config, access_log=args.access_log, ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    return 0
