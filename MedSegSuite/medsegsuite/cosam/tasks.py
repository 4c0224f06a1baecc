"""Backend tasks of CoSAM: ``cosam.segment`` (the loop on a volume) and ``cosam.train``.

``cosam.segment`` params: ``model`` (registry id or checkpoint path, default ``liver``), ``structure``
(output name; default the model's), ``axis`` (2), ``slices`` ('all', 'every:K', 'a:b', list),
``roi`` (i0, i1, j0, j1, k0, k1), ``iterations`` (T, default 4), ``k_points`` (5), ``window`` (default
the model card's), ``propagate`` (False), ``backbone_checkpoint`` (for official SAM/MedSAM
backbones), ``image_id``. inputs (all optional): ``points`` (N, 4) rows x, y, slice, label (1 = +, 0 = -;
x = column, y = row of the slice) and ``start`` (a mask to continue the loop from, e.g. the result
the user is correcting). Returns the final mask named after the structure, every round's masks
as uint8 arrays ``<structure>_round<t>`` (t = 0 is the coarse/start mask), and info without Dice.
"""
from __future__ import annotations

import numpy as np

from ..engine.interface import JobResult
from ..engine.tasks import task
from ..errors import CheckpointError, InputError
from ..models.registry import resolve_model
from ..sam.predictor import SlicePredictor
from ..sam.tasks import get_predictor, parse_slices
from .backbones import base_name, load_backbone
from .model import load_cosam, read_cosam
from .pipeline import segment_volume


def _models_cache(ctx):
    return ctx.cache.models if ctx.cache is not None else None


def cosam_predictor(ctx, backbone_name: str, checkpoint=None) -> SlicePredictor:
    """The worker's cached backbone (LiteMedSAM shares its predictor and cache with sam.oracle_box)."""
    if base_name(backbone_name) == "litemedsam":
        return get_predictor(ctx)
    models = _models_cache(ctx)
    key = ("cosam-backbone", base_name(backbone_name), str(checkpoint), ctx.device)
    factory = lambda: load_backbone(backbone_name, ctx.device, checkpoint)  # noqa: E731
    bb = models.get_or_create(key, factory) if models is not None else factory()
    return SlicePredictor(bb, ctx.device, ctx.cache.embeddings if ctx.cache is not None else None)


def load_model(ctx, model: str, backbone_checkpoint=None):
    """(CoSAM model, predictor) for a registry id or a checkpoint path, cached by file and checksum."""
    entry = resolve_model(model)
    if entry.architecture and not entry.architecture.startswith("cosam/") and entry.architecture != "unknown":
        raise CheckpointError(f"model '{model}' is a '{entry.architecture}' model, not a CoSAM model")
    _, card, bb_name = read_cosam(entry.path, entry.sha256, entry.size)
    pred = cosam_predictor(ctx, bb_name, backbone_checkpoint)
    models = _models_cache(ctx)
    key = ("cosam", str(entry.path), entry.sha256, pred.backbone.name, ctx.device)
    factory = lambda: load_cosam(entry.path, pred.backbone, entry.sha256, entry.size).to(ctx.device)  # noqa: E731
    net = models.get_or_create(key, factory) if models is not None else factory()
    return net, pred


def parse_points(points, shape, axis: int) -> dict:
    """(N, 4) rows x, y, slice, label -> {slice: (points (n, 2), labels (n,))}, checked."""
    if points is None:
        return {}
    p = np.asarray(points, dtype=np.float64)
    if p.size == 0:
        return {}
    if p.ndim != 2 or p.shape[1] != 4:
        raise InputError(f"points must be rows of x, y, slice, label; got shape {p.shape}")
    H, W = [n for d, n in enumerate(shape) if d != axis]
    out: dict[int, tuple[list, list]] = {}
    for x, y, k, lab in p:
        if not (0 <= x < W and 0 <= y < H and 0 <= k < shape[axis]):
            raise InputError(f"point ({x:g}, {y:g}) on slice {k:g} is outside the {W}x{H}x{shape[axis]} image "
                             f"(x = column, y = row of the slice)")
        if lab not in (0, 1):
            raise InputError(f"point label {lab:g} must be 1 (+, inside) or 0 (-, outside)")
        pts, labs = out.setdefault(int(k), ([], []))
        pts.append((x, y))
        labs.append(int(lab))
    return {k: (np.asarray(v[0], np.float32), np.asarray(v[1], np.int64)) for k, v in out.items()}


@task("cosam.segment", description="CoSAM: prompt-free coarse mask + self-correcting loop, slice by slice")
def segment(ctx, image, params, inputs):
    arr = image.array
    axis = int(params.get("axis", 2))
    if axis not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2, not {axis}")
    rounds = int(params.get("iterations", 4))
    if not 0 <= rounds <= 16:
        raise InputError(f"iterations must be 0..16, not {rounds}")
    net, pred = load_model(ctx, str(params.get("model", "liver")), params.get("backbone_checkpoint"))
    structure = str(params.get("structure") or net.structure)
    window = params.get("window", net.card.get("window"))
    indices = parse_slices(params.get("slices", "all"), arr.shape[axis])
    clicks = parse_points((inputs or {}).get("points"), arr.shape, axis)
    start = (inputs or {}).get("start")
    if start is not None and np.shape(start) != arr.shape:
        raise InputError(f"the start mask has shape {np.shape(start)}, the image is {arr.shape}")
    image_id = params.get("image_id") or image.fingerprint()
    out = segment_volume(net, pred, arr, image_id, axis, indices, window, rounds, int(params.get("k_points", 5)),
                         clicks, None if start is None else np.asarray(start, bool), params.get("roi"),
                         bool(params.get("propagate", False)), progress=ctx.progress,
                         check_cancelled=ctx.check_cancelled)
    arrays = {f"{structure}_round{t}": v.astype(np.uint8) for t, v in enumerate(out["rounds"])}
    info = {**out["info"], "structure": structure, "model": str(params.get("model", "liver")),
            "backbone": pred.backbone.name, "window": window, "clicks": int(sum(len(v[1]) for v in clicks.values()))}
    info["per_slice"] = {str(k): v for k, v in info["per_slice"].items()}
    return JobResult(masks={structure: out["final"]}, arrays=arrays, info=info)


def _array_id(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def _case_embeddings(pred, arr, axis, window, cache_file, progress):
    """All slices' embeddings (n, C, h, w) fp16 of one case, through an optional on-disk cache."""
    import torch

    from ..models.checkpoints import load_checkpoint

    key = f"{pred.backbone.name}|{_array_id(arr)}|{axis}|{window}"
    store = {}
    if cache_file:
        from pathlib import Path

        if Path(cache_file).exists():
            store = load_checkpoint(cache_file)
        if key in store:
            return store[key]
    n = arr.shape[axis]
    embs = pred.embeddings(arr, key, axis, range(n), window, progress=progress)
    out = torch.cat([embs[i] for i in range(n)]).half()
    if cache_file:
        store[key] = out
        torch.save(store, cache_file)
    return out


def split_slices(spec: str, n: int) -> tuple[list[int], list[int]]:
    """'interleaved:K' -> every K-th slice (from 0) held out; 'block:F' -> train on [0, F n), hold out the
    far block after a gap of n/8."""
    kind, _, val = str(spec).partition(":")
    try:
        if kind == "interleaved":
            k = int(val or 4)
            held = [i for i in range(n) if i % k == 0]
            return [i for i in range(n) if i % k], held
        if kind == "block":
            f = float(val or 0.5)
            cut = int(round(f * n))
            return list(range(cut)), list(range(min(cut + n // 8, n - 1), n))
    except ValueError:
        pass
    raise InputError(f"split '{spec}' must be 'interleaved:K' or 'block:F'")


@task("cosam.train", needs_image=False, description="CoSAM: train the prompt-free and error decoders")
def train(ctx, image, params, inputs):
    """inputs: image<n> (float volumes) and label<n> (structure masks); params: see the CLI."""
    import time

    import torch

    from .model import CoSAM
    from .train import evaluate, lowres_targets, train_cosam

    t0 = time.time()
    n_cases = len([k for k in inputs if k.startswith("image")])
    if n_cases == 0 or any(f"label{i}" not in inputs for i in range(n_cases)):
        raise InputError("cosam.train needs inputs image0, label0, image1, label1, ...")
    structure = str(params.get("structure") or "structure")
    axis = int(params.get("axis", 2))
    backbone = params.get("backbone", "litemedsam")
    pred = cosam_predictor(ctx, backbone, params.get("backbone_checkpoint"))
    net = CoSAM(pred.backbone).to(ctx.device)
    names = params.get("case_names") or [f"case{i}" for i in range(n_cases)]
    domains = params.get("domains") or ["default"] * n_cases
    embs, targets, refs, windows, splits = [], [], [], [], []
    offset, train_idx = 0, []
    for i in range(n_cases):
        arr = np.asarray(inputs[f"image{i}"], np.float32)
        lab = np.asarray(inputs[f"label{i}"]) > 0
        if lab.shape != arr.shape:
            raise InputError(f"label {i} has shape {lab.shape}, image {i} has {arr.shape}")
        window = params.get("window")
        if window is None and float(arr.min()) < -500:  # looks like CT in HU: MedSAM's abdominal window
            window = [-160.0, 240.0]
        windows.append(window)
        e = _case_embeddings(pred, arr, axis, window, params.get("embedding_cache"),
                             lambda d, t, i=i: ctx.progress(0.4 * (i + d / max(t, 1)) / n_cases,
                                                            f"case {i + 1}: encoded {d}/{t} slices"))
        m2d = np.moveaxis(lab, axis, 0)
        tr, held = split_slices(params.get("split", "interleaved:4"), len(m2d))
        embs.append(e)
        targets.append(lowres_targets(m2d, net.low_res))
        refs.append(m2d)
        splits.append({"train": tr, "heldout": held})
        train_idx += [offset + j for j in tr]
        offset += len(m2d)
    emb = torch.cat(embs)
    steps = int(params.get("steps", 300))
    refine_steps = int(params["refine_steps"]) if params.get("refine_steps") is not None else steps
    settings = {"steps": steps, "refine_steps": refine_steps, "batch": int(params.get("batch", 8)),
                "lr": float(params.get("lr", 1e-4)),
                "lr_schedule": "poly(0.9)", "optimizer": "Adam", "k_points": 5, "alpha": 0.2,
                "loss": "Ls(coarse) + 1.0 Ls(refined) + 0.1 Ls(guided) + Le; Ls = Dice + BCE; Le = weighted BCE",
                "seed": int(params.get("seed", 0)), "axis": axis}
    info = train_cosam(net, emb, torch.cat(targets), train_idx, steps=steps, refine_steps=refine_steps,
                       batch=settings["batch"],
                       lr=settings["lr"], seed=settings["seed"], log=None,
                       progress=lambda d, t: ctx.progress(0.4 + 0.5 * d / max(t, 1), f"training step {d}/{t}"),
                       check_cancelled=ctx.check_cancelled)
    ctx.progress(0.92, "validating on held-out slices")
    per_case, all_by_round, by_domain = [], [], {}
    for i in range(n_cases):
        ev = evaluate(net, embs[i], refs[i], splits[i]["heldout"])
        per_case.append({"case": names[i], "domain": domains[i], "dice_by_round": ev["dice_by_round"],
                         "per_slice": ev["per_slice"]})
        all_by_round.append((len(ev["slices"]), ev["dice_by_round"]))
        by_domain.setdefault(domains[i], []).append(ev["dice_by_round"][-1])
    w = np.array([n for n, _ in all_by_round], float)
    mean_by_round = [round(float(v), 4) for v in (np.array([d for _, d in all_by_round]) * w[:, None]).sum(0) / w.sum()]
    validation = {"metric": "mean per-slice Dice on held-out slices", "dice_by_round": mean_by_round,
                  "coarse": mean_by_round[0], "final": mean_by_round[-1],
                  "slices": splits[0]["heldout"] if n_cases == 1 else sum(len(s["heldout"]) for s in splits),
                  "per_case": per_case,
                  "final_by_domain": {k: round(float(np.mean(v)), 4) for k, v in by_domain.items()}}
    card = {"structure": structure, "structures": [structure], "window": windows[0], "axis": axis,
            "data": [{"case": names[i], "domain": domains[i], "shape": list(np.shape(inputs[f"image{i}"]))}
                     for i in range(n_cases)],
            "split": {"spec": params.get("split", "interleaved:4"),
                      **({"train": splits[0]["train"], "heldout": splits[0]["heldout"]} if n_cases == 1 else
                         {"per_case": splits})},
            "settings": settings, "training": info, "validation": validation,
            "seconds": round(time.time() - t0, 1)}
    net.card = {**card, "backbone": net.backbone_name, "error_decoder": net.error_decoder.config,
                "mask_head": net.head_config, "task": "cosam"}
    arrays = {f"sd.{k}": v.numpy() for k, v in net.trained_state(half=True).items()}
    return JobResult(arrays=arrays, info={"card": net.card, "architecture": "cosam/" + net.backbone_name})
