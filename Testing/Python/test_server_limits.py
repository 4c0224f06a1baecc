"""Issue 14, resource attacks and transport: small requests that would exhaust memory, one client that
locks everyone out, slow or half-open connections, deep JSON, restarts, and TLS. Loopback only."""
import functools
import json
import os
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from medsegsuite import protocol as P
from medsegsuite.client import RemoteBackend, ServerBusy, SessionLost
from medsegsuite.engine import JobResult, JobState, task
from medsegsuite.engine.interface import run_job
from medsegsuite.errors import InputError
from medsegsuite.server import ServerConfig, start_in_thread
from medsegsuite.server.users import UserStore
from medsegsuite.volume import Volume
from server_http import raw  # noqa: E402

_release = threading.Event()


@task("test_lim.hold", needs_image=False, description="test-only: runs until released or cancelled", params=[])
def _hold(ctx, image, params, inputs):
    while not _release.wait(0.02):
        ctx.check_cancelled()
    return JobResult(info={"n_inputs": len(inputs)})


@task("test_lim.echo", needs_image=False, description="test-only: sums its inputs", params=[])
def _echo(ctx, image, params, inputs):
    return JobResult(info={"sum": float(sum(float(np.asarray(v).sum()) for v in inputs.values()))})


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    f = tmp_path_factory.mktemp("users") / "users.json"
    store = UserStore(f)
    return f, {"a": store.add("user-a", "clinician"), "b": store.add("user-b", "clinician")}


@pytest.fixture(scope="module")
def srv(keys):
    s = start_in_thread(ServerConfig(port=0, device="cpu", users_file=str(keys[0]), lease_ttl=120.0,
                                     max_upload_mb=4.0, max_request_mb=32.0, max_session_mb=24.0,
                                     max_image_voxels=4_000_000, max_sessions=8, max_sessions_per_user=2,
                                     max_longpolls_per_user=3, job_time_limit=1.0, header_timeout=1.0,
                                     body_timeout=1.0))
    yield s
    s.stop()


_raw = raw


@functools.lru_cache(maxsize=4)
def _zeros_blob(n: int) -> bytes:
    c = zlib.compressobj(9)
    chunk = bytes(min(n, 16 * 2**20))
    return b"".join(c.compress(chunk) for _ in range(n // len(chunk))) + c.compress(bytes(n % len(chunk))) + c.flush()


def _zero_bomb(name: str, shape, dtype="float32") -> tuple[dict, bytes]:
    """A zlib stream of zeros: ~1/1000 of the size it would inflate to."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return {"name": name, "dtype": dtype, "shape": list(shape), "codec": "zlib"}, _zeros_blob(n)


def _body(meta: dict, arrays: list) -> bytes:
    entries, blobs, pos = [], [], 0
    for entry, blob in arrays:
        entries.append({**entry, "start": pos, "length": len(blob)})
        blobs.append(blob)
        pos += len(blob)
    header = json.dumps({"meta": meta, "arrays": entries}).encode()
    return struct.pack("<4sBI", b"MSSW", 1, len(header)) + header + b"".join(blobs)


def test_a_small_upload_cannot_become_a_huge_image(srv, keys):
    """The issue's 509 KiB that inflated to 512 MiB, at this test server's scale (64 KiB -> 64 MiB against
    a 4 M-voxel, 32 MiB budget): refused from its declared size, before anything is allocated."""
    with RemoteBackend(srv.url, api_key=keys[1]["a"], heartbeat=False) as c:
        shape = (256, 256, 256)
        entry, blob = _zero_bomb("image", shape, "float32")
        assert len(blob) < 100 * 1024
        geom = Volume(np.zeros((2, 2, 2), np.float32)).geometry.to_dict()
        geom["shape"] = list(shape)
        rss0 = _rss_mib()
        r = _raw(srv, "PUT", "/images/" + "0" * 32, key=keys[1]["a"], session=c.session_id,
                 content=_body({"geometry": geom}, [(entry, blob)]))
        assert r.status_code == 413 and r.json()["error"] == P.E_TOO_LARGE
        assert "voxels" in r.json()["message"] or "MiB" in r.json()["message"]
        assert _rss_mib() - rss0 < 100


def test_a_small_job_body_cannot_allocate_gigabytes(srv, keys):
    """A 2 MiB job body whose arrays add up to 2 GiB: refused against the request budget."""
    with RemoteBackend(srv.url, api_key=keys[1]["a"], heartbeat=False) as c:
        parts = [_zero_bomb(f"x{i}", (64, 1024, 1024), "uint8") for i in range(32)]
        body = _body({"task": "test_lim.echo", "image_id": None, "params": {}}, parts)
        assert len(body) < 2.5 * 2**20
        rss0 = _rss_mib()
        r = _raw(srv, "POST", "/jobs", key=keys[1]["a"], session=c.session_id, content=body)
        assert r.status_code == 413 and "--max-request-mb" in r.json()["message"]
        assert _rss_mib() - rss0 < 100


def test_a_session_has_a_memory_budget(srv, keys):
    """Images a session holds stay within its budget: the oldest idle one makes room, and one image
    over the whole budget is refused (compressible synthetic volumes: small on the wire, big in memory)."""
    def vol(i, shape=(80, 80, 300), dtype=np.float32):
        a = np.zeros(shape, dtype)
        a[i, 0, 0] = 1  # a distinct fingerprint
        return Volume(a)

    with RemoteBackend(srv.url, api_key=keys[1]["a"], heartbeat=False) as c:
        ids = [c.set_image(vol(i)) for i in range(4)]  # 7.3 MiB each, budget 24 MiB
        held = srv.state.sessions.sessions[c.session_id].images
        assert ids[0] not in held and all(i in held for i in ids[1:])
        assert sum(srv.state.backend.images[i].array.nbytes for i in held) <= 24 * 2**20
        with pytest.raises(InputError, match="budget"):
            c.set_image(vol(0, (100, 100, 350), np.float64))  # 26.7 MiB alone


def test_one_user_cannot_hold_every_session(srv, keys):
    a, b = keys[1]["a"], keys[1]["b"]
    mine = [RemoteBackend(srv.url, api_key=a, heartbeat=False) for _ in range(2)]
    try:
        with pytest.raises(ServerBusy, match="sessions"):
            RemoteBackend(srv.url, api_key=a, heartbeat=False)
        with RemoteBackend(srv.url, api_key=b, heartbeat=False) as other:  # another user still gets in
            assert other.session_id
    finally:
        for m in mine:
            m.close()


def test_one_user_cannot_hold_every_long_poll(srv, keys, monkeypatch):
    _release.clear()
    monkeypatch.setattr(srv.state.sessions, "job_time_limit", None)  # the job must outlive the polls
    with RemoteBackend(srv.url, api_key=keys[1]["a"], heartbeat=False) as c:
        job = c.start_job("test_lim.hold", None, {})
        statuses = []

        def poll():
            statuses.append(_raw(srv, "GET", f"/jobs/{job}/events", key=keys[1]["a"], session=c.session_id,
                                 params={"wait": 3.0, "since": 99}).status_code)

        threads = [threading.Thread(target=poll) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert statuses.count(429) >= 3 and statuses.count(200) >= 1
        _release.set()
        assert c.wait(job, timeout=10) in (JobState.DONE, JobState.CANCELLED)


def test_a_job_has_a_time_limit_and_its_inputs_are_freed(srv, keys):
    _release.clear()
    with RemoteBackend(srv.url, api_key=keys[1]["a"], heartbeat=False) as c:
        job = c.start_job("test_lim.hold", None, {}, {"big": np.ones(2**20, np.float32)})
        assert c.wait(job, timeout=20) == JobState.CANCELLED
        with pytest.raises(Exception, match="time limit"):
            c.result(job)
        assert srv.state.backend.worker.jobs[job].inputs == {}
        done = c.start_job("test_lim.echo", None, {}, {"x": np.ones(10, np.float32)})
        assert c.wait(done, timeout=20) == JobState.DONE and c.result(done).info["sum"] == 10.0
        assert srv.state.backend.worker.jobs[done].inputs == {}
    _release.set()


def test_deep_json_is_a_400_not_a_500(srv, keys):
    with RemoteBackend(srv.url, api_key=keys[1]["a"], heartbeat=False) as c:
        deep = b"[" * 200_000 + b"]" * 200_000
        header = b'{"meta": {"task": "test_lim.echo", "params": {"x": ' + deep + b'}}, "arrays": []}'
        body = struct.pack("<4sBI", b"MSSW", 1, len(header)) + header
        r = _raw(srv, "POST", "/jobs", key=keys[1]["a"], session=c.session_id, content=body)
        assert r.status_code == 400 and "nested" in r.json()["message"]
        assert _raw(srv, "GET", "/health").status_code == 200


def _held_for(sock: socket.socket, limit: float = 8.0) -> tuple[float, bytes]:
    """Seconds until the server closes ``sock`` (reading whatever it answers), and the answer."""
    sock.settimeout(limit)
    t0, got = time.time(), b""
    try:
        while True:
            x = sock.recv(4096)
            if not x:
                break
            got += x
    except (TimeoutError, ConnectionResetError):
        pass
    sock.close()
    return time.time() - t0, got


def test_half_open_and_slow_connections_are_closed(srv, keys):
    """A connection that says nothing, one that never finishes its headers, and one that never finishes
    its body are closed after the server's timeouts (1 s here), not held."""
    with RemoteBackend(srv.url, api_key=keys[1]["a"], heartbeat=False) as c:
        addr = ("127.0.0.1", srv.config.port)
        idle = socket.create_connection(addr)
        slow = socket.create_connection(addr)
        slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        body = socket.create_connection(addr)
        body.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {keys[1]['a']}\r\n"
                     f"{P.SESSION_HEADER}: {c.session_id}\r\nContent-Length: 100000\r\n\r\n".encode()
                     + b"x" * 10)  # body never finished
        results = [_held_for(s) for s in (idle, slow, body)]
    assert all(t < 5 for t, _ in results), [t for t, _ in results]
    assert results[0][1] == b"" and results[1][1] == b""
    assert b" 408 " in results[2][1].split(b"\r\n")[0]


def test_after_a_restart_wait_raises_session_lost(tmp_path):
    s = start_in_thread(ServerConfig(port=0, device="cpu", lease_ttl=30.0))
    port = s.config.port
    _release.clear()
    c = RemoteBackend(s.url, heartbeat=False)
    try:
        job = c.start_job("test_lim.hold", None, {})
        s.stop()
        box = {}

        def waiter():
            try:
                c.wait(job, timeout=20)
            except Exception as e:
                box["e"] = e

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.5)
        s2 = start_in_thread(ServerConfig(port=port, device="cpu", lease_ttl=30.0))
        try:
            t.join(25)
            assert isinstance(box.get("e"), SessionLost) and "restarted" in str(box["e"])
        finally:
            s2.stop()
    finally:
        _release.set()
        c.close()


# -- 5. TLS by default off loopback ---------------------------------------------------------------
def test_a_network_bind_needs_tls_or_a_loud_insecure_flag(tmp_path, capsys, monkeypatch):
    from medsegsuite.cli import main

    f = tmp_path / "users.json"
    UserStore(f).add("admin", "admin")
    monkeypatch.setenv("MEDSEGSUITE_HOME", str(tmp_path / "home"))
    assert main(["serve", "--host", "0.0.0.0", "--port", "1", "--users-file", str(f)]) == 2
    assert "TLS" in capsys.readouterr().err
    cfg = ServerConfig(host="0.0.0.0", users_file=str(f), insecure_http=True)
    cfg.check_bind()  # allowed, with a warning
    with pytest.raises(InputError, match="key"):
        ServerConfig(host="0.0.0.0", insecure_http=True).check_bind()
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "https://" in text and "--self-signed" in text and "--host 0.0.0.0 --port 8765 --api-key-file" not in text


def test_self_signed_tls_round_trip_and_the_client_verifies(tmp_path):
    from medsegsuite.server.tls import make_self_signed

    cert, key = make_self_signed(tmp_path, ["localhost", "127.0.0.1"])
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    s = start_in_thread(ServerConfig(port=0, device="cpu", ssl_certfile=str(cert), ssl_keyfile=str(key)))
    try:
        assert s.url.startswith("https://")
        with pytest.raises(Exception, match="certificate"):
            RemoteBackend(s.url, heartbeat=False)  # an unknown certificate is not trusted
        with RemoteBackend(s.url, heartbeat=False, verify=str(cert)) as c:
            assert run_job(c, "test_lim.echo", None, {}, {"x": np.ones(3, np.float32)}, timeout=30).info["sum"] == 3.0
    finally:
        s.stop()


def test_the_client_defaults_to_https():
    from medsegsuite.client.remote import normalize_url

    assert normalize_url("gpu-box:8765") == "https://gpu-box:8765"
    assert normalize_url("127.0.0.1:8765") == "http://127.0.0.1:8765"
    assert normalize_url("localhost:8765") == "http://localhost:8765"
    assert normalize_url("http://gpu-box:8765/") == "http://gpu-box:8765"
