"""Less work per volume: the extent-first pass (cosam/pipeline.py: extent_first) encodes only the
slices that can hold the structure, and gives the all-slices result there; the embedding cache is
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
    fast = run_job(backend, "cosam.segment", vol, {"iterations": 1, "extent_step": 4})
    ext = fast.info["extent"]
    assert ext["skipped_slices"] >= 8 and ext["first"] <= 16 and ext["last"] >= 23
    assert fast.info["encoder_calls"] == 40 - ext["skipped_slices"]
    full = run_job(backend, "cosam.segment", vol, {"iterations": 1, "extent_step": 0})
    assert "extent" not in full.info and len(full.info["slices"]) == 40
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
