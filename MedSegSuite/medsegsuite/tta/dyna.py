"""DyNA day / night adaptation.

**Day** (``method=dyna`` of ``tta.adapt``): each case is segmented with VPTTA-style Fourier prompts,
the model frozen, exactly as :mod:`.vptta`; the case is kept in the model's day queue
(``$MEDSEGSUITE_HOME/tta/dyna/<model>/queue``).

**Night** (:func:`run_night`, task ``dyna.night``, ``medsegsuite dyna night``): with no source data,
fine-tune on the queued cases by teacher–student self-training: BN statistics are first re-estimated
on the day's slices; a *student* (initialised from the *global student*) learns from a strongly
style-augmented slice to match the confident pseudo labels of an EMA *teacher* on the plain slice;
the teacher follows the student by EMA. At the end the global student — which carries knowledge
from night to night — moves towards the night's student. The teacher becomes the new model
version: a checkpoint with a model card naming its parent, a sidecar with the global student, and a
report comparing it with its parent on the night's cases (label-free: entropy, confidence,
agreement, structure size).

The deployed model is never replaced silently: every version is kept in the model's version list
and the user picks one (:func:`choose_version`, ``medsegsuite dyna use``, the panel).
"""
from __future__ import annotations

import copy
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from .options import check_night_options


def store_dir(model_id: str) -> Path:
    from ..models.registry import user_home

    if model_id.endswith((".pt", ".pth")) or "/" in model_id or "\\" in model_id:
        model_id = Path(model_id).stem  # a checkpoint path: keyed like its ad-hoc registry entry
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_id) or "model"
    return user_home() / "tta" / "dyna" / safe


def _private_dir(d: Path) -> Path:
    """A folder only its owner may enter (a queue holds patients' images)."""
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return d


def _owners(model_id: str) -> dict:
    f = store_dir(model_id) / "queue" / "owners.json"
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_owners(model_id: str, owners: dict) -> None:
    f = _private_dir(store_dir(model_id) / "queue") / "owners.json"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(owners, fh)


def queue_case(model_id: str, volume, owner: str | None = None) -> Path:
    """Keep a case of the day for the night (same image twice is kept once), readable by the owner of
    the process only; ``owner`` (the user who segmented it) is recorded so others do not see it."""
    from ..io import write_image

    _private_dir(store_dir(model_id))
    q = _private_dir(store_dir(model_id) / "queue")
    fp = volume.fingerprint()[:12]
    for f in q.glob(f"*-{fp}.nii.gz"):
        return f
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{fp}.nii.gz"
    old = os.umask(0o077)
    try:
        f = write_image(volume, q / name)
    finally:
        os.umask(old)
    os.chmod(f, 0o600)
    if owner is not None:
        owners = _owners(model_id)
        owners[f.name] = owner
        _write_owners(model_id, owners)
    return f


def queued_cases(model_id: str, owner: str | None = None) -> list[Path]:
    """The day's queue; with ``owner``, only the cases that user queued."""
    q = store_dir(model_id) / "queue"
    cases = sorted(q.glob("*.nii.gz")) if q.is_dir() else []
    if owner is not None:
        owners = _owners(model_id)
        cases = [c for c in cases if owners.get(c.name) == owner]
    return cases


def purge_expired(model_id: str, retention_days: float | None) -> int:
    """Delete queued and archived cases older than ``retention_days`` (None: keep); returns how many."""
    if retention_days is None:
        return 0
    limit = time.time() - float(retention_days) * 86400
    gone = []
    for sub in ("queue", "done"):
        d = store_dir(model_id) / sub
        for f in (d.glob("*.nii.gz") if d.is_dir() else []):
            try:
                if f.stat().st_mtime < limit:
                    f.unlink()
                    gone.append(f.name)
            except FileNotFoundError:
                pass
    if gone:
        owners = _owners(model_id)
        if any(g in owners for g in gone):
            _write_owners(model_id, {k: v for k, v in owners.items() if k not in gone})
    return len(gone)


def clear_queue(model_id: str, archive: bool = True) -> int:
    cases = queued_cases(model_id)
    done = store_dir(model_id) / "done"
    for f in cases:
        if archive:
            _private_dir(done)
            f.replace(done / f.name)
        else:
            f.unlink()
    return len(cases)


def versions(model_id: str) -> list[dict]:
    f = store_dir(model_id) / "versions.json"
    return json.loads(f.read_text(encoding="utf-8")) if f.exists() else []


def deployed(model_id: str) -> str:
    """The model (id or checkpoint path) the user chose to deploy for ``model_id`` (default: itself)."""
    f = store_dir(model_id) / "deployed.json"
    return json.loads(f.read_text(encoding="utf-8"))["model"] if f.exists() else model_id


def choose_version(model_id: str, version: str, by_file: bool = True) -> str:
    """Deploy a kept version (its version name, its file path when ``by_file``, or ``model_id`` itself
    for the original)."""
    if version != model_id:
        match = [v for v in versions(model_id) if version == v["version"] or (by_file and version == v["file"])]
        if not match:
            raise InputError(f"'{version}' is not a version of {model_id}; known: "
                             f"{', '.join(v['version'] for v in versions(model_id)) or 'none yet'}")
        version = match[0]["file"]
        if not Path(version).exists():
            raise InputError(f"version file {version} no longer exists")
    d = store_dir(model_id)
    d.mkdir(parents=True, exist_ok=True)
    (d / "deployed.json").write_text(json.dumps({"model": version, "chosen": time.strftime("%Y-%m-%d %H:%M:%S")}), encoding="utf-8")
    return version


def _ema_(dst, src, m: float) -> None:
    import torch

    with torch.no_grad():
        sd, ss = dst.state_dict(), src.state_dict()
        for k, v in sd.items():
            if v.dtype.is_floating_point:
                v.mul_(m).add_(ss[k], alpha=1 - m)
            else:
                v.copy_(ss[k])


def _reestimate_bn(net, x, batch: int = 16) -> None:
    """AdaBN: replace the BN running statistics by those of the night's slices (cumulative mean)."""
    import torch

    from .common import bn_layers

    layers = bn_layers(net)
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        for b in range(0, x.shape[0], batch):
            net(x[b:b + batch])
    for m, mom in zip(layers, saved):
        m.momentum = mom
    net.eval()


def _load_volumes(cases):
    from ..io import read_image

    vols = []
    for c in cases:
        vols.append(read_image(c) if isinstance(c, (str, Path)) else c)
    return vols


def _compare(old_net, new_net, x) -> dict:
    """Label-free comparison of two versions on the same slices."""
    from ..metrics import dice
    from .common import slice_uncertainty
    from .pipeline import plain_logits

    lo, ln = plain_logits(old_net, x), plain_logits(new_net, x)
    eo, co = slice_uncertainty(lo)
    en, cn = slice_uncertainty(ln)
    po, pn = lo > 0, ln > 0
    return {"slices": int(x.shape[0]), "mean_entropy": {"parent": float(np.mean(eo)), "new": float(np.mean(en))},
            "mean_confidence": {"parent": float(np.mean(co)), "new": float(np.mean(cn))},
            "agreement_dice": dice(po.cpu().numpy(), pn.cpu().numpy()),
            "foreground_fraction": {"parent": float(po.float().mean()), "new": float(pn.float().mean())}}


def run_night(model: str, cases, out, options: dict | None = None, progress=None, check_cancelled=None,
              source=None, slices=None) -> dict:
    """Fine-tune ``model`` on ``cases`` (paths or Volumes) and write the new version to ``out``.
    ``slices`` (network-ready tensor [n, 1, S, S]) replaces the cases' slices (the evaluation uses it)."""
    import torch
    import torch.nn.functional as F

    from ..models import load_checkpoint, save_checkpoint, sha256_file
    from ..models.checkpoints import load_state_into, state_dict_of
    from ..models.registry import resolve_model
    from .grata import strong_style
    from .network import ARCHITECTURE, build_unet, load_source_model, slices_from_volume

    o = check_night_options(options)
    out = Path(out)
    entry = resolve_model(model)
    if out.resolve() == Path(entry.path).resolve():
        raise InputError("the night's version must go to a new file: the deployed model is never overwritten")
    vols = _load_volumes(cases)
    if not vols and slices is None:
        raise InputError("no cases for the night: run DyNA by day first (the day's queue is empty) or pass --cases")
    src = source or load_source_model(model)
    x = slices if slices is not None else torch.cat([slices_from_volume(v, src.card)[0] for v in vols])
    torch.manual_seed(int(o["seed"]))
    gen = torch.Generator().manual_seed(int(o["seed"]))
    t0 = time.time()

    parent_card = dict(src.card)
    global_net = build_unet(parent_card)
    gfile = (parent_card.get("dyna") or {}).get("global_student")
    gpath = Path(entry.path).parent / gfile if gfile else None
    if gpath is not None and gpath.exists():
        load_state_into(global_net, state_dict_of(load_checkpoint(gpath), ARCHITECTURE, gpath), path=gpath)
    else:
        global_net.load_state_dict(src.net.state_dict())
    student = copy.deepcopy(global_net)
    teacher = copy.deepcopy(src.net)
    _reestimate_bn(student, x)
    _reestimate_bn(teacher, x)
    teacher.requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), lr=float(o["lr"]))
    n_it, bs, conf = int(o["iterations"]), int(o["batch"]), float(o["confidence"])
    losses = []
    for it in range(n_it):
        if check_cancelled is not None:
            check_cancelled()
        sel = torch.randint(0, x.shape[0], (min(bs, x.shape[0]),), generator=gen)
        xb = x[sel]
        teacher.eval()
        with torch.no_grad():
            pt = torch.sigmoid(teacher(xb))
        keep = ((pt > conf) | (pt < 1 - conf)).float()
        student.train()
        xs = torch.cat([strong_style(xb[i:i + 1], gen) for i in range(xb.shape[0])])
        ls = student(xs)
        loss = (F.binary_cross_entropy_with_logits(ls, (pt > 0.5).float(), reduction="none") * keep).sum() \
            / keep.sum().clamp_min(1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _ema_(teacher, student, float(o["teacher_momentum"]))
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(it + 1, n_it)
    _ema_(global_net, student, float(o["global_momentum"]))
    teacher.eval()
    global_net.eval()

    report = {"parent": str(entry.path), "parent_id": entry.id, "new": str(out), "cases": len(vols),
              "case_names": [getattr(v, "name", "case") for v in vols], "options": o,
              "seconds": round(time.time() - t0, 1), "loss_first": losses[0] if losses else None,
              "loss_last": float(np.mean(losses[-5:])) if losses else None,
              "comparison": _compare(src.net, teacher, x)}
    night = int((parent_card.get("dyna") or {}).get("night", 0)) + 1
    root_id = (parent_card.get("dyna") or {}).get("root", entry.id)
    gname = out.stem + ".global.pt"
    card = {**parent_card, "model_id": out.stem,
            "description": f"DyNA night {night} version of {entry.id}: self-trained on {len(vols)} case(s) of the day",
            "dyna": {"night": night, "parent": entry.id, "parent_file": str(entry.path),
                     "parent_sha256": entry.sha256 or sha256_file(entry.path),
                     "created": time.strftime("%Y-%m-%d %H:%M:%S"), "cases": report["case_names"],
                     "global_student": gname, "root": root_id, "options": o,
                     "comparison": report["comparison"]},
            "intended_use": "a candidate version: compare it with its parent and choose; never auto-deployed"}
    save_checkpoint(out, ARCHITECTURE, teacher.state_dict(), card)
    save_checkpoint(out.parent / gname, ARCHITECTURE, global_net.state_dict(),
                    {**parent_card, "model_id": out.stem + "-global", "role": "DyNA global student"})
    (out.parent / (out.stem + ".report.json")).write_text(json.dumps(report, indent=1), encoding="utf-8")
    vfile = store_dir(root_id) / "versions.json"
    vfile.parent.mkdir(parents=True, exist_ok=True)
    items = versions(root_id)
    items.append({"version": out.stem, "file": str(out.resolve()), "parent": entry.id, "night": night,
                  "created": card["dyna"]["created"], "cases": len(vols), "comparison": report["comparison"]})
    vfile.write_text(json.dumps(items, indent=1), encoding="utf-8")
    report["versions"] = items
    report["deployed"] = deployed(root_id)
    return report
