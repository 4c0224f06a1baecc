"""Backend tasks of test-time adaptation: ``tta.adapt`` (one volume, any method), ``dyna.night``,
``dyna.status`` and ``dyna.use``. Panels and the CLI reach them through any Backend (local or
``--server``)."""
from __future__ import annotations

import numpy as np

from ..engine.interface import JobResult
from ..engine.tasks import task
from ..errors import InputError


def get_source(ctx, model: str):
    from .network import load_source_model

    device = getattr(ctx, "device", "cpu") or "cpu"
    factory = lambda: load_source_model(model, device)  # noqa: E731
    cache = ctx.cache.models if getattr(ctx, "cache", None) is not None else None
    return cache.get_or_create(("tta-source", model, device), factory) if cache is not None else factory()


def before_name(structure: str) -> str:
    return f"{structure} (before)"


@task("tta.adapt", description="segment a volume slice by slice with a source model, adapted per case "
      "(none, tent, vptta, grata, dyna); before/after masks and per-slice entropy")
def adapt(ctx, image, params, inputs):
    """params: model (registry id or checkpoint path), method, options {...}, slices (axial indices,
    canonical inferior->superior; default all), stream (an id: continue the same adapter state across
    jobs, e.g. a continual stream of cases; default: a fresh adapter per volume)."""
    from ..sam.tasks import parse_slices
    from .network import axial_count, masks_to_volume
    from .pipeline import check_options, make_adapter, run_volume, summarise

    model = str(params.get("model") or "liver-source")
    method = str(params.get("method") or "vptta").lower()
    options = check_options(method, params.get("options") or {})
    keep_case = bool(options.pop("keep_case", False)) if method == "dyna" else False
    used_model = model
    if method == "dyna":
        from .dyna import deployed

        used_model = deployed(model)
    ctx.progress(0.0, f"loading {used_model}")
    source = get_source(ctx, used_model)
    image.require_finite()
    n = axial_count(image)
    indices = parse_slices(params.get("slices", "all"), n)
    adapter = None
    stream = params.get("stream")
    if stream and method != "none":
        key = ("tta-stream", str(stream), used_model, method, repr(sorted(options.items())))
        adapter = ctx.cache.models.get_or_create(key, lambda: make_adapter(method, source.net, source.size, options))
    ctx.progress(0.02, "plain inference")
    res = run_volume(source, image, method, options, adapter=adapter, indices=indices,
                     progress=lambda d, t: ctx.progress(0.05 + 0.9 * d / t, f"{method}: slice {d}/{t}"),
                     check_cancelled=ctx.check_cancelled)
    structure = str(params.get("structure") or source.structure)
    after = masks_to_volume(res["after"] > 0, res["indices"], image)
    masks = {structure: after}
    if method != "none":
        masks[before_name(structure)] = masks_to_volume(res["before"] > 0, res["indices"], image)
    info = {"model": used_model, "method": method, "options": options, "structure": structure,
            "slices": res["indices"], "slice_axis": "canonical axial (inferior to superior)",
            "entropy_before": res["entropy_before"], "entropy_after": res["entropy_after"],
            "confidence_before": res["confidence_before"], "confidence_after": res["confidence_after"],
            "seconds_plain": res["seconds_plain"], "seconds_adapt": res["seconds_adapt"],
            "segments": {"after": structure, "before": before_name(structure) if method != "none" else None},
            **summarise(res)}
    if stream and method != "none":
        info["stream"] = str(stream)
        seen = getattr(res.get("adapter"), "images_seen", None)
        if seen is not None:
            info["stream_images_seen"] = int(seen)
    if method == "dyna" and keep_case:
        from .dyna import queue_case, queued_cases

        info["queued_case"] = str(queue_case(model, image))
        info["queue_length"] = len(queued_cases(model))
    ctx.progress(1.0, "done")
    arrays = {k: np.asarray(res[k], dtype=np.float32) for k in
              ("entropy_before", "entropy_after", "confidence_before", "confidence_after")}
    return JobResult(masks=masks, arrays=arrays, info=info)


@task("dyna.night", needs_image=False, description="DyNA night: self-train a new model version on the "
      "day's cases (teacher/student/global student); the deployed model is not changed")
def night(ctx, image, params, inputs):
    """params: model, cases (paths on the backend machine; default: the model's day queue),
    out (new checkpoint path; default: the model's version folder), options {...}, clear_queue."""
    import time
    from pathlib import Path

    from .dyna import clear_queue, queued_cases, run_night, store_dir

    model = str(params.get("model") or "liver-source")
    cases = [Path(c) for c in params.get("cases") or []] or queued_cases(model)
    for c in cases:
        if not Path(c).exists():
            raise InputError(f"case {c} does not exist on the backend machine")
    out = params.get("out") or str(store_dir(model) / "versions" /
                                   f"{Path(model).stem}-night-{time.strftime('%Y%m%d-%H%M%S')}.pt")
    ctx.progress(0.0, f"night adaptation on {len(cases)} case(s)")
    report = run_night(model, cases, out, params.get("options") or {},
                       progress=lambda d, t: ctx.progress(0.95 * d / t, f"night: iteration {d}/{t}"),
                       check_cancelled=ctx.check_cancelled)
    if params.get("clear_queue", not params.get("cases")):
        report["archived_cases"] = clear_queue(model)
    ctx.progress(1.0, "new version written; choose it to deploy it")
    return JobResult(info=report)


@task("dyna.status", needs_image=False, description="DyNA: the day's queue, kept versions, deployed model")
def status(ctx, image, params, inputs):
    from .dyna import deployed, queued_cases, versions

    model = str(params.get("model") or "liver-source")
    return JobResult(info={"model": model, "queue": [str(p) for p in queued_cases(model)],
                           "versions": versions(model), "deployed": deployed(model)})


@task("dyna.use", needs_image=False, description="DyNA: deploy a kept version (or the original model)")
def use(ctx, image, params, inputs):
    from .dyna import choose_version

    model = str(params.get("model") or "liver-source")
    return JobResult(info={"model": model, "deployed": choose_version(model, str(params["version"]))})
