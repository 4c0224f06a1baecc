"""Presets (SegRap2023, Touchstone, LiTS, user files), Wilcoxon + Holm statistics, 2D slice metrics."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medsegsuite.errors import InputError
from medsegsuite.io import Segmentation
from medsegsuite.metrics import evaluate_case, load_preset, structure_metrics
from medsegsuite.metrics.presets import Preset, available_presets
from medsegsuite.metrics.stats import holm, paired_comparisons, wilcoxon
from medsegsuite.volume import Geometry


def test_shipped_presets():
    assert {"segrap2023", "touchstone", "lits"} <= set(available_presets())
    seg = load_preset("segrap")
    oars = [s for s in seg.structures if not s.name.startswith("GTV")]
    assert len(oars) == 45 and [s.labels[0] for s in oars] == list(range(1, 46))
    tol = seg.tolerances
    assert tol["Larynx"] == 2.0 and tol["OralCavity"] == 3.0 and tol["GTVp"] == tol["GTVnd"] == 1.0
    assert {v for k, v in tol.items() if k not in ("Larynx", "OralCavity")} == {1.0}
    t = load_preset("touchstone")
    assert [(s.name, s.labels) for s in t.structures] == [
        ("aorta", (1,)), ("gall_bladder", (2,)), ("kidney_left", (3,)), ("kidney_right", (4,)), ("liver", (5,)),
        ("pancreas", (6,)), ("postcava", (7,)), ("spleen", (8,)), ("stomach", (9,))]
    assert set(t.tolerances.values()) == {1.5}
    assert load_preset("lits").structures[0].labels == (1, 2)


def test_preset_matches_by_name_alias_and_label():
    g = Geometry((6, 6, 6))
    lab = np.zeros((6, 6, 6), int)
    lab[1:3] = 1
    lab[3:5] = 2
    by_label = Segmentation(g, {"label_1": lab == 1, "label_2": lab == 2})
    found = load_preset("lits").find(by_label)
    assert found["liver"].sum() == (lab > 0).sum() and found["tumour"].sum() == (lab == 2).sum()
    named = Segmentation(g, {"Gall Bladder": lab == 1, "Inferior_Vena_Cava": lab == 2, "bowel": lab == 0})
    t = load_preset("touchstone")
    assert set(t.find(named)) == {"gall_bladder", "postcava"}
    assert t.unmatched(named) == ["bowel"]


def test_user_preset_file(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"name": "mine", "default_tolerance_mm": 2.5,
                             "structures": ["a", {"name": "b", "label": [3, 4], "tolerance_mm": 0.5}]}))
    p = load_preset(str(f))
    assert p.tolerances == {"a": 2.5, "b": 0.5} and p.structures[1].labels == (3, 4)
    for bad in ({"structures": []}, {"structures": [{"label": 1}]}, {"structures": ["a", "A"]},
                {"structures": [{"name": "a", "tolerance_mm": -1}]}):
        f.write_text(json.dumps(bad))
        with pytest.raises(InputError):
            load_preset(str(f))
    f.write_text("{not json")
    with pytest.raises(InputError, match="JSON"):
        load_preset(str(f))
    with pytest.raises(InputError, match="unknown preset"):
        load_preset("no-such-preset")


def test_evaluate_case_uses_structure_tolerance_and_geometry_check():
    g = Geometry((20, 20, 20), spacing=(1.0, 1.0, 1.0))
    ref = np.zeros(g.shape, bool)
    ref[5:15, 5:15, 5:15] = True
    pred = np.roll(ref, 2, axis=0)  # every non-shared surfel is 1 or 2 mm away
    preset = Preset.from_dict({"structures": [{"name": "tight", "tolerance_mm": 0.5},
                                              {"name": "loose", "tolerance_mm": 2.0}]})
    rows = evaluate_case(Segmentation(g, {"tight": pred, "loose": pred}),
                         Segmentation(g, {"tight": ref, "loose": ref}), preset)
    nsd = {r["structure"]: r["nsd"] for r in rows}
    assert nsd["loose"] == pytest.approx(1.0) and nsd["tight"] < 0.9
    # a structure missing from the prediction is an empty prediction
    rows = evaluate_case(Segmentation(g, {"other": pred}), Segmentation(g, {"loose": ref}), preset)
    assert rows[0]["dice"] == 0.0 and math.isnan(rows[0]["hd95"])
    moved = Geometry(g.shape, spacing=(1.0, 1.0, 2.0))
    with pytest.raises(InputError, match="geometry|spacing"):
        evaluate_case(Segmentation(moved, {"loose": pred}), Segmentation(g, {"loose": ref}), preset)


def test_slice_restricted_metrics():
    """On chosen slices: DSC counts only their voxels; surface metrics use in-plane contours."""
    ref = np.zeros((20, 20, 16), bool)
    ref[5:15, 5:15, 2:14] = True
    pred = np.zeros_like(ref)
    pred[6:16, 5:15, ::4] = ref[5:15, 5:15, ::4]  # shifted 1 voxel along axis 0, only every 4th slice
    sp = (1.0, 1.0, 3.0)
    idx = list(range(0, 16, 4))
    r = structure_metrics(pred, ref, sp, 1.0, slices=(2, idx))
    on = [k for k in idx if ref[:, :, k].any()]
    expect_dice = 2 * 9 * 10 * len(on) / (2 * 100 * len(on))
    assert r["dice"] == pytest.approx(expect_dice)
    assert r["hd95"] == pytest.approx(1.0) and r["nsd"] == pytest.approx(1.0)
    full = structure_metrics(pred, ref, sp, 1.0)
    assert full["dice"] < 0.4  # the unsegmented slices count as misses in 3D
    # a chosen slice where the prediction is missing: distances go to the nearest chosen slice that has
    # it (12 mm away along the 3 mm axis), so they stay finite and show up in HD/ASD
    pred[:, :, 8] = False
    r = structure_metrics(pred, ref, sp, 1.0, slices=(2, idx))
    assert r["hd95"] == pytest.approx(math.hypot(12.0, 1.0), abs=0.6) and math.isfinite(r["asd"])
    # reference contours on slices 4, 8, 12, prediction's on 4, 12 (equal lengths): (2 + 2) / (3 + 2)
    assert r["nsd"] == pytest.approx(4 / 5)


def test_holm_and_wilcoxon():
    assert np.allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    assert np.allclose(holm([0.5, float("nan"), 0.01]), [0.5, float("nan"), 0.02], equal_nan=True)
    stat, p = wilcoxon([1, 2, 3], [1, 2, 3])
    assert p == 1.0
    from scipy.stats import wilcoxon as sw

    rng = np.random.default_rng(0)
    a, b = rng.random(12), rng.random(12) + 0.3
    assert wilcoxon(a, b)[1] == pytest.approx(sw(a, b).pvalue)


def test_paired_comparisons_pick_the_better_method():
    rng = np.random.default_rng(0)
    rows = []
    for case in range(12):
        base = rng.uniform(0.6, 0.8)
        for m, shift in (("good", 0.15), ("bad", 0.0), ("same", 0.0)):
            d = base + shift + rng.normal(0, 0.01)
            rows.append({"method": m, "centre": "A" if case < 6 else "B", "case": f"c{case}", "structure": "liver",
                         "dice": d, "nsd": d, "hd95": 10 - 10 * d, "asd": float("nan") if m == "same" else 1 - d})
    comps = paired_comparisons(rows, group_by_centre=True)
    by = {(c["metric"], c["centre"], c["method_a"], c["method_b"]): c for c in comps}
    gb = by[("dice", "all", "good", "bad")]
    assert gb["n_pairs"] == 12 and gb["better"] == "good" and gb["p_holm"] < 0.01
    assert by[("hd95", "all", "good", "bad")]["better"] == "good"  # lower distance is better
    assert by[("asd", "all", "good", "same")]["n_pairs"] == 0  # NaN distances drop out
    assert by[("dice", "A", "good", "bad")]["n_pairs"] == 6
    # Holm: adjusted p is never below the raw p and the family's smallest is multiplied by 3 pairs
    fam = [c for c in comps if c["metric"] == "dice" and c["centre"] == "all"]
    assert all(c["p_holm"] >= c["p"] for c in fam)
    assert min(c["p_holm"] for c in fam) == pytest.approx(min(3 * c["p"] for c in fam))
