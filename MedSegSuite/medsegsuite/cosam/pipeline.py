"""CoSAM on a volume: slice by slice along one axis, over a slice list and an optional ROI.

Embeddings come from a :class:`~medsegsuite.sam.predictor.SlicePredictor` (cached per image id,
axis, slice and window, so a second run or a click never re-encodes). Slices are processed in
batches through the loop; with ``propagate`` they go one by one in index order and each slice
starts from whichever of its coarse mask and its neighbour's final mask has the smaller predicted
error area. The ROI ``(i0, i1, j0, j1, k0, k1)`` (voxel index bounds, end exclusive) limits the
slices to its range along the axis and clears results outside it in-plane; slices are still
encoded whole, so cached embeddings are shared with every other job on the image.

Click coordinates follow the predictor's convention: in ``extract_slice(volume, axis, k)`` of
shape (H, W), ``x`` is the column and ``y`` the row.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..volume import extract_slice, insert_slice
from .loop import self_correct
from .train import to_slice


def _lowres_clicks(pts, labels, hw, S):
    H, W = hw
    p = np.asarray(pts, np.float32).reshape(-1, 2) * np.array([S / W, S / H], np.float32)
    return p, np.asarray(labels, np.int64).reshape(-1)


def _mask_logits(mask2d: np.ndarray, S: int) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(mask2d, np.float32))[None, None]
    return F.interpolate(t, size=(S, S), mode="nearest")[0] * 8.0 - 4.0


def _roi_slices(roi, axis, shape):
    if roi is None:
        return None
    r = [int(v) for v in roi]
    if len(r) != 6:
        raise InputError("roi must be 6 voxel bounds: i0, i1, j0, j1, k0, k1 (end exclusive)")
    lo, hi = r[0::2], r[1::2]
    if any(a < 0 or b > n or a >= b for a, b, n in zip(lo, hi, shape)):
        raise InputError(f"roi {r} is empty or outside the image {tuple(shape)}")
    return lo, hi


def segment_volume(model, predictor, array: np.ndarray, image_id: str, axis: int, indices, window=None,
                   rounds: int = 4, k_points: int = 5, clicks=None, start=None, roi=None, propagate=False,
                   batch: int = 8, progress=None, check_cancelled=None) -> dict:
    """Returns {"final": bool volume, "rounds": [bool volume per round 0..T], "info": {...}}.

    ``clicks``: {slice index: (points (n, 2) x, y, labels (n,))}; ``start``: a bool volume to
    continue from (its slices replace the coarse mask as round 0)."""
    clicks = clicks or {}
    progress = progress or (lambda f, m: None)
    check = check_cancelled or (lambda: None)
    lim = _roi_slices(roi, axis, array.shape)
    indices = sorted(set(int(i) for i in indices) | set(int(k) for k in clicks))
    if lim is not None:
        indices = [i for i in indices if lim[0][axis] <= i < lim[1][axis]]
        if not indices:
            raise InputError("no selected slice lies inside the ROI")
    S = model.low_res
    t0 = time.time()
    embs = predictor.embeddings(array, image_id, axis, indices, window,
                                progress=lambda d, t: progress(0.7 * d / max(t, 1), f"encoded {d}/{t} slices"))
    t_enc = time.time() - t0
    hw = extract_slice(array, axis, indices[0]).shape
    vols = [np.zeros(array.shape, bool) for _ in range(rounds + 1)]
    per_slice = {}
    t1 = time.time()
    order = [[i] for i in indices] if propagate else [indices[s:s + batch] for s in range(0, len(indices), batch)]
    prev_final = None
    done = 0
    for chunk in order:
        check()
        emb = torch.cat([embs[i] for i in chunk]).float().to(next(model.parameters()).device)
        ck = [(_lowres_clicks(*clicks[i], hw, S) if i in clicks else None) for i in chunk]
        start_logits = None
        if start is not None:
            start_logits = torch.stack([_mask_logits(extract_slice(start, axis, i), S) for i in chunk])
        elif propagate and prev_final is not None:
            with torch.inference_mode():
                coarse = model.coarse(emb)
                cand = torch.cat([coarse, prev_final.to(emb)])
                areas = (torch.sigmoid(model.errors(emb.expand(2, -1, -1, -1), (cand > 0).float())) > 0.5
                         ).flatten(1).sum(1)
                start_logits = cand[1:] if areas[1] < areas[0] else cand[:1]
        res = self_correct(model, emb, rounds, k_points, start_logits=start_logits, clicks=ck)
        prev_final = res.rounds[-1]
        for t, lg in enumerate(res.rounds):
            pred = to_slice(lg, hw)
            for j, i in enumerate(chunk):
                m = pred[j]
                if i in clicks:  # the clicked pixels always carry the user's label
                    pts, labs = np.asarray(clicks[i][0]).reshape(-1, 2), np.asarray(clicks[i][1]).reshape(-1)
                    for (x, y), lab in zip(pts, labs):
                        m[int(round(y)), int(round(x))] = bool(lab)
                insert_slice(vols[t], axis, i, m)
        for j, i in enumerate(chunk):
            per_slice[i] = {"accepted": res.accepted[j], "runs": res.rounds_run[j], "stop": res.stop[j],
                            "error_area": res.error_area[j]}
        done += len(chunk)
        progress(0.7 + 0.3 * done / len(indices), f"corrected {done}/{len(indices)} slices")
    if lim is not None:
        keep = np.zeros(array.shape, bool)
        sl = [slice(a, b) for a, b in zip(*lim)]
        sl[axis] = slice(None)
        keep[tuple(sl)] = True
        for v in vols:
            v &= keep
    t_loop = time.time() - t1
    info = {"slices": indices, "axis": int(axis), "rounds": int(rounds), "per_slice": per_slice,
            "encoder_calls": predictor.encoder_calls, "seconds_encode": round(t_enc, 3),
            "seconds_decode": round(t_loop, 3), "propagate": bool(propagate)}
    return {"final": vols[-1], "rounds": vols, "info": info}
