"""Per-volume TTA, the safety gate, physical shifts and DyNA's night: the headline claims as regression tests
(real shipped models on the real LiTS-117 CT under SIMULATED physical shifts; seeded, small)."""
import numpy as np
import pytest
import torch

from medsegsuite.engine.interface import run_job
from medsegsuite.metrics import dice
from medsegsuite.tta.gate import decide
from medsegsuite.tta.shifts import CT_SHIFTS, LIVER_PHASE_HU, MR_SHIFTS, SOURCES, apply_shift


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def liver():
    """liver-source, LiTS-117 and 16 of the model's held-out axial slices (never trained on)."""
    from medsegsuite.tta.network import load_source_model, slice_engine
    from medsegsuite.tta.train import held_out, source_data

    src = load_source_model("liver-source")
    vol, mask = source_data("liver-source")
    eng = slice_engine(vol, src.card)
    idx = held_out(eng.n_slices)[4:20]
    return src, vol, mask, eng, idx


def _dice(src, vol, mask, eng, idx, method):
    from medsegsuite.tta.pipeline import run_volume

    res = run_volume(src, vol, method, None, indices=idx)
    ref = eng.stack(mask, idx)
    return dice(res["after"] > 0, ref), res


def test_ct_shifts_keep_the_liver_inside_the_published_range_of_their_phase(liver):
    _, vol, mask, _, _ = liver
    for name, s in CT_SHIFTS.items():
        med = float(np.median(apply_shift(vol, s, mask).array[mask]))
        lo, hi = LIVER_PHASE_HU[s.phase]
        assert lo <= med <= hi, f"{name}: liver median {med:.1f} HU outside {s.phase} range {lo}-{hi} HU"
    assert {s.phase for s in CT_SHIFTS.values()} == set(LIVER_PHASE_HU)


def test_every_shift_names_its_sources():
    for s in list(CT_SHIFTS.values()) + list(MR_SHIFTS.values()):
        if s.ops and s.name != "scale-x0.05":
            assert s.sources and set(s.sources) <= set(SOURCES), s.name


def test_mr_contrast_remap_keeps_tissue_order_and_scale_changes_only_units():
    from medsegsuite.sampledata import colin27_brain_mask, colin27_t1

    t1, brain = colin27_t1(), colin27_brain_mask().array > 0
    v = apply_shift(t1, MR_SHIFTS["mprage-3T"], brain).array[brain]
    q = np.percentile(v, [5, 40, 85])
    assert q[0] < q[1] < q[2]
    src_q = np.percentile(t1.array[brain], [5, 40, 85])
    assert (q[2] - q[1]) / q[2] > (src_q[2] - src_q[1]) / src_q[2]  # MPRAGE: more grey/white contrast
    s = apply_shift(t1, MR_SHIFTS["scale-x0.05"]).array
    np.testing.assert_allclose(s, t1.array * 0.05, rtol=1e-6)


def test_tta_does_not_hurt_an_unshifted_volume(liver):
    src, vol, mask, eng, idx = liver
    none, _ = _dice(src, vol, mask, eng, idx, "none")
    for m in ("vptta", "grata"):
        d, res = _dice(src, vol, mask, eng, idx, m)
        assert d >= none - 0.01, (m, d, none)
        assert res["gate"] is not None and res["gate"].reason


def test_tta_beats_no_adaptation_on_a_physically_shifted_volume(liver):
    src, vol, mask, eng, idx = liver
    shifted = apply_shift(vol, CT_SHIFTS["dose-25%"], mask)
    none, _ = _dice(src, shifted, mask, eng, idx, "none")
    for m in ("vptta", "grata"):
        d, res = _dice(src, shifted, mask, eng, idx, m)
        assert res["gate"].accepted, res["gate"].reason
        assert d >= none + 0.03, (m, d, none)


def test_gate_keeps_the_source_and_says_why():
    near = decide(0.1, 0.05, 0.04, 0.99, 0.2, 0.2)
    assert not near.accepted and "close to the source" in near.reason
    moved = decide(0.6, 0.05, 0.04, 0.2, 0.2, 0.2)
    assert not moved.accepted and "moved the structure" in moved.reason
    erased = decide(0.6, 0.05, 0.04, 0.0, 0.0, 0.2)
    assert not erased.accepted and "empty" in erased.reason
    recovered = decide(0.6, 0.01, 0.09, 0.0, 0.2, 0.0)  # source confidently empty, adaptation finds it
    assert recovered.accepted and recovered.signals["feature_shift"] == 0.6


def test_adapt_task_returns_the_gate_decision(lits, backend):
    # the gate's feature shift is a whole-volume statistic: every 4th slice spans the volume
    res = run_job(backend, "tta.adapt", lits[0], {"model": "liver-source", "method": "vptta", "slices": "every:4"})
    gate = res.info["gate"]
    assert isinstance(gate["accepted"], bool) and gate["reason"] and "feature_shift" in gate["signals"]
    assert res.info["adapted_used"] == gate["accepted"]
    # unshifted source image: nothing to adapt to, the source prediction is kept and said so
    assert not gate["accepted"] and "close to the source" in gate["reason"]
    np.testing.assert_array_equal(res.masks["liver"], res.masks["liver (before)"])


def test_dyna_night_improves_next_day_slices_it_never_saw(liver, tmp_path, monkeypatch):
    from medsegsuite.tta.dyna import run_night
    from medsegsuite.tta.network import load_source_model, logits_to_slices, slices_from_volume
    from medsegsuite.tta.pipeline import plain_logits
    from medsegsuite.tta.train import held_out

    monkeypatch.setenv("MEDSEGSUITE_HOME", str(tmp_path / "home"))
    src, vol, mask, eng, idx = liver
    shifted = apply_shift(vol, CT_SHIFTS["unenhanced"], mask)
    held = set(held_out(eng.n_slices))
    night_idx = [i for i in range(eng.n_slices) if i not in held][::3]  # the day's other slices
    assert held.isdisjoint(night_idx) and set(idx) <= held
    run_night("liver-source", [], tmp_path / "v1.pt", {"iterations": 20, "batch": 4}, source=src,
              slices=slices_from_volume(shifted, src.card, night_idx)[0])
    new = load_source_model(str(tmp_path / "v1.pt"))
    x, _, shape2d = slices_from_volume(shifted, src.card, idx)
    ref = eng.stack(mask, idx)
    before = dice(logits_to_slices(plain_logits(src.net, x), shape2d) > 0, ref)
    after = dice(logits_to_slices(plain_logits(new.net, x), shape2d) > 0, ref)
    assert after >= before + 0.01, (before, after)
