"""CoSAM on slices whose field of view or pixel size is not the model's: locate, then segment in one window.

A prompt-free model only knows the scale and framing of its training crop (LiTS-117: 128 px of 2 mm,
a 25.6 cm window around the liver). On a slice of another field of view the loop runs instead on
windows cut at the model's pixel size (:mod:`medsegsuite.volume.fov`):

1. *locate*: the coarse head alone on windows tiling every ``step``-th slice; the pasted masks'
   largest 3D connected piece gives the structure's in-plane centre (an ROI, when given, gives it
   directly and skips this pass);
2. *segment*: the whole loop on one window of the training size centred there, on every slice (one
   window for the volume, as in training), pasted back onto the input grid.

The windows form a small LPS volume of their own, so the slice engine, the embedding cache (under an
id derived from the image's and the windows'), the extent pass and progress all work unchanged.
"""
from __future__ import annotations

import hashlib

import numpy as np
from scipy import ndimage

from ..volume import SliceEngine
from ..volume.fov import centred, tiling
from .pipeline import correct_slices, segment_volume

LPS = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))


def training_geometry(card: dict) -> tuple[float, int] | None:
    """(pixel mm, window px) the model was trained at, from its card; None when the card does not say."""
    px, size = card.get("pixel_mm"), card.get("slice_px")
    if px is None or size is None:
        return None
    size = int(np.max(size)) if np.ndim(size) else int(size)
    return float(px), size


def _window_volume(engine, array, indices, win):
    """The windows of ``indices`` as an LPS volume (size, size, n_slices × n_windows) and its engine."""
    tiles = [win.cut(engine.slice(array, k)) for k in indices]
    vol = np.ascontiguousarray(np.concatenate(tiles, 0).transpose(1, 2, 0))
    return vol, SliceEngine(vol.shape, LPS, "axial")


def _window_id(image_id: str, win, indices) -> str:
    sig = repr((win.slice_shape, win.pixel_mm, win.target_mm, win.size, win.origins, list(indices)))
    return f"{image_id}:win:{hashlib.sha256(sig.encode()).hexdigest()[:16]}"


def locate(model, predictor, array, image_id, engine, indices, window, pixel_mm, geometry, step: int = 4,
           progress=None, check_cancelled=None) -> dict:
    """{"centre": (row, column) on the input slices or None, "probe_slices", "windows"}: where the coarse
    head's largest 3D piece lies, from windows tiling every ``step``-th slice."""
    target_mm, size = geometry
    tiles = tiling(engine.slice_shape, pixel_mm, target_mm, size)
    probe = indices[::max(1, step)]
    vol, weng = _window_volume(engine, array, probe, tiles)
    n = len(tiles.origins)
    out = correct_slices(model, predictor, vol, _window_id(image_id, tiles, probe), weng, range(weng.n_slices),
                         window, rounds=0, keep_rounds=False, progress=progress, check_cancelled=check_cancelled)
    masks = np.stack([tiles.paste(np.stack([out["final"][j * n + t] for t in range(n)]).astype(np.float32)) > 0.5
                      for j in range(len(probe))])
    lab, count = ndimage.label(masks)
    info = {"probe_slices": len(probe), "windows": n, "centre": None}
    if count == 0:
        return info
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, count + 1))
    piece = lab == (1 + int(np.argmax(sizes)))
    rows, cols = np.nonzero(piece.any(0))
    info["centre"] = ((rows.min() + rows.max()) / 2.0, (cols.min() + cols.max()) / 2.0)
    return info


def segment_windowed(model, predictor, array, image_id, engine, indices, window, pixel_mm, geometry,
                     rounds: int = 4, k_points: int = 5, roi=None, keep_rounds: bool = True, progress=None,
                     check_cancelled=None, extent_step: int = 4) -> dict:
    """:func:`~medsegsuite.cosam.pipeline.segment_volume`'s dict for slices seen in the model's own field of
    view (see the module doc); ``info["field_of_view"]`` says what was done."""
    progress = progress or (lambda f, m: None)
    target_mm, size = geometry
    indices = sorted(set(int(i) for i in indices))
    if roi is not None:
        indices = engine.roi_slices(roi, indices)
        lo, hi = engine.canonical_roi(roi)
        rest = [d for d in range(3) if d != engine.axis]
        centre = ((lo[rest[0]] + hi[rest[0]] - 1) / 2.0, (lo[rest[1]] + hi[rest[1]] - 1) / 2.0)
        found = {"centre": centre, "from": "roi"}
    else:
        found = locate(model, predictor, array, image_id, engine, indices, window, pixel_mm, geometry,
                       max(1, extent_step), lambda f, m: progress(0.3 * f, f"locating: {m}"), check_cancelled)
        found["from"] = "coarse head on tiled windows"
    fov = {"pixel_mm": [round(float(p), 3) for p in pixel_mm], "model_pixel_mm": target_mm, "window_px": size,
           **{k: v for k, v in found.items() if k != "centre"},
           "centre": None if found["centre"] is None else [round(float(c), 1) for c in found["centre"]]}
    if found["centre"] is None:
        empty = np.zeros(engine.shape, bool)
        info = {"slices": indices, "plane": engine.plane, "rounds": int(rounds), "per_slice": {},
                "field_of_view": {**fov, "note": "the model found no structure in any window"}}
        return {"final": empty, "rounds": [empty] * (rounds + 1) if keep_rounds else [], "info": info,
                "slices2d": {k: np.zeros(engine.slice_shape, bool) for k in indices}, "timings": {}, "errors": {}}
    win = centred(engine.slice_shape, pixel_mm, target_mm, size, found["centre"])
    vol, weng = _window_volume(engine, array, indices, win)
    out = segment_volume(model, predictor, vol, _window_id(image_id, win, indices), weng, range(weng.n_slices),
                         window, rounds, k_points, keep_rounds=keep_rounds,
                         progress=lambda f, m: progress(0.3 + 0.7 * f, m), check_cancelled=check_cancelled,
                         extent_step=extent_step)

    def back(wvol):
        slices = {k: win.paste(weng.slice(wvol, j)[None].astype(np.float32)) > 0.5 for j, k in enumerate(indices)}
        return engine.assemble(slices, bool), slices

    final, final2d = back(out["final"])
    vols = [back(r)[0] for r in out["rounds"]]
    info = dict(out["info"])
    info["slices"] = [indices[j] for j in info["slices"]]
    info["per_slice"] = {indices[int(j)]: v for j, v in info["per_slice"].items()}
    if "extent" in info:
        ext = dict(info["extent"])
        for key in ("first", "last"):
            if ext.get(key) is not None:
                ext[key] = indices[ext[key]]
        info["extent"] = ext
    info["field_of_view"] = {**fov, "window_origin": list(win.origins[0])}
    return {"final": final, "rounds": vols, "info": info, "slices2d": final2d, "timings": out["timings"],
            "errors": {}}
