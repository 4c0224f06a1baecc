"""SAM and CoSAM see the same anatomy whatever the IJK order of the file: one CT (a slab of LiTS-117)
stored in several axis orders and flips with the same physical geometry gives the same world-space
segmentation. Before the slice engine, array axis 2 was taken as axial, so the reordered copies were
segmented on coronal or sagittal slices."""
import numpy as np
import pytest

from medsegsuite.engine.interface import run_job
from medsegsuite.metrics import dice
from medsegsuite.volume import Volume

from test_planes import reorient

# (perm, flips): new axis n is old axis perm[n], reversed where flips[n]
ORIENTATIONS = [((0, 1, 2), (False, False, False)),   # as stored (LPS-canonical)
                ((2, 0, 1), (True, False, True)),     # axial axis first and reversed
                ((1, 2, 0), (True, True, False))]     # rows and columns swapped and reversed, axial in the middle


def back(mask, perm, flips):
    """The exact inverse of `reorient`: a result on the reordered grid -> the original grid."""
    m = mask
    for n, f in enumerate(flips):
        if f:
            m = np.flip(m, n)
    return np.transpose(m, np.argsort(perm))


@pytest.fixture(scope="module")
def slab(lits):
    """Five axial slices of LiTS-117, the middle one (k0) held out by the liver model."""
    from medsegsuite.models.registry import default_registry

    ct, ref = lits
    held = default_registry().get("liver").load()["card"]["split"]["heldout"]
    k0 = held[len(held) // 2]
    sl = slice(k0 - 2, k0 + 3)
    vol = Volume(np.ascontiguousarray(ct.array[:, :, sl]), ct.spacing, ct.origin, ct.direction, name="slab")
    return vol, {s: np.ascontiguousarray(ref.masks[s][:, :, sl]) for s in ("liver", "tumour")}


def same_place(vol, perm, flips):
    """`vol` stored in another axis order: the array, spacing, direction columns and origin (the first
    voxel of a reversed axis is the old last one) change together, so every voxel keeps its world position."""
    a, d = reorient(vol.array, vol.direction, perm, flips)
    d0 = np.asarray(vol.direction, float)
    origin = np.asarray(vol.origin, float)
    for p, f in zip(perm, flips):
        if f:
            origin = origin + d0[:, p] * vol.spacing[p] * (vol.shape[p] - 1)
    v = Volume(a, tuple(vol.spacing[p] for p in perm), tuple(origin), d, name="reoriented")
    i, j, k = 3, 70, 2  # any voxel: same world position before and after
    old = d0 @ (np.array([i, j, k]) * vol.spacing) + np.asarray(vol.origin)
    idx = [(vol.shape[p] - 1 - (i, j, k)[p]) if f else (i, j, k)[p] for p, f in zip(perm, flips)]
    assert np.allclose(np.asarray(d, float) @ (np.array(idx) * np.array(v.spacing)) + origin, old)
    assert v.array[tuple(idx)] == vol.array[i, j, k]
    return v


def _run(backend, vol, task, params, inputs):
    return run_job(backend, task, vol, params, inputs, timeout=600)


def test_same_world_segmentation_in_every_storage_order(backend, slab):
    """Both methods on each copy (they share its cached embeddings: same backbone, slice and window)."""
    vol, refs = slab
    window = [-160.0, 240.0]  # the liver model card's window, so the oracle-box embeddings are reused
    results = {"sam.oracle_box": [], "cosam.segment": []}
    for perm, flips in ORIENTATIONS:
        v = same_place(vol, perm, flips)
        box = _run(backend, v, "sam.oracle_box", {"plane": "axial", "slices": "2", "window": window},
                   {"liver": reorient(refs["liver"], vol.direction, perm, flips)[0]})
        co = _run(backend, v, "cosam.segment", {"model": "liver", "plane": "axial", "slices": "2", "iterations": 4,
                                                "window": window}, {})
        assert co.info["encoder_calls"] == 0  # the embedding of that copy's slice 2 was reused
        results["sam.oracle_box"].append(back(box.masks["liver"], perm, flips))
        results["cosam.segment"].append(back(co.masks["liver"], perm, flips))
    for task, masks in results.items():
        first = masks[0]
        assert dice(first[:, :, 2], refs["liver"][:, :, 2]) > 0.85, task  # the liver, on the axial slice
        assert not first[:, :, [0, 1, 3, 4]].any(), task
        for (perm, flips), m in zip(ORIENTATIONS[1:], masks[1:]):
            assert dice(m, first) >= 0.99, (task, perm, flips)
