"""The shipped generalised (structure-agnostic) error decoder on a structure it never saw: LiTS-117's tumour
(manual label), box-prompted LiteMedSAM as the start. The loop with the card's calibrated rule must not make a
slice worse, and the error map must flag an error planted in a correct mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch

CT_WINDOW = [-160.0, 240.0]


@pytest.fixture(scope="module")
def backbone():
    from medsegsuite.sam.backbones import load_litemedsam

    return load_litemedsam("cpu")


@pytest.fixture(scope="module")
def corrector(backbone):
    from medsegsuite.models.loader import load_model

    bb = backbone
    return load_model("cosam_generalised", "cpu", expect="cosam-generalised/", cache_key=(bb.name,),
                      backbone=bb).net


@pytest.fixture(scope="module")
def tumour_slices(lits, backbone):
    """Three slices of the largest LiTS-117 lesion: embeddings (plain PyTorch encoder), references."""
    from scipy import ndimage

    from medsegsuite.sam.predictor import SlicePredictor
    from medsegsuite.volume import SliceEngine

    ct, ref = lits
    lab, n = ndimage.label(ref.masks["tumour"])
    lesion = lab == 1 + int(np.argmax(ndimage.sum(ref.masks["tumour"], lab, range(1, n + 1))))
    eng = SliceEngine.for_volume(ct, "axial")
    ks = [k for k in range(eng.n_slices) if eng.slice(lesion, k).sum() >= 30]
    picks = [ks[len(ks) // 4], ks[len(ks) // 2], ks[3 * len(ks) // 4]]
    pred = SlicePredictor(backbone, "cpu")
    embs = pred.embeddings(ct.array, "lits", eng, picks, CT_WINDOW)
    return torch.cat([embs[k] for k in picks]), [eng.slice(lesion, k) for k in picks]


def _dice(a, b):
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_card_says_the_tumour_was_held_out(corrector):
    card = corrector.card
    assert "lits-117:tumour" in card["held_out"]
    assert not any(s.endswith(":tumour") or s.endswith(":spleen") for s in card["trained_on"] + card["calibrated_on"])
    assert card["acceptance"]  # a calibrated rule travels with the decoder


def test_correction_never_worse_than_box_sam_on_heldout_structure(corrector, tumour_slices):
    from medsegsuite.cosam.generalised import box_sam, box_to_lowres, correct_masks, jittered_box
    from medsegsuite.cosam.loop import to_slice

    emb, refs = tumour_slices
    rng = np.random.default_rng(0)
    boxes = [box_to_lowres(jittered_box(r, rng), r.shape, corrector.low_res) for r in refs]
    start = box_sam(corrector, emb, boxes)
    final, accepted, _ = correct_masks(corrector, emb, start, rounds=3)
    d0 = [_dice(to_slice(start[j:j + 1], r.shape)[0], r) for j, r in enumerate(refs)]
    d1 = [_dice(to_slice(final[j:j + 1], r.shape)[0], r) for j, r in enumerate(refs)]
    print("box-SAM", np.round(d0, 3), "corrected", np.round(d1, 3), "accepted", accepted)
    assert all(b >= a - 1e-6 for a, b in zip(d0, d1)), (d0, d1)


def test_error_map_flags_a_planted_error(corrector, tumour_slices):
    """Cut a half-plane out of the reference (a large missing part): the predicted error map must find it."""
    from medsegsuite.cosam.perturb import perturb_once
    from medsegsuite.cosam.train import lowres_targets

    emb, refs = tumour_slices
    rng = np.random.default_rng(1)
    gts = lowres_targets(np.stack(refs), corrector.low_res)[:, 0].numpy() > 0.5
    cut = np.stack([perturb_once(g, "cut", rng) for g in gts])
    with torch.inference_mode():
        p_cut = torch.sigmoid(corrector.errors(emb.float(), torch.from_numpy(cut.astype(np.float32))[:, None]))
    for j in range(len(refs)):
        planted = gts[j] & ~cut[j]
        flagged = p_cut[j, 0].numpy() > 0.5
        assert planted.sum() > 0
        # most of the planted error is flagged, and the flagged area is mostly the planted error
        assert (flagged & planted).sum() >= 0.5 * planted.sum(), j
        assert _dice(flagged, planted) >= 0.4, j
