"""Scribble models and TTA source models slice through the one slice engine: the same anatomy stored
in another IJK order or with flipped axes gives the same world-space segmentation; their task
schemas refuse unknown, ill-typed and (on a server) file-path parameters before a job exists."""
import numpy as np
import pytest
import torch

from medsegsuite.engine.interface import run_job
from medsegsuite.errors import InputError
from medsegsuite.metrics import dice
from medsegsuite.volume import Volume

from test_planes import reorient

LPS = np.diag([-1.0, -1.0, 1.0])
# (perm, flips): new array axis n is old axis perm[n], reversed where flips[n]
ORIENTATIONS = [((0, 1, 2), (False, False, False)), ((2, 0, 1), (True, False, True)),
                ((1, 2, 0), (False, True, False)), ((0, 2, 1), (False, False, True))]


@pytest.fixture(autouse=True)
def _few_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def back(array, perm, flips):
    """A result on a reoriented grid brought back onto the original grid."""
    for n, f in enumerate(flips):
        if f:
            array = np.flip(array, n)
    return np.transpose(array, np.argsort(perm))


def reoriented(vol: Volume, perm, flips) -> Volume:
    a, d = reorient(vol.array, vol.direction, perm, flips)
    spacing = tuple(vol.spacing[p] for p in perm)
    # same physical corner voxel: the origin moves to the voxel that is now (0, 0, 0)
    corner = [(vol.shape[p] - 1) if f else 0 for p, f in zip(perm, flips)]
    ijk = [0, 0, 0]
    for p, c in zip(perm, corner):
        ijk[p] = c
    origin = vol.geometry.ijk_to_ras_points([ijk])[0]
    return Volume(a, spacing, tuple(origin), d, name=f"{vol.name} {perm} {flips}")


def test_reoriented_volume_has_the_same_world_geometry():
    vol = Volume(np.random.default_rng(0).random((4, 5, 6)).astype(np.float32), (1.0, 2.0, 3.0), (5.0, 6.0, 7.0), LPS)
    for perm, flips in ORIENTATIONS:
        r = reoriented(vol, perm, flips)
        ijk = np.array([[1, 2, 3]])
        rijk = np.round(r.geometry.ras_to_ijk_points(vol.geometry.ijk_to_ras_points(ijk))).astype(int)[0]
        assert r.array[tuple(rijk)] == vol.array[1, 2, 3]


# ---------------------------------------------------------------- scribble (MaCo)
def _rods(shape=(40, 32, 12), seed=1):
    """Bright rods running inferior->superior (discs on axial slices, bars on the others) in noise:
    a model trained on axial slices segments them only if it is shown axial slices."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    lab = np.zeros(shape, np.uint8)
    img = np.zeros(shape, np.float32)
    for k in range(shape[2]):
        m = ((i - 14 - k // 4) ** 2 + (j - 12) ** 2) < (36 + 3 * (k % 3))
        lab[..., k] = m
        img[..., k] = 100 * m + 40 * (((i - 32) ** 2 + (j - 24) ** 2) < 12)
    img += rng.normal(0, 12, shape).astype(np.float32)
    return Volume(img, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), LPS, name="rods"), lab


TINY = {"iterations": 50, "batch": 2, "net": {"channels": [8, 16], "strides": [2]}}


@pytest.fixture(scope="module")
def rods_model():
    """A tiny model trained in-process (the task path is exercised by the reoriented training below)."""
    from medsegsuite.scribble.checkpoint import model_to_bytes
    from medsegsuite.scribble.generator import make_scribbles
    from medsegsuite.scribble.train import TrainCase, train_model

    vol, lab = _rods()
    sc = make_scribbles(lab, 2, [2, 6, 9], "axial", seed=0, margin_mm=3, direction=vol.direction)
    net, card = train_model([TrainCase(vol.array, sc, vol.spacing, vol.direction)], ["rod"],
                            {"plane": "axial", **TINY})
    return vol, lab, sc, model_to_bytes(net, card)


def test_scribble_segment_is_the_same_in_every_storage_order(backend, rods_model):
    vol, lab, _, model = rods_model
    ref = run_job(backend, "scribble.segment", vol, {}, {"model": model}).masks["rod"]
    assert dice(ref, lab == 1) > 0.6  # the model works (not a vacuous comparison)
    for perm, flips in ORIENTATIONS[1:]:
        r = reoriented(vol, perm, flips)
        got = run_job(backend, "scribble.segment", r, {}, {"model": model})
        assert got.info["plane"] == "axial"
        d = dice(back(got.masks["rod"], perm, flips), ref)
        assert d >= 0.99, (perm, flips, d)


def test_scribble_training_takes_the_same_slices_in_every_storage_order(backend, rods_model):
    vol, lab, sc, model = rods_model
    perm, flips = ORIENTATIONS[1]
    r = reoriented(vol, perm, flips)
    sc_r = reorient(sc, LPS, perm, flips)[0]
    res = run_job(backend, "scribble.train", r, {"classes": ["rod"], "plane": "axial", **TINY}, {"scribbles": sc_r})
    # every axial slice (the default grow3d pseudo labels reach all 12; strokes on 3 of them)
    assert res.info["training"]["slices"] == 12 and res.info["plane"] == "axial"
    # the model trained on the reoriented storage segments like the one trained on the original
    ref = run_job(backend, "scribble.segment", vol, {}, {"model": model}).masks["rod"]
    got = run_job(backend, "scribble.segment", vol, {}, {"model": res.arrays["model"]}).masks["rod"]
    d = dice(got, ref)
    assert d >= 0.99, d


def test_old_cards_with_axis_read_as_planes():
    from medsegsuite.scribble.preprocess import plane_of

    assert plane_of({"axis": 2}) == "axial" and plane_of({}) == "axial"
    assert plane_of({"plane": "coronal", "axis": 2}) == "coronal"


# ---------------------------------------------------------------- TTA
@pytest.fixture(scope="module")
def liver_crop(lits):
    ct, seg = lits
    k = slice(60, 64)
    vol = Volume(np.ascontiguousarray(ct.array[:, :, k]), ct.spacing, ct.origin, ct.direction, name="LiTS-117 crop")
    return vol, seg.masks["liver"][:, :, k]


@pytest.mark.parametrize("method", ["none", "vptta"])
def test_tta_adapt_is_the_same_in_every_storage_order(backend, liver_crop, method):
    vol, ref_mask = liver_crop
    ref = run_job(backend, "tta.adapt", vol, {"model": "liver-source", "method": method}).masks["liver"]
    assert dice(ref, ref_mask) > 0.85
    for perm, flips in ORIENTATIONS[1:]:
        r = reoriented(vol, perm, flips)
        got = run_job(backend, "tta.adapt", r, {"model": "liver-source", "method": method})
        assert got.info["slices"] == [0, 1, 2, 3] and got.info["plane"] == "axial"
        d = dice(back(got.masks["liver"], perm, flips), ref)
        assert d >= 0.99, (method, perm, flips, d)


def test_tta_refuses_a_plane_its_model_was_not_trained_on(backend, liver_crop):
    from medsegsuite.engine.interface import JobFailed

    with pytest.raises(JobFailed, match="trained on axial"):
        run_job(backend, "tta.adapt", liver_crop[0], {"model": "liver-source", "method": "none", "plane": "coronal"})


# ---------------------------------------------------------------- schemas
def test_every_scribble_and_tta_task_is_declared_with_its_kind():
    from medsegsuite.engine.tasks import available_tasks

    tasks = available_tasks()
    kinds = {n: tasks[n].kind for n in ("scribble.train", "scribble.quick", "scribble.segment", "tta.adapt",
                                        "dyna.night", "dyna.status", "dyna.use")}
    assert all(tasks[n].schema is not None for n in kinds)
    assert kinds == {"scribble.train": "training", "scribble.quick": "training", "scribble.segment": "interactive",
                     "tta.adapt": "interactive", "dyna.night": "training", "dyna.status": "interactive",
                     "dyna.use": "interactive"}
    assert tasks["dyna.night"].schema["cases"].type == "path" and tasks["dyna.night"].schema["out"].type == "path"


def test_scribble_setting_defaults_agree_with_the_modules():
    from medsegsuite.scribble import mcm
    from medsegsuite.scribble.cpl import DEFAULT_TAU_MM
    from medsegsuite.scribble.losses import DEFAULT_WEIGHTS
    from medsegsuite.scribble.params import DEFAULT_SETTINGS

    assert DEFAULT_SETTINGS["tau"] == DEFAULT_TAU_MM and DEFAULT_SETTINGS["mask_ratio"] == mcm.DEFAULTS["ratio"]
    assert DEFAULT_SETTINGS["patch"] == mcm.DEFAULTS["patch"] and DEFAULT_SETTINGS["w_cpl"] == DEFAULT_WEIGHTS["cpl"]
    assert DEFAULT_SETTINGS["w_mcm"] == DEFAULT_WEIGHTS["mcm"]
    assert DEFAULT_SETTINGS["w_cpl_dice"] == DEFAULT_WEIGHTS["cpl_dice"]
    assert DEFAULT_SETTINGS["mcm_rampup"] == DEFAULT_WEIGHTS["mcm_rampup"]


@pytest.mark.parametrize("params,match", [
    ({"casez": "x"}, "unknown parameter"),
    ({"options": "many"}, "must be a JSON object"),
    ({"options": {"iterations": "many"}}, "option 'iterations' of the DyNA night must be an integer"),
    ({"options": {"epochs": 3}}, "unknown option"),
    ({"clear_queue": "maybe"}, "must be true or false"),
    ({"model": 3}, "must be a non-empty string"),
])
def test_dyna_night_refuses_bad_params_before_a_job_exists(backend, params, match):
    with pytest.raises(InputError, match=match):
        backend.start_job("dyna.night", None, params)


@pytest.mark.parametrize("params", [{"cases": "/data/day"}, {"out": "/tmp/night.pt"},
                                    {"model": "/srv/models/liver.pt"}])
def test_a_server_refuses_backend_file_paths_for_dyna_night(params):
    from medsegsuite.engine import LocalBackend

    server_side = LocalBackend("cpu", allow_paths=False)
    try:
        with pytest.raises(InputError, match="names a file on the server"):
            server_side.start_job("dyna.night", None, params)
    finally:
        server_side.close()


def test_scribble_tasks_refuse_ill_typed_params(backend, rods_model):
    vol, _, sc, _ = rods_model
    for params, match in [({"classes": ["rod"], "axis": 2}, "unknown parameter"),
                          ({"classes": ["rod"], "plane": "oblique"}, "must be one of axial"),
                          ({"classes": ["rod"], "iterations": 0}, "must lie in 1"),
                          ({"classes": ["rod"], "method": "magic"}, "must be one of maco")]:
        with pytest.raises(InputError, match=match):
            run_job(backend, "scribble.train", vol, params, {"scribbles": sc})
