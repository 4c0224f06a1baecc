"""Run a source model with or without adaptation over a volume's slices (the model's plane, taken by
the slice engine), as one stream.

``run_volume`` gives plain ("before") predictions for every slice in one batched pass and, for an
adaptation method, the adapted ("after") predictions slice by slice in order (axial: inferior to superior),
plus per-slice entropy / confidence for both and the time each took.
"""
from __future__ import annotations

import time

import numpy as np

from .common import NoAdaptation, slice_uncertainty

from .options import METHOD_OPTIONS, METHODS, check_options  # noqa: F401  (re-exported)


def make_adapter(method: str, net, image_size: int, options: dict | None = None):
    """The adapter for ``method`` on its own copy of ``net`` (the source network is never changed)."""
    o = check_options(method, options)
    if method == "none":
        return NoAdaptation(net)
    if method == "tent":
        from .tent import Tent

        return Tent(net, lr=float(o["lr"]), steps=int(o["steps"]), episodic=bool(o["episodic"]))
    if method in ("vptta", "dyna"):
        from .vptta import VPTTA

        a = VPTTA(net, image_size, 1, alpha=float(o["alpha"]), lr=float(o["lr"]), memory_size=int(o["memory_size"]),
                  neighbours=int(o["neighbours"]), warm_n=int(o["warm_n"]), iters=int(o["iters"]))
        a.name = method
        return a
    from .grata import GraTa

    return GraTa(net, lr=float(o["lr"]), seed=int(o["seed"]))


def plain_logits(net, x, batch: int = 16):
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for b in range(0, x.shape[0], batch):
            out.append(net(x[b:b + batch]))
    return torch.cat(out)


def stream_logits(adapter, x, progress=None, check_cancelled=None):
    """Adapted logits for each image of ``x`` [n, 1, S, S], one at a time, in order."""
    import torch

    out = []
    n = x.shape[0]
    for i in range(n):
        if check_cancelled is not None:
            check_cancelled()
        out.append(adapter.predict(x[i:i + 1]).detach())
        if progress is not None:
            progress(i + 1, n)
    return torch.cat(out)


def run_volume(source, volume, method: str = "vptta", options: dict | None = None, adapter=None,
               indices=None, progress=None, check_cancelled=None) -> dict:
    """Before/after logits on the canonical slice grid + per-slice uncertainty + timings."""
    from .network import logits_to_slices, slices_from_volume

    x, idx, shape2d = slices_from_volume(volume, source.card, indices)
    t0 = time.perf_counter()
    before = plain_logits(source.net, x)
    t_plain = time.perf_counter() - t0
    ent_b, conf_b = slice_uncertainty(before)
    res = {"indices": idx, "shape2d": shape2d, "before": logits_to_slices(before, shape2d),
           "entropy_before": ent_b, "confidence_before": conf_b, "seconds_plain": t_plain}
    if method == "none" and adapter is None:
        res.update(after=res["before"], entropy_after=ent_b, confidence_after=conf_b, seconds_adapt=t_plain)
        return res
    adapter = adapter or make_adapter(method, source.net, source.size, options)
    t0 = time.perf_counter()
    after = stream_logits(adapter, x, progress, check_cancelled)
    t_adapt = time.perf_counter() - t0
    ent_a, conf_a = slice_uncertainty(after)
    res.update(after=logits_to_slices(after, shape2d), entropy_after=ent_a, confidence_after=conf_a,
               seconds_adapt=t_adapt, adapter=adapter)
    return res


def summarise(res: dict) -> dict:
    eb, ea = np.mean(res["entropy_before"]), np.mean(res["entropy_after"])
    return {"mean_entropy_before": float(eb), "mean_entropy_after": float(ea),
            "mean_confidence_before": float(np.mean(res["confidence_before"])),
            "mean_confidence_after": float(np.mean(res["confidence_after"]))}
