"""Scribble styles and Slicer's Grow from seeds (the baseline every scribble model must beat)."""
import numpy as np
import pytest

from medsegsuite.errors import InputError
from medsegsuite.metrics import dice
from medsegsuite.scribble.generator import STYLES, annotator_slice, style_scribbles, style_slices
from medsegsuite.scribble.labels import UNLABELLED

pytest.importorskip("slicer_core")


def _disc_volume(n=40):
    """Synthetic: a bright ellipsoid in noise (labelled synthetic; the real-data checks are below)."""
    z, y, x = np.mgrid[:n, :n, :n]
    inside = ((x - n / 2) / 12) ** 2 + ((y - n / 2) / 9) ** 2 + ((z - n / 2) / 15) ** 2 < 1
    rng = np.random.default_rng(0)
    img = 100.0 * inside + rng.normal(0, 10, inside.shape)
    return img.astype(np.float32), inside.astype(np.uint8)


def test_annotator_slice_draws_a_cross_inside_and_broken_arcs_just_outside():
    lab = np.zeros((64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    lab[((yy - 32) / 20) ** 2 + ((xx - 30) / 12) ** 2 < 1] = 1
    s = annotator_slice(lab, 2, np.random.default_rng(0), width=1, ring_px=4)
    fg, bg = s == 1, s == 0
    assert fg.any() and bg.any()
    assert np.all(lab[fg] == 1) and np.all(lab[bg] == 0)  # strokes never leave their class
    from scipy import ndimage

    # background only on a ring just outside: every background stroke pixel is 3..6 px from the organ
    d = ndimage.distance_transform_edt(lab == 0)
    assert d[bg].min() >= 2.5 and d[bg].max() <= 6
    # broken: the background ring strokes come in several pieces, not one closed loop
    assert ndimage.label(bg, np.ones((3, 3)))[1] >= 2
    # a cross: the foreground strokes span both the long (rows) and short (columns) axis
    r, c = np.nonzero(fg)
    assert np.ptp(r) > 20 and np.ptp(c) > 10


def test_styles_scribble_only_their_slices_and_refuse_unknown():
    _, lab = _disc_volume()
    for style in STYLES:
        sc = style_scribbles(lab, 2, style, seed=1)
        scribbled = sorted(set(np.nonzero(sc != UNLABELLED)[2].tolist()))
        assert set(scribbled) <= set(style_slices(40, style))
        assert np.all(lab[sc == 1] == 1) and np.all(lab[sc == 0] == 0)
    assert style_slices(128, "annotator") == style_slices(128, "skeleton") and len(style_slices(128, "annotator")) == 10
    assert style_slices(128, "every4") == list(range(2, 128, 4))
    with pytest.raises(InputError, match="unknown scribble style"):
        style_scribbles(lab, 2, "zigzag")


def test_grow_from_seeds_segments_the_unscribbled_slices_and_keeps_the_effect_extent():
    from medsegsuite.scribble.growcut import grow_from_seeds, seed_box

    img, lab = _disc_volume()
    sc = style_scribbles(lab, 2, "annotator", seed=0, count=4)
    out = grow_from_seeds(img, sc, 2)
    test = [k for k in range(40) if k not in style_slices(40, "annotator", 4)]
    assert dice(out[:, :, test] == 1, lab[:, :, test] == 1) > 0.9
    box = seed_box(sc != UNLABELLED)
    outside = np.ones(lab.shape, bool)
    outside[box] = False
    assert not np.any(out[outside])  # the effect grows only inside the seeds' box + 10 %
    with pytest.raises(InputError, match="every class"):
        grow_from_seeds(img, np.where(sc == 0, UNLABELLED, sc), 2)
    with pytest.raises(InputError, match="3D image"):
        grow_from_seeds(img[0], sc[0], 2)


@pytest.fixture(scope="module")
def lits_small():
    """LiTS-117 (real CT, manual liver label) at half resolution: 64³, 4 mm."""
    from medsegsuite.sampledata import lits117_ct, lits117_labels

    ct = lits117_ct().array.reshape(64, 2, 64, 2, 64, 2).mean(axis=(1, 3, 5)).astype(np.float32)
    liver = (lits117_labels().array > 0).reshape(64, 2, 64, 2, 64, 2).mean(axis=(1, 3, 5)) > 0.5
    return ct, liver.astype(np.uint8), (4.0, 4.0, 4.0)


def test_maco_beats_grow_from_seeds_on_the_same_scribbles(lits_small):
    """The headline claim, small and seeded: on annotator-style scribbles on 10 of 64 axial slices of a
    real CT, the package's MaCo (trained on those scribbles only) scores at least Grow from seeds' liver
    Dice on the unscribbled slices. With the package's default recipe (600 iterations, soft Dice on the
    pseudo labels) measured 0.861 vs 0.844 at one torch thread; with CE-only pseudo labels and 100
    iterations it was 0.754 (then a strict expected failure)."""
    import torch

    from medsegsuite.scribble.growcut import grow_from_seeds
    from medsegsuite.scribble.infer import postprocess, predict_volume
    from medsegsuite.scribble.train import TrainCase, train_model

    torch.set_num_threads(2)
    ct, liver, sp = lits_small
    sc = style_scribbles(liver, 2, "annotator", seed=0, spacing=sp)
    test = [k for k in range(64) if k not in style_slices(64, "annotator")]
    grown = grow_from_seeds(ct, sc, 2, sp)
    net, card = train_model([TrainCase(ct, sc, sp)], ["liver"], {"seed": 0})  # the package defaults
    pred = postprocess(predict_volume(net, card, ct), ["liver"], True)
    d_grow = dice(grown[..., test] == 1, liver[..., test] == 1)
    d_maco = dice(pred[..., test] == 1, liver[..., test] == 1)
    assert d_grow > 0.75, d_grow  # the baseline works here
    assert d_maco >= d_grow, (d_maco, d_grow)
