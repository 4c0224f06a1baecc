"""Training a 2D network on scribbled slices of 3D volumes with MaCo or one of its ablations.

``method``: ``maco`` (pCE + CPL + MCM), ``pce`` (partial CE only), ``pce+cpl``, ``pce+mcm``, or
``full`` (CE + soft Dice on dense labels: the labels passed in are complete label maps of the same
slices; the upper bound the evaluation compares against). Only slices holding at least one labelled pixel
are used. Progress is reported through ``progress(fraction, message)``, which raises
`JobCancelled` when the user cancels (the engine's ``JobContext.progress`` does).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..losses import dice_ce_terms
from . import mcm as mcm_mod
from .cpl import continuous_pseudo_labels
from .labels import UNLABELLED, validate_scribbles
from .losses import consistency, mcm_weight, partial_ce, soft_ce, soft_dice
from .network import ARCHITECTURE, build_network, divisor, in_channels, net_config
from .params import DEFAULT_SETTINGS, METHODS, QUICK_SETTINGS, SETTINGS_SCHEMA  # noqa: F401  (re-exported)
from .preprocess import (FRAME, context_indices, normalise, pad_to, resize_image, resize_labels, round_up,
                         slice_engine, slice_spacing, work_shape)


@dataclass
class TrainCase:
    image: np.ndarray          # [i, j, k] intensities
    labels: np.ndarray         # [i, j, k] uint8: 0 background, 1..C classes, UNLABELLED elsewhere
    spacing: tuple = (1.0, 1.0, 1.0)
    direction: tuple | None = None  # IJK-to-RAS directions; None: the array is in LPS order


# The full-supervision baseline's loss: the package's one Dice+CE (medsegsuite.losses), softmax CE plus
# 1 − mean soft Dice over the classes present in the batch, on labelled pixels. The Dice term keeps plain
# CE on dense labels from settling on all-background when structures are small (seen on Colin27).
FULL_LOSS = {"multiclass": True, "ignore_index": UNLABELLED, "smooth": 1e-5, "present_only": True}


def settings_with(overrides: dict | None = None, base: dict | None = None) -> dict:
    """Defaults (``base`` over `params.DEFAULT_SETTINGS`) updated by ``overrides``, checked by the
    same schema the tasks declare (`params.SETTINGS_SCHEMA`; idempotent on a task's validated params)."""
    merged = {**(base or {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return SETTINGS_SCHEMA.validate(merged, "scribble settings")


def grow_soft_labels(image: np.ndarray, labels: np.ndarray, spacing, n_classes: int, soft_mm: float) -> np.ndarray:
    """[C, i, j, k] image-aware pseudo labels on every voxel: Grow from seeds' 3D labels from the
    strokes (`growcut`), softened across their borders: ``softmax_c(-d_c / soft_mm)`` with ``d_c``
    the distance (mm) to the voxels grown into class c (0 inside them), so a voxel deep in a region
    is one-hot and a border voxel is shared. Voxels outside the seeds' box are background (the
    strokes' extent bounds where the structures can be). Called on the slice engine's canonical
    arrays, so the result does not depend on the storage order."""
    from scipy import ndimage

    from .growcut import grow_from_seeds

    grown = grow_from_seeds(image, labels, n_classes, spacing)
    d = np.stack([ndimage.distance_transform_edt(grown != c, sampling=spacing).astype(np.float32)
                  if np.any(grown == c) else np.full(grown.shape, np.inf, np.float32) for c in range(n_classes)])
    logits = -d / float(soft_mm)
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)


def _prepare(cases: list[TrainCase], n_classes: int, s: dict, div: int):
    """Training slices (of the plane, through the slice engine) of every case at working resolution,
    padded to one common size: ``x`` [N, 2·context+1, H, W], scribbles ``y`` [N, H, W], soft labels
    [N, C, H, W] (or None) and the valid-pixel mask. ``cpl='euclidean2d'``: the scribbled slices with
    the paper's CPL; ``grow3d``: every slice, with `grow_soft_labels`."""
    import torch

    imgs, labs, softs = [], [], []
    grow = s["cpl"] == "grow3d" and s["method"] in ("maco", "pce+cpl")
    ctx = int(s["context"])
    for n, case in enumerate(cases):
        if case.image.shape != case.labels.shape:
            raise InputError(f"case {n + 1}: scribbles have shape {case.labels.shape}, image {case.image.shape}")
        eng = slice_engine(case.image.shape, case.direction, s["plane"])
        vol = np.moveaxis(eng.canonical(normalise(case.image)), eng.axis, 0)
        lab = np.moveaxis(eng.canonical(case.labels), eng.axis, 0)
        soft3 = None
        if grow:
            sp_c = tuple(float(case.spacing[eng.perm[d]]) for d in range(3))
            soft3 = grow_soft_labels(np.ascontiguousarray(eng.canonical(case.image)),
                                     np.ascontiguousarray(eng.canonical(case.labels)), sp_c, n_classes,
                                     float(s["soft_mm"]))
            soft3 = np.moveaxis(soft3, eng.axis + 1, 0)  # [k, C, h, w]
        sp2 = slice_spacing(eng, case.spacing)
        scribbled = [i for i in range(lab.shape[0]) if np.any(lab[i] != UNLABELLED)]
        for i in (range(lab.shape[0]) if grow else scribbled):
            ws = work_shape(lab[i].shape, s["max_size"])
            x = torch.from_numpy(np.ascontiguousarray(vol[context_indices(i, vol.shape[0], ctx)]))[None]
            img = resize_image(x, ws)[0].numpy()
            lb = resize_labels(lab[i], n_classes, ws, UNLABELLED)
            if grow:
                sf = resize_image(torch.from_numpy(np.ascontiguousarray(soft3[i]))[None], ws)[0].numpy()
                onehot = np.eye(n_classes, dtype=np.float32)[np.clip(lb, 0, n_classes - 1)].transpose(2, 0, 1)
                sf = np.where((lb != UNLABELLED)[None], onehot, sf)  # on a stroke the label is the stroke's
            elif s["method"] in ("maco", "pce+cpl"):
                if not np.any(lb != UNLABELLED):
                    continue
                spacing = (sp2[0] * lab[i].shape[0] / ws[0], sp2[1] * lab[i].shape[1] / ws[1])
                sf = continuous_pseudo_labels(lb, n_classes, spacing, float(s["tau"]))
            else:
                if not np.any(lb != UNLABELLED):
                    continue
                sf = None
            imgs.append(img)
            labs.append(lb)
            softs.append(sf)
    if not imgs:
        raise InputError(f"no {s['plane']} slice holds a scribble")
    H = round_up(max(a.shape[-2] for a in imgs), div)
    W = round_up(max(a.shape[-1] for a in imgs), div)
    fill = [float(a.min()) for a in imgs]
    x = np.stack([pad_to(a, (H, W), f) for a, f in zip(imgs, fill)]).astype(np.float32)
    valid = np.stack([pad_to(np.ones(a.shape, bool), (H, W), False) for a in labs])
    y = np.stack([pad_to(a, (H, W), UNLABELLED) for a in labs])
    soft = None
    if softs[0] is not None:
        soft = np.stack([pad_to(a, (H, W), 0.0) for a in softs]).astype(np.float32)
        soft *= valid[:, None]
    return x, y, soft, valid


def train_model(cases: list[TrainCase], classes: list[str], settings: dict | None = None, init=None,
                progress=None, device: str = "cpu"):
    """Train; returns ``(net, card)``. ``init``: ``(state_dict, card)`` of an earlier model of the same
    classes to continue from (re-training after more scribbles)."""
    import torch

    s = settings_with(settings)
    n_classes = len(classes) + 1
    progress = progress or (lambda f, m="": None)
    for n, case in enumerate(cases):
        labels = case.labels
        if s["method"] != "full":
            labels = validate_scribbles(labels, len(classes), image_shape=case.image.shape, classes=classes)
        case.labels = np.asarray(labels, dtype=np.uint8)
    cfg = net_config({**(s["net"] or {}), "in_channels": 1 + 2 * int(s["context"])})
    if init is not None:
        init_sd, init_card = init
        if list(init_card.get("classes", [])) != list(classes):
            raise InputError(f"the starting model segments {init_card.get('classes')}, the scribbles name "
                             f"{classes}; re-train from scratch or use the same class names")
        cfg = net_config(init_card.get("net"))
        s["context"] = (in_channels(cfg) - 1) // 2  # the model's own input decides
    torch.manual_seed(int(s["seed"]))
    gen = torch.Generator().manual_seed(int(s["seed"]))
    rng = np.random.default_rng(int(s["seed"]))
    progress(0.0, "preparing scribbled slices")
    x, y, soft, valid = _prepare(cases, n_classes, s, divisor(cfg))
    net = build_network(cfg, n_classes).to(device)
    if init is not None:
        from ..models.checkpoints import load_state_into

        load_state_into(net, init_sd, "the starting model")
    opt = torch.optim.AdamW(net.parameters(), lr=float(s["lr"]), weight_decay=float(s["weight_decay"]))
    iters = int(s["iterations"])
    warm = max(1, iters // 10)  # linear warm-up over 10%, then cosine decay to 2% of lr

    def lr_factor(step):
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, iters - warm)
        return 0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * min(1.0, t)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    use_cpl = soft is not None
    use_mcm = s["method"] in ("maco", "pce+mcm")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    st = torch.from_numpy(soft) if use_cpl else None
    net.train()
    t0 = time.time()
    history, running = [], []
    bs = int(s["batch"])  # slices are drawn with replacement
    for it in range(iters):
        idx = torch.from_numpy(rng.integers(0, len(x), size=bs))
        xb = xt[idx].to(device)
        scale = torch.from_numpy(rng.uniform(0.9, 1.1, (bs, 1, 1, 1)).astype(np.float32)).to(device)
        shift = torch.from_numpy(rng.uniform(-0.1, 0.1, (bs, 1, 1, 1)).astype(np.float32)).to(device)
        xb = xb * scale + shift
        yb = yt[idx].to(device)
        logits = net(xb)
        if s["method"] == "full":  # dense labels: CE + soft Dice, the usual fully supervised loss
            l_dice, loss = dice_ce_terms(logits, yb, **FULL_LOSS)
        else:
            l_dice, loss = None, partial_ce(logits, yb)
        parts = {"pce": float(loss.detach())}
        if l_dice is not None:
            loss = loss + l_dice
        if use_cpl:
            sb = st[idx].to(device)
            l_cpl = soft_ce(logits, sb)
            if float(s["w_cpl_dice"]) > 0:
                l_cpl = l_cpl + float(s["w_cpl_dice"]) * soft_dice(logits, sb)
            loss = loss + float(s["w_cpl"]) * l_cpl
            parts["cpl"] = float(l_cpl.detach())
        if use_mcm:
            if s["mcm_mask"] == "scribble":
                m = mcm_mod.scribble_patch_mask(yb, float(s["mask_ratio"]), int(s["patch"]), UNLABELLED, gen)
            else:
                att = mcm_mod.attention_from_prediction(logits)
                m = mcm_mod.patch_mask(att, float(s["mask_ratio"]), int(s["patch"]), generator=gen)
            logits_m = net(mcm_mod.apply_mask(xb, m))
            l_mcm = consistency(logits_m, logits)
            w = mcm_weight(it, iters, float(s["w_mcm"]), float(s["mcm_rampup"]))
            loss = loss + w * l_mcm
            parts["mcm"] = float(l_mcm.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(float(loss.detach()))
        if (it + 1) % 10 == 0 or it + 1 == iters:
            history.append(round(float(np.mean(running)), 4))
            running = []
        progress((it + 1) / iters, f"iteration {it + 1}/{iters}, loss {running[-1] if running else float(loss.detach()):.3f}")
    net.eval()
    card = {
        "classes": list(classes), "net": cfg, "plane": s["plane"], "frame": FRAME, "max_size": s["max_size"],
        "context": int(s["context"]), "smooth_slices": float(s["smooth_slices"]),
        "method": s["method"], "settings": {k: v for k, v in s.items() if k != "net"},
        "training": {"slices": int(len(x)), "cases": len(cases), "seconds": round(time.time() - t0, 1),
                     "loss_every_10": history, "continued": init is not None},
        "structures": list(classes), "task": "scribble.segment", "architecture": ARCHITECTURE,
    }
    return net, card
