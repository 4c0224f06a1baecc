"""The generalised (structure-agnostic) error decoder's plumbing on real data (LiTS-117, pretrained LiteMedSAM):
its prompted pass is SAM's own decoder, its checkpoint round-trips in fp16 and is refused where it does not fit,
and inside sam.propagate a loop that accepts no round leaves SAM's masks exactly as they were.

No decoder is shipped: the one trained by scripts/generalised_decoder_eval.py did not generalise to held-out
structures (docs/results/generalised_decoder.md), so these tests build their decoders here."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

CT_WINDOW = [-160.0, 240.0]


@pytest.fixture(scope="module")
def backbone():
    from medsegsuite.sam.backbones import load_litemedsam

    return load_litemedsam("cpu")


@pytest.fixture(scope="module")
def liver_slice(lits, backbone):
    """LiTS-117 axial slice 64 (plain PyTorch encoder): embedding, manual liver reference, its box."""
    from medsegsuite.sam.predictor import SlicePredictor
    from medsegsuite.volume import SliceEngine

    ct, ref = lits
    eng = SliceEngine.for_volume(ct, "axial")
    pred = SlicePredictor(backbone, "cpu")
    m = eng.slice(ref.masks["liver"], 64)
    r, c = np.nonzero(m)
    return pred, pred.embeddings(ct.array, "lits", eng, [64], CT_WINDOW)[64], m, [c.min(), r.min(), c.max() + 1,
                                                                               r.max() + 1]


def _dice(a, b):
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_prompted_pass_is_sams_own_decoder(backbone, liver_slice):
    """The loop's prompts go to SAM's own frozen mask decoder (no trained head): for a box the corrector gives
    exactly what SlicePredictor.decode (segment-anything's MaskDecoder) gives."""
    from medsegsuite.cosam.generalised import SamCorrector, box_sam, box_to_lowres
    from medsegsuite.cosam.loop import to_slice

    pred, emb, ref, box = liver_slice
    corr = SamCorrector(backbone).eval()
    ours = to_slice(box_sam(corr, emb, [box_to_lowres(box, ref.shape, corr.low_res)]), ref.shape)[0]
    sam = pred.decode(emb, ref.shape, boxes=[box])[0] > 0
    assert np.array_equal(ours, sam)
    assert _dice(sam, ref) > 0.9  # a real liver mask, not two empty ones
    with pytest.raises(Exception, match="start mask"):
        corr.coarse(emb)


def test_checkpoint_round_trip_and_refusals(backbone, tmp_path):
    from medsegsuite.cosam.generalised import SamCorrector, load_generalised, save_generalised
    from medsegsuite.errors import CheckpointError
    from medsegsuite.models.registry import default_registry

    torch.manual_seed(0)
    corr = SamCorrector(backbone, error_width=16)
    path = save_generalised(corr, tmp_path / "g.pt", {"acceptance": {"margin": 0.2}}, half=True)
    back = load_generalised(path, backbone)
    assert back.card["acceptance"] == {"margin": 0.2} and back.error_decoder.config["width"] == 16
    for k, v in corr.error_decoder.state_dict().items():
        assert torch.equal(back.error_decoder.state_dict()[k], v.half().float()), k
    with pytest.raises(CheckpointError, match="not a generalised error decoder"):
        load_generalised(default_registry().get("liver").path, backbone)


@pytest.fixture(scope="module")
def abstaining_decoder(backbone, tmp_path_factory):
    """A decoder whose card's rule can never accept a round (margin 1: the error area would have to vanish
    and still fall by 100 %... and agree above 1)."""
    from medsegsuite.cosam.generalised import SamCorrector, save_generalised

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gen") / "abstain.pt"
    rule = {"margin": 1.0, "agree": 1.01, "iou_drop": 0.0, "max_box_shift": None}
    return save_generalised(SamCorrector(backbone, error_width=16), path, {"acceptance": rule})


def test_propagation_keeps_sams_masks_where_the_loop_abstains(lits, backend, abstaining_decoder):
    """sam.propagate(correct=...) runs the loop on every slice; a slice whose loop accepts nothing keeps SAM's mask
    exactly, so with a rule that never accepts the result equals plain propagation voxel for voxel."""
    from medsegsuite.engine.interface import run_job
    from medsegsuite.volume import SliceEngine

    ct, ref = lits
    eng = SliceEngine.for_volume(ct, "axial")
    liver, k = ref.masks["liver"], 64
    r, c = np.nonzero(eng.slice(liver, k))
    box = [int(c.min()), int(r.min()), int(c.max()) + 1, int(r.max()) + 1]
    p = {"slice": k, "box": box, "window": CT_WINDOW, "max_slices": 1, "structure": "Liver", "encoder": "fp32"}
    plain = run_job(backend, "sam.propagate", ct, p)
    res = run_job(backend, "sam.propagate", ct, {**p, "correct": str(abstaining_decoder)})
    assert res.info["correct"] == str(abstaining_decoder) and res.info["corrected_slices"] == []
    assert res.info["slices"] == plain.info["slices"] == [63, 64, 65]
    assert np.array_equal(res.masks["Liver"], plain.masks["Liver"])
    assert "correct" not in plain.info


def test_propagation_refuses_a_model_that_is_not_a_generalised_decoder(lits, backend):
    from medsegsuite.engine.interface import run_job

    ct, _ = lits
    with pytest.raises(Exception, match="cosam-generalised"):
        run_job(backend, "sam.propagate", ct, {"slice": 64, "box": [20, 20, 90, 90], "correct": "liver",
                                               "encoder": "fp32"})


def test_loop_from_a_start_mask_abstains_without_touching_it(backbone, liver_slice):
    """correct_slice_mask returns the very mask it was given when no round is accepted."""
    from medsegsuite.cosam.generalised import SamCorrector, correct_slice_mask

    _, emb, ref, _ = liver_slice
    torch.manual_seed(0)
    corr = SamCorrector(backbone, error_width=16).eval()
    corr.card = {"acceptance": {"margin": 1.0, "agree": 1.01, "iou_drop": 0.0, "max_box_shift": math.inf}}
    out, accepted, stop = correct_slice_mask(corr, emb, ref, rounds=2)
    assert out is ref and accepted == 0 and stop
