"""Server v2: the task listing, no server file paths in params, one-line 4xx for bad params, interactive
session state private to each client, crops on the wire, and model import by upload."""
import os
import time

import httpx
import numpy as np
import pytest

from medsegsuite import protocol as P
from medsegsuite.client import AuthError, RemoteBackend
from medsegsuite.client.errors import RemoteError
from medsegsuite.engine import JobResult, LocalBackend, task
from medsegsuite.engine.interface import apply_crop, run_job
from medsegsuite.engine.schema import Param
from medsegsuite.errors import InputError
from medsegsuite.server import ServerConfig, start_in_thread
from medsegsuite.volume import Volume

KEY = "test-key-0123456789abcdef-v2"
_ran = []


@task("test_remote2.model", needs_image=False, description="test-only: names a model and a cache file",
      params=[Param("model", "model", "liver"), Param("embedding_cache", "path", None),
              Param("steps", "int", 3, range=(1, 10))])
def _model_task(ctx, image, params, inputs):
    _ran.append(params["model"])
    return JobResult(info={"model": params["model"]})


@task("test_remote2.counter", needs_image=False, description="test-only: counts jobs of one session",
      params=[Param("session", "str", None)])
def _counter(ctx, image, params, inputs):
    s = ctx.session
    s["n"] = s.get("n", 0) + 1
    return JobResult(info={"n": s["n"]})


@task("test_remote2.crop", description="test-only: answers with a crop", params=[])
def _crop(ctx, image, params, inputs):
    return JobResult(info={"ok": True}, crops={"liver": ((2, 3, 4), np.ones((3, 2, 1), bool)),
                                               "tumour": ((0, 0, 0), np.zeros((1, 1, 1), bool))})


@pytest.fixture(scope="module")
def srv():
    s = start_in_thread(ServerConfig(port=0, api_key=KEY, device="cpu", lease_ttl=30.0))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def rb(srv):
    c = RemoteBackend(srv.url, api_key=KEY, client_name="pytest-v2")
    yield c
    c.close()


def _raw(srv, method, path, key=KEY, session=None, **kw):
    headers = kw.pop("headers", {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if session:
        headers[P.SESSION_HEADER] = session
    return httpx.request(method, srv.url + P.PREFIX + path, headers=headers, timeout=30, **kw)


def test_tasks_are_listed_with_their_schemas_and_need_the_key(srv, rb):
    tasks = {t["name"]: t for t in rb.list_tasks()}
    t = tasks["test_remote2.model"]
    assert [p["name"] for p in t["params"]] == ["model", "embedding_cache", "steps"]
    assert t["params"][2]["type"] == "int" and t["params"][2]["range"] == [1, 10]
    assert t["kind"] == "interactive" and t["needs_image"] is False
    assert _raw(srv, "GET", "/tasks", key=None).status_code == 401
    assert _raw(srv, "GET", "/tasks", key="wrong-key-0123456789").status_code == 403
    with LocalBackend("cpu") as lb:
        assert {x["name"] for x in lb.list_tasks()} == set(tasks)


@pytest.mark.parametrize("params, word", [({"model": "/etc/passwd"}, "model"),
                                          ({"model": "../models/liver.pt"}, "model"),
                                          ({"embedding_cache": "/tmp/cache"}, "embedding_cache")])
def test_no_parameter_may_name_a_server_file(srv, rb, params, word):
    _ran.clear()
    assert srv.state.backend.worker.allow_paths is False
    with pytest.raises(InputError, match=f"'{word}' names a file on the server"):
        rb.start_job("test_remote2.model", None, params)
    r = _raw(srv, "POST", "/jobs", session=rb.session_id,
             content=__import__("medsegsuite.wire", fromlist=["pack"]).pack(
                 {"task": "test_remote2.model", "image_id": None, "params": params}))
    assert r.status_code == 400 and r.json()["error"] == P.E_BAD_REQUEST
    time.sleep(0.1)
    assert _ran == []
    assert run_job(rb, "test_remote2.model", None, {"model": "liver"}, timeout=30).info == {"model": "liver"}


def test_paths_are_refused_even_with_a_shared_backend_that_allows_them(tmp_path):
    with LocalBackend("cpu") as lb:  # allow_paths=True: the user's own machine
        assert run_job(lb, "test_remote2.model", None, {"model": str(tmp_path / "x.pt")}).info["model"]
        with start_in_thread(ServerConfig(port=0, device="cpu"), backend=lb) as s, RemoteBackend(s.url) as c:
            with pytest.raises(InputError, match="names a file on the server"):
                c.start_job("test_remote2.model", None, {"model": str(tmp_path / "x.pt")})


@pytest.mark.parametrize("params, word", [({"steps": "many"}, "steps"), ({"steps": 99}, "steps"),
                                          ({"nonsense": 1}, "nonsense")])
def test_an_invalid_param_is_a_one_line_4xx_and_nothing_runs(srv, rb, params, word):
    _ran.clear()
    with pytest.raises(InputError) as e:
        rb.start_job("test_remote2.model", None, params)
    assert word in str(e.value) and "\n" not in str(e.value)
    assert _ran == []


def test_interactive_sessions_are_private_to_each_client(srv, rb):
    with RemoteBackend(srv.url, api_key=KEY, heartbeat=False) as other:
        counts = [run_job(c, "test_remote2.counter", None, {"session": "s"}, timeout=30).info["n"]
                  for c in (rb, rb, other, rb, other)]
        assert counts == [1, 2, 1, 3, 2]  # the same session name, two separate states
        sid = other.session_id
        assert any(k[0] == sid for k in srv.state.backend.worker.sessions)
    # closing the HTTP session dropped its interactive sessions; the other client's stays
    assert not any(k[0] == sid for k in srv.state.backend.worker.sessions)
    assert run_job(rb, "test_remote2.counter", None, {"session": "s"}, timeout=30).info["n"] == 4
    rb.close_session("s")
    assert run_job(rb, "test_remote2.counter", None, {"session": "s"}, timeout=30).info["n"] == 1


def test_crops_travel_as_crops_with_their_offsets(srv, rb):
    v = Volume(np.zeros((40, 50, 60), np.float32), (1.0, 1.0, 2.0), name="big")
    image_id = rb.set_image(v)
    before = rb.stats["bytes_received"]
    job = rb.start_job("test_remote2.crop", image_id)
    rb.wait(job, timeout=30)
    r = rb.result(job)
    got = rb.stats["bytes_received"] - before
    assert set(r.crops) == {"liver", "tumour"} and not r.masks
    off, arr = r.crops["liver"]
    assert off == (2, 3, 4) and arr.shape == (3, 2, 1) and arr.dtype == bool and arr.all()
    assert r.crops["tumour"][0] == (0, 0, 0) and r.crops["tumour"][1].shape == (1, 1, 1)
    full = apply_crop(np.zeros(v.shape, bool), off, arr)
    assert full.sum() == 6 and full[2:5, 3:5, 4].all()
    assert got < 20000  # a crop, not a 120 000-voxel volume


def _checkpoint(path, arch="test-arch"):
    import torch

    from medsegsuite.models.checkpoints import save_checkpoint

    return save_checkpoint(path, arch, {"w": torch.ones(3)}, {"structures": ["liver"], "task": "test"})


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EVIL_MARK', '/tmp/evil-mark')}",))


def test_model_import_registers_on_the_server(srv, rb, tmp_path):
    f = _checkpoint(tmp_path / "mine.pt")
    entry = rb.import_model(f, "my-model", task="test", description="uploaded")
    assert entry["id"] == "my-model" and entry["architecture"] == "test-arch"
    assert any(m["id"] == "my-model" and m["structures"] == ["liver"] for m in rb.list_models())
    assert any(m["id"] == "my-model" for m in srv.state.backend.list_models())
    with pytest.raises(RemoteError, match="already has a model 'my-model'") as e:
        rb.import_model(f, "my-model")
    assert e.value.status == 409


def test_model_import_refuses_pickled_code(srv, rb, tmp_path, monkeypatch):
    import torch

    mark = tmp_path / "evil-ran"
    monkeypatch.setenv("EVIL_MARK", str(mark))
    f = tmp_path / "evil.pt"
    torch.save({"format": "x", "architecture": "test-arch", "state_dict": {}, "payload": _Evil()}, f)
    with pytest.raises(InputError):
        rb.import_model(f, "evil-model")
    assert not mark.exists()
    assert not any(m["id"] == "evil-model" for m in rb.list_models())


def test_model_import_refuses_oversize_files(srv, rb, tmp_path):
    f = tmp_path / "big.pt"
    import torch

    old = srv.config.max_model_mb
    srv.config.max_model_mb = 0.1
    try:
        for w in (torch.zeros(200_000), torch.rand(200_000)):  # small once compressed; too big on the wire
            torch.save({"architecture": "test-arch", "state_dict": {"w": w}}, f)
            with pytest.raises(InputError, match="over this server's limit"):
                rb.import_model(f, "big-model")
    finally:
        srv.config.max_model_mb = old
    assert not any(m["id"] == "big-model" for m in rb.list_models())


@pytest.mark.parametrize("bad", ["../evil", ".hidden", "a b", "x" * 65, "a/b"])
def test_model_import_refuses_bad_ids(srv, rb, tmp_path, bad):
    f = _checkpoint(tmp_path / "ok.pt")
    with pytest.raises(InputError, match="model id"):
        rb.import_model(f, bad)
    from medsegsuite import wire

    body = wire.pack({}, {"checkpoint": np.fromfile(f, np.uint8)})
    from urllib.parse import quote

    r = _raw(srv, "PUT", f"/models/{quote(bad, safe='')}", content=body)
    assert 400 <= r.status_code < 500
    assert not any(m["id"] == bad for m in rb.list_models())


def test_model_import_needs_the_key(srv, tmp_path):
    from medsegsuite import wire

    f = _checkpoint(tmp_path / "ok.pt")
    body = wire.pack({}, {"checkpoint": np.fromfile(f, np.uint8)})
    assert _raw(srv, "PUT", "/models/anon", key=None, content=body).status_code == 401
    with pytest.raises(AuthError):
        RemoteBackend(srv.url, api_key="wrong-key-0123456789").import_model(f, "anon")


@task("test_remote2.chatty", needs_image=False, description="test-only: many progress events", params=[])
def _chatty(ctx, image, params, inputs):
    for i in range(20):
        time.sleep(0.005)
        ctx.progress(i / 20, f"step {i}")
    return JobResult(info={"done": True})


def test_a_wait_without_progress_display_is_one_long_poll(srv):
    """A click shows no progress: its wait is one request until the job ends, not one per event."""
    with RemoteBackend(srv.url, api_key=KEY) as b:
        calls = []
        real = b._job_request
        b._job_request = lambda job_id, method, path, **kw: calls.append(path) or real(job_id, method, path, **kw)
        job = b.start_job("test_remote2.chatty")
        assert b.wait(job, timeout=30).value == "done"
        assert b.result(job).info == {"done": True}
        assert calls == [f"/jobs/{job}/result"]  # waited for and fetched in one round trip
        calls.clear()
        seen = []
        job = b.start_job("test_remote2.chatty")
        b.wait(job, timeout=30, on_event=seen.append)  # a progress bar still sees every event
        assert [e.state.value for e in seen][-1] == "done" and len(seen) >= 20
        assert b.result(job).info == {"done": True}
