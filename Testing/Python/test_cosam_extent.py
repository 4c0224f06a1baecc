"""Less work per volume: the extent-first pass (cosam/pipeline.py: extent_first) encodes only the
slices that can hold the structure, and gives the all-slices result there; its fill-in by bisection
shape-interpolates the slices between agreeing slices (volume/interpolate.py); the embedding cache is
bounded in bytes (engine/cache.py)."""
import numpy as np

from medsegsuite.engine.interface import run_job
from medsegsuite.metrics import dice
from medsegsuite.volume import Volume


def test_extent_first_skips_slices_without_the_structure(backend, lits):
    """Synthetic arrangement of real CT: 8 axial LiTS-117 slices (liver, manual label) between 16 slices
    of air (-1000 HU) on each side. The extent pass must skip air slices and match the all-slices run."""
    ct, ref = lits
    air = np.full(ct.shape[:2] + (16,), -1000.0, np.float32)
    arr = np.concatenate([air, ct.array[:, :, 60:68], air], axis=2)
    liver = np.zeros(arr.shape, bool)
    liver[:, :, 16:24] = ref.masks["liver"][:, :, 60:68]
    vol = Volume(arr, ct.spacing, ct.origin, ct.direction, name="lits117-between-air (synthetic)")
    fast = run_job(backend, "cosam.segment", vol, {"iterations": 1, "extent_step": 4, "interpolate": 0})
    ext = fast.info["extent"]
    assert ext["skipped_slices"] >= 8 and ext["first"] <= 16 and ext["last"] >= 23
    assert fast.info["encoder_calls"] == 40 - ext["skipped_slices"]
    full = run_job(backend, "cosam.segment", vol, {"iterations": 1, "extent_step": 0})
    assert "extent" not in full.info and len(full.info["slices"]) == 40
    assert fast.info["interpolated"] == [] and ext["interpolated_slices"] == 0
    a, b = fast.masks["liver"], full.masks["liver"]
    done = fast.info["slices"]
    assert np.array_equal(a[:, :, done], b[:, :, done])  # the computed slices are the all-slices result
    assert dice(b, liver) > 0.8
    assert dice(a, liver) >= dice(b, liver) - 0.005


def test_embedding_cache_is_bounded_in_bytes():
    from medsegsuite.engine.cache import BackendCaches

    c = BackendCaches(max_embedding_mb=1)
    for i in range(10):
        c.embeddings.put(("bb", "img", i), np.zeros(256 * 1024 // 8, np.float64))  # 256 KiB each
    assert len(c.embeddings) == 4 and c.embeddings.bytes == 4 * 256 * 1024
    assert c.embeddings.get(("bb", "img", 9)) is not None and c.embeddings.get(("bb", "img", 0)) is None
    c.drop_image("img")
    assert len(c.embeddings) == 0 and c.embeddings.bytes == 0


def _disk(r, shape=(64, 64), c=(32, 32)):
    y, x = np.ogrid[:shape[0], :shape[1]]
    return (y - c[0]) ** 2 + (x - c[1]) ** 2 <= r * r


def test_shape_interpolation_morphs_between_two_masks():
    from medsegsuite.volume.interpolate import agreement, between

    a, b = _disk(8), _disk(16)
    assert np.array_equal(between(a, b, 0.0), a) and np.array_equal(between(a, b, 1.0), b)
    mid = between(a, b, 0.5)
    assert abs(mid.sum() / _disk(12).sum() - 1) < 0.05  # the radius halfway, not the union or the overlap
    far = between(_disk(6, c=(16, 16)), _disk(6, c=(48, 48)), 0.5)
    assert not (far & ~(_disk(6, c=(16, 16)) | _disk(6, c=(48, 48)))).any()  # never outside the union
    # anisotropic pixels: distances in mm along each axis
    assert between(a, b, 0.5, sampling=(2.0, 1.0)).sum() > 0
    assert agreement(a, np.zeros_like(a)) == 0.0 and agreement(np.zeros_like(a), np.zeros_like(a)) == 0.0
    assert agreement(a, a) == 1.0


def test_fill_in_by_interpolation_encodes_fewer_slices_and_keeps_dice(backend, lits):
    """Real CT, manual label: 24 axial LiTS-117 slices (liver on all). With interpolation (the default)
    fewer slices are encoded; the slices it segments are the all-slices result; each interpolated slice
    lies between two segmented slices holding liver; Dice stays within 0.005 of segmenting every slice."""
    ct, ref = lits
    arr = np.ascontiguousarray(ct.array[:, :, 52:76])
    liver = ref.masks["liver"][:, :, 52:76]
    vol = Volume(arr, ct.spacing, ct.origin, ct.direction, name="lits117-24-slices")
    fast = run_job(backend, "cosam.segment", vol, {"iterations": 1})  # defaults: extent_step 4, interpolate 0.9
    ext, interp = fast.info["extent"], fast.info["interpolated"]
    computed = sorted(int(k) for k in fast.info["per_slice"])
    assert ext["interpolated_slices"] == len(interp) >= 6 and ext["interpolate"] == 0.9
    assert len(computed) + len(interp) == 24 and not set(computed) & set(interp)
    assert fast.info["encoder_calls"] == len(computed) <= 18
    a = fast.masks["liver"]
    for k in interp:
        below, above = max(c for c in computed if c < k), min(c for c in computed if c > k)
        assert a[:, :, below].any() and a[:, :, above].any()
        assert a[:, :, k].any()
    full = run_job(backend, "cosam.segment", vol, {"iterations": 1, "interpolate": 0})
    b = full.masks["liver"]
    assert full.info["interpolated"] == [] and len(full.info["per_slice"]) == 24
    assert np.array_equal(a[:, :, computed], b[:, :, computed])
    assert dice(b, liver) > 0.85
    assert dice(a, liver) >= dice(b, liver) - 0.005


def test_a_sparse_selection_is_never_interpolated(backend, lits):
    """Slices a user picks one by one (every 2nd here) are each segmented by the loop: interpolation
    only fills gaps between neighbouring slices of the volume."""
    ct, ref = lits
    vol = Volume(np.ascontiguousarray(ct.array[:, :, 52:76]), ct.spacing, ct.origin, ct.direction,
                 name="lits117-24-slices")  # the same image as above: its embeddings are cached
    r = run_job(backend, "cosam.segment", vol, {"iterations": 1, "slices": "every:2"})
    assert r.info["interpolated"] == [] and "extent" in r.info
    looped = sorted(int(k) for k in r.info["per_slice"])
    assert looped == sorted(r.info["slices"]) and len(looped) == 12 and set(np.diff(looped)) == {2}


def test_panel_gets_the_fill_in_with_its_round_review(backend, lits):
    """The Slicer panel asks for every round (its review slider): interpolated slices then carry each
    round morphed from their ends, the final round is what lands in the segment, and the status text
    says how many slices were interpolated."""
    import importlib
    import sys
    from pathlib import Path

    import slicer

    from MedSegSuiteLib import segments
    from MedSegSuiteLib.volumes import volume_to_node

    root = Path(__file__).resolve().parents[2] / "SelfCorrectingSAM"
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    mod = importlib.import_module("SelfCorrectingSAM")
    ct, _ = lits
    vol = Volume(np.ascontiguousarray(ct.array[:, :, 52:76]), ct.spacing, ct.origin, ct.direction,
                 name="lits117-24-slices")
    scene = slicer.vtkMRMLScene()
    node = volume_to_node(vol, scene, "img")
    logic = mod.SelfCorrectingSAMLogic(lambda: backend)
    runner = logic.run(node, None, model="liver", iterations=1, timeout=600)
    assert runner.phase.value == "done", runner.error
    interp = logic.interpolated
    assert len(interp) >= 6 and logic.looped + len(interp) == 24
    assert len(logic.rounds) == 2
    for k in interp:
        assert logic.rounds[0][:, :, k].any() and logic.rounds[1][:, :, k].any()
    seg = logic.segmentation_node
    assert np.array_equal(segments.read_mask(seg, segments.segment_id(seg, "liver"), vol.geometry), logic.rounds[-1])
    assert f"{len(interp)} interpolated" in logic.slices_text()
    # the panel's "Fill in between agreeing slices" box, unticked, asks for every slice through the loop
    task, params, _ = logic.request(vol, node, None, model="liver", interpolate=False)
    assert task == "cosam.segment" and params["interpolate"] == 0
    assert "interpolate" not in logic.request(vol, node, None, model="liver")[1]
