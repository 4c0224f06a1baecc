"""CoSAM on the tiny SAM configuration: error decoder learning, the loop's stopping and clicks,
checkpoints, backbone loaders, the backend task's embedding cache and the CLI."""
import numpy as np
import pytest
import torch

from medsegsuite.cosam.backbones import build_tiny_sam, load_sam_backbone
from medsegsuite.cosam.loop import STOP_NO_ERROR, STOP_NOT_SHRINKING, self_correct
from medsegsuite.cosam.model import CoSAM, load_cosam, save_cosam
from medsegsuite.cosam.prompts import build_prompts
from medsegsuite.errors import CheckpointError


def _ellipses(n, seed, size=128):
    """Images with 1-2 bright ellipses on a noisy background, and their masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs, masks = [], []
    for _ in range(n):
        m = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 3)):
            cy, cx = rng.uniform(30, size - 30, 2)
            ry, rx = rng.uniform(12, 28, 2)
            m |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        imgs.append(np.clip(m * 0.7 + 0.15 + rng.normal(0, 0.05, m.shape), 0, 1).astype(np.float32))
        masks.append(m)
    return np.stack(imgs), np.stack(masks)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_sam()


def _embed(bb, imgs):
    with torch.no_grad():
        return bb.image_encoder(torch.from_numpy(np.repeat(imgs[:, None], 3, 1)))


def _error_dice(model, emb, masks, seed):
    from medsegsuite.cosam.perturb import perturb
    from medsegsuite.cosam.train import lowres_targets

    rng = np.random.default_rng(seed)
    g = lowres_targets(masks, model.low_res)[:, 0].numpy() > 0.5
    pert = np.stack([perturb(m, rng, p_identity=0.0, p_flip=0.0) for m in g])
    with torch.no_grad():
        pred = torch.sigmoid(model.errors(emb, torch.from_numpy(pert[:, None].astype(np.float32)))).numpy()[:, 0] > 0.5
    true = pert ^ g
    return 2 * (pred & true).sum() / max(pred.sum() + true.sum(), 1)


def test_error_decoder_learns_synthetic_perturbations(tiny):
    from medsegsuite.cosam.train import train_cosam

    imgs, masks = _ellipses(48, seed=1)
    emb = _embed(tiny, imgs)
    torch.manual_seed(0)
    model = CoSAM(tiny, error_width=32, error_depth=2)
    before = _error_dice(model, emb[32:], masks[32:], seed=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds synchronisation
    try:
        train_cosam(model, emb, masks, range(32), steps=100, refine_steps=0, batch=8, lr=3e-3, log=None)
    finally:
        torch.set_num_threads(threads)
    after = _error_dice(model, emb[32:], masks[32:], seed=5)  # held-out images, unseen perturbations
    print("error-map Dice before/after training", before, after)
    assert after > 0.6 and after > before + 0.2, (before, after)


def _constant_error_model(tiny, bias):
    m = CoSAM(tiny, error_width=16, error_depth=1)
    last = m.error_decoder.head[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, bias)
    return m.eval()


def test_loop_stops_early_and_keeps_the_better_mask(tiny):
    imgs, _ = _ellipses(3, seed=2)
    emb = _embed(tiny, imgs)
    # every pixel predicted wrong, every round: the error area cannot shrink -> stop after one try,
    # and the rejected round's mask is not kept
    m = _constant_error_model(tiny, 20.0)
    r = self_correct(m, emb, rounds=4)
    assert r.rounds_run == [1, 1, 1] and r.accepted == [0, 0, 0]
    assert r.stop == [STOP_NOT_SHRINKING] * 3
    assert all(torch.equal(t > 0, r.rounds[0] > 0) for t in r.rounds[1:])
    # nothing predicted wrong: no round runs at all
    r = self_correct(_constant_error_model(tiny, -20.0), emb, rounds=4)
    assert r.rounds_run == [0, 0, 0] and r.stop == [STOP_NO_ERROR] * 3


def test_user_clicks_are_respected(tiny):
    imgs, _ = _ellipses(1, seed=3)
    emb = _embed(tiny, imgs)
    m = _constant_error_model(tiny, 20.0)  # the error decoder would flip everything
    S = m.low_res
    with torch.no_grad():
        coarse = (m.coarse(emb) > 0)[0, 0].numpy()
    pos = np.argwhere(~coarse)[0][::-1].astype(np.float32) if (~coarse).any() else np.array([1.0, 1.0], np.float32)
    neg = np.argwhere(coarse)[0][::-1].astype(np.float32) if coarse.any() else np.array([S - 2.0, S - 2.0], np.float32)
    pts, labs = np.stack([pos, neg]), np.array([1, 0])
    r = self_correct(m, emb, rounds=3, clicks=[(pts, labs)])
    assert r.accepted[0] >= 1  # the first round after a click is always taken
    for t in r.rounds:
        mask = (t > 0)[0, 0].numpy()
        assert mask[int(pos[1]), int(pos[0])] and not mask[int(neg[1]), int(neg[0])]
    # clicks lead the prompt and generated points keep their distance from them
    err = np.zeros((S, S), np.float32)
    err[int(pos[1]), int(pos[0])] = 0.99
    err[S // 2, 5] = 0.9
    p = build_prompts(np.zeros((S, S), bool), err, k=5, user_points=pts, user_labels=labs)
    assert np.array_equal(p.points[:2], pts) and list(p.labels[:2]) == [1, 0]
    assert len(p.points) == 3 and tuple(p.points[2]) == (5.0, S // 2)


def test_painted_clicks_match_the_whole_grid_disk():
    """paint_clicks looks only at each click's bounding box: the pixels it paints are exactly those of
    the disk test over the whole grid, for clicks inside, on the edge of and just outside the grid."""
    from medsegsuite.cosam.prompts import paint_clicks

    rng = np.random.default_rng(0)
    H, W = 40, 56
    base = rng.random((H, W)) > 0.5
    yy, xx = np.ogrid[:H, :W]
    pts = np.concatenate([rng.uniform(-3, 60, (40, 2)), [[0, 0], [W - 1, H - 1], [-1.5, 5], [W + 0.5, 7]]])
    pts = pts.astype(np.float32)  # as the loop passes them
    labs = rng.integers(0, 2, len(pts))
    for radius in (0.5, 1.0, 2.0, 3.7):
        want = base.copy()
        for (x, y), lab in zip(pts, labs):
            want[(yy - y) ** 2 + (xx - x) ** 2 <= radius * radius] = bool(lab)
        got = paint_clicks(base, pts, labs, radius)
        assert np.array_equal(got, want) and got.sum() != base.sum()
    assert np.array_equal(paint_clicks(base, pts[:0], labs[:0]), base)


def test_checkpoint_round_trip_and_refusals(tiny, tmp_path):
    from medsegsuite.models import save_checkpoint
    from medsegsuite.sam import load_litemedsam

    imgs, _ = _ellipses(2, seed=4)
    emb = _embed(tiny, imgs)
    m = CoSAM(tiny, error_width=16, error_depth=1)
    for p in m.parameters():  # make it differ from a fresh copy
        p.data.add_(torch.randn_like(p) * 0.01)
    path = save_cosam(m, tmp_path / "m.pt", {"structure": "blob"})
    back = load_cosam(path, tiny)
    assert back.structure == "blob" and back.card["backbone"] == "tiny_sam"
    with torch.no_grad():
        mask = (m.coarse(emb) > 0).float()
        assert torch.equal(m.coarse(emb), back.coarse(emb))
        assert torch.equal(m.errors(emb, mask), back.errors(emb, mask))
    # only the trained parts are stored
    sd = torch.load(path, weights_only=True)["state_dict"]
    assert {k.split(".")[0] for k in sd} == {"coarse_head", "refine_head", "error_decoder"}
    with pytest.raises(CheckpointError, match="tiny_sam"):
        load_cosam(path, load_litemedsam())
    save_checkpoint(tmp_path / "other.pt", "unet", {"w": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="not a CoSAM model"):
        load_cosam(tmp_path / "other.pt", tiny)
    (tmp_path / "bad.pt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError):
        load_cosam(tmp_path / "bad.pt", tiny)


def test_official_sam_and_medsam_loaders(tiny):
    from segment_anything import sam_model_registry

    sd = sam_model_registry["vit_b"](checkpoint=None).state_dict()  # randomly initialised, official layout
    bb = load_sam_backbone("sam_vit_b", sd)
    assert bb.image_size == 1024 and bb.name.startswith("sam_vit_b")
    k = "mask_decoder.iou_token.weight"
    assert torch.equal(bb.mask_decoder.state_dict()["iou_token.weight"], sd[k])
    med = load_sam_backbone("medsam", {"model": sd})  # MedSAM files may wrap the state dict
    assert med.name.startswith("medsam") and type(med.image_encoder).__name__ == "ImageEncoderViT"
    # CoSAM builds on it (SAM's own decoder batches slices one by one inside CoSAM)
    m = CoSAM(bb, error_width=16, error_depth=1)
    emb = torch.randn(2, 256, 64, 64)
    with torch.no_grad():
        assert m.coarse(emb).shape == (2, 1, 256, 256)
    with pytest.raises(CheckpointError, match="key layout"):
        load_sam_backbone("sam_vit_b", {f"module.{k}": v for k, v in sd.items()})
    with pytest.raises(CheckpointError, match="missing"):
        load_sam_backbone("sam_vit_b", {k: v for k, v in sd.items() if not k.endswith("iou_token.weight")})
    tiny_sd = {f"{part}.{k}": v for part, mod in (("image_encoder", tiny.image_encoder),
               ("prompt_encoder", tiny.prompt_encoder), ("mask_decoder", tiny.mask_decoder))
               for k, v in mod.state_dict().items()}
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_sam_backbone("sam_vit_b", tiny_sd)


@pytest.fixture(scope="module")
def tiny_model_file(tiny, tmp_path_factory):
    from medsegsuite.cosam.train import train_cosam

    imgs, masks = _ellipses(24, seed=6)
    m = CoSAM(tiny, error_width=16, error_depth=1)
    train_cosam(m, _embed(tiny, imgs), masks, range(24), steps=10, refine_steps=5, batch=8, lr=2e-3, log=None)
    return save_cosam(m, tmp_path_factory.mktemp("cosam") / "blob.pt", {"structure": "blob", "window": [0.0, 1.0]})


def _volume(n=6, seed=7):
    from medsegsuite.volume import Volume

    imgs, masks = _ellipses(n, seed=seed, size=96)
    return Volume(np.moveaxis(imgs, 0, 2).copy(), (1.0, 1.0, 2.0)), np.moveaxis(masks, 0, 2)


def test_segment_task_reuses_embeddings_and_keeps_rounds(tiny_model_file, backend):
    from medsegsuite.engine.interface import run_job

    from medsegsuite.volume import SliceEngine

    vol, _ = _volume()
    eng = SliceEngine.for_volume(vol, "axial")
    params = {"model": str(tiny_model_file), "plane": "axial", "iterations": 3, "return_rounds": True}
    r1 = run_job(backend, "cosam.segment", vol, params)
    assert r1.info["encoder_calls"] == 6 and set(r1.masks) == {"blob"}
    assert sorted(r1.arrays) == [f"blob_round{t}" for t in range(4)]
    assert np.array_equal(r1.arrays["blob_round3"] > 0, r1.masks["blob"])
    # a second run, now with clicks (x = column, y = row of the axial slice) continuing from the first
    # result: nothing is re-encoded, and no rounds come back unless asked for
    pts = np.array([[10.0, 12.0, 2, 1], [50.0, 40.0, 2, 0]])
    r2 = run_job(backend, "cosam.segment", vol, {**params, "return_rounds": False},
                 {"points": pts, "start": r1.masks["blob"]})
    assert r2.info["encoder_calls"] == 0 and r2.info["clicks"] == 2 and not r2.arrays
    assert eng.slice(r2.masks["blob"], 2)[12, 10] and not eng.slice(r2.masks["blob"], 2)[40, 50]
    assert r2.info["per_slice"]["2"]["accepted"] >= 1
    # bad input: a clear error
    from medsegsuite.engine.interface import JobFailed

    with pytest.raises(JobFailed, match="outside"):
        run_job(backend, "cosam.segment", vol, params, {"points": np.array([[500.0, 1, 2, 1]])})


def test_cli_train_and_segment(tmp_path, tiny_model_file):
    from medsegsuite.cli import main
    from medsegsuite.io import Segmentation, read_segmentation, write_image, write_segmentation

    vol, masks = _volume(8, seed=8)
    write_image(vol, tmp_path / "img.nii.gz")
    write_segmentation(Segmentation(vol.geometry, {"blob": masks}), tmp_path / "lab.seg.nrrd")
    rc = main(["cosam", "train", "--images", str(tmp_path / "img.nii.gz"), "--labels", str(tmp_path / "lab.seg.nrrd"),
               "--structure", "blob", "--out", str(tmp_path / "m.pt"), "--backbone", "tiny_sam", "--steps", "4",
               "--refine-steps", "2", "--device", "cpu", "--window", "0,1"])
    assert rc == 0
    import json

    card = json.loads((tmp_path / "m.json").read_text())
    assert card["structure"] == "blob" and card["split"]["heldout"] == [0, 4]
    assert len(card["validation"]["dice_by_round"]) == 5
    rc = main(["cosam", "segment", "--image", str(tmp_path / "img.nii.gz"), "--model", str(tmp_path / "m.pt"),
               "--out", str(tmp_path / "s.seg.nrrd"), "--iterations", "2", "--points", "20,30,3,1",
               "--device", "cpu"])
    assert rc == 0
    seg = read_segmentation(tmp_path / "s.seg.nrrd")
    from medsegsuite.volume import SliceEngine

    assert SliceEngine(seg.geometry.shape, seg.geometry.direction).slice(seg.masks["blob"], 3)[30, 20]
    rc = main(["cosam", "segment", "--image", str(tmp_path / "img.nii.gz"), "--model", str(tmp_path / "img.nii.gz"),
               "--out", str(tmp_path / "x.seg.nrrd"), "--device", "cpu"])
    assert rc == 2  # not a checkpoint: a clear error, nothing written
    assert not (tmp_path / "x.seg.nrrd").exists()


def test_panel_logic_reviews_rounds_and_continues_from_points(tiny_model_file, backend):
    import importlib
    import sys
    from pathlib import Path

    import slicer
    import vtk

    from MedSegSuiteLib import prompts, segments
    from MedSegSuiteLib.volumes import volume_to_node
    from medsegsuite.errors import InputError

    root = Path(__file__).resolve().parents[2] / "SelfCorrectingSAM"
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    mod = importlib.import_module("SelfCorrectingSAM")
    vol, _ = _volume()
    scene = slicer.vtkMRMLScene()
    node = volume_to_node(vol, scene, "img")
    logic = mod.SelfCorrectingSAMLogic(lambda: backend)
    runner = logic.run(node, None, model=str(tiny_model_file), structure="blob", iterations=2, timeout=120)
    assert runner.phase.value == "done", runner.error
    seg = logic.segmentation_node
    sid = segments.segment_id(seg, "blob")
    assert len(logic.rounds) == 3
    assert np.array_equal(segments.read_mask(seg, sid, vol.geometry), logic.rounds[-1])
    logic.show_round(0)  # the slider: the coarse mask goes into the segment ...
    assert np.array_equal(segments.read_mask(seg, sid, vol.geometry), logic.rounds[0])
    with pytest.raises(InputError, match="points"):
        logic.request(vol, node, seg, model=str(tiny_model_file), structure="blob", continue_loop=True)
    # ... the user edits it (the segment no longer is the session's result) ...
    reviewed = logic.rounds[0].copy()
    reviewed[40:44, 40:44, 4] = ~reviewed[40:44, 40:44, 4]
    segments.write_masks(seg, {"blob": reviewed}, vol.geometry, undoable=False)
    # ... and +/- points continue the loop from the segment as it is, through cosam.segment
    from medsegsuite.volume import SliceEngine

    eng = SliceEngine.for_volume(vol, "axial")
    fid = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    ras = vol.geometry.ijk_to_ras @ np.array([12.0, 10.0, 2.0, 1.0])
    fid.AddControlPoint(vtk.vtkVector3d(*ras[:3]), "p")
    prompts.set_point_sign(fid, 0, positive=True)
    task, params, inputs = logic.request(vol, node, seg, model=str(tiny_model_file), structure="blob",
                                         continue_loop=True, points_node=fid)
    x, y, k = eng.ijk_to_slice((12, 10, 2))  # points travel in the axial slice's coordinates
    assert task == "cosam.segment" and params["plane"] == "axial" and "axis" not in params
    assert np.array_equal(inputs["start"], reviewed) and inputs["points"].tolist() == [[x, y, k, 1]]
    runner = logic.run(node, seg, model=str(tiny_model_file), structure="blob", iterations=2, points_node=fid,
                       continue_loop=True, timeout=120)
    assert runner.phase.value == "done", runner.error
    after = segments.read_mask(seg, sid, vol.geometry)
    assert after[12, 10, 2]
    # a new point while the segment is the session's result: cosam.click, only that slice comes back
    ras = vol.geometry.ijk_to_ras @ np.array([70.0, 60.0, 4.0, 1.0])
    fid.AddControlPoint(vtk.vtkVector3d(*ras[:3]), "n")
    prompts.set_point_sign(fid, 1, positive=not after[70, 60, 4])
    task, params, inputs = logic.request(vol, node, seg, model=str(tiny_model_file), structure="blob",
                                         continue_loop=True, points_node=fid)
    assert task == "cosam.click" and inputs["points"].tolist() == [[*eng.ijk_to_slice((70, 60, 4))[:2], 4,
                                                                    int(not after[70, 60, 4])]]
    runner = logic.run(node, seg, model=str(tiny_model_file), structure="blob", points_node=fid,
                       continue_loop=True, timeout=120)
    assert runner.phase.value == "done", runner.error
    clicked = segments.read_mask(seg, sid, vol.geometry)
    assert clicked[70, 60, 4] == (not after[70, 60, 4])  # the user's click holds
    others = [kk for kk in range(vol.shape[2]) if kk != 4]
    assert np.array_equal(clicked[:, :, others], after[:, :, others])  # only the clicked slice changed
    # the backend forgot the session (server restart, eviction): the click fails with a clear message,
    # and the next Continue falls back to cosam.segment from the segment as it is
    backend.close_session(f"SelfCorrectingSAM:{node.GetID()}")
    ras = vol.geometry.ijk_to_ras @ np.array([30.0, 30.0, 1.0, 1.0])
    fid.AddControlPoint(vtk.vtkVector3d(*ras[:3]), "p2")
    task, _, _ = logic.request(vol, node, seg, model=str(tiny_model_file), structure="blob", continue_loop=True,
                               points_node=fid)
    assert task == "cosam.click"
    runner = logic.run(node, seg, model=str(tiny_model_file), structure="blob", points_node=fid,
                       continue_loop=True, timeout=120)
    assert runner.phase.value == "failed" and "run cosam.segment with session=" in runner.error
    assert np.array_equal(segments.read_mask(seg, sid, vol.geometry), clicked)  # a failed job writes nothing
    task, _, _ = logic.request(vol, node, seg, model=str(tiny_model_file), structure="blob", continue_loop=True,
                               points_node=fid)
    assert task == "cosam.segment"
    # ... and each result is one undo step: undo returns to the previous result, then to the reviewed mask
    assert segments.undo_last_write(seg)
    assert np.array_equal(segments.read_mask(seg, segments.segment_id(seg, "blob"), vol.geometry), after)
    assert segments.undo_last_write(seg)
    assert np.array_equal(segments.read_mask(seg, segments.segment_id(seg, "blob"), vol.geometry), reviewed)
