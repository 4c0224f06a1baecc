"""Backend tasks of scribble segmentation (MaCo).

* ``scribble.train``: inputs ``scribbles`` (label array on the job image's grid: 0 background,
  1..C = ``params['classes']`` in order, ``params['unlabelled']`` (default 255) elsewhere); more cases
  as ``image_1``/``scribbles_1``, ``image_2``/``scribbles_2``… with ``params['spacing_1']``…; optional
  ``init_model`` (uint8 model bytes) or ``params['init_model']`` (path or registry id) to continue
  from an earlier model. ``params['settings']``: see `train.DEFAULT_SETTINGS`. Returns
  ``arrays['model']`` (uint8 bytes of a weights_only-safe checkpoint) and a report in ``info``.
* ``scribble.segment``: input ``model`` (bytes) or ``params['model']`` (path / id); returns one mask
  per class, named after it.
* ``scribble.quick``: train on the scribbled slices of the job image with the quick settings, then
  segment the whole volume; returns the masks and ``arrays['model']`` (for re-training).
"""
from __future__ import annotations

import time

import numpy as np

from ..engine.interface import JobResult
from ..engine.tasks import task
from ..errors import InputError
from .checkpoint import build_from, model_key, model_to_bytes, read_model_dict
from .infer import postprocess, predict_volume
from .labels import UNLABELLED, validate_scribbles
from .train import QUICK_SETTINGS, TrainCase, train_model


def _classes(params, init_card=None) -> list[str]:
    classes = params.get("classes") or (init_card or {}).get("classes")
    if not classes or not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) and c for c in classes):
        raise InputError("params 'classes' must list the structure names (background excluded), e.g. "
                         "['liver', 'tumour']; label value c in the scribbles is classes[c-1]")
    if any(c.lower() == "background" for c in classes):
        raise InputError("'background' is implicit (label 0); list only the structures in 'classes'")
    if len(set(classes)) != len(classes):
        raise InputError(f"class names must be unique, got {list(classes)}")
    return list(classes)


def _scribbles(arr, n_fg, shape, unlabelled, classes, what):
    if arr is None:
        raise InputError(f"{what} is missing: pass the scribble label array")
    try:
        lab = validate_scribbles(arr, n_fg, image_shape=shape, unlabelled=int(unlabelled), classes=classes)
    except InputError as e:
        raise InputError(f"{what}: {e}") from None
    return lab


def _cases(image, params, inputs, classes) -> list[TrainCase]:
    unl = params.get("unlabelled", UNLABELLED)
    cases = [TrainCase(image.array, _scribbles(inputs.get("scribbles"), len(classes), image.shape, unl, classes,
                                               "scribbles"), tuple(image.geometry.spacing))]
    n = 1
    while f"image_{n}" in inputs or f"scribbles_{n}" in inputs:
        img = inputs.get(f"image_{n}")
        if img is None or np.ndim(img) != 3:
            raise InputError(f"case {n + 1}: 'image_{n}' must be a 3D array alongside 'scribbles_{n}'")
        spacing = params.get(f"spacing_{n}", [1.0, 1.0, 1.0])
        if len(spacing) != 3 or min(float(v) for v in spacing) <= 0:
            raise InputError(f"case {n + 1}: spacing_{n} must be 3 positive numbers (mm)")
        cases.append(TrainCase(np.asarray(img), _scribbles(inputs.get(f"scribbles_{n}"), len(classes), np.shape(img),
                                                           unl, classes, f"scribbles_{n}"),
                               tuple(float(v) for v in spacing)))
        n += 1
    return cases


def _init(params, inputs):
    if inputs.get("init_model") is not None:
        return read_model_dict(data=inputs["init_model"])
    if params.get("init_model"):
        from ..models import resolve_model

        return read_model_dict(path=resolve_model(str(params["init_model"])).path)
    return None


def _sub(ctx, a, b):
    return lambda f, m="": ctx.progress(a + (b - a) * f, m)


def _train(ctx, image, params, inputs, a, b, base_settings=None):
    init = _init(params, inputs)
    classes = _classes(params, init[1] if init else None)
    cases = _cases(image, params, inputs, classes)
    settings = dict(base_settings or {})
    settings.update(params.get("settings") or {})
    return train_model(cases, classes, settings, init, _sub(ctx, a, b), ctx.device), classes


@task("scribble.train", description="train a 2D network from scribbles with MaCo (CPL + MCM)")
def train_task(ctx, image, params, inputs):
    (net, card), classes = _train(ctx, image, params, inputs, 0.0, 0.97)
    data = model_to_bytes(net, card)
    ctx.progress(1.0, "model ready")
    return JobResult(arrays={"model": data}, info={"classes": classes, "model_bytes": int(data.size),
                                                   "training": card["training"], "method": card["method"]})


def _load(ctx, params, inputs):
    if inputs.get("model") is not None:
        data = np.asarray(inputs["model"], dtype=np.uint8)
        key, loader = model_key(data), (lambda: read_model_dict(data=data))
    elif params.get("model"):
        from ..models import resolve_model

        entry = resolve_model(str(params["model"]))
        key, loader = str(entry.path), (lambda: read_model_dict(path=entry.path))
    else:
        raise InputError("scribble.segment needs a model: the 'model' input (bytes from scribble.train) or "
                         "params 'model' (a checkpoint path or registry id)")

    def factory():
        sd, card = loader()
        return build_from(sd, card, ctx.device), card

    cache = ctx.cache.models if ctx.cache is not None else None
    return cache.get_or_create(("scribble", key, ctx.device), factory) if cache is not None else factory()


def _masks(labels, classes):
    return {name: labels == c for c, name in enumerate(classes, start=1)}


@task("scribble.segment", description="segment a volume slice by slice with a scribble-trained model")
def segment_task(ctx, image, params, inputs):
    t0 = time.time()
    ctx.progress(0.0, "loading the model")
    net, card = _load(ctx, params, inputs)
    labels = predict_volume(net, card, image.array, _sub(ctx, 0.02, 0.97), ctx.device)
    labels = postprocess(labels, card["classes"], params.get("keep_largest"))
    ctx.progress(1.0, "done")
    return JobResult(masks=_masks(labels, card["classes"]),
                     info={"classes": card["classes"], "seconds": round(time.time() - t0, 2),
                           "method": card.get("method")})


@task("scribble.quick", description="train on this volume's scribbled slices, then segment the whole volume")
def quick_task(ctx, image, params, inputs):
    t0 = time.time()
    (net, card), classes = _train(ctx, image, params, inputs, 0.0, 0.88, QUICK_SETTINGS)
    t1 = time.time()
    labels = predict_volume(net, card, image.array, _sub(ctx, 0.88, 0.99), ctx.device)
    labels = postprocess(labels, classes, params.get("keep_largest"))
    data = model_to_bytes(net, card)
    ctx.progress(1.0, "done")
    return JobResult(masks=_masks(labels, classes), arrays={"model": data},
                     info={"classes": classes, "training": card["training"], "train_seconds": round(t1 - t0, 1),
                           "segment_seconds": round(time.time() - t1, 1), "seconds": round(time.time() - t0, 1)})
