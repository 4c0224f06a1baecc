"""CoSAM on a volume: slices of one anatomical plane (the slice engine), a slice list and an optional ROI.

Slices come from :class:`medsegsuite.volume.SliceEngine`, so the model always sees the plane it was
trained on, whatever the IJK order of the file. Embeddings come from a
:class:`~medsegsuite.sam.predictor.SlicePredictor` (cached per image id, plane, slice and window, so a
second run or a click never re-encodes). Slices go through the loop in batches; with ``propagate``
they go one by one in index order and each slice starts from whichever of its coarse mask and its
neighbour's final mask has the smaller predicted error area. The ROI ``(i0, i1, j0, j1, k0, k1)``
(input-grid voxel bounds, end exclusive) limits the slices to those it crosses and clears results
outside it in-plane; slices are still encoded whole, so cached embeddings are shared with every
other job on the image.

Click coordinates follow the engine's convention: in ``engine.slice(volume, k)`` of shape
(rows, columns), ``x`` is the column and ``y`` the row. This module is inference only (it never
imports the training code).
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from .loop import self_correct, to_slice


def _lowres_clicks(pts, labels, hw, S):
    H, W = hw
    p = np.asarray(pts, np.float32).reshape(-1, 2) * np.array([S / W, S / H], np.float32)
    return p, np.asarray(labels, np.int64).reshape(-1)


def _mask_logits(mask2d: np.ndarray, S: int) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(mask2d, np.float32))[None, None]
    return F.interpolate(t, size=(S, S), mode="nearest")[0] * 8.0 - 4.0


def _roi_keep(engine, roi):
    """The ROI's in-plane box as a bool (rows, columns) mask, or None."""
    if roi is None:
        return None
    lo, hi = engine.canonical_roi(roi)
    rest = [d for d in range(3) if d != engine.axis]
    keep = np.zeros(engine.slice_shape, bool)
    keep[lo[rest[0]]:hi[rest[0]], lo[rest[1]]:hi[rest[1]]] = True
    return keep


def correct_slices(model, predictor, array: np.ndarray, image_id: str, engine, indices, window=None,
                   rounds: int = 4, k_points: int = 5, clicks=None, start=None, roi=None, propagate=False,
                   batch: int = 8, keep_rounds: bool = True, progress=None, check_cancelled=None,
                   start_errors=None, keep_errors: bool = False) -> dict:
    """The loop on slices ``indices`` of ``engine``; results stay 2D (a click touches one slice).

    ``clicks``: {slice: (points (n, 2) x, y, labels (n,))}; clicked slices are always processed.
    ``start``: an input-grid bool volume or {slice: 2D bool} to continue from (its slices replace the
    coarse mask as round 0; slices it lacks start from the coarse mask).
    Returns {"final": {k: 2D bool}, "rounds": [{k: 2D bool}] for rounds 0..T (only with
    ``keep_rounds``), "info": {...}, "timings": {"embed_ms", "loop_ms", "decode_ms"}}.
    ``start_errors`` {slice: (1, S, S) error probabilities of its start mask} skips that error-decoder
    pass; ``keep_errors`` returns the final masks' error maps as "errors" {slice: (1, S, S) fp16} (an
    interactive session keeps them for its next click)."""
    clicks = clicks or {}
    progress = progress or (lambda f, m: None)
    check = check_cancelled or (lambda: None)
    indices = sorted(set(int(i) for i in indices) | set(int(k) for k in clicks))
    for k in indices:
        engine.check_index(k)
    keep = _roi_keep(engine, roi)
    if roi is not None:
        indices = engine.roi_slices(roi, indices)
    if isinstance(start, np.ndarray):
        vol = start
        start = {k: engine.slice(vol, k) for k in indices}
    S = model.low_res
    t0 = time.perf_counter()
    embs = predictor.embeddings(array, image_id, engine, indices, window,
                                progress=lambda d, t: progress(0.7 * d / max(t, 1), f"encoded {d}/{t} slices"))
    t_enc = time.perf_counter() - t0
    hw = engine.slice_shape
    final: dict = {}
    kept = [dict() for _ in range(rounds + 1)] if keep_rounds else None
    per_slice, errors, pending = {}, {}, {}
    t_loop = t_dec = 0.0
    order = [[i] for i in indices] if propagate else [indices[s:s + batch] for s in range(0, len(indices), batch)]
    device = next(model.parameters()).device
    prev_final = None
    done = 0
    for chunk in order:
        check()
        t1 = time.perf_counter()
        emb = torch.cat([embs[i] for i in chunk]).float().to(device)
        ck = [(_lowres_clicks(*clicks[i], hw, S) if i in clicks else None) for i in chunk]
        start_logits = None
        given = [i for i in chunk if start is not None and i in start]
        if given:
            if len(given) == len(chunk):
                start_logits = torch.stack([_mask_logits(start[i], S) for i in chunk])
            else:
                with torch.inference_mode():
                    start_logits = model.coarse(emb).float().clone()
                for j, i in enumerate(chunk):
                    if i in start:
                        start_logits[j] = _mask_logits(start[i], S)
        elif propagate and prev_final is not None:
            with torch.inference_mode():
                coarse = model.coarse(emb)
                cand = torch.cat([coarse, prev_final.to(emb)])
                areas = (torch.sigmoid(model.errors(emb.expand(2, -1, -1, -1), (cand > 0).float())) > 0.5
                         ).flatten(1).sum(1)
                start_logits = cand[1:] if areas[1] < areas[0] else cand[:1]
        start_error = None
        if start_errors and all(i in start_errors for i in chunk):
            start_error = torch.stack([start_errors[i] for i in chunk])
        res = self_correct(model, emb, rounds, k_points, start_logits=start_logits, clicks=ck, start_error=start_error)
        if keep_errors and res.final_error is not None:
            errors.update({i: res.final_error[j].half() for j, i in enumerate(chunk)})
        elif keep_errors:  # a forced last round computed no error map: leave its inputs for later
            pending.update({i: (emb[j:j + 1], (res.rounds[-1][j:j + 1] > 0).float()) for j, i in enumerate(chunk)})
        prev_final = res.rounds[-1]
        t2 = time.perf_counter()
        t_loop += t2 - t1
        for t, lg in enumerate(res.rounds):
            if not keep_rounds and t < len(res.rounds) - 1:
                continue
            pred = to_slice(lg, hw)
            for j, i in enumerate(chunk):
                m = pred[j]
                if i in clicks:  # the clicked pixels always carry the user's label
                    pts, labs = np.asarray(clicks[i][0]).reshape(-1, 2), np.asarray(clicks[i][1]).reshape(-1)
                    for (x, y), lab in zip(pts, labs):
                        m[int(round(y)), int(round(x))] = bool(lab)
                if keep is not None:
                    m &= keep
                if keep_rounds:
                    kept[t][i] = m
                if t == len(res.rounds) - 1:
                    final[i] = m
        for j, i in enumerate(chunk):
            per_slice[i] = {"accepted": res.accepted[j], "runs": res.rounds_run[j], "stop": res.stop[j],
                            "error_area": res.error_area[j]}
        t_dec += time.perf_counter() - t2
        done += len(chunk)
        progress(0.7 + 0.3 * done / len(indices), f"corrected {done}/{len(indices)} slices")
    info = {"slices": indices, "plane": engine.plane, "rounds": int(rounds), "per_slice": per_slice,
            "encoder_calls": predictor.encoder_calls, "seconds_encode": round(t_enc, 3),
            "seconds_decode": round(t_loop + t_dec, 3), "propagate": bool(propagate)}
    timings = {"embed_ms": round(1000 * t_enc, 2), "loop_ms": round(1000 * t_loop, 2),
               "decode_ms": round(1000 * t_dec, 2)}
    return {"final": final, "rounds": kept, "info": info, "timings": timings, "errors": errors,
            "pending_errors": pending}


def error_maps(model, pending: dict) -> dict:
    """{slice: (embedding (1, C, h, w), low-res mask (1, 1, S, S))} -> {slice: (1, S, S) fp16 error
    probabilities}: the maps a forced round skipped, computed later (see `JobContext.after`)."""
    if not pending:
        return {}
    keys = list(pending)
    with torch.inference_mode():
        emb = torch.cat([pending[k][0] for k in keys]).float()
        err = torch.sigmoid(model.errors(emb, torch.cat([pending[k][1] for k in keys]).to(emb)))
    return {k: err[j].half() for j, k in enumerate(keys)}


def segment_volume(model, predictor, array: np.ndarray, image_id: str, engine, indices, window=None,
                   rounds: int = 4, k_points: int = 5, clicks=None, start=None, roi=None, propagate=False,
                   batch: int = 8, keep_rounds: bool = True, progress=None, check_cancelled=None,
                   keep_errors: bool = False) -> dict:
    """:func:`correct_slices` put back on the input grid: {"final": bool volume, "rounds": [bool volume
    per round 0..T] (empty unless ``keep_rounds``), "info": {...}, "slices2d": the 2D finals}."""
    out = correct_slices(model, predictor, array, image_id, engine, indices, window, rounds, k_points, clicks,
                         start, roi, propagate, batch, keep_rounds, progress, check_cancelled,
                         keep_errors=keep_errors)
    vols = [engine.assemble(r, bool) for r in out["rounds"]] if keep_rounds else []
    return {"final": engine.assemble(out["final"], bool), "rounds": vols, "info": out["info"],
            "slices2d": out["final"], "timings": out["timings"], "errors": out["errors"]}
