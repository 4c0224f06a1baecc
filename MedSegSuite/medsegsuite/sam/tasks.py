"""Backend tasks of plain (non-correcting) SAM: segmentation from boxes, e.g. the oracle-box baseline."""
from __future__ import annotations

import numpy as np

from ..engine.interface import JobResult
from ..engine.schema import Param
from ..engine.tasks import task
from ..errors import InputError
from ..volume import SliceEngine
from .backbones import load_litemedsam
from .encoder_routes import resolve_route, with_route
from .params import ENCODER_PARAM
from .predictor import SlicePredictor, component_boxes


def routed_backbone(ctx, key, load, encoder: str = "auto"):
    """The worker's cached backbone ``load()`` with its encoder on route ``encoder`` (resolved per device;
    the built route is cached on disk, see sam/encoder_routes.py)."""
    models = ctx.cache.models if ctx.cache is not None else None
    base = models.get_or_create(key, load) if models is not None else load()
    route = resolve_route(encoder, ctx.device, base.name)
    if route == "fp32":
        return base
    factory = lambda: with_route(base, route, ctx.device)  # noqa: E731
    return models.get_or_create((*key, "encoder", route), factory) if models is not None else factory()


def get_predictor(ctx, backbone: str = "litemedsam", encoder: str = "auto") -> SlicePredictor:
    """The worker's cached backbone, wrapped in a predictor that uses the shared embedding cache."""
    if backbone != "litemedsam":
        raise InputError(f"unknown backbone '{backbone}' for box prompts; use litemedsam")
    bb = routed_backbone(ctx, ("litemedsam", ctx.device), lambda: load_litemedsam(ctx.device), encoder)
    return SlicePredictor(bb, ctx.device, ctx.cache.embeddings if ctx.cache is not None else None)


ORACLE_BOX_PARAMS = [
    Param("plane", "plane", "axial", "anatomical plane the slices are taken in (from the direction matrix)"),
    Param("slices", "slices", "all", "slices of that plane: 'all', 'every:K', 'a:b', 'i,j,k' or a list"),
    Param("window", "floats", None, "intensity window lo hi (default: 0.5/99.5 percentiles per slice)", length=2),
    Param("margin", "int", 1, "pixels added around each component's box", range=(0, 64)),
    Param("backbone", "choice", "litemedsam", "SAM-family backbone", choices=("litemedsam",)),
    ENCODER_PARAM,
]


@task("sam.oracle_box", params=ORACLE_BOX_PARAMS,
      description="SAM with one box per connected component of a reference mask, slice by slice")
def oracle_box(ctx, image, params, inputs):
    """inputs: {structure: reference mask on the image grid}."""
    if not inputs:
        raise InputError("sam.oracle_box needs at least one reference mask in inputs")
    arr = image.array
    engine = SliceEngine.for_volume(image, params["plane"])
    indices = engine.select(params["slices"])
    window = params["window"]
    for name, m in inputs.items():
        if np.shape(m) != arr.shape:
            raise InputError(f"reference mask '{name}' has shape {np.shape(m)}, image is {arr.shape}")
    pred = get_predictor(ctx, params["backbone"], params["encoder"])
    image_id = image.fingerprint()  # the cache key: never a client's choice
    total = len(indices)
    embs = pred.embeddings(arr, image_id, engine, indices, window,
                           progress=lambda d, t: ctx.progress(0.9 * d / max(t, 1), f"encoded {d}/{t} slices"))
    refs = {name: np.asarray(ref, dtype=bool) for name, ref in inputs.items()}
    masks = {name: np.zeros(arr.shape, dtype=bool) for name in inputs}
    for n, i in enumerate(indices):
        ctx.check_cancelled()
        for name, ref in refs.items():
            ref2d = engine.slice(ref, i)
            boxes = component_boxes(ref2d, margin=params["margin"])
            if not boxes:
                continue
            logits = pred.decode(embs[i], engine.slice_shape, boxes=boxes)
            engine.put(masks[name], i, np.any(logits > 0, axis=0))
        ctx.progress(0.9 + 0.1 * (n + 1) / total, f"decoded slice {n + 1}/{total}")
    return JobResult(masks=masks, info={"slices": indices, "plane": engine.plane, "encoder_calls": pred.encoder_calls,
                                           "encoder_route": pred.backbone.encoder_route})
