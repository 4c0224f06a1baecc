"""``medsegsuite serve``: the inference server many Slicer seats and CLI clients share."""
from __future__ import annotations

import argparse
import logging
import os

DESCRIPTION = """\
Serve the MedSegSuite backend over HTTPS, so Slicer seats and scripts without a GPU run their jobs on
this machine's device. All jobs run on one persistent worker thread per device (GPU work serialised),
queued fairly per client, sharing one model cache and one slice-embedding cache.

On the GPU machine (docs/remote.md has the department set-up: CA certificate or reverse proxy, firewall,
key rotation, retention):
  medsegsuite users add dr-smith --role clinician        # prints dr-smith's key once
  medsegsuite users add admin-jones --role admin
  medsegsuite serve --host 0.0.0.0 --port 8765 --ssl-certfile cert.pem --ssl-keyfile key.pem --device cuda
  (a trial without a CA certificate: --self-signed makes one and prints where it is)

  Without --host the server listens on 127.0.0.1 only; reach it through an SSH tunnel:
   ssh -N -L 8765:127.0.0.1:8765 user@gpu-box, then use http://127.0.0.1:8765 on the client.

From another machine (the user's key in a file readable only by them):
  medsegsuite demo --out demo_out --server https://gpu-box:8765 --api-key-file ~/.medsegsuite.key
  python: RemoteBackend("https://gpu-box:8765", api_key=read_api_key("~/.medsegsuite.key"))

In 3D Slicer: MedSegSuite hub module -> Backend: Remote, URL https://gpu-box:8765, key. Every method
panel then runs on the server. Images are uploaded once (by content fingerprint) and dropped when the
client's session ends or after --image-idle-ttl seconds unused; every job is written to the audit log
(who, which task, which image fingerprint; no patient data)."""


def register(sub):
    p = sub.add_parser("serve", help="run the inference server (GPU machine) for Slicer and CLI clients",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other address needs users and TLS)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765)")
    g = p.add_argument_group("who may connect")
    g.add_argument("--users-file", metavar="F",
                   help="per-user keys and roles (medsegsuite users add); default $MEDSEGSUITE_HOME/server/"
                        "users.json when it exists")
    g.add_argument("--api-key-file", metavar="F",
                   help="one shared key instead of users (a single-person set-up; it carries the admin role)")
    g.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name clients use to reach this server (Host header); repeat for several")
    g.add_argument("--audit-log", metavar="F", help="audit log (default $MEDSEGSUITE_HOME/server/audit.log)")
    t = p.add_argument_group("TLS")
    t.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    t.add_argument("--ssl-keyfile", help="private key of --ssl-certfile (PEM)")
    t.add_argument("--self-signed", action="store_true",
                   help="make a self-signed certificate for a trial ($MEDSEGSUITE_HOME/server/tls); clients "
                        "trust that file with --ca-cert")
    t.add_argument("--insecure-http", action="store_true",
                   help="allow plain HTTP on a network address (keys and images cross the network in clear "
                        "text: only behind a TLS reverse proxy on the same host, or on a network you trust)")
    d = p.add_argument_group("device and limits")
    d.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N, mps or cpu")
    d.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: all cores)")
    d.add_argument("--max-sessions", type=int, default=16, help="most clients connected at once (default 16)")
    d.add_argument("--max-sessions-per-user", type=int, default=4, help="sessions one user may hold (default 4)")
    d.add_argument("--max-longpolls-per-user", type=int, default=8,
                   help="progress long-polls one user may hold open at once (default 8)")
    d.add_argument("--max-images-per-session", type=int, default=8,
                   help="images one client may hold; its oldest is freed beyond that (default 8)")
    d.add_argument("--max-upload-mb", type=float, default=512.0,
                   help="largest compressed upload in MiB (default 512); larger gets HTTP 413")
    d.add_argument("--max-request-mb", type=float, default=2048.0,
                   help="largest unpacked size of one request's arrays, MiB (default 2048)")
    d.add_argument("--max-session-mb", type=float, default=4096.0,
                   help="memory one session's images and queued inputs may take, MiB (default 4096)")
    d.add_argument("--max-image-voxels", type=int, default=2**29, help="largest image, voxels (default 2^29)")
    d.add_argument("--max-dicom-files", type=int, default=5000,
                   help="files in one uploaded DICOM series (default 5000; its unpacked size counts against "
                   "--max-request-mb, its voxels against --max-image-voxels)")
    d.add_argument("--max-model-mb", type=float, default=1024.0,
                   help="largest checkpoint an admin may upload (PUT /models/ID), in MiB (default 1024)")
    d.add_argument("--job-time-limit", type=float, default=1800.0,
                   help="seconds an interactive job may run before it is stopped (default 1800)")
    d.add_argument("--training-time-limit", type=float, default=6 * 3600.0,
                   help="seconds a training job may run (default 21600)")
    d.add_argument("--lease-ttl", type=float, default=60.0,
                   help="seconds without a heartbeat before a client's session is released (default 60)")
    d.add_argument("--image-idle-ttl", type=float, default=1800.0,
                   help="seconds an image (and results on it) may stay unused before it is dropped (default 1800)")
    q = p.add_argument_group("patient data")
    q.add_argument("--dyna-queue", action="store_true",
                   help="keep DyNA day cases on this server for the night (off by default; owner-only files)")
    q.add_argument("--retention-days", type=float, default=7.0,
                   help="delete kept DyNA cases older than this many days (default 7)")
    p.add_argument("--access-log", action="store_true", help="log every request (paths only, never a key)")
    r = p.add_argument_group("scale-out on Ray (docs/remote.md, 'Scale-out on Ray')")
    r.add_argument("--ray", action="store_true",
                   help="serve the same API through Ray Serve replicas (one per GPU of the Ray cluster; without "
                        "GPUs one per node), each session pinned to the replica holding its images")
    r.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to join (e.g. 10.0.0.5:6379 or 'auto'); default: start Ray on this machine")
    r.add_argument("--replicas", type=int, default=0, help="number of replicas (default: one per GPU)")
    r.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs each replica reserves (default 1)")
    p.set_defaults(func=run)


def run(args):
    from ..engine.device import describe_device, resolve_device, set_threads
    from ..errors import InputError
    from ..models.registry import user_home
    from ..server.config import KEY_ENV, ServerConfig, is_loopback, key_file_is_private, load_key_file
    from ..server.runner import serve_forever

    log = logging.getLogger("medsegsuite.serve")
    home = user_home() / "server"
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)  # users, audit log, TLS key: the server's own
    key = None
    if args.api_key_file:
        key = load_key_file(args.api_key_file)
        if not key_file_is_private(args.api_key_file):
            log.warning("warning: %s is readable by other users; chmod 600 it", args.api_key_file)
    elif os.environ.get(KEY_ENV, "").strip():
        key = os.environ[KEY_ENV].strip()
        if len(key) < 16:
            raise InputError(f"the API key in {KEY_ENV} is too short ({len(key)} characters); use at least 16")
    users_file = args.users_file or (str(home / "users.json") if (home / "users.json").exists() else None)
    if args.users_file and not os.path.exists(args.users_file):
        raise InputError(f"users file {args.users_file} does not exist: add users first "
                         f"(medsegsuite users add NAME --role clinician --users-file {args.users_file})")
    numbers = (args.max_sessions, args.max_upload_mb, args.lease_ttl, args.max_model_mb, args.max_request_mb,
               args.max_session_mb, args.max_image_voxels, args.job_time_limit, args.training_time_limit,
               args.image_idle_ttl, args.max_sessions_per_user, args.max_longpolls_per_user, args.retention_days,
               args.max_dicom_files)
    if any(n <= 0 for n in numbers):
        raise InputError("limits (--max-*, --lease-ttl, --*-time-limit, --image-idle-ttl, --retention-days) "
                         "must be positive")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise InputError("--ssl-certfile and --ssl-keyfile go together")
    config = ServerConfig(host=args.host, port=args.port, api_key=key, users_file=users_file, device=args.device,
                          audit_log=args.audit_log or str(home / "audit.log"),
                          allowed_hosts=tuple(args.allowed_host), max_sessions=args.max_sessions,
                          max_sessions_per_user=args.max_sessions_per_user,
                          max_longpolls_per_user=args.max_longpolls_per_user,
                          max_images_per_session=args.max_images_per_session, max_upload_mb=args.max_upload_mb,
                          max_request_mb=args.max_request_mb, max_session_mb=args.max_session_mb,
                          max_image_voxels=args.max_image_voxels, max_model_mb=args.max_model_mb,
                          max_dicom_files=args.max_dicom_files,
                          job_time_limit=args.job_time_limit, training_time_limit=args.training_time_limit,
                          lease_ttl=args.lease_ttl, image_idle_ttl=args.image_idle_ttl, dyna_queue=args.dyna_queue,
                          retention_days=args.retention_days, ssl_certfile=args.ssl_certfile,
                          ssl_keyfile=args.ssl_keyfile, insecure_http=args.insecure_http, access_log=args.access_log)
    if args.self_signed and not config.tls:
        import socket

        from ..server.tls import fingerprint, make_self_signed

        names = ["localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn(), *args.allowed_host]
        if args.host not in ("0.0.0.0", "::"):
            names.insert(0, args.host)
        cert, keyf = make_self_signed(home / "tls", names)
        config.ssl_certfile, config.ssl_keyfile = str(cert), str(keyf)
        log.warning("self-signed certificate for a trial: %s (SHA-256 %s); copy it to each client and pass "
                    "--ca-cert %s (Slicer: environment MEDSEGSUITE_CA_CERT). Use your CA's certificate for real use.",
                    cert, fingerprint(cert), cert.name)
    config.check_bind()
    if not config.tls and not is_loopback(config.host):
        log.warning("WARNING: --insecure-http: serving plain HTTP on %s. API keys and patient images cross the "
                    "network unencrypted. Use this only behind a TLS reverse proxy or on a network you fully "
                    "trust.", config.host)
    if key and users_file:
        log.warning("note: both a shared key and a users file: the shared key carries the admin role")
    if args.ray:  # each replica resolves its own device (Ray gives each its GPU): none needed here
        from ..server.ray_serve import serve_forever_on_ray

        if args.replicas < 0 or args.replica_cpus <= 0:
            raise InputError("--replicas must be 0 (one per GPU) or more, --replica-cpus positive")
        log.info("medsegsuite server on Ray Serve at %s://%s:%d, keys: %s", "https" if config.tls else "http",
                 args.host, args.port, f"users from {users_file}" if users_file else "one shared key" if key
                 else "none (loopback only)")
        serve_forever_on_ray(config, args.replicas or None, args.address, args.replica_cpus, args.threads)
        return 0
    if args.address or args.replicas:
        raise InputError("--address and --replicas go with --ray")
    set_threads(args.threads or None)
    try:
        device = resolve_device(args.device)
    except RuntimeError as e:
        raise InputError(str(e)) from None
    config.device = device
    scheme = "https" if config.tls else "http"
    auth = (f"users from {users_file}" if users_file else "one shared key (admin)" if key
            else "none (loopback only)")
    log.info("medsegsuite server on %s://%s:%d, device %s (%s), keys: %s, max %d sessions, DyNA queue %s, "
             "audit log %s", scheme, args.host, args.port, device, describe_device(device), auth,
             args.max_sessions, f"on ({args.retention_days:g} days)" if args.dyna_queue else "off", config.audit_log)
    if device == "cpu":
        log.warning("note: the server runs on the CPU: SAM-family encoders take seconds per slice; start it with "
                    "a CUDA build of torch on a GPU machine for interactive speed")
    serve_forever(config)
    return 0
