"""Contour any structure from one prompt: a box (and/or clicks) on one slice -> LiteMedSAM -> propagation
through the neighbouring slices, each prompted with the boxes of its neighbour's mask.

For a structure no model was trained on. Propagation runs up and down from the prompted slice and
stops, in each direction, where the structure ends: when a slice's mask is smaller than
``min_pixels``, when less than ``min_overlap`` of it overlaps the neighbour's mask (SAM jumped to
something else), or when it is more than ``max_growth`` times the neighbour's area (a leak).
Components of a slice's mask that do not touch the neighbour's mask are dropped for the same
reason. With ``correct`` (the id of a generalised, structure-agnostic error decoder,
:mod:`medsegsuite.cosam.generalised`), each slice's mask is corrected by the self-correcting loop before the
next slice is prompted from it; a slice whose loop accepts no round keeps SAM's mask exactly. Off by default
(see docs/results/generalised_decoder.md for what it changes).
"""
from __future__ import annotations

import numpy as np

from ..engine.interface import JobResult
from ..engine.schema import Param
from ..engine.tasks import task
from ..errors import InputError
from ..sam.params import ENCODER_PARAM
from ..sam.predictor import component_boxes
from ..sam.tasks import get_predictor
from ..volume import SliceEngine

PROPAGATE_PARAMS = [
    Param("structure", "str", "structure", "name of the result segment"),
    Param("plane", "plane", "axial", "anatomical plane the slices are taken in (from the direction matrix)"),
    Param("slice", "int", None, "slice of that plane the prompt is drawn on", range=(0, None), required=True),
    Param("box", "floats", None, "box x0 y0 x1 y1 on that slice (x = column, y = row of the slice)", length=4),
    Param("window", "floats", None, "intensity window lo hi (default: 0.5/99.5 percentiles per slice)", length=2),
    Param("margin", "int", 2, "pixels added around each neighbour-mask component's box", range=(0, 64)),
    Param("min_pixels", "int", 10, "stop where a slice's mask has fewer pixels than this", range=(1, None)),
    Param("min_overlap", "float", 0.5, "stop where less than this fraction of a slice's mask overlaps its "
          "neighbour's mask", range=(0.0, 1.0)),
    Param("max_growth", "float", 2.0, "stop where a slice's mask is more than this times its neighbour's",
          range=(1.0, None)),
    Param("max_slices", "int", None, "propagate at most this many slices each way (default: no limit)",
          range=(0, None)),
    Param("direction", "choice", "both", "which way to propagate from the prompted slice",
          choices=("both", "up", "down")),
    Param("correct", "model", None, "id of a generalised error decoder that corrects each slice's mask "
          "(e.g. cosam_generalised; default: none, plain LiteMedSAM)"),
    Param("correct_rounds", "int", 3, "rounds of the correction loop per slice", range=(1, 8)),
    ENCODER_PARAM,
]


def _keep_touching(mask: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Components of ``mask`` that touch ``prev`` (8-connected, one pixel of slack)."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return mask
    near = ndimage.binary_dilation(prev, np.ones((3, 3)))
    keep = np.unique(lab[near & mask])
    return np.isin(lab, keep[keep > 0])


def stop_reason(mask: np.ndarray, prev: np.ndarray, params: dict) -> str | None:
    """Why propagation stops at a slice whose mask is ``mask`` (None: it goes on)."""
    area, prev_area = int(mask.sum()), int(prev.sum())
    if area < params["min_pixels"]:
        return f"mask of {area} px < min_pixels {params['min_pixels']} (the structure ended)"
    if area > params["max_growth"] * prev_area:
        return f"mask grew {area / prev_area:.1f}x over the neighbour's (> max_growth {params['max_growth']})"
    overlap = (mask & prev).sum() / area
    if overlap < params["min_overlap"]:
        return f"only {overlap:.2f} of the mask overlaps the neighbour's (< min_overlap {params['min_overlap']})"
    return None


@task("sam.propagate", params=PROPAGATE_PARAMS,
      description="LiteMedSAM from a box/clicks on one slice, propagated through the neighbouring slices")
def propagate(ctx, image, params, inputs):
    """inputs (optional): ``points`` (N, 3) rows x, y, label (1 = +, 0 = -) on the prompted slice.
    Needs a box, points, or both."""
    engine = SliceEngine.for_volume(image, params["plane"])
    n, (H, W) = engine.n_slices, engine.slice_shape
    s = params["slice"]
    if s >= n:
        raise InputError(f"slice {s} is outside the {n} {engine.plane} slices")
    box = params["box"]
    pts = (inputs or {}).get("points")
    pts = None if pts is None or np.size(pts) == 0 else np.asarray(pts, float).reshape(-1, 3)
    if box is None and pts is None:
        raise InputError("sam.propagate needs a box on the slice, clicks (points), or both")
    if box is not None:
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
            raise InputError(f"box {box} is not a box inside the {W}x{H} slice (x0 < x1 <= {W}, y0 < y1 <= {H})")
    if pts is not None and (np.any(pts[:, 0] < 0) or np.any(pts[:, 0] >= W) or np.any(pts[:, 1] < 0)
                            or np.any(pts[:, 1] >= H) or not np.isin(pts[:, 2], (0, 1)).all()):
        raise InputError(f"points must be x, y, label rows inside the {W}x{H} slice with label 1 or 0")
    pred = get_predictor(ctx, encoder=params["encoder"])
    arr, image_id, window = image.array, image.fingerprint(), params["window"]
    out = np.zeros(arr.shape, bool)

    corrector = None
    if params["correct"]:
        from ..models.loader import load_model

        corrector = load_model(params["correct"], ctx.device, expect="cosam-generalised/",
                               cache_key=(pred.backbone.name,), backbone=pred.backbone).net
    corrected = {}

    def decode(k, boxes=None, points=None, labels=None):
        emb = pred.embeddings(arr, image_id, engine, [k], window)[k]
        logits = pred.decode(emb, (H, W), boxes=boxes, points=points, point_labels=labels)
        m = np.any(logits > 0, axis=0) if logits.ndim == 3 else logits > 0
        if corrector is not None and m.any():
            from ..cosam.generalised import correct_slice_mask

            m, acc, _ = correct_slice_mask(corrector, emb.to(ctx.device), m, params["correct_rounds"])
            corrected[k] = acc
        return m

    first = decode(s, boxes=[box] if box is not None else None,
                   points=pts[:, :2] if pts is not None else None, labels=pts[:, 2] if pts is not None else None)
    if first.sum() < params["min_pixels"]:
        raise InputError(f"LiteMedSAM found no structure ({int(first.sum())} px) at the prompt on slice {s}; "
                         "draw the box tighter around the structure or add a + click inside it")
    engine.put(out, s, first)
    done, stopped = [s], {}
    directions = {"both": (1, -1), "up": (1,), "down": (-1,)}[params["direction"]]
    limit = params["max_slices"] if params["max_slices"] is not None else n
    total = sum(min(limit, (n - 1 - s) if d > 0 else s) for d in directions) or 1
    for d in directions:
        prev, k, steps = first, s + d, 0
        name = "up" if d > 0 else "down"
        stopped[name] = "reached the end of the image"
        while 0 <= k < n:
            if steps >= limit:
                stopped[name] = f"max_slices {limit}"
                break
            ctx.check_cancelled()
            boxes = component_boxes(prev, min_pixels=1, margin=params["margin"])
            m = _keep_touching(decode(k, boxes=boxes), prev)
            reason = stop_reason(m, prev, params)
            if reason:
                stopped[name] = f"slice {k}: {reason}"
                break
            engine.put(out, k, m)
            done.append(k)
            prev, k, steps = m, k + d, steps + 1
            ctx.progress(len(done) / total, f"propagated to slice {k - d} ({len(done)} slices)")
    info = {"structure": params["structure"], "plane": engine.plane, "prompt_slice": s, "slices": sorted(done),
            "stopped": stopped, "encoder_calls": pred.encoder_calls,
            "encoder_route": pred.backbone.encoder_route}
    if corrector is not None:
        info["corrected_slices"] = sorted(k for k, a in corrected.items() if a > 0)
        info["correct"] = str(params["correct"])
    return JobResult(masks={params["structure"]: out}, info=info)
