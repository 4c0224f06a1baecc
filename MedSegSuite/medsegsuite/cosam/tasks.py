"""Backend tasks of CoSAM: ``cosam.segment`` (the loop on a volume), ``cosam.click`` (a click in an
interactive session) and ``cosam.train``. Parameters are declared once, below (``--help`` of the
``medsegsuite cosam`` commands and ``GET /tasks`` are generated from them).

``cosam.segment`` inputs (all optional): ``points`` (N, 4) rows x, y, slice, label (1 = +, 0 = -;
x = column, y = row of a slice of ``plane``, as the slice engine cuts it) and ``start`` (a mask to
continue the loop from, e.g. the result the user is correcting). Returns the final mask named after
the structure and info; every round's masks ``<structure>_round<t>`` (t = 0 is the coarse/start mask)
only with ``return_rounds``. With ``session`` the result, clicks and settings are kept next to the
model, so ``cosam.click`` recomputes only the clicked slices and returns crops.
"""
from __future__ import annotations

import time

import numpy as np

from ..engine.interface import JobResult
from ..engine.tasks import task
from ..errors import CheckpointError, InputError
from ..models.registry import resolve_model
from ..sam.predictor import SlicePredictor
from ..sam.tasks import get_predictor, routed_backbone
from ..volume import SliceEngine
from ..volume.fov import canonical_pixel_mm, differs
from .backbones import base_name, load_backbone
from .decoder_routes import resolve_decoder_route, with_decoder_route
from .model import ARCH_PREFIX
from .params import CLICK_PARAMS, SEGMENT_PARAMS, TRAIN_PARAMS
from .calibrate import calibration_split
from .pipeline import correct_slices, error_maps, segment_volume
from .windows import click_in_window, segment_windowed, training_geometry


def cosam_predictor(ctx, backbone_name: str, checkpoint=None, encoder: str = "auto") -> SlicePredictor:
    """The worker's cached backbone (LiteMedSAM shares its predictor and cache with sam.oracle_box), its
    encoder on route ``encoder`` (sam/encoder_routes.py)."""
    if base_name(backbone_name) == "litemedsam":
        return get_predictor(ctx, encoder=encoder)
    key = ("cosam-backbone", base_name(backbone_name), str(checkpoint), ctx.device)
    bb = routed_backbone(ctx, key, lambda: load_backbone(backbone_name, ctx.device, checkpoint), encoder)
    return SlicePredictor(bb, ctx.device, ctx.cache.embeddings if ctx.cache is not None else None)


def load_model(ctx, model: str, backbone_checkpoint=None, encoder: str = "auto", decoder: str = "auto"):
    """(CoSAM model, predictor) for a registry id or (in-process) a checkpoint path, through the one
    model loader: the file is read and checksum-verified once per file identity, built once per backbone;
    its decoder passes on route ``decoder`` (cosam/decoder_routes.py), built once per worker."""
    from ..models import loader

    entry = resolve_model(model)
    obj, _ = loader.read_entry(entry)
    arch = str(obj.get("architecture") or entry.architecture or "")
    if not arch.startswith(ARCH_PREFIX):
        raise CheckpointError(f"model '{model}' is a '{arch or 'unknown'}' model, not a CoSAM model; train one "
                              "with 'medsegsuite cosam train' or use --model liver")
    pred = cosam_predictor(ctx, arch[len(ARCH_PREFIX):], backbone_checkpoint, encoder)
    lm = loader.load_model(model, ctx.device, expect=ARCH_PREFIX, cache_key=(pred.backbone.name,),
                           backbone=pred.backbone)
    route = resolve_decoder_route(decoder, ctx.device, pred.backbone.name)
    if route == "fp32":
        return lm.net, pred
    models = ctx.cache.models if ctx.cache is not None else None
    factory = lambda: with_decoder_route(lm.net, decoder, ctx.device)  # noqa: E731
    key = ("cosam-decoder", loader.file_identity(lm.entry.path), pred.backbone.name, ctx.device, route)
    return (models.get_or_create(key, factory) if models is not None else factory()), pred


def parse_points(points, engine) -> dict:
    """(N, 4) rows x, y, slice, label in ``engine``'s slices -> {slice: (points (n, 2), labels (n,))}."""
    if points is None:
        return {}
    p = np.asarray(points, dtype=np.float64)
    if p.size == 0:
        return {}
    if p.ndim != 2 or p.shape[1] != 4:
        raise InputError(f"points must be rows of x, y, slice, label; got shape {p.shape}")
    H, W = engine.slice_shape
    n = engine.n_slices
    out: dict[int, tuple[list, list]] = {}
    for x, y, k, lab in p:
        if not (0 <= x < W and 0 <= y < H and 0 <= k < n):
            raise InputError(f"point ({x:g}, {y:g}) on {engine.plane} slice {k:g} is outside the {W}x{H}x{n} "
                             f"image (x = column, y = row of the slice)")
        if lab not in (0, 1):
            raise InputError(f"point label {lab:g} must be 1 (+, inside) or 0 (-, outside)")
        pts, labs = out.setdefault(int(k), ([], []))
        pts.append((x, y))
        labs.append(int(lab))
    return {k: (np.asarray(v[0], np.float32), np.asarray(v[1], np.int64)) for k, v in out.items()}


@task("cosam.segment", params=SEGMENT_PARAMS,
      description="CoSAM: prompt-free coarse mask + self-correcting loop, slice by slice")
def segment(ctx, image, params, inputs):
    arr = image.array
    engine = SliceEngine.for_volume(image, params["plane"])
    net, pred = load_model(ctx, params["model"], params["backbone_checkpoint"], params["encoder"], params["decoder"])
    structure = params["structure"] or net.structure
    window = params["window"] if params["window"] is not None else net.card.get("window")
    indices = engine.select(params["slices"])
    clicks = parse_points((inputs or {}).get("points"), engine)
    start = (inputs or {}).get("start")
    if start is not None and np.shape(start) != arr.shape:
        raise InputError(f"the start mask has shape {np.shape(start)}, the image is {arr.shape}")
    image_id = image.fingerprint()  # the cache key: never a client's choice
    keep_rounds = params["return_rounds"]
    geometry = training_geometry(net.card)
    pixel_mm = canonical_pixel_mm(engine, image.spacing)
    windowed = _use_windows(params, geometry, engine, pixel_mm, clicks, start)
    if windowed:
        out = segment_windowed(net, pred, arr, image_id, engine, indices, window, pixel_mm, geometry,
                               params["iterations"], params["k_points"], params["roi"], keep_rounds=keep_rounds,
                               progress=ctx.progress, check_cancelled=ctx.check_cancelled,
                               extent_step=params["extent_step"], keep_errors=bool(params["session"]),
                               interpolate=params["interpolate"])
    else:
        out = segment_volume(net, pred, arr, image_id, engine, indices, window, params["iterations"],
                             params["k_points"], clicks, None if start is None else np.asarray(start, bool),
                             params["roi"], params["propagate"], keep_rounds=keep_rounds, progress=ctx.progress,
                             check_cancelled=ctx.check_cancelled, keep_errors=bool(params["session"]),
                             extent_step=params["extent_step"], interpolate=params["interpolate"],
                             pixel_mm=pixel_mm)
    arrays = {f"{structure}_round{t}": v.astype(np.uint8) for t, v in enumerate(out["rounds"])}
    info = {**out["info"], "structure": structure, "model": params["model"],
            "backbone": pred.backbone.name, "encoder_route": pred.backbone.encoder_route,
            "decoder_route": net.decoder_route, "window": window,
            "clicks": int(sum(len(v[1]) for v in clicks.values()))}
    info["per_slice"] = {str(k): v for k, v in info["per_slice"].items()}
    if params["session"]:
        s = ctx.session
        worker_image_id = s.get("image_id")  # how the worker recognises the session's image: keep it
        s.clear()
        s.update(image_id=worker_image_id, fingerprint=image.fingerprint(), cache_id=image_id, model=params["model"],
                 backbone_checkpoint=params["backbone_checkpoint"], encoder=params["encoder"], decoder=params["decoder"],
                 structure=structure,
                 plane=engine.plane,
                 window=window, k_points=params["k_points"],
                 mask=out["final"].copy(), segmented=set(info["slices"]),
                 clicks={k: [(float(x), float(y), int(lab)) for (x, y), lab in zip(*v)] for k, v in clicks.items()},
                 per_slice=dict(info["per_slice"]), errors=out["errors"], fov=out.get("window_session"))
        info["session"] = params["session"]
    return JobResult(masks={structure: out["final"]}, arrays=arrays, info=info)


def _use_windows(params, geometry, engine, pixel_mm, clicks, start) -> bool:
    """Whether ``cosam.segment`` shows the model windows at its training scale (cosam/windows.py)."""
    mode = params["field_of_view"]
    if mode == "slice":
        return False
    if geometry is None:
        if mode == "model":
            raise InputError("this model's card does not record the pixel size it was trained at: use "
                             "field_of_view='slice'")
        return False
    if mode == "auto" and not differs(engine.slice_shape, pixel_mm, *geometry):
        return False
    if clicks or start is not None or params["propagate"]:
        if mode == "model":
            raise InputError("field_of_view='model' works on a prompt-free start only (no points, start mask or "
                             "propagation)")
        return False
    return True


def _input_range(engine, slices):
    """The input-grid index range [lo, hi) along the plane's axis that holds canonical ``slices``."""
    n = engine.n_slices
    idx = [n - 1 - k if engine.flips[engine.axis] else k for k in slices]
    return min(idx), max(idx) + 1


@task("cosam.click", params=CLICK_PARAMS,
      description="CoSAM: add +/- clicks to a session and recompute only the clicked slices (returns crops)")
def click(ctx, image, params, inputs):
    """inputs: ``points`` (N, 4) rows x, y, slice, label in the session's plane. Each clicked slice
    continues the loop from the session's current mask on it, with every click the user has put on
    that slice; the result replaces only those slices (``crops``)."""
    t0, c0 = time.perf_counter(), time.process_time()
    name = params["session"]
    s = ctx.session
    if not s or "mask" not in s or s.get("fingerprint") != image.fingerprint():
        raise InputError(f"no CoSAM session '{name}' on this image: run cosam.segment with session='{name}' first")
    engine = SliceEngine.for_volume(image, s["plane"])
    new = parse_points((inputs or {}).get("points"), engine)
    if not new:
        raise InputError("cosam.click needs at least one point (rows x, y, slice, label)")
    net, pred = load_model(ctx, s["model"], s["backbone_checkpoint"], s.get("encoder", "auto"), s.get("decoder", "auto"))
    slices = sorted(new)
    merged = {k: list(s["clicks"].get(k, [])) for k in slices}  # every click on the slice so far, plus the new
    for k, (pts, labs) in new.items():
        for (x, y), lab in zip(pts, labs):
            c = (float(x), float(y), int(lab))
            if c not in merged[k]:  # a point sent again is not a new click
                merged[k].append(c)
    clicks = {k: (np.asarray([c[:2] for c in merged[k]], np.float32), np.asarray([c[2] for c in merged[k]], np.int64))
              for k in slices}
    start = {k: engine.slice(s["mask"], k) for k in slices if k in s["segmented"]}
    known = {k: s["errors"][k] for k in slices if k in s["errors"]}
    t1 = time.perf_counter()
    k_points = params["k_points"] if params["k_points"] is not None else s["k_points"]
    if s.get("fov"):  # the session segmented in the model's window: click there too
        out = click_in_window(net, pred, image.array, engine, s["fov"], slices, clicks, start, known, s["window"],
                              params["iterations"], k_points, ctx.check_cancelled)
    else:
        out = correct_slices(net, pred, image.array, s["cache_id"], engine, slices, s["window"],
                             params["iterations"], k_points, clicks, start, keep_rounds=False,
                             check_cancelled=ctx.check_cancelled, start_errors=known, keep_errors=True)
    t2 = time.perf_counter()
    s["clicks"].update(merged)  # the session changes only once the slices are recomputed
    for k in slices:
        s["errors"].pop(k, None)  # stale: the slice changed (a forced last round computes no new map)
    s["errors"].update(out["errors"])
    for k, m in out["final"].items():
        engine.put(s["mask"], k, m)
    s["segmented"].update(slices)
    lo, hi = _input_range(engine, slices)
    ax = engine.input_axis
    box = [slice(None)] * 3
    box[ax] = slice(lo, hi)
    offset = [0, 0, 0]
    offset[ax] = lo
    crop = s["mask"][tuple(box)].copy()
    per_slice = {str(k): v for k, v in out["info"]["per_slice"].items()}
    s["per_slice"].update(per_slice)
    t3 = time.perf_counter()
    tm = out["timings"]
    timings = {"validate_ms": round(1000 * (t1 - t0), 2), "embed_ms": tm["embed_ms"], "loop_ms": tm["loop_ms"],
               "decode_ms": round(tm["decode_ms"] + 1000 * (t3 - t2), 2), "total_ms": round(1000 * (t3 - t0), 2),
               "cpu_ms": round(1000 * (time.process_time() - c0), 2),  # process CPU time: all threads
               "prepare_ms": s.pop("prepare_ms", 0.0)}  # the last click's follow-up, done after its result
    info = {"session": name, "structure": s["structure"], "plane": engine.plane, "slices": slices,
            "offset": offset, "crop_shape": list(crop.shape), "per_slice": per_slice,
            "clicks": {str(k): len(s["clicks"][k]) for k in slices}, "encoder_calls": pred.encoder_calls,
            "decoder_route": net.decoder_route,
            "timings": timings}
    pending = out["pending_errors"]
    if pending:  # the next click on these slices needs their error maps: made while the user looks
        def prepare_next_click():
            a = time.perf_counter()
            s["errors"].update(error_maps(net, pending))
            s["prepare_ms"] = round(1000 * (time.perf_counter() - a), 2)
        ctx.after(prepare_next_click)
    return JobResult(crops={s["structure"]: (tuple(offset), crop)}, info=info)


def _array_id(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def _case_embeddings(pred, arr, engine, window, cache_file, progress):
    """All slices' embeddings (n, C, h, w) fp16 of one case, through an optional on-disk cache."""
    import torch

    from ..models.checkpoints import load_checkpoint

    key = f"{pred.backbone.name}|{_array_id(arr)}|{engine.plane}|{engine.perm}|{engine.flips}|{window}"
    store = {}
    if cache_file:
        from pathlib import Path

        if Path(cache_file).exists():
            store = load_checkpoint(cache_file)
        if key in store:
            return store[key]
    n = engine.n_slices
    embs = pred.embeddings(arr, key, engine, range(n), window, progress=progress)
    out = torch.cat([embs[i] for i in range(n)]).half()
    if cache_file:
        store[key] = out
        torch.save(store, cache_file)
    return out


LPS_IDENTITY = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))


@task("cosam.train", needs_image=False, params=TRAIN_PARAMS, kind="training",
      description="CoSAM: train the prompt-free and error decoders")
def train(ctx, image, params, inputs):
    """inputs: image<n> (float volumes), label<n> (structure masks) and optionally direction<n> (3x3,
    the volume's direction matrix; default: the array is already in LPS order, as LiTS-117 is) and
    spacing<n> (IJK voxel size in mm: the card then records the training pixel size and slice size,
    which ``cosam.segment`` uses to show other images at the same scale)."""
    import torch

    from .calibrate import calibrate
    from .loop import AcceptRule
    from .model import CoSAM
    from .train import evaluate, lowres_targets, train_cosam

    t0 = time.time()
    n_cases = len([k for k in inputs if k.startswith("image")])
    if n_cases == 0 or any(f"label{i}" not in inputs for i in range(n_cases)):
        raise InputError("cosam.train needs inputs image0, label0, image1, label1, ...")
    structure = params["structure"]
    plane = params["plane"]
    pred = cosam_predictor(ctx, params["backbone"], params["backbone_checkpoint"])
    net = CoSAM(pred.backbone).to(ctx.device)
    names = params["case_names"] or [f"case{i}" for i in range(n_cases)]
    domains = params["domains"] or ["default"] * n_cases
    if len(names) != n_cases or len(domains) != n_cases:
        raise InputError(f"case_names and domains need one entry per case ({n_cases})")
    embs, targets, refs, windows, splits, pixels = [], [], [], [], [], []
    offset, train_idx, calib_idx = 0, [], []
    for i in range(n_cases):
        arr = np.asarray(inputs[f"image{i}"], np.float32)
        lab = np.asarray(inputs[f"label{i}"]) > 0
        if lab.shape != arr.shape:
            raise InputError(f"label {i} has shape {lab.shape}, image {i} has {arr.shape}")
        direction = inputs.get(f"direction{i}")
        direction = LPS_IDENTITY if direction is None else np.asarray(direction, float)
        if np.shape(direction) != (3, 3):
            raise InputError(f"direction{i} must be a 3x3 direction matrix")
        engine = SliceEngine(arr.shape, direction, plane)
        spacing = inputs.get(f"spacing{i}")
        if spacing is not None:
            spacing = np.asarray(spacing, float).reshape(-1)
            if spacing.shape != (3,) or not np.all(spacing > 0):
                raise InputError(f"spacing{i} must be 3 positive voxel sizes in mm")
            pixels.append((canonical_pixel_mm(engine, spacing), engine.slice_shape))
        window = params["window"]
        if window is None and float(arr.min()) < -500:  # looks like CT in HU: MedSAM's abdominal window
            window = [-160.0, 240.0]
        windows.append(window)
        e = _case_embeddings(pred, arr, engine, window, params["embedding_cache"],
                             lambda d, t, i=i: ctx.progress(0.4 * (i + d / max(t, 1)) / n_cases,
                                                            f"case {i + 1}: encoded {d}/{t} slices"))
        m2d = engine.stack(lab, range(engine.n_slices))
        tr, calib, held = calibration_split(params["split"], len(m2d))
        if not params["calibrate"]:
            tr, calib = sorted(tr + calib), []
        embs.append(e)
        targets.append(lowres_targets(m2d, net.low_res))
        refs.append(m2d)
        splits.append({"train": tr, "calibration": calib, "heldout": held})
        train_idx += [offset + j for j in tr]
        calib_idx += [offset + j for j in calib]
        offset += len(m2d)
    emb = torch.cat(embs)
    steps = params["steps"]
    refine_steps = params["refine_steps"] if params["refine_steps"] is not None else steps
    settings = {"steps": steps, "refine_steps": refine_steps, "batch": params["batch"], "lr": params["lr"],
                "lr_schedule": "poly(0.9)", "optimizer": "Adam", "k_points": 5, "alpha": 0.2,
                "loss": "Ls(coarse) + 1.0 Ls(refined) + 0.1 Ls(guided) + Le; Ls = Dice + BCE; Le = weighted BCE",
                "seed": params["seed"], "plane": plane, "fold_steps": params["fold_steps"],
                "error_steps": params["error_steps"], "p_large": params["p_large"]}
    tgt = torch.cat(targets)
    info = train_cosam(net, emb, tgt, train_idx, steps=steps, refine_steps=refine_steps,
                       batch=settings["batch"],
                       lr=settings["lr"], seed=settings["seed"], log=None,
                       progress=lambda d, t: ctx.progress(0.4 + 0.45 * d / max(t, 1), f"training step {d}/{t}"),
                       check_cancelled=ctx.check_cancelled, fold_steps=params["fold_steps"],
                       error_steps=params["error_steps"], p_large=params["p_large"])
    if calib_idx:
        ctx.progress(0.86, f"calibrating the acceptance rule on {len(calib_idx)} held-out slices")
        rule, calib_report = calibrate(net, emb, tgt[:, 0].numpy() > 0.5, calib_idx)
    else:
        rule, calib_report = AcceptRule(), {"slices": [], "note": "not calibrated: the default rule"}
    net.card = {**net.card, "acceptance": rule.to_dict()}
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
    card = {"structure": structure, "structures": [structure], "window": windows[0], "plane": plane,
            "data": [{"case": names[i], "domain": domains[i], "shape": list(np.shape(inputs[f"image{i}"]))}
                     for i in range(n_cases)],
            "split": {"spec": params["split"],
                      **({"train": splits[0]["train"], "heldout": splits[0]["heldout"]} if n_cases == 1 else
                         {"per_case": splits})},
            "settings": settings, "training": info, "validation": validation,
            "acceptance": rule.to_dict(), "calibration": calib_report,
            "seconds": round(time.time() - t0, 1)}
    if len(pixels) == n_cases:  # the scale the model learned (cosam/windows.py)
        card["pixel_mm"] = round(float(np.median([p for px, _ in pixels for p in px])), 4)
        card["slice_px"] = int(max(pixels[0][1]))
    net.card = {**card, "backbone": net.backbone_name, "error_decoder": net.error_decoder.config,
                "mask_head": net.head_config, "task": "cosam"}
    arrays = {f"sd.{k}": v.numpy() for k, v in net.trained_state(half=True).items()}
    return JobResult(arrays=arrays, info={"card": net.card, "architecture": ARCH_PREFIX + net.backbone_name})
