"""Train the shipped demo source models (``liver-source``, ``brain-source``) so they can be rebuilt:
``python scripts/train_tta_sources.py`` (or ``medsegsuite tta train-source``).

Each is a small 2D MONAI UNet with batch norm trained on one real image's own appearance, the
"source domain" that test-time adaptation later leaves:

* ``liver-source``: LiTS-117 CT (fixed HU window), liver = labels 1 + 2; axial slices.
* ``brain-source``: Colin27 T1 (per-volume percentile normalisation, so any T1 scale fits), brain
  mask from ch2bet; axial slices, with mild gamma/scale augmentation so other T1 scans fit.

Every 4th axial slice (index % 4 == 2) is held out of training; the card records the held-out
Dice. Slices are resized to 128 px (CPU budget: a few minutes on 2 cores). Training uses batch size
1, i.e. BN normalises each training image by its own statistics — the regime in which TENT, GraTa
and VPTTA normalise test images — and the BN running statistics are recomputed exactly over the
training slices afterwards (see docs/tta.md for why: with batch 8, per-image BN statistics at test
time cost these small models 8-12 Dice points even on the source domain).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..volume import split_slices
from .network import ARCHITECTURE, DEFAULT_ARCH, build_unet, slice_engine, slices_from_volume

SOURCES = {
    "liver-source": {"structure": "liver", "modality": "ct", "window": [-160.0, 240.0], "size": 128,
                     "source": "LiTS-117 CT",
                     "data": "LiTS-117 CT (liver-ct-segmentation-package 1.6.0), liver = labels 1+2",
                     "intensity_aug": False, "epochs": 20, "batch": 1, "lr": 1e-3},
    "brain-source": {"structure": "brain", "modality": "mr", "size": 128, "source": "Colin27 T1",
                     "data": "Colin27 T1 ch2.nii.gz, brain mask = ch2bet.nii.gz > 0 (mricron-data)",
                     "intensity_aug": True, "epochs": 6, "batch": 1, "lr": 1e-3},
}


def held_out(n: int) -> list[int]:
    """The source models' hold-out: `volume.split_slices` ('interleaved:4') counted from slice 2, i.e.
    every slice with index % 4 == 2 (what the shipped models' cards record). Training uses every
    other slice; evaluations score only these."""
    return [i + 2 for i in split_slices("interleaved:4", n - 2)[1]]


def source_data(model_id: str):
    """(image Volume, bool mask array) of a source model's training image."""
    if model_id == "liver-source":
        from ..sampledata import lits117

        ct, seg = lits117()
        return ct, seg.masks["liver"]
    if model_id == "brain-source":
        from ..sampledata import colin27_brain_mask, colin27_t1

        return colin27_t1(), colin27_brain_mask().array > 0
    raise ValueError(f"no source recipe for '{model_id}'; known: {', '.join(SOURCES)}")


def mask_slices(mask: np.ndarray, volume, size: int, indices=None):
    """A bool mask as the source model's slices at network size (float32 [n, 1, S, S] of 0/1)."""
    import torch
    import torch.nn.functional as F

    from .network import _pad_square

    eng = slice_engine(volume)
    idx = list(range(eng.n_slices)) if indices is None else list(indices)
    t = _pad_square(torch.from_numpy(eng.stack(mask.astype(np.float32), idx))[:, None])
    if t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return (t > 0.5).float()


def _augment(x, y, gen, intensity: bool):
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    scale = 1 + (torch.rand(n, generator=gen) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * 0.12
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False)
    y = (F.grid_sample(y, grid, align_corners=False) > 0.5).float()
    if intensity:
        g = torch.exp((torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.45)  # gamma 0.8 .. 1.25
        x = x.clamp(0, 1) ** g
    return x, y


def precise_bn(net, x, batch: int) -> None:
    """Replace the BN running statistics by exact averages over ``x`` in batches of ``batch``: with
    small training batches the EMA statistics follow the last few batches."""
    import torch

    from .common import bn_layers

    layers = bn_layers(net)
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for b in range(0, x.shape[0], batch):
            net(x[b:b + batch])
    for m in layers:
        m.momentum = 0.1


def fit(net, x_all, y_all, train: list[int], spec: dict, gen, epochs: int, log=print, name: str = "model") -> float:
    """The source recipe's training loop on the rows ``train`` of ``x_all``/``y_all`` (a row may repeat: it
    is then drawn that many times per epoch), then precise BN over those rows. Returns the seconds taken."""
    import torch

    from ..losses import dice_ce_loss

    bs, lr = int(spec["batch"]), float(spec["lr"])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    t0 = time.time()
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(train), generator=gen).tolist()
        tot = 0.0
        for b in range(0, len(perm), bs):
            sel = [train[i] for i in perm[b:b + bs]]
            x, y = _augment(x_all[sel], y_all[sel], gen, spec["intensity_aug"])
            logits = net(x)
            loss = dice_ce_loss(logits, y)  # BCE + soft Dice pooled over the batch (smooth 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(sel)
        sched.step()
        if ep % 5 == 0 or ep == epochs - 1:
            log(f"{name}: epoch {ep + 1}/{epochs} loss {tot / len(train):.4f} ({time.time() - t0:.0f} s)")
    precise_bn(net, x_all[train], bs)
    net.eval()
    return time.time() - t0


def train_source(model_id: str, out_dir, epochs: int | None = None, seed: int = 0, log=print) -> Path:
    import torch

    from ..metrics import dice
    from ..models import save_checkpoint
    from .network import logits_to_slices

    spec = dict(SOURCES[model_id])
    epochs = int(epochs or spec["epochs"])
    bs, lr = int(spec["batch"]), float(spec["lr"])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    vol, mask = source_data(model_id)
    card = {k: v for k, v in spec.items() if k not in ("data", "intensity_aug", "epochs", "batch", "lr", "source")}
    card.update(DEFAULT_ARCH)
    x_all, idx, shape2d = slices_from_volume(vol, card)
    y_all = mask_slices(mask, vol, card["size"])
    test = held_out(len(idx))
    train = [i for i in idx if i not in set(test)]
    net = build_unet(card)
    sec = fit(net, x_all, y_all, train, spec, gen, epochs, log, model_id)
    t0 = time.time() - sec
    with torch.no_grad():
        logits = net(x_all[test])
    pred = logits_to_slices(logits, shape2d) > 0
    ref = slice_engine(vol, card).stack(mask, test)
    d = dice(pred, ref)
    log(f"{model_id}: held-out Dice {d:.4f} on {len(test)} slices ({time.time() - t0:.0f} s)")
    card.update({
        "task": "tta", "model_id": model_id, "structures": [spec["structure"]],
        "description": f"demo TTA source model: {spec['structure']} on {spec['source']} (its own appearance)",
        "training": {"data": spec["data"], "slices": "canonical axial, every slice except index % 4 == 2",
                     "held_out_slices": test, "epochs": epochs, "batch": bs, "optimizer": f"Adam {lr:g} cosine",
                     "bn_statistics": "recomputed after training as the exact mean over the training slices "
                     f"in batches of {bs} (the training batch size)",
                     "loss": "BCE + soft Dice", "augmentation": "scale ±10%, shift ±6%"
                     + (", gamma 0.8-1.25" if spec["intensity_aug"] else ""), "seed": seed,
                     "seconds": round(time.time() - t0, 1), "script": "scripts/train_tta_sources.py"},
        "held_out_dice": round(d, 4),
        "intended_use": "demonstration of test-time adaptation; trained on ONE case, not for clinical use",
    })
    out = Path(out_dir) / f"tta-{model_id}.pt"
    save_checkpoint(out, ARCHITECTURE, net.state_dict(), card)
    return out


def write_registry(out_dir, model_ids=None) -> Path:
    """(Re)write Resources/Models/tta.registry.json for the checkpoints present in ``out_dir``."""
    from ..models import load_checkpoint, sha256_file

    out_dir = Path(out_dir)
    reg = out_dir / "tta.registry.json"
    items = []
    for mid in model_ids or SOURCES:
        f = out_dir / f"tta-{mid}.pt"
        if not f.exists():
            continue
        card = load_checkpoint(f).get("card", {})
        items.append({"id": mid, "file": f.name, "architecture": ARCHITECTURE, "sha256": sha256_file(f),
                      "size": f.stat().st_size, "structures": card.get("structures", []), "task": "tta",
                      "description": card.get("description", "")})
    reg.write_text(json.dumps(items, indent=1) + "\n", encoding="utf-8")
    return reg
