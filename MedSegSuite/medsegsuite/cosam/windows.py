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

from ..errors import InputError
from ..volume import SliceEngine
from ..volume.fov import centred, tiling
from .pipeline import _roi_keep, correct_slices, segment_volume

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
                     check_cancelled=None, extent_step: int = 4, keep_errors: bool = False,
                     interpolate: float = 0.0) -> dict:
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
        found = {"centre": centre, "from": "the ROI"}
    else:
        found = locate(model, predictor, array, image_id, engine, indices, window, pixel_mm, geometry,
                       max(1, extent_step), lambda f, m: progress(0.3 * f, f"locating: {m}"), check_cancelled)
        found["from"] = "the coarse head on tiled windows"
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
                         extent_step=extent_step, keep_errors=keep_errors, interpolate=interpolate)

    keep = _roi_keep(engine, roi)  # an ROI bounds the result in-plane, as on the squeezed path

    def back(wvol):
        slices = {k: win.paste(weng.slice(wvol, j)[None].astype(np.float32)) > 0.5 for j, k in enumerate(indices)}
        if keep is not None:
            slices = {k: m & keep for k, m in slices.items()}
        return engine.assemble(slices, bool), slices

    final, final2d = back(out["final"])
    vols = [back(r)[0] for r in out["rounds"]]
    info = dict(out["info"])
    info["slices"] = [indices[j] for j in info["slices"]]
    if "interpolated" in info:
        info["interpolated"] = [indices[j] for j in info["interpolated"]]
    info["per_slice"] = {indices[int(j)]: v for j, v in info["per_slice"].items()}
    if "extent" in info:
        ext = dict(info["extent"])
        for key in ("first", "last"):
            if ext.get(key) is not None:
                ext[key] = indices[ext[key]]
        info["extent"] = ext
    info["field_of_view"] = {**fov, "window_origin": list(win.origins[0])}
    # a session continues in the same window: its spec, and error maps keyed by input slice
    session = {"windows": win, "indices": indices, "window_id": _window_id(image_id, win, indices)}
    return {"final": final, "rounds": vols, "info": info, "slices2d": final2d, "timings": out["timings"],
            "errors": {indices[j]: e for j, e in (out.get("errors") or {}).items()}, "window_session": session}


def click_in_window(model, predictor, array, engine, session: dict, slices, clicks, start, known_errors, window,
                    rounds: int, k_points: int, check_cancelled=None) -> dict:
    """:func:`correct_slices` for a click on a session that ``segment_windowed`` started: the clicks and the
    start masks go into the session's window (cached embeddings are reused), the results come back onto
    the input slices. Returns correct_slices' dict keyed by input slice."""
    win, indices = session["windows"], session["indices"]
    pos = {k: j for j, k in enumerate(indices)}
    missing = [k for k in slices if k not in pos]
    if missing:
        raise InputError(f"slices {missing} were not segmented in this session's window: run cosam.segment on them")
    vol = np.zeros((win.size, win.size, len(indices)), np.float32)
    for k in slices:
        vol[:, :, pos[k]] = win.cut(engine.slice(array, k))[0]
    weng = SliceEngine(vol.shape, LPS, "axial")
    (r0, c0), (sr, sc) = win.origins[0], win.scale
    wclicks = {}
    for k, (pts, labs) in clicks.items():
        p = np.asarray(pts, np.float64).reshape(-1, 2)
        u = np.stack([(p[:, 0] + 0.5) / sc - 0.5 - c0, (p[:, 1] + 0.5) / sr - 0.5 - r0], 1)
        if (u < -0.5).any() or (u > win.size - 0.5).any():
            raise InputError("a click lies outside the window the model segments in (its training field of view "
                             "around the structure); run cosam.segment with field_of_view='slice' to click anywhere")
        wclicks[pos[k]] = (u.astype(np.float32), labs)
    wstart = {pos[k]: win.cut(m.astype(np.float32), fill=0.0)[0] > 0.5 for k, m in start.items()}
    out = correct_slices(model, predictor, vol, session["window_id"], weng, [pos[k] for k in slices], window, rounds,
                         k_points, wclicks, wstart, keep_rounds=False, check_cancelled=check_cancelled,
                         start_errors={pos[k]: e for k, e in known_errors.items()}, keep_errors=True)
    back = {indices[j]: win.paste(m[None].astype(np.float32)) > 0.5 for j, m in out["final"].items()}
    out["final"] = back
    out["errors"] = {indices[j]: e for j, e in out["errors"].items()}
    out["pending_errors"] = {indices[j]: e for j, e in out["pending_errors"].items()}
    out["info"]["per_slice"] = {indices[j]: v for j, v in out["info"]["per_slice"].items()}
    return out
