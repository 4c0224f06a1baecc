"""Issue 14, attacks by a key holder: each test is one attack from the issue, and each expects a clear
4xx (or a refusal at start) with nothing written, read or leaked. Servers bind 127.0.0.1 only."""
import json
import os
import stat
import time

import httpx
import numpy as np
import pytest
from medsegsuite import protocol as P
from medsegsuite.client import AuthError, RemoteBackend
from medsegsuite.client.errors import RemoteError
from medsegsuite.engine import JobResult, task
from medsegsuite.engine.interface import run_job
from medsegsuite.engine.schema import Param
from medsegsuite.errors import InputError
from medsegsuite.server import ServerConfig, start_in_thread
from medsegsuite.server.users import UserStore
from medsegsuite.volume import Volume
from server_http import raw  # noqa: E402

_ran = []


@task("test_sec.model", needs_image=False, description="test-only: names a model",
      params=[Param("model", "model", "liver-source")])
def _model_task(ctx, image, params, inputs):
    _ran.append(params["model"])
    return JobResult(info={"model": params["model"]})


@task("test_sec.train", needs_image=False, description="test-only: a training-role task", role="annotator",
      params=[Param("name", "str", "x")])
def _train_task(ctx, image, params, inputs):
    _ran.append("train:" + params["name"])
    return JobResult(info={"trained": params["name"]})


@task("test_sec.seg", description="test-only: thresholds its image", params=[])
def _seg_task(ctx, image, params, inputs):
    return JobResult(masks={"fg": image.array > 0})


@pytest.fixture(scope="module")
def users(tmp_path_factory):
    d = tmp_path_factory.mktemp("users")
    store = UserStore(d / "users.json")
    keys = {role: store.add(f"dr-{role}", role) for role in ("clinician", "annotator", "admin")}
    keys["revoked"] = store.add("gone", "admin")
    store.revoke("gone")
    return d / "users.json", keys


@pytest.fixture(scope="module")
def srv(users, tmp_path_factory):
    audit = tmp_path_factory.mktemp("audit") / "audit.log"
    s = start_in_thread(ServerConfig(port=0, device="cpu", users_file=str(users[0]), audit_log=str(audit),
                                     lease_ttl=120.0, dyna_queue=False))
    yield s
    s.stop()


def _client(srv, key, **kw):
    return RemoteBackend(srv.url, api_key=key, heartbeat=False, **kw)


_raw = raw


# -- 1. no file-system path crosses the API -------------------------------------------------------
def test_a_model_is_a_registry_id_and_errors_do_not_say_whether_a_file_exists(srv, users, tmp_path, monkeypatch):
    """'model', 'init_model', 'backbone_checkpoint' name registry entries only: a bare file name in the
    server's working directory is not opened, and an existing and a missing name get the same answer."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret").write_bytes(b"patient list")
    _ran.clear()
    with _client(srv, users[1]["admin"]) as c:
        answers = []
        for name in ("secret", "nosuch"):
            with pytest.raises(InputError) as e:
                c.start_job("test_sec.model", None, {"model": name})
            answers.append(str(e.value).replace(name, "NAME"))
        assert answers[0] == answers[1] and "not a model on this server" in answers[0]
        assert "exist" not in answers[0]
        assert run_job(c, "test_sec.model", None, {"model": "liver-source"}, timeout=30).info["model"] == "liver-source"
    assert _ran == ["liver-source"]


@pytest.mark.parametrize("task_name, params", [
    ("cosam.train", {"embedding_cache": "/tmp/x.pt"}),
    ("dyna.night", {"model": "liver-source", "out": "/tmp/night.pt"}),
    ("dyna.night", {"model": "liver-source", "cases": "/etc"}),
    ("scribble.train", {"classes": ["a"], "init_model": "/etc/passwd"}),
    ("cosam.segment", {"model": "../resources/models/liver.pt"}),
])
def test_no_task_takes_a_server_path(srv, users, task_name, params):
    """Every task's schema refuses a file path from a client, whatever the caller's role."""
    with _client(srv, users[1]["admin"]) as c:
        image_id = c.set_image(Volume(np.ones((4, 5, 6), np.float32)))
        with pytest.raises(InputError, match="server"):
            c.start_job(task_name, image_id, params)


def test_every_file_parameter_is_in_process_only():
    """No task a server offers has a parameter of type 'path' that a server would accept."""
    from medsegsuite.engine.tasks import available_tasks

    for name, spec in available_tasks().items():
        for p in (spec.schema.params if spec.schema else ()):
            if p.type == "path":
                with pytest.raises(InputError):
                    p.coerce("/etc/passwd", allow_paths=False)
                with pytest.raises(InputError):
                    p.coerce("passwd", allow_paths=False)


def test_the_cache_key_of_an_image_is_not_a_client_parameter(srv, users):
    """No task takes an image id: the server fingerprints the job's image itself."""
    from medsegsuite.engine.tasks import available_tasks

    for name, spec in available_tasks().items():
        assert "image_id" not in (spec.schema.names if spec.schema else []), name
    with _client(srv, users[1]["clinician"]) as c:
        image_id = c.set_image(Volume(np.ones((4, 5, 6), np.float32)))
        with pytest.raises(InputError, match="unknown parameter"):
            c.start_job("sam.oracle_box", image_id, {"image_id": "0" * 32})


def test_a_tta_stream_is_private_to_its_client(srv, users):
    """Two clients using the same stream name adapt separately (the shared stream let one client's
    images steer another's adaptation), and a client's stream goes when its session ends."""
    rng = np.random.default_rng(0)
    v = Volume(rng.normal(size=(48, 48, 2)).astype(np.float32) * 50, (1.5, 1.5, 3.0), name="synthetic")
    params = {"model": "liver-source", "method": "tent", "stream": "ward-a", "slices": [0]}
    cache = srv.state.backend.caches.models

    def streams():
        with cache._lock:
            return {k: v for k, v in cache._items.items() if isinstance(k, tuple) and k[0] == "tta-stream"}

    with _client(srv, users[1]["clinician"]) as a, _client(srv, users[1]["annotator"]) as b:
        for c in (a, b):
            assert run_job(c, "tta.adapt", v, params, timeout=120).info["stream"] == "ward-a"
        mine = {k[1]: adapter for k, adapter in streams().items()}
        assert set(mine) == {("client", a.session_id), ("client", b.session_id)}
        assert mine[("client", a.session_id)] is not mine[("client", b.session_id)]
        a_sid = a.session_id
    assert not any(k[1] == ("client", a_sid) for k in streams())


# -- 2. people, not one key ------------------------------------------------------------------------
def test_keys_are_stored_hashed_and_printed_once(users, capsys, tmp_path):
    path, keys = users
    text = path.read_text()
    assert not any(k in text for k in keys.values())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    from medsegsuite.cli import main

    f = tmp_path / "u.json"
    assert main(["users", "add", "alice", "--role", "annotator", "--users-file", str(f)]) == 0
    out = capsys.readouterr().out
    key = next(w for w in out.split() if w.startswith("mss_"))
    assert key not in f.read_text()
    assert main(["users", "list", "--users-file", str(f)]) == 0
    listed = capsys.readouterr().out
    assert "alice" in listed and "annotator" in listed and key not in listed
    assert UserStore(f).authenticate(key).name == "alice"
    assert main(["users", "revoke", "alice", "--users-file", str(f)]) == 0
    assert UserStore(f).authenticate(key) is None
    assert main(["users", "add", "bad\nname", "--role", "admin", "--users-file", str(f)]) == 2


def test_roles_are_enforced_on_tasks_and_endpoints(srv, users, tmp_path):
    _ran.clear()
    keys = users[1]
    with _client(srv, keys["clinician"]) as c:
        with pytest.raises(AuthError, match="annotator"):
            c.start_job("test_sec.train", None, {"name": "by-clinician"})
        with pytest.raises(AuthError, match="admin"):
            c.start_job("dyna.use", None, {"model": "liver-source", "version": "liver-source"})
        f = tmp_path / "m.pt"
        import torch
        from medsegsuite.models.checkpoints import save_checkpoint

        save_checkpoint(f, "test-arch", {"w": torch.ones(2)}, {"structures": ["x"]})
        with pytest.raises(AuthError, match="admin"):
            c.import_model(f, "clinician-model")
        assert not any(m["id"] == "clinician-model" for m in c.list_models())
    with _client(srv, keys["annotator"]) as a:
        assert run_job(a, "test_sec.train", None, {"name": "ok"}, timeout=30).info == {"trained": "ok"}
        with pytest.raises(AuthError, match="admin"):
            a.start_job("dyna.use", None, {"model": "liver-source", "version": "liver-source"})
    with _client(srv, keys["admin"]) as adm:
        assert run_job(adm, "dyna.use", None, {"model": "liver-source", "version": "liver-source"},
                       timeout=30).info["deployed"] == "liver-source"
    assert _ran == ["train:ok"]
    tasks = {t["name"]: t for t in _client(srv, keys["clinician"]).list_tasks()}
    assert tasks["cosam.train"]["role"] == "annotator" and tasks["dyna.night"]["role"] == "admin"
    assert tasks["cosam.segment"]["role"] == "clinician"


def test_every_endpoint_needs_a_valid_unrevoked_key(srv, users):
    keys = users[1]
    endpoints = [("GET", "/handshake"), ("POST", "/sessions"), ("GET", "/tasks"), ("GET", "/models"),
                 ("POST", "/jobs"), ("GET", "/jobs/x"), ("GET", "/jobs/x/events"), ("GET", "/jobs/x/result"),
                 ("POST", "/jobs/x/cancel"), ("PUT", "/images/x"), ("GET", "/images/x"), ("DELETE", "/images/x"),
                 ("POST", "/images/x/attach"), ("PUT", "/models/x"), ("POST", "/sessions/heartbeat"),
                 ("DELETE", "/sessions/state/x"), ("GET", "/whoami")]
    for key, status in ((None, 401), (keys["revoked"], 403), ("mss_00000000_" + "x" * 43, 403),
                        ("not-even-a-key-format", 403)):
        for method, path in endpoints:
            r = _raw(srv, method, path, key=key, headers={P.API_HEADER: P.API_VERSION})
            assert r.status_code == status, (key, method, path, r.status_code)
    assert _raw(srv, "GET", "/whoami", key=keys["annotator"]).json() == {"user": "dr-annotator", "role": "annotator"}


def test_a_session_belongs_to_the_user_who_opened_it(srv, users):
    keys = users[1]
    with _client(srv, keys["clinician"]) as c:
        v = Volume(np.ones((4, 5, 6), np.float32), name="Doe^Jane")
        image_id = c.set_image(v)
        r = _raw(srv, "GET", f"/images/{image_id}", key=keys["annotator"], session=c.session_id)
        assert r.status_code == 403 and r.json()["error"] == P.E_FORBIDDEN


def test_the_audit_log_says_who_ran_what_on_which_image_without_patient_data(srv, users):
    keys = users[1]
    with _client(srv, keys["clinician"], client_name="seat-1\nFAKE audit line") as c:
        v = Volume(np.ones((4, 5, 6), np.float32), name="Doe^Jane 1970-01-01")
        res = run_job(c, "test_sec.seg", v, {}, timeout=30)
        assert res.masks["fg"].all()
    path = srv.config.audit_log
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    records = [json.loads(x) for x in lines]  # every line one JSON record: nothing injected
    jobs = [r for r in records if r.get("action") == "job.start" and r.get("task") == "test_sec.seg"]
    assert jobs and jobs[-1]["user"] == "dr-clinician" and jobs[-1]["image"] == v.fingerprint()
    assert "\n" not in jobs[-1]["client"] and jobs[-1]["client"].startswith("seat-1")
    text = "\n".join(lines)
    assert "Doe" not in text and keys["clinician"] not in text
    assert not any(x.startswith("FAKE") for x in lines)
    _raw(srv, "GET", "/handshake", key="mss_deadbeef_" + "y" * 43)
    time.sleep(0.05)
    with open(path, encoding="utf-8") as f:
        last = json.loads(f.read().splitlines()[-1])
    assert last["action"] == "auth" and last["status"] == "refused" and "y" * 10 not in json.dumps(last)


def test_a_foreign_host_header_is_refused(srv, users):
    """DNS rebinding: a web page on evil.example resolving to 127.0.0.1 reaches a loopback server with
    its own Host header; the server answers only to the names it serves."""
    r = _raw(srv, "GET", "/health", headers={"Host": "evil.example:8765"})
    assert r.status_code == 421 and r.json()["error"] == P.E_BAD_HOST
    assert _raw(srv, "GET", "/health", headers={"Host": f"localhost:{srv.config.port}"}).status_code == 200
    assert _raw(srv, "GET", "/health").status_code == 200


def test_a_key_in_the_query_string_is_refused_and_not_logged(users, capfd):
    key = users[1]["clinician"]
    s = start_in_thread(ServerConfig(port=0, device="cpu", users_file=str(users[0]), access_log=True),
                        log_level="info")
    try:
        r = httpx.get(s.url + P.PREFIX + "/handshake", params={"api_key": key}, timeout=10)
        time.sleep(0.1)
        assert r.status_code == 400 and r.json()["error"] == P.E_KEY_IN_URL
        out = "".join(capfd.readouterr())
        assert key not in out and key[-12:] not in out
        assert "/v1/handshake" in out  # the request is logged (uvicorn's access log), without its query
    finally:
        s.stop()


# -- 3. patient data kept private ------------------------------------------------------------------
def _queue_files():
    from medsegsuite.models.registry import user_home

    root = user_home() / "tta" / "dyna"
    return sorted(p for p in root.rglob("*.nii.gz")) if root.exists() else []


def _tiny_ct():
    rng = np.random.default_rng(3)
    return Volume((rng.normal(size=(48, 48, 2)) * 40 + 60).astype(np.float32), (1.5, 1.5, 3.0), name="Doe^John")


def test_the_dyna_queue_is_off_by_default_on_a_server(srv, users):
    before = _queue_files()
    with _client(srv, users[1]["clinician"]) as c:
        info = run_job(c, "tta.adapt", _tiny_ct(), {"model": "liver-source", "method": "dyna", "slices": [0]},
                       timeout=120).info
    assert "queued_case" not in info and "off" in info["queue"]
    assert _queue_files() == before


def test_an_opted_in_queue_is_owner_only_private_per_user_and_expires(users, tmp_path):
    from medsegsuite.tta import dyna

    s = start_in_thread(ServerConfig(port=0, device="cpu", users_file=str(users[0]), dyna_queue=True,
                                     retention_days=1.0, lease_ttl=300.0))
    try:
        keys = users[1]
        with RemoteBackend(s.url, api_key=keys["clinician"]) as c, \
                RemoteBackend(s.url, api_key=keys["annotator"]) as other, \
                RemoteBackend(s.url, api_key=keys["admin"]) as adm:
            info = run_job(c, "tta.adapt", _tiny_ct(), {"model": "liver-source", "method": "dyna",
                                                        "slices": [0]}, timeout=120).info
            name = info["queued_case"]
            assert "/" not in name and "Doe" not in name  # a name, not a server path; no patient name
            q = dyna.store_dir("liver-source") / "queue"
            f = q / name
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o600 and stat.S_IMODE(os.stat(q).st_mode) == 0o700
            mine = run_job(c, "dyna.status", None, {"model": "liver-source"}).info
            theirs = run_job(other, "dyna.status", None, {"model": "liver-source"}).info
            everyone = run_job(adm, "dyna.status", None, {"model": "liver-source"}).info
            assert name in mine["queue"] and name not in theirs["queue"] and name in everyone["queue"]
            assert not any("/" in str(x) for x in json.dumps(everyone).split('"') if x.startswith("/"))
            # past the retention period the case is deleted
            old = time.time() - 2 * 86400
            os.utime(f, (old, old))
            run_job(adm, "dyna.status", None, {"model": "liver-source"})
            assert not f.exists()
    finally:
        s.stop()


def test_images_are_dropped_after_the_idle_time(users):
    s = start_in_thread(ServerConfig(port=0, device="cpu", users_file=str(users[0]), image_idle_ttl=2.0))
    try:
        with _client(s, users[1]["clinician"]) as c:
            image_id = c.set_image(Volume(np.ones((4, 5, 6), np.float32)))
            job = c.start_job("test_sec.seg", image_id)
            c.wait(job, timeout=30)
            assert image_id in s.state.backend.images
            deadline = time.time() + 10
            while image_id in s.state.backend.images and time.time() < deadline:
                time.sleep(0.1)
            assert image_id not in s.state.backend.images
            assert s.state.backend.worker.jobs[job].result is None  # results go too
            # the client re-sends the image by itself (the reaper held off: a loaded machine may take
            # longer than the 2 s idle time between the re-upload and the job)
            s.state.sessions.image_idle_ttl = 3600
            assert run_job(c, "test_sec.seg", Volume(np.ones((4, 5, 6), np.float32)), {}, timeout=30).masks["fg"].all()
    finally:
        s.stop()


def test_server_paths_do_not_travel_in_errors():
    from medsegsuite.server.app import redact_paths

    msg = "cannot read checkpoint /home/svc/.medsegsuite/models/x.pt: corrupt"
    assert "/home/svc" not in redact_paths(msg) and "x.pt" in redact_paths(msg)


def test_a_clinician_cannot_see_other_users_jobs_or_images(srv, users):
    keys = users[1]
    with _client(srv, keys["clinician"]) as a, _client(srv, keys["annotator"]) as b:
        job = a.start_job("test_sec.model", None, {})
        a.wait(job, timeout=30)
        r = _raw(srv, "GET", f"/jobs/{job}/result", key=keys["annotator"], session=b.session_id)
        assert r.status_code == 404
        with pytest.raises(RemoteError):
            b._request("GET", f"/jobs/{job}")
