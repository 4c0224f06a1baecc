"""The inference server in-process on loopback, driven by RemoteBackend and by raw HTTP.

Small but real tasks (threshold + connected components, with progress and cancel checks) are
registered here so the protocol is exercised without waiting for the SAM encoders.
"""
import threading
import time

import httpx
import numpy as np
import pytest
from scipy import ndimage

from medsegsuite import protocol as P
from medsegsuite import wire
from medsegsuite.client import (AuthError, RemoteBackend, ServerBusy, SessionLost, VersionMismatch,
                                read_api_key)
from medsegsuite.engine import JobFailed, JobResult, JobState, LocalBackend, task
from medsegsuite.engine.interface import run_job
from medsegsuite.errors import InputError
from medsegsuite.server import ServerConfig, start_in_thread
from medsegsuite.volume import Volume

KEY = "test-key-0123456789abcdef"
_ran = []          # names of test_remote.record jobs that actually ran
_gate = threading.Event()


def components(array: np.ndarray, t: float, min_size: int, roi=None):
    """The reference computation of task test_remote.components."""
    fg = array > t
    if roi is not None:
        fg &= roi
    lab, n = ndimage.label(fg)
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_size) + 1
    kept = np.isin(lab, keep)
    largest = lab == (int(np.argmax(sizes)) + 1) if n else np.zeros_like(fg)
    return kept, largest, sizes.astype(np.int64)


@task("test_remote.components", description="threshold, connected components, drop small ones")
def _components(ctx, image, params, inputs):
    ctx.progress(0.1, "threshold")
    roi = inputs.get("roi")
    if roi is not None and roi.shape != image.shape:
        raise InputError(f"roi has shape {roi.shape} but the image has shape {image.shape}")
    kept, largest, sizes = components(image.array, float(params["t"]), int(params.get("min_size", 1)),
                                      None if roi is None else roi.astype(bool))
    ctx.progress(0.6, "labelled")
    ctx.check_cancelled()
    ctx.progress(1.0, "kept")
    return JobResult(masks={"kept": kept, "largest": largest}, arrays={"sizes": sizes},
                     info={"n": int(len(sizes)), "t": params["t"], "weights_sum": float(
                         inputs["weights"].sum()) if "weights" in inputs else None})


@task("test_remote.slow", needs_image=False)
def _slow(ctx, image, params, inputs):
    n = int(params.get("steps", 40))
    for i in range(n):
        time.sleep(0.05)
        ctx.progress((i + 1) / n, f"step {i + 1}/{n}")
    return JobResult(info={"steps": n})


@task("test_remote.gate", needs_image=False)
def _gate_task(ctx, image, params, inputs):
    while not _gate.wait(0.02):
        ctx.check_cancelled()
    return JobResult(info={"gated": True})


@task("test_remote.record", needs_image=False)
def _record(ctx, image, params, inputs):
    _ran.append(params["name"])
    return JobResult(info={"name": params["name"]})


@task("test_remote.oom", needs_image=False)
def _oom(ctx, image, params, inputs):
    raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")


@pytest.fixture(scope="module")
def srv():
    s = start_in_thread(ServerConfig(port=0, api_key=KEY, device="cpu", max_sessions=12, max_upload_mb=1.0,
                                     lease_ttl=30.0))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def rb(srv):
    c = RemoteBackend(srv.url, api_key=KEY, client_name="pytest")
    yield c
    c.close()


def _volume(seed: int, shape=(24, 28, 20)) -> Volume:
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.normal(size=shape), 1.5).astype(np.float32) * 100
    return Volume(a, (0.8, 0.9, 2.5), (10.0, -20.0, 5.0), name=f"vol{seed}")


def _crafted(meta, entry, blob) -> bytes:
    """A hand-made payload (what a buggy or hostile client might send)."""
    import json
    import struct

    header = json.dumps({"meta": meta, "arrays": [entry]}).encode()
    return struct.pack("<4sBI", b"MSSW", 1, len(header)) + header + blob


def _raw(srv, method, path, key=KEY, session=None, **kw):
    headers = kw.pop("headers", {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if session:
        headers[P.SESSION_HEADER] = session
    return httpx.request(method, srv.url + P.PREFIX + path, headers=headers, timeout=30, **kw)


def test_local_and_remote_results_are_identical(srv, rb):
    v = _volume(1)
    roi = np.zeros(v.shape, bool)
    roi[3:20, 5:25, 2:18] = True
    inputs = {"roi": roi, "weights": np.linspace(0, 1, 7, dtype=np.float32)}
    params = {"t": 5.0, "min_size": 4}
    with LocalBackend("cpu") as lb:
        local = run_job(lb, "test_remote.components", v, params, inputs, timeout=30)
    events = []
    remote = run_job(rb, "test_remote.components", v, params, inputs, on_event=events.append, timeout=30)
    assert set(remote.masks) == {"kept", "largest"}
    for k in local.masks:
        assert remote.masks[k].dtype == local.masks[k].dtype and remote.masks[k].shape == v.shape
        assert np.array_equal(remote.masks[k], local.masks[k]), k
    assert remote.masks["kept"].any() and not remote.masks["kept"][~roi].any()
    assert np.array_equal(remote.arrays["sizes"], local.arrays["sizes"])
    assert remote.info == local.info and remote.info["weights_sum"] == pytest.approx(3.5)
    assert [e.message for e in events] == ["queued", "started", "threshold", "labelled", "kept", "done"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)


def test_image_is_uploaded_once_and_reused_by_id(srv, rb):
    v = _volume(2)
    before = dict(rb.stats)
    image_id = rb.set_image(v)
    upload = rb.stats["bytes_sent"] - before["bytes_sent"]
    assert image_id == v.fingerprint() and upload > v.array.nbytes // 4
    assert rb.set_image(Volume(v.array.copy(), v.spacing, v.origin)) == image_id
    assert rb.stats["requests"] == before["requests"] + 2  # attach (404) + upload; the second set is free
    # another client holding the same image sends its fingerprint, not the pixels
    with RemoteBackend(srv.url, api_key=KEY, heartbeat=False) as other:
        s0 = other.stats["bytes_sent"]
        assert other.set_image(v) == image_id
        assert other.stats["bytes_sent"] - s0 < 2000
    r = _raw(srv, "GET", f"/images/{image_id}", session=rb.session_id)
    assert r.status_code == 200 and r.json()["geometry"]["shape"] == list(v.shape)
    rb.release_image(image_id)
    assert image_id not in srv.state.backend.images


def test_missing_or_wrong_key_is_refused_and_nothing_runs(srv, rb):
    jobs_before = len(srv.state.backend.worker.jobs)
    body = wire.pack({"task": "test_remote.record", "image_id": None, "params": {"name": "intruder"}})
    for key, status, code in ((None, 401, P.E_AUTH_MISSING), ("wrong-key-0123456789", 403, P.E_AUTH_WRONG)):
        r = _raw(srv, "POST", "/jobs", key=key, session=rb.session_id, content=body)
        assert r.status_code == status and r.json()["error"] == code
        assert KEY not in r.text
        assert _raw(srv, "GET", "/handshake", key=key).status_code == status
        assert _raw(srv, "POST", "/sessions", key=key, headers={P.API_HEADER: P.API_VERSION}).status_code == status
    time.sleep(0.2)
    assert "intruder" not in _ran and len(srv.state.backend.worker.jobs) == jobs_before
    with pytest.raises(AuthError, match="refused"):
        RemoteBackend(srv.url, api_key="wrong-key-0123456789")
    with pytest.raises(AuthError, match="needs an API key"):
        RemoteBackend(srv.url)
    # the right key, through the CLI's own path (--server + MEDSEGSUITE_API_KEY)
    assert _raw(srv, "GET", "/health", key=None).status_code == 200


def test_cli_backend_options_reach_the_server(srv, monkeypatch, tmp_path):
    import argparse

    from medsegsuite.cli.common import add_backend_options, make_backend

    p = argparse.ArgumentParser()
    add_backend_options(p)
    monkeypatch.setenv("MEDSEGSUITE_API_KEY", KEY)
    b = make_backend(p.parse_args(["--server", srv.url, "--threads", "2"]))
    try:
        assert isinstance(b, RemoteBackend) and b.handshake()["device"] == "cpu"
        r = run_job(b, "test_remote.record", None, {"name": "cli"}, timeout=30)
        assert r.info == {"name": "cli"}
    finally:
        b.close()
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY + "\n")
    monkeypatch.delenv("MEDSEGSUITE_API_KEY")
    assert read_api_key(str(keyfile)) == KEY and read_api_key(None) is None
    with pytest.raises(InputError, match="does not exist"):
        read_api_key(str(tmp_path / "missing"))


def test_bad_payloads_get_4xx_and_the_server_stays_alive(srv, rb):
    sid = rb.session_id
    v = _volume(3)
    good_id = rb.set_image(v)

    def put(image_id, body):
        return _raw(srv, "PUT", f"/images/{image_id}", session=sid, content=body)

    geom = v.geometry.to_dict()
    cases = {
        "garbage": put(good_id, b"not an array message at all"),
        "wrong dtype": put("x" * 32, _crafted({"geometry": geom}, {"name": "image", "dtype": "object", "shape": [2],
                                                                  "codec": "raw", "start": 0, "length": 16}, b"\0" * 16)),
        "nan": put("x" * 32, wire.pack({"geometry": {**geom, "shape": [2, 2, 2]}},
                                       {"image": np.full((2, 2, 2), np.nan, np.float32)})),
        "shape vs geometry": put("x" * 32, wire.pack({"geometry": {**geom, "shape": [9, 9, 9]}}, {"image": v.array})),
        "bad direction": put("x" * 32, wire.pack({"geometry": {**geom, "direction": [[2, 0, 0], [0, 1, 0], [0, 0, 1]]}},
                                                 {"image": v.array})),
        "2-D image": put("x" * 32, wire.pack({"geometry": geom}, {"image": v.array[0]})),
        "fingerprint": put("0" * 32, wire.pack({"geometry": geom}, {"image": v.array})),
        "nan input": _raw(srv, "POST", "/jobs", session=sid, content=wire.pack(
            {"task": "test_remote.components", "image_id": good_id, "params": {"t": 1}},
            {"weights": np.array([np.nan], np.float32)})),
        "unknown task": _raw(srv, "POST", "/jobs", session=sid, content=wire.pack({"task": "no.such", "params": {}})),
        "meta types": _raw(srv, "POST", "/jobs", session=sid, content=wire.pack({"task": 5, "params": []})),
        "bad query": _raw(srv, "GET", "/jobs/abc/events", session=sid, params={"since": "x"}),
        "no session": _raw(srv, "POST", "/jobs", content=wire.pack({"task": "test_remote.record", "params": {}})),
    }
    expect = {"garbage": "bad magic", "wrong dtype": "dtype 'object'", "nan": "NaN", "shape vs geometry": "does not match",
              "bad direction": "orthonormal", "2-D image": "does not match", "fingerprint": "fingerprint",
              "nan input": "NaN", "unknown task": "unknown task",
              "meta types": "a job needs", "bad query": "since", "no session": "needs a session"}
    for name, r in cases.items():
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        assert expect[name] in r.json()["message"], (name, r.json())
    # oversized: refused with 413 (the limit here is 1 MiB), by the server and already by the client
    big = Volume(np.random.default_rng(0).normal(size=(64, 64, 80)).astype(np.float32))  # 1.25 MiB of noise
    r = put(big.fingerprint(), wire.pack({"geometry": big.geometry.to_dict()}, {"image": big.array}))
    assert r.status_code == 413 and "--max-upload-mb" in r.json()["message"]
    with pytest.raises(InputError, match="upload limit"):
        rb.set_image(big)
    # an input off the image grid: the task refuses it, the job fails with its message
    job = rb.start_job("test_remote.components", good_id, {"t": 1}, {"roi": np.ones((5, 5, 5), bool)})
    assert rb.wait(job, timeout=30) == JobState.FAILED
    with pytest.raises(JobFailed, match=r"roi has shape \(5, 5, 5\)"):
        rb.result(job)
    # alive and serving afterwards
    assert _raw(srv, "GET", "/health", key=None).json()["status"] == "ok"
    res = run_job(rb, "test_remote.components", v, {"t": 5.0}, timeout=30)
    assert np.array_equal(res.masks["kept"], components(v.array, 5.0, 1)[0])


def test_eight_concurrent_clients_get_their_own_results(srv):
    n_clients, n_jobs = 8, 3
    out, errors = {}, []

    def client(c):
        try:
            with RemoteBackend(srv.url, api_key=KEY, client_name=f"c{c}") as b:
                v = _volume(100 + c)
                image_id = b.set_image(v)
                jobs = [(b.start_job("test_remote.components", image_id, {"t": 2.0 * j, "min_size": 2}), j)
                        for j in range(n_jobs)]
                for job, j in jobs:
                    assert b.wait(job, timeout=60) == JobState.DONE
                    out[(c, j)] = (job, v, b.result(job))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(out) == n_clients * n_jobs and len({job for job, _, _ in out.values()}) == n_clients * n_jobs
    for (c, j), (job, v, res) in out.items():
        kept, largest, sizes = components(v.array, 2.0 * j, 2)
        assert np.array_equal(res.masks["kept"], kept) and np.array_equal(res.masks["largest"], largest), (c, j)
        assert np.array_equal(res.arrays["sizes"], sizes) and res.info["t"] == 2.0 * j


def test_jobs_are_private_to_their_session(srv, rb):
    job = rb.start_job("test_remote.record", None, {"name": "mine"})
    rb.wait(job, timeout=30)
    with RemoteBackend(srv.url, api_key=KEY, heartbeat=False) as other:
        r = _raw(srv, "GET", f"/jobs/{job}/result", session=other.session_id)
        assert r.status_code == 404 and r.json()["error"] == P.E_JOB_UNKNOWN
    assert rb.result(job).info == {"name": "mine"}


def test_cancel_works_remotely(srv, rb):
    job = rb.start_job("test_remote.slow", None, {"steps": 200})
    seen = []
    deadline = time.time() + 20
    while not any(e.message.startswith("step") for e in seen) and time.time() < deadline:
        seen += rb.events(job, seen[-1].seq if seen else 0, wait=2.0)
    assert any(e.state == JobState.RUNNING for e in seen)
    t0 = time.time()
    rb.cancel(job)
    assert rb.wait(job, timeout=10) == JobState.CANCELLED
    assert time.time() - t0 < 2.0  # stopped at the next cancel check, not after 10 s of steps
    with pytest.raises(JobFailed) as e:
        rb.result(job)
    assert e.value.state == JobState.CANCELLED
    # a queued job cancelled before it starts never runs
    _gate.clear()
    blocker = rb.start_job("test_remote.gate", None, {})
    queued = rb.start_job("test_remote.record", None, {"name": "cancelled-in-queue"})
    rb.cancel(queued)
    _gate.set()
    assert rb.wait(blocker, timeout=10) == JobState.DONE
    assert rb.wait(queued, timeout=10) == JobState.CANCELLED and "cancelled-in-queue" not in _ran


def test_out_of_memory_is_a_clear_failure_and_the_server_keeps_serving(srv, rb):
    job = rb.start_job("test_remote.oom", None, {})
    assert rb.wait(job, timeout=30) == JobState.FAILED
    with pytest.raises(JobFailed, match="out of memory on cpu"):
        rb.result(job)
    assert run_job(rb, "test_remote.record", None, {"name": "after-oom"}, timeout=30).info["name"] == "after-oom"


def test_version_mismatch_is_a_clear_message(srv):
    class FutureClient(RemoteBackend):
        api_version = "2.0"

    with pytest.raises(VersionMismatch, match=r"speaks API 1\.0 .* install the same major version"):
        FutureClient(srv.url, api_key=KEY)
    r = _raw(srv, "POST", "/sessions", headers={P.API_HEADER: "2.0"})
    assert r.status_code == 426 and r.json()["error"] == P.E_VERSION and "same major version" in r.json()["message"]


def test_handshake_and_connection_state_for_the_hub_panel(srv, rb):
    from medsegsuite.engine import Backend

    assert isinstance(rb, Backend)  # the same interface panels use for LocalBackend
    h = rb.handshake()
    assert h["api_version"] == P.API_VERSION and h["device"] == "cpu" and h["device_name"].startswith("CPU")
    assert "test_remote.components" in h["tasks"] and "jobs.cancel" in h["capabilities"]
    st = rb.connection_state()
    assert st["state"] == "connected" and st["device_name"] == h["device_name"] and st["url"] == srv.url
    p = rb.ping()
    assert p["ok"] and p["latency_ms"] < 2000
    assert KEY not in repr(rb)


# -- leases and restarts: a server of their own with a short lease -----------------------------------
@pytest.fixture(scope="module")
def short():
    s = start_in_thread(ServerConfig(port=0, device="cpu", max_sessions=2, lease_ttl=2.0))
    yield s
    s.stop()


def test_a_lease_that_stops_heartbeating_is_released(short):
    alive = RemoteBackend(short.url, client_name="alive")
    gone = RemoteBackend(short.url, client_name="gone")
    try:
        v = _volume(7)
        image_id = gone.set_image(v)
        _gate.clear()
        blocker = alive.start_job("test_remote.gate", None, {})
        queued = gone.start_job("test_remote.components", image_id, {"t": 1.0})
        with pytest.raises(ServerBusy, match="--max-sessions 2"):
            RemoteBackend(short.url)
        gone.stop_heartbeat()
        sessions = short.state.sessions
        deadline = time.time() + 10
        while gone.session_id in sessions.sessions and time.time() < deadline:
            time.sleep(0.1)
        assert gone.session_id not in sessions.sessions, "the lease was never released"
        assert alive.session_id in sessions.sessions  # heart-beating client survives the same wait
        assert image_id not in short.state.backend.images  # its image memory is freed ...
        job = short.state.backend.worker.jobs[queued]
        assert job.state == JobState.CANCELLED  # ... and its queued job cancelled
        with pytest.raises(SessionLost, match="lease expired"):
            gone.wait(queued, timeout=5)
        _gate.set()
        assert alive.wait(blocker, timeout=10) == JobState.DONE
        # the next job of the lapsed client reconnects and re-uploads by itself
        res = run_job(gone, "test_remote.components", v, {"t": 1.0}, timeout=30)
        assert np.array_equal(res.masks["kept"], components(v.array, 1.0, 1)[0])
    finally:
        _gate.set()
        alive.close()
        gone.close()


def test_server_restart_gives_a_clear_reconnect_message(short):
    url = short.url
    rb = RemoteBackend(url)
    strict = RemoteBackend(url, auto_reconnect=False)
    try:
        v = _volume(8)
        image_id = rb.set_image(v)
        strict.set_image(v)
        job = rb.start_job("test_remote.slow", None, {"steps": 100})
        short.stop()
        with pytest.raises(Exception) as down:
            rb.state(job)
        assert "cannot reach the medsegsuite server" in str(down.value)
        assert rb.connection_state()["state"] == "disconnected"
        restarted = start_in_thread(ServerConfig(port=short.config.port, device="cpu", max_sessions=2, lease_ttl=2.0))
        try:
            with pytest.raises(SessionLost, match=r"job .* was lost: .*server restarted.*reconnect"):
                rb.wait(job, timeout=10)
            assert rb.connection_state()["state"] == "session lost"
            p = rb.ping()  # what the hub panel's timer sees
            assert not p["ok"] and p["state"] == "session lost" and "restarted" in p["error"]
            with pytest.raises(SessionLost, match="server restarted"):
                strict.start_job("test_remote.components", image_id, {"t": 0.0})
            res = run_job(rb, "test_remote.components", v, {"t": 0.0}, timeout=30)  # reconnects, re-uploads
            assert np.array_equal(res.masks["kept"], components(v.array, 0.0, 1)[0])
            assert rb.connection_state()["state"] == "connected"
        finally:
            restarted.stop()
    finally:
        rb.close()
        strict.close()


def test_serve_refuses_a_network_bind_without_a_key(capsys, monkeypatch):
    from medsegsuite.cli import main

    monkeypatch.delenv("MEDSEGSUITE_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "--users-file" in text and "Slicer" in text and "--server https://gpu-box:8765" in text
