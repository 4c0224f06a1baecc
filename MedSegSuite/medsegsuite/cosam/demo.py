"""The demo's CoSAM step: the shipped prompt-free models on LiTS-117, scored on held-out slices only.

The shipped models were trained on LiTS-117 itself, so Dice is measured only on the slices their
model card lists as held out; the demo's slice subset is intersected with them (its default,
every 8th axial slice from 4, is entirely held out). The job uses the same backend, image, plane
and CT window as the oracle-box step, so the embeddings it computed are reused, not recomputed.
"""
from __future__ import annotations

import time

import numpy as np

from ..engine.interface import run_job
from ..io import Segmentation
from ..models.registry import default_registry
from ..volume import SliceEngine

MODELS = {"liver": "liver", "tumour": "tumour"}  # structure -> registry id (absent ids are skipped)


def run_step(backend, ct, ref, settings, log=print):
    from ..metrics import dice, slice_dice

    t0 = time.time()
    reg = default_registry()
    engine = SliceEngine.for_volume(ct, settings.get("plane", "axial"))
    axis = engine.input_axis  # the array axis scored per slice (LiTS-117 is LPS-canonical: slice k = index k)
    demo_slices = list(settings.get("evaluated_slices") or range(engine.n_slices))
    # encoder_calls: slices the CoSAM jobs had to encode (0 when the oracle-box step's embeddings were reused)
    masks, report = {}, {"dice": {}, "dice_by_round": {}, "slice_mean_dice_by_round": {}, "rounds_accepted": {},
                         "models": {}}
    heldout_all = None
    for structure, model_id in MODELS.items():
        if model_id not in reg:
            continue
        card = reg.get(model_id).load().get("card", {})
        held = sorted(set(card.get("split", {}).get("heldout", [])) & set(demo_slices))
        if not held:
            log(f"[cosam] no demo slice is held out for model '{model_id}': not scored")
            continue
        r = run_job(backend, "cosam.segment", ct,
                    {"model": model_id, "structure": structure, "plane": engine.plane, "slices": demo_slices,
                     "window": settings.get("ct_window"), "iterations": 4, "return_rounds": True,
                     "interpolate": 0})  # the demo scores the loop itself on every held-out slice
        masks[structure] = r.masks[structure]
        rounds = [r.arrays[f"{structure}_round{t}"] > 0 for t in range(len(r.arrays))]
        refm = ref.masks[structure]
        report["dice"][structure] = round(dice(masks[structure], refm, slices=(axis, held)), 4)
        report["dice_by_round"][structure] = [round(dice(m, refm, slices=(axis, held)), 4) for m in rounds]
        report["slice_mean_dice_by_round"][structure] = [round(float(np.mean(slice_dice(m, refm, (axis, held)))), 4)
                                                        for m in rounds]
        acc = [r.info["per_slice"][str(k)]["accepted"] for k in held]
        report["rounds_accepted"][structure] = {"mean": round(float(np.mean(acc)), 2), "max": int(max(acc))}
        report["models"][structure] = model_id
        report["encoder_calls"] = report.get("encoder_calls", 0) + int(r.info["encoder_calls"])
        heldout_all = sorted(set(heldout_all or []) | set(held))
        log(f"[cosam] {structure}: Dice by round {report['dice_by_round'][structure]} on {len(held)} held-out slices")
    report["heldout_slices"] = heldout_all or []
    report["seconds"] = round(time.time() - t0, 2)
    seg = Segmentation(ct.geometry, masks or {"liver": np.zeros(ct.shape, bool)})
    return seg, report
