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
    """The adapter for ``method`` on its own copy of ``net`` (the source network is never changed);
    the per-volume schedule options (batch, adapt_every, gate) are the caller's (`stream_logits`)."""
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


def stream_logits(adapter, x, progress=None, check_cancelled=None, batch: int = 1, adapt_every: int = 1):
    """Adapted logits for ``x`` [n, 1, S, S] (one volume's slices, in order), ``batch`` slices at a time.

    ``batch=1, adapt_every=1`` is the papers' stream (adapt on each image, then predict it). With a batch of
    a volume's slices, BN statistics and the method's update come from those slices together; with
    ``adapt_every=k > 1`` the update uses every k-th slice of the batch (centred) and the adapted state then
    predicts the whole batch: the same update rule on fewer slices, which is where the cost goes."""
    import torch

    out = []
    n = x.shape[0]
    batch = max(int(batch), 1)
    for s in range(0, n, batch):
        if check_cancelled is not None:
            check_cancelled()
        xb = x[s:s + batch]
        if adapt_every > 1 and hasattr(adapter, "infer"):
            k = int(adapt_every)
            adapter.adapt(xb[min(k // 2, xb.shape[0] - 1)::k])
            out.append(adapter.infer(xb).detach())
        else:
            out.append(adapter.predict(xb).detach())
        if progress is not None:
            progress(min(s + batch, n), n)
    return torch.cat(out)


def run_volume(source, volume, method: str = "vptta", options: dict | None = None, adapter=None,
               indices=None, progress=None, check_cancelled=None, x=None, shape2d=None) -> dict:
    """Before/after logits on the canonical slice grid + per-slice uncertainty + timings + the gate.

    ``after`` is what the method returns for the volume: the adapted prediction when the safety gate
    (`gate.decide`, option ``gate``) trusts it, otherwise the source prediction; ``adapted`` is always
    the adapted one and ``gate`` the decision with its reason and signals. ``x`` (network-ready slices of
    ``indices``, with their ``shape2d``) replaces reading ``volume`` (the evaluation passes them)."""
    from .gate import FeatureStatistics, decide
    from .network import logits_to_slices, slices_from_volume
    from .options import schedule

    if x is None:
        x, idx, shape2d = slices_from_volume(volume, source.card, indices)
    else:
        idx = list(indices)
    stats = FeatureStatistics(source.net)
    try:
        t0 = time.perf_counter()
        before = plain_logits(source.net, x)
        t_plain = time.perf_counter() - t0
    finally:
        stats.close()
    ent_b, conf_b = slice_uncertainty(before)
    res = {"indices": idx, "shape2d": shape2d, "before": logits_to_slices(before, shape2d),
           "entropy_before": ent_b, "confidence_before": conf_b, "seconds_plain": t_plain,
           "feature_shift": stats.shift()}
    if method == "none" and adapter is None:
        res.update(after=res["before"], adapted=res["before"], entropy_after=ent_b, confidence_after=conf_b,
                   seconds_adapt=t_plain, gate=None)
        return res
    o = check_options(method, options)
    sched = schedule(o)
    adapter = adapter or make_adapter(method, source.net, source.size, o)
    t0 = time.perf_counter()
    after = stream_logits(adapter, x, progress, check_cancelled, batch=sched["batch"],
                          adapt_every=sched["adapt_every"])
    t_adapt = time.perf_counter() - t0
    ent_a, conf_a = slice_uncertainty(after)
    adapted = logits_to_slices(after, shape2d)
    from ..metrics import dice

    gate = decide(res["feature_shift"], float(np.mean(ent_b)), float(np.mean(ent_a)),
                  dice(adapted > 0, res["before"] > 0), (adapted > 0).mean(), (res["before"] > 0).mean())
    if not sched["gate"]:
        gate.accepted, gate.reason = True, "gate off (option gate=false): adapted prediction used"
    keep = gate.accepted
    res.update(after=adapted if keep else res["before"], adapted=adapted,
               entropy_after=ent_a if keep else ent_b, confidence_after=conf_a if keep else conf_b,
               entropy_adapted=ent_a, seconds_adapt=t_adapt, adapter=adapter, gate=gate)
    return res


def summarise(res: dict) -> dict:
    eb, ea = np.mean(res["entropy_before"]), np.mean(res["entropy_after"])
    gate = res.get("gate")
    return {"feature_shift": float(res["feature_shift"]),
            "gate": gate.as_dict() if gate is not None else None,
            "adapted_used": bool(gate.accepted) if gate is not None else False,"mean_entropy_before": float(eb), "mean_entropy_after": float(ea),
            "mean_confidence_before": float(np.mean(res["confidence_before"])),
            "mean_confidence_after": float(np.mean(res["confidence_after"]))}
