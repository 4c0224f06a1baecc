"""Slices shown to a model at the scale it learned (volume/fov.py, cosam/windows.py): the window
geometry is physical, and the shipped liver model finds LiTS-117's liver in a field of view twice its
training crop, where the squeezed whole slice loses it."""
import numpy as np
import pytest

from medsegsuite.errors import InputError
from medsegsuite.volume.fov import Windows, centred, differs, tiling


def test_windows_cover_the_slice_at_the_model_pixel_size():
    w = tiling((250, 180), (1.0, 1.0), 2.0, 64)
    assert w.resampled_shape == (125, 90)
    rows = sorted({o[0] for o in w.origins})
    cols = sorted({o[1] for o in w.origins})
    assert rows[0] == 0 and rows[-1] + 64 == 125 and cols[0] == 0 and cols[-1] + 64 == 90
    for a, b in zip(rows, rows[1:]):
        assert 64 - (b - a) >= 8  # neighbours overlap by at least an eighth
    # a slice smaller than one window gets one window centred on it
    one = tiling((40, 40), (1.0, 1.0), 1.0, 64)
    assert one.origins == ((-12, -12),)


def test_cut_samples_physical_positions_and_paste_inverts_it():
    r, c = np.meshgrid(np.arange(200) * 0.5, np.arange(160) * 0.8, indexing="ij")  # mm
    ramp = (r + 2 * c).astype(np.float32)
    w = tiling(ramp.shape, (0.5, 0.8), 1.6, 32)
    tiles = w.cut(ramp)
    # window pixel (a, b) of origin (r0, c0) is centred at ((r0 + a + .5) * 1.6 - .25, ...) mm
    (r0, c0), t = w.origins[0], tiles[0]
    a, b = 10, 20
    mm_r, mm_c = (r0 + a + 0.5) * 1.6 - 0.25, (c0 + b + 0.5) * 1.6 - 0.4
    assert t[a, b] == pytest.approx(mm_r + 2 * mm_c, abs=1e-3)
    back = w.paste(tiles)
    inner = (slice(4, -4), slice(4, -4))
    assert np.allclose(back[inner], ramp[inner], atol=0.05 * ramp.max() / 100 + 0.5)


def test_centred_window_puts_the_point_in_the_middle_and_pads_with_the_minimum():
    s = np.full((300, 300), -1000.0, np.float32)
    s[40:44, 250:254] = 500.0
    w = centred(s.shape, (1.0, 1.0), 2.0, 64, (41.5, 251.5))
    t = w.cut(s)[0]
    peak = np.unravel_index(np.argmax(t), t.shape)
    assert abs(peak[0] - 32) <= 1 and abs(peak[1] - 32) <= 1
    assert t.min() == -1000.0  # the window runs past the slice's corner: padded with the slice minimum


def test_when_a_slice_differs_from_the_model_and_bad_windows():
    assert not differs((128, 128), (2.0, 2.0), 2.0, 128)  # LiTS-117, the training crop itself
    assert not differs((256, 256), (1.0, 1.0), 2.0, 128)  # finer pixels, the same field of view: same scale
    assert not differs((122, 101), (3.0, 3.0), 2.0, 128)  # TotalSegmentator's native CT, 36.6 cm (1.43×)
    assert differs((512, 512), (0.977, 0.977), 2.0, 128)  # a 50 cm clinical CT
    assert differs((128, 128), (1.0, 1.0), 2.0, 128)  # half the field of view
    with pytest.raises(InputError):
        Windows((10, 10), (0.0, 1.0), 2.0, 64, ((0, 0),))
    with pytest.raises(InputError):
        tiling((100, 100), (1.0, 1.0), 2.0, 64).paste(np.zeros((1, 32, 32)))


PICKS = [52, 68, 84, 100]


def _panel_logic():
    import importlib
    import sys
    from pathlib import Path

    import test_mrml_shared_layers  # noqa: F401 (puts slicer-core's `slicer` and the Lib on the path)

    path = str(Path(__file__).resolve().parents[2] / "SelfCorrectingSAM")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("SelfCorrectingSAM").SelfCorrectingSAMLogic(backend_provider=lambda: None)


def _with_fov(fov):
    logic = _panel_logic()
    logic.field_of_view = fov
    return logic


@pytest.fixture(scope="module")
def wide(lits):
    """LiTS-117 placed in the corner of a 51 cm field of view of air (2 mm pixels, 256²)."""
    from medsegsuite.volume import Volume

    ct, ref = lits
    big = np.full((256, 256, 128), -1024.0, np.float32)
    big[100:228, 20:148] = ct.array
    lab = np.zeros(big.shape, bool)
    lab[100:228, 20:148] = ref.masks["liver"]
    return Volume(big, ct.spacing, ct.origin, ct.direction), lab


def test_liver_found_in_a_field_of_view_twice_the_training_crop(wide, backend):
    """The model sees the liver at its training scale again (same-case: the shipped model trained on
    these slices' neighbours; the point is the framing, which it never saw)."""
    from medsegsuite.engine.interface import run_job
    from medsegsuite.metrics import slice_dice
    from medsegsuite.volume import SliceEngine

    vol, lab = wide
    picks = PICKS
    eng = SliceEngine.for_volume(vol, "axial")
    refs = eng.stack(lab, picks)
    scores = {}
    for fov in ("model", "slice"):
        r = run_job(backend, "cosam.segment", vol, {"model": "liver", "slices": picks, "field_of_view": fov,
                                                     "iterations": 2})
        scores[fov] = float(np.mean(slice_dice(eng.stack(r.masks["liver"], picks), refs)))
        if fov == "model":
            info = r.info["field_of_view"]
            assert info["from"] == "the coarse head on tiled windows" and info["windows"] == 9
            # the window found is centred within a quarter window of the liver's own box centre
            rows, cols = np.nonzero(eng.stack(lab, picks).any(0))
            assert abs(info["centre"][0] - (rows.min() + rows.max()) / 2) < 32
            assert abs(info["centre"][1] - (cols.min() + cols.max()) / 2) < 32
    print("field of view scores", scores)
    assert scores["model"] >= 0.85, scores
    assert scores["model"] >= scores["slice"] + 0.05, scores


def test_field_of_view_model_refuses_clicks(lits, backend):
    from medsegsuite.engine.interface import JobFailed, run_job

    ct, _ = lits
    with pytest.raises((InputError, JobFailed), match="prompt-free"):
        run_job(backend, "cosam.segment", ct, {"model": "liver", "slices": [60], "field_of_view": "model"},
                {"points": np.array([[60.0, 60.0, 60, 1]])})


def test_a_click_continues_in_the_sessions_window(wide, backend):
    """After a windowed cosam.segment, a click is mapped into the same window (its embedding is reused)
    and only the clicked slice changes; a click outside the window is a clear error."""
    from medsegsuite.engine.interface import JobFailed, run_job
    from medsegsuite.volume import SliceEngine

    vol, lab = wide
    eng = SliceEngine.for_volume(vol, "axial")
    r = run_job(backend, "cosam.segment", vol, {"model": "liver", "slices": PICKS, "field_of_view": "model",
                                                "iterations": 2, "session": "fov"})
    before = r.masks["liver"]
    text = _with_fov(r.info["field_of_view"]).field_of_view_text()
    assert "resampled to the model's 2 mm" in text and "25.6 cm window" in text  # what the panel's status says
    k = PICKS[1]
    miss = eng.slice(lab, k) & ~eng.slice(before, k)
    target = miss if miss.any() else eng.slice(lab, k)
    y, x = np.argwhere(target)[len(np.argwhere(target)) // 2]
    c = run_job(backend, "cosam.click", vol, {"session": "fov"}, {"points": np.array([[x, y, k, 1]], float)})
    assert c.info["encoder_calls"] == r.info["encoder_calls"]  # the window's embedding was cached
    (off, crop), = c.crops.values()
    after = before.copy()
    sl = tuple(slice(o, o + n) for o, n in zip(off, crop.shape))
    after[sl] = crop
    assert eng.slice(after, k)[y, x]  # the + click is inside the result
    for other in PICKS:
        if other != k:
            assert np.array_equal(eng.slice(after, other), eng.slice(before, other))
    with pytest.raises((InputError, JobFailed), match="outside the window"):
        run_job(backend, "cosam.click", vol, {"session": "fov"}, {"points": np.array([[250.0, 5.0, k, 0]])})


def test_an_roi_centres_the_window_and_bounds_the_result(wide, backend):
    """With an ROI the window is centred on it (no locate pass) and nothing is kept outside it in-plane."""
    from medsegsuite.engine.interface import run_job
    from medsegsuite.volume import SliceEngine

    vol, lab = wide
    roi = (100, 164, 20, 148, 0, 128)  # the right half of the liver's box (input-grid voxels, end exclusive)
    r = run_job(backend, "cosam.segment", vol, {"model": "liver", "slices": PICKS[1:3], "field_of_view": "model",
                                                "iterations": 1, "roi": list(roi)})
    info = r.info["field_of_view"]
    assert info["from"] == "the ROI" and "windows" not in info
    m = r.masks["liver"]
    assert m[100:164, 20:148].any()
    outside = m.copy()
    outside[100:164, 20:148] = False
    assert not outside.any()
    eng = SliceEngine.for_volume(vol, "axial")
    assert all(not eng.slice(m, k).any() for k in range(eng.n_slices) if k not in PICKS[1:3])
