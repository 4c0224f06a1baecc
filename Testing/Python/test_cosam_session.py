"""CoSAM interactive sessions on the tiny SAM: a click recomputes only the clicked slice and returns a
crop; the model is read and built once, not per job; bad params are one-line errors."""
import numpy as np
import pytest
import torch

from medsegsuite.engine.interface import JobFailed, apply_crop, run_job
from medsegsuite.errors import InputError
from medsegsuite.volume import SliceEngine, Volume

from test_cosam import _ellipses, tiny_model_file, tiny  # noqa: F401 (fixtures)
from test_planes import reorient


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors
    yield
    torch.set_num_threads(n)


@pytest.fixture
def blob_id(tiny_model_file):  # noqa: F811 (a fixture)
    from medsegsuite.models.registry import default_registry

    default_registry().import_checkpoint(tiny_model_file, "tinyblob", task="cosam")
    return "tinyblob"


def _volume(perm=(0, 1, 2), flips=(False, False, False)):
    imgs, _ = _ellipses(6, seed=11, size=64)
    a, d = reorient(np.moveaxis(imgs, 0, 2), np.diag([-1.0, -1.0, 1.0]), perm, flips)
    return Volume(a, (1.0, 1.0, 2.0), direction=d)


def test_second_job_neither_rereads_nor_rebuilds_the_model(backend, blob_id):
    from medsegsuite.models import loader

    vol = _volume()
    run_job(backend, "cosam.segment", vol, {"model": blob_id, "iterations": 1})
    reads, builds = loader.stats["reads"], loader.stats["builds"]
    r = run_job(backend, "cosam.segment", vol, {"model": blob_id, "iterations": 1})
    assert (loader.stats["reads"], loader.stats["builds"]) == (reads, builds)
    assert r.info["encoder_calls"] == 0


# the slice axis stored first and reversed, or last as usual: the crop must land on the right slab
@pytest.mark.parametrize("perm,flips", [((0, 1, 2), (False, False, False)), ((2, 0, 1), (True, False, True))])
def test_click_recomputes_only_the_clicked_slice(backend, blob_id, perm, flips):
    vol = _volume(perm, flips)
    eng = SliceEngine.for_volume(vol, "axial")
    r = run_job(backend, "cosam.segment", vol, {"model": blob_id, "iterations": 2, "session": "s1"})
    assert not r.arrays  # rounds only on request
    before = r.masks["blob"]
    k = 3
    sl = eng.slice(before, k)
    y, x = np.argwhere(~sl)[len(np.argwhere(~sl)) // 2]  # a pixel the mask misses: click + there
    c = run_job(backend, "cosam.click", vol, {"session": "s1"}, {"points": np.array([[x, y, k, 1]], float)})
    assert not c.masks and set(c.crops) == {"blob"}
    offset, crop = c.crops["blob"]
    ax = eng.input_axis
    assert crop.shape[ax] == 1 and all(crop.shape[d] == vol.shape[d] for d in range(3) if d != ax)
    assert c.info["slices"] == [k] and c.info["plane"] == "axial" and c.info["encoder_calls"] == 0
    assert {"validate_ms", "embed_ms", "loop_ms", "decode_ms", "total_ms"} <= set(c.info["timings"])
    after = apply_crop(before.copy(), offset, crop)
    assert eng.slice(after, k)[y, x]  # the user's click holds
    others = [j for j in range(eng.n_slices) if j != k]
    assert np.array_equal(eng.stack(after, others), eng.stack(before, others))  # nothing else changed
    # a second click on the same slice continues from the session's mask, with both clicks
    y2, x2 = np.argwhere(eng.slice(after, k))[0]
    c2 = run_job(backend, "cosam.click", vol, {"session": "s1"}, {"points": np.array([[x2, y2, k, 0]], float)})
    after2 = apply_crop(after.copy(), *c2.crops["blob"])
    assert eng.slice(after2, k)[y, x] and not eng.slice(after2, k)[y2, x2] and c2.info["clicks"] == {str(k): 2}
    backend.close_session("s1")


def test_click_without_a_session_is_a_clear_error(backend, blob_id):
    vol = _volume()
    pts = {"points": np.array([[5.0, 5.0, 1, 1]])}
    with pytest.raises(JobFailed, match="run cosam.segment with session='nope' first"):
        run_job(backend, "cosam.click", vol, {"session": "nope"}, pts)
    run_job(backend, "cosam.segment", vol, {"model": blob_id, "iterations": 0, "session": "s2"})
    other = Volume(vol.array + 1.0, (1.0, 1.0, 2.0), direction=vol.direction)  # another image, same session name
    with pytest.raises(JobFailed, match="session='s2'"):
        run_job(backend, "cosam.click", other, {"session": "s2"}, pts)


@pytest.mark.parametrize("task,params,message", [
    ("cosam.segment", {"iterations": 99}, "parameter 'iterations' must lie in 0..16"),
    ("cosam.segment", {"axis": 2}, "unknown parameter(s) 'axis'"),
    ("cosam.segment", {"plane": "oblique"}, "parameter 'plane' must be one of axial"),
    ("cosam.segment", {"roi": [1, 2, 3]}, "parameter 'roi' must hold exactly 6 values"),
    ("cosam.click", {}, "parameter 'session' is required"),
    ("cosam.train", {"steps": -1}, "parameter 'steps' must lie in 0.."),
    ("sam.oracle_box", {"margin": "wide"}, "parameter 'margin' must be an integer"),
])
def test_bad_params_are_one_line_errors(backend, task, params, message):
    vol = _volume()
    image_id = backend.set_image(vol)
    with pytest.raises(InputError) as e:
        backend.start_job(task, None if task == "cosam.train" else image_id, params)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_known_start_error_and_skipped_last_error_leave_the_mask_unchanged(tiny_model_file, tiny):  # noqa: F811
    """The click path's two savings (the session's error map instead of a new error pass; no error pass
    after a forced last round) give the same mask as the full loop."""
    from medsegsuite.cosam.loop import _paint, self_correct
    from medsegsuite.cosam.model import load_cosam

    m = load_cosam(tiny_model_file, tiny)
    imgs, _ = _ellipses(2, seed=12)
    with torch.no_grad():
        emb = tiny.image_encoder(torch.from_numpy(np.repeat(imgs[:, None], 3, 1)))
        start = (m.coarse(emb) > 0).float() * 8 - 4
    clicks = [(np.array([[20.0, 30.0]], np.float32), np.array([1])),
              (np.array([[5.0, 9.0]], np.float32), np.array([0]))]
    full = self_correct(m, emb, 2, start_logits=start, clicks=clicks)
    one = self_correct(m, emb, 1, start_logits=start, clicks=clicks)
    assert one.final_error is None and full.final_error is not None
    assert torch.equal(one.rounds[1] > 0, full.rounds[1] > 0)
    painted = torch.stack([_paint((start[b] > 0).float(), clicks, b, m.low_res / 128) for b in range(2)])
    with torch.no_grad():
        known = torch.sigmoid(m.errors(emb, painted))
    again = self_correct(m, emb, 2, start_logits=start, clicks=clicks, start_error=known)
    assert all(torch.equal(a > 0, b > 0) for a, b in zip(again.rounds, full.rounds))


def test_remote_click_returns_the_same_crop_as_local(backend, blob_id):
    """A session lives next to the model on the server too; the crop travels over the wire as it is."""
    from medsegsuite.client import RemoteBackend
    from medsegsuite.server import ServerConfig, start_in_thread

    vol = _volume()
    params = {"model": blob_id, "iterations": 2, "session": "r"}
    pts = {"points": np.array([[20.0, 30.0, 2, 1]])}
    run_job(backend, "cosam.segment", vol, params)
    local = run_job(backend, "cosam.click", vol, {"session": "r"}, pts)
    server = start_in_thread(ServerConfig(port=0, device="cpu"))
    try:
        with RemoteBackend(server.url, client_name="click") as rb:
            run_job(rb, "cosam.segment", vol, params)
            remote = run_job(rb, "cosam.click", vol, {"session": "r"}, pts)
            with RemoteBackend(server.url, client_name="other") as other:  # sessions are per client
                with pytest.raises(JobFailed, match="run cosam.segment with session='r' first"):
                    run_job(other, "cosam.click", vol, {"session": "r"}, pts)
    finally:
        server.stop()
    (lo, lc), (ro, rc) = local.crops["blob"], remote.crops["blob"]
    assert tuple(ro) == tuple(lo) and rc.dtype == bool and np.array_equal(rc, lc)


def test_next_clicks_error_map_is_prepared_after_the_result(backend, blob_id, monkeypatch):
    """After a click's result is delivered, the worker computes the error map of the returned mask
    (`JobContext.after`), so the next click on that slice runs no error-decoder pass while the user waits."""
    from medsegsuite.cosam.model import CoSAM

    vol = _volume()
    eng = SliceEngine.for_volume(vol, "axial")
    r = run_job(backend, "cosam.segment", vol, {"model": blob_id, "iterations": 2, "session": "p"})
    k = 2
    sl = eng.slice(r.masks["blob"], k)
    y, x = np.argwhere(~sl)[0]
    calls = []
    real = CoSAM.errors
    monkeypatch.setattr(CoSAM, "errors", lambda self, emb, mask: calls.append(len(emb)) or real(self, emb, mask))
    c1 = run_job(backend, "cosam.click", vol, {"session": "p"}, {"points": np.array([[x, y, k, 1]], float)})
    state = backend.worker.sessions[("local", "p")]

    def prepared():  # the follow-up runs after the result is delivered, still inside the job's turn
        import time

        t = time.time()
        while backend.worker.current is not None and time.time() - t < 30:
            time.sleep(0.01)
        return state["errors"].get(k)

    err = prepared()
    assert err is not None and err.ndim == 3
    assert calls == [1]  # the click itself ran no error pass (the segment job's map was kept)
    calls.clear()
    y2, x2 = np.argwhere(eng.slice(apply_crop(r.masks["blob"].copy(), *c1.crops["blob"]), k))[0]
    c2 = run_job(backend, "cosam.click", vol, {"session": "p"}, {"points": np.array([[x2, y2, k, 0]], float)})
    assert c2.info["timings"]["prepare_ms"] > 0  # the first click's follow-up ran (and was timed)
    prepared()
    assert calls == [1]  # only this click's own follow-up: no error pass while the click was computed
    backend.close_session("p")
