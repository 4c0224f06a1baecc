"""Backend tasks of test-time adaptation: ``tta.adapt`` (one volume, any method), ``dyna.night``,
``dyna.status`` and ``dyna.use``. Panels and the CLI reach them through any Backend (local or
``--server``). Every parameter is declared here (typed, validated once at submission); the
method-specific ``options`` dicts are checked by `options.check_options` / `check_night_options`,
the one source of TTA options, in the same step."""
from __future__ import annotations

import numpy as np

from ..engine.interface import JobResult
from ..engine.schema import Param
from ..engine.tasks import task
from ..errors import InputError
from .options import METHODS, check_night_options, check_options

MODEL = Param("model", "model", "liver-source", "source model: registry id (liver-source, brain-source) or, "
              "in-process only, a checkpoint path")

ADAPT_PARAMS = [
    MODEL,
    Param("method", "choice", "vptta", "adaptation method", choices=METHODS),
    Param("options", "dict", None, "method options as a JSON object (names and defaults: tta/options.py, "
          "docs/tta.md), e.g. {\"lr\": 0.01}", cli=False),
    Param("plane", "plane", None, "slice plane; default and only choice: the plane the model was trained on "
          "(axial for the shipped models)"),
    Param("slices", "slices", "all", "slices of the plane, counted on the canonical grid (axial: inferior to "
          "superior): 'all', 'every:K', 'a:b' or a list"),
    Param("stream", "str", None, "an id: continue the same adapter state across jobs (a continual stream of "
          "cases); default: a fresh adapter per volume", cli=False),
    Param("structure", "str", None, "output segment name (default: the model's structure)"),
]


def _check_adapt(params: dict) -> dict:
    params["options"] = check_options(params["method"], params.get("options"))
    return params


def _check_night(params: dict) -> dict:
    params["options"] = check_night_options(params.get("options"))
    return params


def get_source(ctx, model: str):
    """The source model through the shared cached loader (`models.loader`)."""
    from .network import load_source_model

    return load_source_model(model, getattr(ctx, "device", "cpu") or "cpu")


def before_name(structure: str) -> str:
    return f"{structure} (before)"


@task("tta.adapt", description="segment a volume slice by slice with a source model, adapted per case "
      "(none, tent, vptta, grata, dyna); before/after masks and per-slice entropy", params=ADAPT_PARAMS,
      check=_check_adapt)
def adapt(ctx, image, params, inputs):
    from .network import slice_engine
    from .pipeline import make_adapter, run_volume, summarise

    model, method = params["model"], params["method"]
    options = dict(params["options"])
    keep_case = bool(options.pop("keep_case", False)) if method == "dyna" else False
    used_model = model
    if method == "dyna":
        from .dyna import deployed

        used_model = deployed(model)
    ctx.progress(0.0, f"loading {used_model}")
    source = get_source(ctx, used_model)
    image.require_finite()
    plane = source.card.get("plane", "axial")
    if params["plane"] is not None and params["plane"] != plane:
        raise InputError(f"{used_model} was trained on {plane} slices; it cannot segment {params['plane']} ones")
    eng = slice_engine(image, source.card)
    indices = eng.select(params["slices"])
    adapter = None
    stream = params["stream"]
    if stream and method != "none":
        # one client's stream: another client using the same name gets its own adapter
        key = ("tta-stream", ("client", ctx.client), str(stream), used_model, method, repr(sorted(options.items())))
        adapter = ctx.cache.models.get_or_create(key, lambda: make_adapter(method, source.net, source.size, options))
    ctx.progress(0.02, "plain inference")
    res = run_volume(source, image, method, options, adapter=adapter, indices=indices,
                     progress=lambda d, t: ctx.progress(0.05 + 0.9 * d / t, f"{method}: slice {d}/{t}"),
                     check_cancelled=ctx.check_cancelled)
    structure = params["structure"] or source.structure
    masks = {structure: eng.assemble(dict(zip(res["indices"], res["after"] > 0)))}
    if method != "none":
        masks[before_name(structure)] = eng.assemble(dict(zip(res["indices"], res["before"] > 0)))
    info = {"model": used_model, "method": method, "options": options, "structure": structure,
            "slices": res["indices"], "plane": plane,
            "slice_axis": f"canonical {plane} (RAS frame; axial: inferior to superior)",
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
        policy = ctx.policy or {}
        if policy.get("dyna_queue", True):
            from .dyna import purge_expired, queue_case, queued_cases

            purge_expired(model, policy.get("retention_days"))
            info["queued_case"] = str(queue_case(model, image, owner=ctx.user))
            info["queue_length"] = len(queued_cases(model, None if ctx.role == "admin" else ctx.user))
        else:
            info["queue"] = ("off on this server: the case was not kept (an administrator opts in with "
                             "medsegsuite serve --dyna-queue)")
    ctx.progress(1.0, "done")
    arrays = {k: np.asarray(res[k], dtype=np.float32) for k in
              ("entropy_before", "entropy_after", "confidence_before", "confidence_after")}
    return JobResult(masks=masks, arrays=arrays, info=info)


NIGHT_PARAMS = [
    MODEL,
    Param("cases", "path", None, "a folder of images (or one image) on the backend machine; default: the "
          "model's day queue. In-process only: a server takes only the queue"),
    Param("out", "path", None, "new version checkpoint on the backend machine; default: the model's version "
          "folder. In-process only"),
    Param("options", "dict", None, "night options as a JSON object: iterations, batch, lr, teacher_momentum, "
          "global_momentum, confidence, seed (defaults in tta/options.py)", cli=False),
    Param("clear_queue", "bool", None, "archive the day's queue afterwards (default: yes when the night ran "
          "on the queue)", cli=False),
]


def case_files(cases) -> list:
    """``cases`` (a folder of images / DICOM series folders, or one image file) -> the image paths."""
    from pathlib import Path

    from ..io.image import is_image_path

    p = Path(cases)
    if not p.exists():
        raise InputError(f"cases {p} does not exist on the backend machine")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if is_image_path(f))
        if not files:
            raise InputError(f"no images (NIfTI/NRRD/MHA/DICOM folders) in {p}")
        return files
    return [p]


@task("dyna.night", needs_image=False, description="DyNA night: self-train a new model version on the "
      "day's cases (teacher/student/global student); the deployed model is not changed", params=NIGHT_PARAMS,
      kind="training", check=_check_night, role="admin")
def night(ctx, image, params, inputs):
    import time
    from pathlib import Path

    from .dyna import clear_queue, purge_expired, queued_cases, run_night, store_dir

    model = params["model"]
    purge_expired(model, (ctx.policy or {}).get("retention_days"))
    cases = case_files(params["cases"]) if params["cases"] else queued_cases(model)
    out = params["out"] or str(store_dir(model) / "versions" /
                               f"{Path(model).stem}-night-{time.strftime('%Y%m%d-%H%M%S')}.pt")
    ctx.progress(0.0, f"night adaptation on {len(cases)} case(s)")
    report = run_night(model, cases, out, params["options"],
                       progress=lambda d, t: ctx.progress(0.95 * d / t, f"night: iteration {d}/{t}"),
                       check_cancelled=ctx.check_cancelled)
    clear = params["clear_queue"]
    if clear if clear is not None else not params["cases"]:
        report["archived_cases"] = clear_queue(model)
    ctx.progress(1.0, "new version written; choose it to deploy it")
    return JobResult(info=report)


STATUS_PARAMS = [MODEL]
USE_PARAMS = [MODEL, Param("version", "str", None, "a version name from dyna.status, or the model id itself "
                                                   "for the original", required=True)]


@task("dyna.status", needs_image=False, description="DyNA: the day's queue, kept versions, deployed model",
      params=STATUS_PARAMS)
def status(ctx, image, params, inputs):
    """The queue lists only the caller's own cases (an admin sees all); expired cases go first."""
    from .dyna import deployed, purge_expired, queued_cases, versions

    model = params["model"]
    policy = ctx.policy or {}
    purge_expired(model, policy.get("retention_days"))
    queue = queued_cases(model, None if ctx.role == "admin" else ctx.user)
    return JobResult(info={"model": model, "queue": [str(p) for p in queue], "queue_length": len(queue),
                           "queue_enabled": bool(policy.get("dyna_queue", True)),
                           "versions": versions(model), "deployed": deployed(model)})


@task("dyna.use", needs_image=False, description="DyNA: deploy a kept version (or the original model)",
      params=USE_PARAMS, role="admin")
def use(ctx, image, params, inputs):
    from .dyna import choose_version

    model = params["model"]
    by_file = bool((ctx.policy or {}).get("allow_paths", True))  # a server names versions, never files
    return JobResult(info={"model": model, "deployed": choose_version(model, params["version"], by_file)})
