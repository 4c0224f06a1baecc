"""sam.propagate: a box on one slice -> LiteMedSAM (the real pretrained weights) -> neighbouring slices,
with its stop rules; bad prompts are refused before the model runs."""
from __future__ import annotations

import numpy as np
import pytest

from medsegsuite.engine.interface import JobFailed, run_job
from medsegsuite.engine.tasks import get_task
from medsegsuite.rt.propagate import _keep_touching, stop_reason
from medsegsuite.volume import SliceEngine

CT_WINDOW = [-160.0, 240.0]


def test_stop_rules():
    params = get_task("sam.propagate").validate({"slice": 0, "box": [0, 0, 4, 4]})
    prev = np.zeros((20, 20), bool)
    prev[5:12, 5:12] = True
    same = prev.copy()
    assert stop_reason(same, prev, params) is None
    assert "min_pixels" in stop_reason(np.zeros_like(prev), prev, params)
    moved = np.roll(prev, 9, axis=1)
    assert "overlaps" in stop_reason(moved, prev, params)
    grown = np.zeros_like(prev)
    grown[2:18, 2:18] = True
    assert "grew" in stop_reason(grown, prev, params)
    island = same.copy()
    island[15:18, 15:18] = True  # a blob SAM found away from the neighbour's mask is dropped
    assert np.array_equal(_keep_touching(island, prev), same)


def test_box_on_one_slice_propagates_to_its_neighbours(lits, backend):
    """Real CT (LiTS-117), the pretrained LiteMedSAM; box from the manual reference on slice 64. The plain
    PyTorch encoder (an exact route, sam/encoder_routes.py): three slices cost less than building the ONNX
    route would when this file runs on its own (the routes' equality is tested in test_encoder_routes.py)."""
    ct, ref = lits
    eng = SliceEngine.for_volume(ct, "axial")
    liver, k = ref.masks["liver"], 64
    r, c = np.nonzero(eng.slice(liver, k))
    box = [int(c.min()), int(r.min()), int(c.max()) + 1, int(r.max()) + 1]
    res = run_job(backend, "sam.propagate", ct, {"slice": k, "box": box, "window": CT_WINDOW, "max_slices": 1,
                                                 "structure": "Liver", "encoder": "fp32"})
    out = res.masks["Liver"]
    assert res.info["encoder_route"] == "fp32"
    assert res.info["slices"] == [63, 64, 65] and res.info["stopped"] == {"up": "max_slices 1", "down": "max_slices 1"}
    for kk in (63, 64, 65):
        a, b = eng.slice(out, kk), eng.slice(liver, kk)
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.85, kk
    others = [kk for kk in range(eng.n_slices) if kk not in (63, 64, 65)]
    assert not any(eng.slice(out, kk).any() for kk in others)  # nothing written beyond where it went


def test_bad_prompts_are_refused(lits, backend):
    ct, _ = lits
    with pytest.raises(Exception, match="not a box inside"):
        run_job(backend, "sam.propagate", ct, {"slice": 3, "box": [50, 50, 40, 60]})
    with pytest.raises(Exception, match="outside the 128"):
        run_job(backend, "sam.propagate", ct, {"slice": 300, "box": [10, 10, 20, 20]})
    with pytest.raises((JobFailed, Exception), match="needs a box"):
        run_job(backend, "sam.propagate", ct, {"slice": 3})
