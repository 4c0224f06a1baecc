"""Backend tasks of plain (non-correcting) SAM: segmentation from boxes, e.g. the oracle-box baseline."""
from __future__ import annotations

import numpy as np

from ..engine.interface import JobResult
from ..engine.tasks import task
from ..errors import InputError
from ..volume import extract_slice, insert_slice
from .backbones import load_litemedsam
from .predictor import SlicePredictor, component_boxes


def get_predictor(ctx, backbone: str = "litemedsam") -> SlicePredictor:
    """The worker's cached backbone, wrapped in a predictor that uses the shared embedding cache."""
    if backbone != "litemedsam":
        raise InputError(f"unknown backbone '{backbone}' for box prompts; use litemedsam")
    models = ctx.cache.models if ctx.cache is not None else None
    factory = lambda: load_litemedsam(ctx.device)  # noqa: E731
    bb = models.get_or_create(("litemedsam", ctx.device), factory) if models is not None else factory()
    return SlicePredictor(bb, ctx.device, ctx.cache.embeddings if ctx.cache is not None else None)


def parse_slices(spec, n: int) -> list[int]:
    """'all' | 'every:K' | 'a:b' | [i, j, ...] -> sorted slice indices within 0..n-1."""
    if spec is None or spec == "all":
        return list(range(n))
    if isinstance(spec, str):
        if spec.startswith("every:"):
            k = int(spec.split(":")[1])
            if k < 1:
                raise InputError("every:K needs K >= 1")
            return list(range(k // 2, n, k))
        if ":" in spec:
            a, b = (int(v) for v in spec.split(":"))
            idx = list(range(max(a, 0), min(b, n)))
        else:
            idx = [int(v) for v in spec.split(",") if v.strip()]
    else:
        idx = [int(v) for v in spec]
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise InputError(f"slices {bad[:5]} are outside 0..{n - 1}")
    if not idx:
        raise InputError(f"the slice selection {spec!r} is empty")
    return sorted(set(idx))


@task("sam.oracle_box", description="SAM with one box per connected component of a reference mask, slice by slice")
def oracle_box(ctx, image, params, inputs):
    """inputs: {structure: reference mask}; params: axis, slices, window, margin."""
    if not inputs:
        raise InputError("sam.oracle_box needs at least one reference mask in inputs")
    axis = int(params.get("axis", 2))
    window = params.get("window")
    margin = int(params.get("margin", 1))
    arr = image.array
    indices = parse_slices(params.get("slices", "all"), arr.shape[axis])
    for name, m in inputs.items():
        if np.shape(m) != arr.shape:
            raise InputError(f"reference mask '{name}' has shape {np.shape(m)}, image is {arr.shape}")
    pred = get_predictor(ctx, params.get("backbone", "litemedsam"))
    image_id = params.get("image_id") or image.fingerprint()
    total = len(indices)
    embs = pred.embeddings(arr, image_id, axis, indices, window,
                           progress=lambda d, t: ctx.progress(0.9 * d / max(t, 1), f"encoded {d}/{t} slices"))
    masks = {name: np.zeros(arr.shape, dtype=bool) for name in inputs}
    for n, i in enumerate(indices):
        ctx.check_cancelled()
        for name, ref in inputs.items():
            ref2d = extract_slice(np.asarray(ref, dtype=bool), axis, i)
            boxes = component_boxes(ref2d, margin=margin)
            if not boxes:
                continue
            logits = pred.decode(embs[i], ref2d.shape, boxes=boxes)
            insert_slice(masks[name], axis, i, np.any(logits > 0, axis=0))
        ctx.progress(0.9 + 0.1 * (n + 1) / total, f"decoded slice {n + 1}/{total}")
    return JobResult(masks=masks, info={"slices": indices, "axis": axis, "encoder_calls": pred.encoder_calls})
