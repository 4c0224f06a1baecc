"""Backend tasks of scribble segmentation (MaCo). Parameters are declared in `params` (typed,
validated once at submission); the training settings are flat parameters (method, plane,
iterations, …; defaults in `params.DEFAULT_SETTINGS`).

* ``scribble.train`` (kind ``training``): inputs ``scribbles`` (label array on the job image's grid:
  0 background, 1..C = ``classes`` in order, ``unlabelled`` (default 255) elsewhere); more cases as
  ``image_1``/``scribbles_1``, ``image_2``/``scribbles_2``… with their geometry in ``case_geometry``;
  optional ``init_model`` input (uint8 model bytes) or param (registry id) to continue from an
  earlier model. Returns ``arrays['model']`` (uint8 bytes of a weights_only-safe checkpoint) and a
  report in ``info``.
* ``scribble.segment``: input ``model`` (bytes) or param ``model`` (registry id / in-process path);
  returns one mask per class, named after it.
* ``scribble.grow`` (kind ``training``, off the click path: ~15 s for 128³ on 2 cores): Slicer's
  *Grow from seeds* on the job image's scribbles, no training (the quick baseline); returns one mask
  per class.
* ``scribble.quick`` (kind ``training``): train on the scribbled slices of the job image with the
  quick settings, then segment the whole volume; returns the masks and ``arrays['model']``.

Slices are taken in the ``plane`` through the slice engine (LPS frame), so the job image's IJK
order does not matter; a model segments in the plane its card records.
"""
from __future__ import annotations

import time

import numpy as np

from ..engine.interface import JobResult
from ..engine.tasks import task
from ..errors import InputError
from .params import GROW_PARAMS, QUICK_PARAMS, SEGMENT_PARAMS, SETTING_NAMES, TRAIN_PARAMS
from .preprocess import ARRAY_DIRECTION


def _classes(params, init_card=None) -> list[str]:
    classes = params.get("classes") or (init_card or {}).get("classes")
    if not classes:
        raise InputError("params 'classes' must list the structure names (background excluded), e.g. "
                         "['liver', 'tumour']; label value c in the scribbles is classes[c-1]")
    if any(c.lower() == "background" for c in classes):
        raise InputError("'background' is implicit (label 0); list only the structures in 'classes'")
    if len(set(classes)) != len(classes):
        raise InputError(f"class names must be unique, got {list(classes)}")
    return list(classes)


def _scribbles(arr, n_fg, shape, unlabelled, classes, what):
    from .labels import validate_scribbles

    if arr is None:
        raise InputError(f"{what} is missing: pass the scribble label array")
    try:
        lab = validate_scribbles(arr, n_fg, image_shape=shape, unlabelled=int(unlabelled), classes=classes)
    except InputError as e:
        raise InputError(f"{what}: {e}") from None
    return lab


def _geometry(params, n: int) -> tuple[tuple, tuple]:
    """(spacing, direction) of extra case ``n`` from ``case_geometry`` (default 1 mm, LPS array order)."""
    g = (params.get("case_geometry") or {}).get(str(n)) or {}
    if not isinstance(g, dict):
        raise InputError(f"case_geometry['{n}'] must be an object with 'spacing' and 'direction'")
    try:
        spacing = tuple(float(v) for v in g.get("spacing", (1.0, 1.0, 1.0)))
        direction = np.asarray(g.get("direction", ARRAY_DIRECTION), dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"case_geometry['{n}']: spacing must be 3 numbers and direction a 3×3 matrix") from None
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"case_geometry['{n}']: spacing must be 3 positive numbers (mm)")
    if direction.shape != (3, 3) or abs(abs(np.linalg.det(direction)) - 1) > 1e-3:
        raise InputError(f"case_geometry['{n}']: direction must be an orthonormal 3×3 matrix")
    return spacing, tuple(map(tuple, direction))


def _cases(image, params, inputs, classes) -> list:
    from .train import TrainCase

    unl = params["unlabelled"]
    cases = [TrainCase(image.array, _scribbles(inputs.get("scribbles"), len(classes), image.shape, unl, classes,
                                               "scribbles"), tuple(image.geometry.spacing), image.direction)]
    n = 1
    while f"image_{n}" in inputs or f"scribbles_{n}" in inputs:
        img = inputs.get(f"image_{n}")
        if img is None or np.ndim(img) != 3:
            raise InputError(f"case {n + 1}: 'image_{n}' must be a 3D array alongside 'scribbles_{n}'")
        spacing, direction = _geometry(params, n)
        cases.append(TrainCase(np.asarray(img), _scribbles(inputs.get(f"scribbles_{n}"), len(classes), np.shape(img),
                                                           unl, classes, f"scribbles_{n}"), spacing, direction))
        n += 1
    return cases


def _init(params, inputs):
    from .checkpoint import read_model_dict, read_model_entry

    if inputs.get("init_model") is not None:
        return read_model_dict(data=inputs["init_model"])
    if params.get("init_model"):
        return read_model_entry(params["init_model"])
    return None


def _sub(ctx, a, b):
    return lambda f, m="": ctx.progress(a + (b - a) * f, m)


def _train(ctx, image, params, inputs, a, b):
    from .train import train_model

    init = _init(params, inputs)
    classes = _classes(params, init[1] if init else None)
    cases = _cases(image, params, inputs, classes)
    settings = {k: params[k] for k in SETTING_NAMES}
    return train_model(cases, classes, settings, init, _sub(ctx, a, b), ctx.device), classes


@task("scribble.train", description="train a 2D network from scribbles with MaCo (CPL + MCM)",
      params=TRAIN_PARAMS, kind="training")
def train_task(ctx, image, params, inputs):
    from .checkpoint import model_to_bytes

    (net, card), classes = _train(ctx, image, params, inputs, 0.0, 0.97)
    data = model_to_bytes(net, card)
    ctx.progress(1.0, "model ready")
    return JobResult(arrays={"model": data}, info={"classes": classes, "model_bytes": int(data.size),
                                                   "training": card["training"], "method": card["method"],
                                                   "plane": card["plane"]})


def _load(ctx, params, inputs):
    """(net, card): model bytes are cached under their own hash (and read weights_only); registry
    ids and paths go through the shared loader (`models.loader`)."""
    from .checkpoint import build_from, load_model, model_key, read_model_dict

    if inputs.get("model") is not None:
        data = np.asarray(inputs["model"], dtype=np.uint8)

        def factory():
            sd, card = read_model_dict(data=data)
            return build_from(sd, card, ctx.device), card

        cache = ctx.cache.models if ctx.cache is not None else None
        key = ("scribble", model_key(data), ctx.device)
        return cache.get_or_create(key, factory) if cache is not None else factory()
    if params.get("model"):
        return load_model(params["model"], ctx.device)
    raise InputError("scribble.segment needs a model: the 'model' input (bytes from scribble.train) or "
                     "params 'model' (a registry id, or a checkpoint path in-process)")


def _masks(labels, classes):
    return {name: labels == c for c, name in enumerate(classes, start=1)}


def _keep(params):
    k = params.get("keep_largest")
    return True if k and [c.lower() for c in k] == ["all"] else k


@task("scribble.segment", description="segment a volume slice by slice with a scribble-trained model",
      params=SEGMENT_PARAMS)
def segment_task(ctx, image, params, inputs):
    from .infer import postprocess, predict_volume
    from .preprocess import plane_of

    t0 = time.time()
    ctx.progress(0.0, "loading the model")
    net, card = _load(ctx, params, inputs)
    labels = predict_volume(net, card, image.array, _sub(ctx, 0.02, 0.97), ctx.device, direction=image.direction)
    labels = postprocess(labels, card["classes"], _keep(params))
    ctx.progress(1.0, "done")
    return JobResult(masks=_masks(labels, card["classes"]),
                     info={"classes": card["classes"], "seconds": round(time.time() - t0, 2),
                           "method": card.get("method"), "plane": plane_of(card)})


# Quick trains for ~30 s to minutes: it is a "training" job so it runs off the click path and never
# makes other seats' clicks wait; its progress and cancel work as for any job.
@task("scribble.quick", description="train on this volume's scribbled slices, then segment the whole volume",
      params=QUICK_PARAMS, kind="training")
def quick_task(ctx, image, params, inputs):
    from .checkpoint import model_to_bytes
    from .infer import postprocess, predict_volume

    t0 = time.time()
    (net, card), classes = _train(ctx, image, params, inputs, 0.0, 0.88)
    t1 = time.time()
    labels = predict_volume(net, card, image.array, _sub(ctx, 0.88, 0.99), ctx.device, direction=image.direction)
    labels = postprocess(labels, classes, _keep(params))
    data = model_to_bytes(net, card)
    ctx.progress(1.0, "done")
    return JobResult(masks=_masks(labels, classes), arrays={"model": data},
                     info={"classes": classes, "training": card["training"], "train_seconds": round(t1 - t0, 1),
                           "segment_seconds": round(time.time() - t1, 1), "seconds": round(time.time() - t0, 1),
                           "plane": card["plane"]})


@task("scribble.grow", description="Grow from seeds (Slicer's vtkImageGrowCutSegment): no training, the baseline",
      params=GROW_PARAMS, kind="training")
def grow_task(ctx, image, params, inputs):
    from .growcut import grow_from_seeds

    t0 = time.time()
    classes = _classes(params)
    lab = _scribbles(inputs.get("scribbles"), len(classes), image.shape, params["unlabelled"], classes, "scribbles")
    ctx.progress(0.05, "growing from seeds")
    labels = grow_from_seeds(image.array, lab, len(classes) + 1, tuple(image.geometry.spacing))
    ctx.progress(1.0, "done")
    return JobResult(masks=_masks(labels, classes), info={"classes": classes, "seconds": round(time.time() - t0, 1),
                                                          "method": "grow from seeds"})
