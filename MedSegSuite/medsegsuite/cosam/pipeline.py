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

from ..sam.predictor import EmbeddingStream
from ..volume.interpolate import agreement, between, signed_distance
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
                   start_errors=None, keep_errors: bool = False, overlap: bool = True) -> dict:
    """The loop on slices ``indices`` of ``engine``; results stay 2D (a click touches one slice).

    ``clicks``: {slice: (points (n, 2) x, y, labels (n,))}; clicked slices are always processed.
    ``start``: an input-grid bool volume or {slice: 2D bool} to continue from (its slices replace the
    coarse mask as round 0; slices it lacks start from the coarse mask).
    Returns {"final": {k: 2D bool}, "rounds": [{k: 2D bool}] for rounds 0..T (only with
    ``keep_rounds``), "info": {...}, "timings": {"embed_ms", "loop_ms", "decode_ms"}}.
    ``start_errors`` {slice: (1, S, S) error probabilities of its start mask} skips that error-decoder
    pass; ``keep_errors`` returns the final masks' error maps as "errors" {slice: (1, S, S) fp16} (an
    interactive session keeps them for its next click). With ``overlap`` the next batch is encoded (on a
    thread) while the loop corrects this one; only two batches' embeddings are held here at a time."""
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
    order = [[i] for i in indices] if propagate else [indices[s:s + batch] for s in range(0, len(indices), batch)]
    embs = EmbeddingStream(predictor, array, image_id, engine, window, order, overlap)
    hw = engine.slice_shape
    final: dict = {}
    kept = [dict() for _ in range(rounds + 1)] if keep_rounds else None
    per_slice, errors, pending = {}, {}, {}
    t_loop = t_dec = 0.0
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
        progress(done / len(indices), f"encoded and corrected {done}/{len(indices)} slices")
    embs.close()
    t_enc, t_wait = embs.seconds, embs.waited
    info = {"slices": indices, "plane": engine.plane, "rounds": int(rounds), "per_slice": per_slice,
            "encoder_calls": predictor.encoder_calls, "seconds_encode": round(t_enc, 3),
            "seconds_decode": round(t_loop + t_dec - t_wait, 3), "seconds_waiting_for_encoder": round(t_wait, 3),
            "propagate": bool(propagate)}
    timings = {"embed_ms": round(1000 * t_enc, 2), "loop_ms": round(1000 * (t_loop - t_wait), 2),
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


def _merge(parts: list) -> dict:
    """One :func:`correct_slices` dict from several (disjoint slice sets, run one after the other)."""
    if len(parts) == 1:
        return parts[0]
    out = {"final": {}, "errors": {}, "pending_errors": {}}
    for p in parts:
        for key in out:
            out[key].update(p[key])
    rounds = [p["rounds"] for p in parts]
    out["rounds"] = None if any(r is None for r in rounds) else [
        {k: v for r in rounds for k, v in r[t].items()} for t in range(len(rounds[0]))]
    out["timings"] = {k: round(sum(p["timings"][k] for p in parts), 2) for k in parts[0]["timings"]}
    info = dict(parts[-1]["info"])  # encoder_calls is the predictor's running count: the last is the total
    info["per_slice"] = {k: v for p in parts for k, v in p["info"]["per_slice"].items()}
    for k in ("seconds_encode", "seconds_decode", "seconds_waiting_for_encoder"):
        info[k] = round(sum(p["info"][k] for p in parts), 3)
    out["info"] = info
    return out


def extent_first(model, predictor, array: np.ndarray, image_id: str, engine, indices, window=None,
                 step: int = 4, margin: int | None = None, progress=None, interpolate: float = 0.0,
                 pixel_mm=None, **kw) -> dict:
    """:func:`correct_slices` on only the slices that can hold the structure.

    A first pass runs the whole loop on every ``step``-th of ``indices`` (and the last); the structure's
    extent is then the span from the first to the last of those whose final mask is not empty, widened
    to the empty probe slices around it plus ``margin`` slices (default ``step``); the second pass runs
    on the slices in that span not yet done. Every slice outside the span is left empty, unencoded. The
    probe results are the loop's own (the same as in an all-slices run), so this changes a result only
    where the structure (or a false positive) would lie wholly between two empty probes outside the
    span. Returns :func:`correct_slices`'s dict (both passes merged) with info["extent"].

    ``interpolate`` (a Dice, 0 = off) fills in by bisection instead: between two segmented slices whose
    masks both hold the structure and agree at that Dice or more, the slices in between are
    shape-interpolated (:mod:`medsegsuite.volume.interpolate`, ``pixel_mm`` in-plane) and never encoded;
    otherwise the middle slice is segmented and both halves are judged again. Intervals with an empty
    end, or over slices the selection skips, are segmented slice by slice, as without it. With
    ``keep_rounds`` an interpolated slice's round t morphs its two ends' round t. info["interpolated"]
    lists the interpolated slices."""
    progress = progress or (lambda f, m: None)
    indices = sorted(set(int(i) for i in indices))
    if kw.get("roi") is not None:
        indices = engine.roi_slices(kw["roi"], indices)
    margin = step if margin is None else margin
    probe = indices[::step] + ([indices[-1]] if (len(indices) - 1) % step else [])
    share = len(probe) / len(indices)
    a = correct_slices(model, predictor, array, image_id, engine, probe, window,
                       progress=lambda f, m: progress(share * f, f"extent pass: {m}"), **kw)
    pos = {k: n for n, k in enumerate(indices)}
    hits = [pos[k] for k in probe if a["final"][k].any()]
    lo = hi = None
    if hits:
        lo, hi = max(min(hits) - step + 1 - margin, 0), min(max(hits) + step - 1 + margin, len(indices) - 1)
    extent = {"step": int(step), "margin": int(margin), "probe_slices": len(probe),
              "first": indices[lo] if hits else None, "last": indices[hi] if hits else None}
    parts, interpolated = [a], {}
    if hits and interpolate > 0:
        final = dict(a["final"])
        known = [pos[k] for k in probe]
        pairs, todo = [], []
        for p, q in zip(known[:-1], known[1:]):
            inner = [r for r in range(p + 1, q) if lo <= r <= hi]
            contiguous = indices[q] - indices[p] == q - p  # a sparse selection (every:8) is never filled in
            if inner and contiguous and final[indices[p]].any() and final[indices[q]].any():
                pairs.append((p, q))
            else:
                todo += inner
        while pairs or todo:
            nxt = []
            for p, q in pairs:
                if q - p <= 1:
                    continue
                ma, mb = final[indices[p]], final[indices[q]]
                if agreement(ma, mb) >= interpolate:
                    da, db = signed_distance(ma, pixel_mm), signed_distance(mb, pixel_mm)
                    for r in range(p + 1, q):
                        final[indices[r]] = between(ma, mb, (r - p) / (q - p), sdf_a=da, sdf_b=db)
                        interpolated[indices[r]] = (indices[p], indices[q])
                else:
                    c = (p + q) // 2
                    todo.append(c)
                    nxt += [(p, c), (c, q)]
            if todo:
                done = (len(final) - len(a["final"])) / len(indices)
                n = len(todo) / len(indices)
                b = correct_slices(model, predictor, array, image_id, engine, [indices[r] for r in todo], window,
                                   progress=lambda f, m, d=done, n=n: progress(min(share + d + n * f, 1.0), m), **kw)
                parts.append(b)
                final.update(b["final"])
            pairs, todo = nxt, []
        if interpolated:  # one more part: the interpolated slices (no embedding, no loop, no error map)
            rounds = None
            if a["rounds"] is not None:  # round t of an interpolated slice: round t of its two ends, morphed
                known_rounds = [{k: v for p in parts for k, v in p["rounds"][t].items()}
                                for t in range(len(a["rounds"]))]
                rounds = [{k: between(r[ka], r[kb], (pos[k] - pos[ka]) / (pos[kb] - pos[ka]), pixel_mm)
                           for k, (ka, kb) in interpolated.items()} for r in known_rounds[:-1]]
                rounds.append({k: final[k] for k in interpolated})
            parts.append({"final": {k: final[k] for k in interpolated}, "errors": {}, "pending_errors": {},
                          "rounds": rounds, "timings": {k: 0.0 for k in a["timings"]},
                          "info": {**parts[-1]["info"], "per_slice": {}, "seconds_encode": 0.0,
                                   "seconds_decode": 0.0, "seconds_waiting_for_encoder": 0.0}})
    elif hits:
        done = set(probe)
        fill = [k for k in indices[lo:hi + 1] if k not in done]
        if fill:
            parts.append(correct_slices(model, predictor, array, image_id, engine, fill, window,
                                        progress=lambda f, m: progress(share + (1 - share) * f, m), **kw))
    out = _merge(parts)
    computed = sum(len(p["info"]["per_slice"]) for p in parts)
    extent.update(filled_slices=computed - len(probe), interpolated_slices=len(interpolated),
                  skipped_slices=len(indices) - computed - len(interpolated))
    if interpolated:
        extent["interpolate"] = float(interpolate)
    info = dict(out["info"])
    info["slices"] = sorted(out["final"])
    info["interpolated"] = sorted(interpolated)
    info["extent"] = extent
    out["info"] = info
    return out


def segment_volume(model, predictor, array: np.ndarray, image_id: str, engine, indices, window=None,
                   rounds: int = 4, k_points: int = 5, clicks=None, start=None, roi=None, propagate=False,
                   batch: int = 8, keep_rounds: bool = True, progress=None, check_cancelled=None,
                   keep_errors: bool = False, extent_step: int = 0, overlap: bool = True,
                   interpolate: float = 0.0, pixel_mm=None) -> dict:
    """:func:`correct_slices` put back on the input grid: {"final": bool volume, "rounds": [bool volume
    per round 0..T] (empty unless ``keep_rounds``), "info": {...}, "slices2d": the 2D finals}.
    ``extent_step`` > 1 runs :func:`extent_first` (a prompt-free start only: no clicks, no start mask,
    no propagation, and at least 3 probe intervals of slices), with ``interpolate`` (its fill-in by
    bisection)."""
    if (extent_step > 1 and not clicks and start is None and not propagate
            and len(set(indices)) >= 3 * extent_step):
        out = extent_first(model, predictor, array, image_id, engine, indices, window, extent_step,
                           progress=progress, interpolate=interpolate, pixel_mm=pixel_mm,
                           rounds=rounds, k_points=k_points, roi=roi, batch=batch,
                           keep_rounds=keep_rounds, check_cancelled=check_cancelled, keep_errors=keep_errors,
                           overlap=overlap)
    else:
        out = correct_slices(model, predictor, array, image_id, engine, indices, window, rounds, k_points, clicks,
                             start, roi, propagate, batch, keep_rounds, progress, check_cancelled,
                             keep_errors=keep_errors, overlap=overlap)
    vols = [engine.assemble(r, bool) for r in out["rounds"]] if keep_rounds else []
    return {"final": engine.assemble(out["final"], bool), "rounds": vols, "info": out["info"],
            "slices2d": out["final"], "timings": out["timings"], "errors": out["errors"]}
