"""Scribble segmentation (MaCo): CPL, MCM masking, losses, scribble checks, training, tasks, CLI."""
import numpy as np
import pytest
import torch

from medsegsuite.errors import InputError
from medsegsuite.io import Segmentation
from medsegsuite.scribble.cpl import continuous_pseudo_labels
from medsegsuite.scribble.labels import UNLABELLED, scribbles_from_segmentation, validate_scribbles
from medsegsuite.volume import Geometry, Volume


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny (<= 48² slices): one torch thread is faster than two, and far faster
    when the two cores are shared with other jobs (threads then wait on each other)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- CPL
def test_cpl_one_on_scribble_decays_and_sums_to_one():
    s = np.full((41, 41), UNLABELLED, np.uint8)
    s[20, 5] = 1
    s[20, 35] = 0
    p = continuous_pseudo_labels(s, 2, spacing=(1.0, 1.0), tau=5.0)
    assert p.shape == (2, 41, 41)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-6)
    assert p[1, 20, 5] == 1.0 and p[0, 20, 5] == 0.0
    assert p[0, 20, 35] == 1.0
    row = p[1, 20, 5:36]
    assert np.all(np.diff(row) < 0), "class-1 confidence must fall with distance from its scribble"
    # value = exp(-d1/tau) / (exp(-d1/tau) + exp(-d0/tau))
    d1, d0 = 10.0, 20.0
    want = np.exp(-d1 / 5) / (np.exp(-d1 / 5) + np.exp(-d0 / 5))
    assert p[1, 20, 15] == pytest.approx(want, rel=1e-4)


def test_cpl_respects_anisotropic_spacing():
    s = np.full((30, 30), UNLABELLED, np.uint8)
    s[15, 15] = 1
    s[0, 0] = 0
    s[29, 29] = 0
    iso = continuous_pseudo_labels(s, 2, spacing=(1.0, 1.0), tau=4.0)
    aniso = continuous_pseudo_labels(s, 2, spacing=(3.0, 1.0), tau=4.0)
    # 3 voxels along axis 0 are 9 mm with 3 mm spacing, 3 voxels along axis 1 stay 3 mm
    assert aniso[1, 18, 15] < aniso[1, 15, 18]
    assert iso[1, 18, 15] == pytest.approx(iso[1, 15, 18], abs=1e-6)
    # 3D with slice spacing: the distance uses mm, not voxels
    s3 = np.full((9, 9, 9), UNLABELLED, np.uint8)
    s3[4, 4, 4] = 1
    s3[0, 0, 0] = 0
    p3 = continuous_pseudo_labels(s3, 2, spacing=(1.0, 1.0, 5.0), tau=3.0)
    for v in [(4, 4, 5), (4, 5, 4)]:
        mm = np.array([1.0, 1.0, 5.0])
        d1 = np.linalg.norm((np.array(v) - 4) * mm)
        d0 = np.linalg.norm(np.array(v) * mm)
        assert p3[(1,) + v] == pytest.approx(1 / (1 + np.exp(-(d0 - d1) / 3.0)), rel=1e-4)
    from medsegsuite.scribble.cpl import class_distances

    d = class_distances(s3, 2, (1.0, 1.0, 5.0))
    assert d[1, 4, 4, 5] == pytest.approx(5.0) and d[1, 4, 5, 4] == pytest.approx(1.0)
    np.testing.assert_allclose(p3.sum(0), 1.0, atol=1e-6)


def test_cpl_class_without_scribble_gets_zero_and_rejects_bad_tau():
    s = np.full((10, 10), UNLABELLED, np.uint8)
    s[2, 2] = 0
    s[7, 7] = 1
    p = continuous_pseudo_labels(s, 3, tau=2.0)
    assert np.all(p[2] == 0)
    with pytest.raises(InputError, match="tau"):
        continuous_pseudo_labels(s, 3, tau=0)


# ---------------------------------------------------------------- MCM
def test_mcm_masks_high_attention_more_and_keeps_ratio():
    from medsegsuite.scribble.mcm import patch_mask

    att = torch.zeros(64, 64, 64)
    att[:, :, :32] = 1.0  # left half attended
    g = torch.Generator().manual_seed(0)
    for ratio in (0.1, 0.25, 0.5):
        m = patch_mask(att, ratio=ratio, patch=8, generator=g)
        assert m.shape == (64, 1, 64, 64)
        cells = m[:, 0, ::8, ::8].reshape(64, -1).sum(1)
        assert torch.all(cells == round(ratio * 64)), "every image masks exactly ratio × cells"
        np.testing.assert_allclose(float(m.mean()), round(ratio * 64) / 64, atol=1e-6)
    m = patch_mask(att, ratio=0.25, patch=8, generator=g)
    left, right = float(m[..., :32].mean()), float(m[..., 32:].mean())
    assert left > 3 * right > 0, (left, right)
    # masks are whole patches
    blocks = m[:, 0].reshape(64, 8, 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(64, 64, 64)
    assert torch.all((blocks.amax(-1) == blocks.amin(-1)))


def test_mcm_uniform_attention_is_unbiased_and_partial_edges():
    from medsegsuite.scribble.mcm import apply_mask, attention_from_prediction, patch_mask

    m = patch_mask(torch.full((200, 20, 20), 0.5), ratio=0.5, patch=8, generator=torch.Generator().manual_seed(1))
    assert m.shape == (200, 1, 20, 20)  # 3x3 cells, the last row/column partial
    assert abs(float(m[..., :8].mean()) - float(m[..., 8:16].mean())) < 0.1
    x = torch.ones(1, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    assert torch.equal(apply_mask(x, mask), torch.cat([torch.zeros(1, 1, 4, 2), torch.ones(1, 1, 4, 2)], -1))
    logits = torch.tensor([[[[5.0]], [[-5.0]]]])
    assert float(attention_from_prediction(logits)) < 0.01


# ---------------------------------------------------------------- losses
def test_losses_ignore_unlabelled_pixels():
    from medsegsuite.scribble.losses import consistency, partial_ce, soft_ce

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    lab = torch.full((2, 8, 8), UNLABELLED, dtype=torch.long)
    lab[0, 1, 1], lab[1, 5, 6], lab[0, 7, 2] = 0, 2, 1
    loss = partial_ce(logits, lab)
    loss.backward()
    g = logits.grad.abs().sum(1)
    assert torch.all(g[lab == UNLABELLED] == 0) and torch.all(g[lab != UNLABELLED] > 0)
    other = logits.detach().clone()
    other[:, :, lab[0] == UNLABELLED] += torch.randn_like(other[:, :, lab[0] == UNLABELLED]) * 10
    other[:, :, 1, 1] = logits.detach()[:, :, 1, 1]
    other[:, :, 5, 6] = logits.detach()[:, :, 5, 6]
    other[:, :, 7, 2] = logits.detach()[:, :, 7, 2]
    assert partial_ce(other, lab).item() == pytest.approx(loss.item(), rel=1e-6)
    want = torch.nn.functional.cross_entropy(torch.stack([logits[0, :, 1, 1], logits[1, :, 5, 6], logits[0, :, 7, 2]]),
                                             torch.tensor([0, 2, 1]))
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    # nothing scribbled: zero, still differentiable
    z = partial_ce(logits, torch.full((2, 8, 8), UNLABELLED, dtype=torch.long))
    assert z.item() == 0.0 and z.requires_grad
    # soft CE equals hard CE for one-hot soft labels; consistency is 0 for identical predictions
    onehot = torch.nn.functional.one_hot(torch.zeros(2, 8, 8, dtype=torch.long), 3).permute(0, 3, 1, 2).float()
    ce = torch.nn.functional.cross_entropy(logits, torch.zeros(2, 8, 8, dtype=torch.long))
    assert soft_ce(logits, onehot).item() == pytest.approx(ce.item(), rel=1e-5)
    assert consistency(logits, logits).item() == 0.0
    assert consistency(logits + torch.randn_like(logits), logits).item() > 0


def test_dense_dice_loss_of_the_full_supervision_baseline():
    from medsegsuite.losses import dice_loss
    from medsegsuite.scribble.train import FULL_LOSS

    def dense_dice_loss(logits, labels, n_classes):
        return dice_loss(logits, labels, **FULL_LOSS)

    lab = torch.zeros(1, 8, 8, dtype=torch.long)
    lab[0, 2:5, 2:5] = 1
    perfect = torch.nn.functional.one_hot(lab, 2).permute(0, 3, 1, 2).float() * 40
    assert dense_dice_loss(perfect, lab, 2).item() < 1e-3
    wrong = perfect.flip(1)
    assert dense_dice_loss(wrong, lab, 2).item() > 0.99
    unl = lab.clone()
    unl[0, 0, :] = UNLABELLED
    odd = perfect.clone()
    odd[0, :, 0, :] = torch.tensor([-40.0, 40.0])[:, None]  # wrong only where unlabelled
    assert dense_dice_loss(odd, unl, 2).item() < 1e-3


# ---------------------------------------------------------------- scribble checks
def _geom(shape=(20, 20, 6), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)):
    return Geometry(shape, spacing, origin)


def _scribble_seg(geom):
    bg = np.zeros(geom.shape, bool)
    bg[1:3, 1:10, 2] = True
    organ = np.zeros(geom.shape, bool)
    organ[8:12, 10, 2] = True
    return Segmentation(geom, {"background": bg, "organ": organ})


def test_scribbles_from_segmentation_and_clear_errors():
    g = _geom()
    s = scribbles_from_segmentation(_scribble_seg(g), image_geometry=g)
    assert s.classes == ["organ"] and s.labels[8, 10, 2] == 1 and s.labels[1, 1, 2] == 0
    assert s.labels[15, 15, 0] == UNLABELLED
    seg = _scribble_seg(g)
    seg.add("vessel", np.zeros(g.shape, bool))
    with pytest.raises(InputError, match="no scribbles for \\['vessel'\\]"):
        scribbles_from_segmentation(seg, image_geometry=g)
    with pytest.raises(InputError, match="'background'"):
        scribbles_from_segmentation(Segmentation(g, {"organ": _scribble_seg(g).masks["organ"]}))
    clash = _scribble_seg(g)
    clash.masks["organ"][1, 1, 2] = True
    with pytest.raises(InputError, match="overlap"):
        scribbles_from_segmentation(clash)
    # mismatched geometry: another spacing
    with pytest.raises(InputError, match="different grid"):
        scribbles_from_segmentation(_scribble_seg(_geom(spacing=(1.0, 1.0, 3.0))), image_geometry=g)
    # half-voxel shift
    with pytest.raises(InputError, match="fraction of a voxel"):
        scribbles_from_segmentation(_scribble_seg(_geom(origin=(0.5, 0.0, 0.0))), image_geometry=g)


def test_cropped_segmentation_is_pasted_and_outside_strokes_refused():
    g = _geom()
    crop = Geometry((10, 12, 6), g.spacing, g.ijk_to_ras_points([5, 4, 0])[0])
    bg = np.zeros(crop.shape, bool)
    bg[0, 0:5, 1] = True
    organ = np.zeros(crop.shape, bool)
    organ[4, 6, 1] = True
    s = scribbles_from_segmentation(Segmentation(crop, {"background": bg, "organ": organ}), image_geometry=g)
    assert s.labels.shape == g.shape and s.labels[9, 10, 1] == 1 and s.labels[5, 4, 1] == 0
    assert np.count_nonzero(s.labels != UNLABELLED) == 6
    # a segmentation grid that reaches past the image, with strokes out there
    out = Geometry((10, 10, 6), g.spacing, g.ijk_to_ras_points([15, 0, 0])[0])
    bg2 = np.zeros(out.shape, bool)
    bg2[0, 0:3, 1] = True
    org2 = np.zeros(out.shape, bool)
    org2[8, 5, 1] = True  # i = 23: outside the 20-voxel image
    with pytest.raises(InputError, match="outside the image"):
        scribbles_from_segmentation(Segmentation(out, {"background": bg2, "organ": org2}), image_geometry=g)


def test_validate_scribbles_errors():
    a = np.full((5, 5, 5), UNLABELLED, np.uint8)
    a[0, 0, 0], a[1, 1, 1] = 0, 1
    assert validate_scribbles(a, 1, (5, 5, 5)).dtype == np.uint8
    with pytest.raises(InputError, match="shape"):
        validate_scribbles(a, 1, (5, 5, 6))
    with pytest.raises(InputError, match="label values \\[7\\]"):
        b = a.copy()
        b[2, 2, 2] = 7
        validate_scribbles(b, 1)
    with pytest.raises(InputError, match="no scribbles for \\['liver'\\]"):
        validate_scribbles(np.where(a == 1, UNLABELLED, a), 1, classes=["liver"])
    with pytest.raises(InputError, match="also a class label"):
        validate_scribbles(a, 1, unlabelled=1)
    c = np.where(a == UNLABELLED, -1, a.astype(np.int16))
    assert validate_scribbles(c, 1, unlabelled=-1)[4, 4, 4] == UNLABELLED


# ---------------------------------------------------------------- training on a synthetic case
def _synthetic(shape=(48, 48, 16), seed=0):
    """A bright ellipse whose size changes along k, a dim blob beside it, noise: dense labels 0/1."""
    rng = np.random.default_rng(seed)
    i, j = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    lab = np.zeros(shape, np.uint8)
    for k in range(shape[2]):
        r = 9 + 4 * np.sin(k / shape[2] * np.pi)
        m = ((i - 22) / r) ** 2 + ((j - 24) / (r * 0.8)) ** 2 < 1
        lab[..., k] = m
        img[..., k] = 100 * m + 40 * (((i - 38) ** 2 + (j - 8) ** 2) < 25)
    img += rng.normal(0, 15, shape).astype(np.float32)
    return img, lab


def test_training_on_synthetic_case_reaches_dice():
    from medsegsuite.metrics import dice
    from medsegsuite.scribble.generator import make_scribbles
    from medsegsuite.scribble.infer import predict_volume
    from medsegsuite.scribble.train import TrainCase, train_model

    img, lab = _synthetic()
    train = [3, 8, 13]
    sc = make_scribbles(lab, 2, train, plane="axial", seed=0, margin_mm=3)
    assert np.all(sc[..., [0, 1, 2, 4]] == UNLABELLED)
    assert 0 < np.count_nonzero(sc == 1) < 0.5 * lab[..., train].sum()
    assert np.all(lab[sc == 1] == 1) and np.all(lab[sc == 0] == 0), "strokes never leave their class"
    progress = []
    net, card = train_model([TrainCase(img, sc, (1.0, 1.0, 2.0))], ["disc"],
                            {"iterations": 100, "batch": 3, "net": {"channels": [8, 16, 32], "strides": [2, 2]},
                             "cpl": "euclidean2d", "context": 0},  # the paper's CPL: scribbled slices only
                            progress=lambda f, m="": progress.append(f))
    assert progress[-1] == 1.0 and card["training"]["slices"] == 3
    pred = predict_volume(net, card, img)
    test = [k for k in range(16) if k not in train]
    d = dice(pred[..., test] == 1, lab[..., test] == 1)
    assert d > 0.8, d  # pCE alone reaches ~0.35 here (it labels most of the noise as disc)


# ---------------------------------------------------------------- backend tasks
@pytest.fixture(scope="module")
def tiny_case():
    from medsegsuite.scribble.generator import make_scribbles

    img, lab = _synthetic((32, 32, 8), seed=1)
    return Volume(img, (1.0, 1.0, 2.0)), lab, make_scribbles(lab, 2, [2, 5], plane="axial", seed=0)


FAST = {"iterations": 25, "batch": 2, "net": {"channels": [8, 16], "strides": [2]}}


def test_train_segment_retrain_tasks(backend, tiny_case):
    from medsegsuite.engine.interface import run_job
    from medsegsuite.models import load_checkpoint

    vol, lab, sc = tiny_case
    res = run_job(backend, "scribble.train", vol, {"classes": ["disc"], **FAST}, {"scribbles": sc})
    model = res.arrays["model"]
    assert model.dtype == np.uint8 and res.info["training"]["continued"] is False
    seg = run_job(backend, "scribble.segment", vol, {}, {"model": model})
    assert list(seg.masks) == ["disc"] and seg.masks["disc"].shape == vol.shape and seg.masks["disc"].any()
    # re-train from the last model, with a second case
    again = run_job(backend, "scribble.train", vol, {"classes": ["disc"], "iterations": 5,
                                                     "case_geometry": {"1": {"spacing": [1, 1, 2]}}},
                    {"scribbles": sc, "init_model": model, "image_1": vol.array, "scribbles_1": sc})
    assert again.info["training"]["continued"] is True and again.info["training"]["cases"] == 2
    # bytes are a weights_only-safe checkpoint
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.pt"
        p.write_bytes(model.tobytes())
        obj = load_checkpoint(p)
        assert obj["architecture"] == "scribble.unet2d/1" and obj["card"]["classes"] == ["disc"]


def test_task_errors_are_clear(backend, tiny_case):
    from medsegsuite.engine.interface import JobFailed, run_job

    vol, lab, sc = tiny_case
    with pytest.raises(JobFailed, match="no scribbles for \\['disc'\\]"):
        run_job(backend, "scribble.train", vol, {"classes": ["disc"]}, {"scribbles": np.where(sc == 1, 255, sc)})
    with pytest.raises(JobFailed, match="shape"):
        run_job(backend, "scribble.train", vol, {"classes": ["disc"]}, {"scribbles": sc[:, :, :4]})
    with pytest.raises(JobFailed, match="classes"):
        run_job(backend, "scribble.train", vol, {}, {"scribbles": sc})
    with pytest.raises(JobFailed, match="needs a model"):
        run_job(backend, "scribble.segment", vol, {}, {})
    with pytest.raises(JobFailed, match="refused|corrupt"):
        run_job(backend, "scribble.segment", vol, {}, {"model": np.arange(100, dtype=np.uint8)})


def test_quick_task_progress_and_cancel(backend, tiny_case):
    from medsegsuite.engine.interface import JobFailed, JobState, run_job

    vol, lab, sc = tiny_case
    events = []
    res = run_job(backend, "scribble.quick", vol, {"classes": ["disc"], **FAST}, {"scribbles": sc},
                  on_event=events.append)
    assert "disc" in res.masks and "model" in res.arrays and res.info["seconds"] > 0
    fr = [e.fraction for e in events if e.state == JobState.RUNNING]
    assert len(fr) > 10 and fr == sorted(fr)
    image_id = backend.set_image(vol)
    job = backend.start_job("scribble.quick", image_id, {"classes": ["disc"], **FAST, "iterations": 100000},
                            {"scribbles": sc})
    seen = []

    def stop(e):
        seen.append(e)
        if e.fraction > 0.0001 and not getattr(stop, "done", False):
            stop.done = True
            backend.cancel(job)

    assert backend.wait(job, timeout=60, on_event=stop) == JobState.CANCELLED
    assert max(e.fraction for e in seen) < 0.01
    with pytest.raises(JobFailed):
        backend.result(job)


# ---------------------------------------------------------------- CLI
def test_cli_make_train_segment_round_trip(tmp_path, tiny_case):
    from medsegsuite.cli import main
    from medsegsuite.io import read_segmentation, write_image, write_segmentation
    from medsegsuite.metrics import dice

    vol, lab, _ = tiny_case
    write_image(vol, tmp_path / "img.nrrd")
    write_segmentation(Segmentation(vol.geometry, {"disc": lab == 1}), tmp_path / "ref.seg.nrrd")
    assert main(["scribble", "make-scribbles", "--labels", str(tmp_path / "ref.seg.nrrd"), "--slices", "2,5",
                 "--out", str(tmp_path / "scr.seg.nrrd")]) == 0
    scr = read_segmentation(tmp_path / "scr.seg.nrrd")
    assert scr.names == ["background", "disc"] and scr.masks["disc"][..., 2].any() and not scr.masks["disc"][..., 3].any()
    assert main(["scribble", "train", "--image", str(tmp_path / "img.nrrd"), "--scribbles", str(tmp_path / "scr.seg.nrrd"),
                 "--iterations", "40", "--batch", "2", "--threads", "1", "--device", "cpu",
                 "--out", str(tmp_path / "m.pt")]) == 0
    assert (tmp_path / "m.json").exists()
    assert main(["scribble", "segment", "--model", str(tmp_path / "m.pt"), "--image", str(tmp_path / "img.nrrd"),
                 "--device", "cpu", "--out", str(tmp_path / "out.seg.nrrd")]) == 0
    out = read_segmentation(tmp_path / "out.seg.nrrd")
    assert out.names == ["disc"] and out.geometry.same_as(vol.geometry)
    assert dice(out.masks["disc"], lab == 1) > 0.6
    # bad input: a scribble file without background -> clear error, exit code 2
    write_segmentation(Segmentation(vol.geometry, {"disc": lab == 1}), tmp_path / "nobg.seg.nrrd")
    assert main(["scribble", "train", "--image", str(tmp_path / "img.nrrd"), "--scribbles",
                 str(tmp_path / "nobg.seg.nrrd"), "--out", str(tmp_path / "x.pt")]) == 2


def test_cli_train_and_segment_through_a_server(tmp_path, tiny_case):
    """--server: the scribbles, the model bytes and the masks travel over HTTP."""
    from medsegsuite.cli import main
    from medsegsuite.io import read_segmentation, write_image
    from medsegsuite.scribble.labels import scribbles_to_segmentation
    from medsegsuite.io import write_segmentation
    from medsegsuite.server import ServerConfig, start_in_thread

    vol, lab, sc = tiny_case
    write_image(vol, tmp_path / "img.nrrd")
    write_segmentation(scribbles_to_segmentation(sc, ["disc"], vol.geometry), tmp_path / "scr.seg.nrrd")
    key = "scribble-test-key-0123456789"
    (tmp_path / "key").write_text(key)
    srv = start_in_thread(ServerConfig(port=0, api_key=key, device="cpu"))
    try:
        remote = ["--server", srv.url, "--api-key-file", str(tmp_path / "key")]
        assert main(["scribble", "train", "--image", str(tmp_path / "img.nrrd"), "--scribbles",
                     str(tmp_path / "scr.seg.nrrd"), "--iterations", "10", "--batch", "2",
                     "--out", str(tmp_path / "m.pt")] + remote) == 0
        assert main(["scribble", "segment", "--model", str(tmp_path / "m.pt"), "--image", str(tmp_path / "img.nrrd"),
                     "--out", str(tmp_path / "out.seg.nrrd")] + remote) == 0
    finally:
        srv.stop()
    out = read_segmentation(tmp_path / "out.seg.nrrd")
    assert out.names == ["disc"] and out.geometry.same_as(vol.geometry)
