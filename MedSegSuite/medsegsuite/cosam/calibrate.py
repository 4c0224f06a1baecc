"""Calibrating the loop's acceptance rule on held-out slices that are neither trained nor tested on.

Calibration slices (:func:`calibration_split`): for ``interleaved:K`` every 2K-th slice from K//2 is
taken out of training; for ``block:F`` the gap between the training block and the far test block
(never trained on, never scored). On them the loop is run once per box-shift limit with a rule that
accepts every round, recording each round's candidate mask, its judges and its true Dice. Because a
rejected round stops its slice, the result of any rule is that trajectory cut at the first round the
rule rejects, so every rule on the grid is scored exactly without re-running the decoder. The rule
kept is the one with the best mean gain over the coarse mask minus ``loss_weight`` times the mean
loss (slices made worse count more than slices made better), ties going to the stricter rule.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from ..metrics import slice_dice
from ..volume import split_slices
from .loop import AcceptRule, accept_all, self_correct

MARGINS = (0.0, 0.05, 0.1, 0.2, 0.3)
AGREES = (0.0, 0.8, 0.9, 0.95)
IOU_DROPS = (0.0, 0.02, 0.05)
BOX_SHIFTS = (0.1, 0.25, math.inf)


def calibration_split(spec: str, n: int) -> tuple[list[int], list[int], list[int]]:
    """(train, calibration, held-out test) slices of a split spec (see the module doc)."""
    train, held = split_slices(spec, n)
    kind, _, val = str(spec).partition(":")
    if kind == "interleaved":
        k = int(val or 4)
        calib = [i for i in train if i % (2 * k) == k // 2]
        return [i for i in train if i not in set(calib)], calib, held
    calib = list(range(max(train) + 1, min(held)))  # the gap: never trained on, never tested
    return train, calib, held


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return slice_dice(a[None], b[None])[0]


@torch.inference_mode()
def trajectories(model, emb, gts_lowres: np.ndarray, idx, rounds: int = 4, k_points: int = 5,
                 max_box_shift: float = math.inf, batch: int = 16, starts=None) -> list[dict]:
    """Per slice: coarse Dice and every round's candidate (judges + true Dice), all rounds accepted.
    ``gts_lowres``: (N, S, S) bool references on the decoder grid. ``starts``: (N, 1, S, S) start logits
    indexed like ``emb`` (the loop starts there instead of the coarse mask; "coarse" is then the start)."""
    out = []
    idx = list(idx)
    for s in range(0, len(idx), batch):
        chunk = idx[s:s + batch]
        cands: list = []
        res = self_correct(model, emb[chunk].float(), rounds, k_points, rule=accept_all(max_box_shift),
                           candidates=cands, start_logits=None if starts is None else starts[chunk])
        coarse = (res.rounds[0] > 0)[:, 0].numpy()
        for j, i in enumerate(chunk):
            out.append({"slice": int(i), "coarse": _dice(coarse[j], gts_lowres[i]), "rounds": []})
        for b, t, m, info in cands:
            out[len(out) - len(chunk) + b]["rounds"].append({**info, "dice": _dice(m, gts_lowres[chunk[b]])})
    return out


def simulate(traj: list[dict], rule: AcceptRule) -> np.ndarray:
    """Final Dice per slice under ``rule`` (the trajectory cut at the first rejected round)."""
    final = []
    for tr in traj:
        d = tr["coarse"]
        for r in tr["rounds"]:
            if rule.judge(r["old_area"], r["new_area"], r["agree"], r["old_score"], r["new_score"]):
                break
            d = r["dice"]
        final.append(d)
    return np.asarray(final)


def score(traj: list[dict], rule: AcceptRule, loss_weight: float = 3.0) -> float:
    coarse = np.asarray([t["coarse"] for t in traj])
    diff = simulate(traj, rule) - coarse
    return float(np.mean(diff) - loss_weight * np.mean(np.clip(-diff, 0, None)))


def calibrate(model, emb, gts_lowres: np.ndarray, idx, rounds: int = 4, k_points: int = 5,
              loss_weight: float = 3.0, starts=None) -> tuple[AcceptRule, dict]:
    """(the best rule on the grid, a report: grid size, its score, the legacy rule's score, the slices).
    ``starts``: start logits per slice (see :func:`trajectories`)."""
    best, best_key, report = None, None, {}
    for shift in BOX_SHIFTS:
        traj = trajectories(model, emb, gts_lowres, idx, rounds, k_points, shift, starts=starts)
        for margin, agree, drop in itertools.product(MARGINS, AGREES, IOU_DROPS):
            rule = AcceptRule(margin, agree, drop, shift)
            sc = score(traj, rule, loss_weight)
            key = (round(sc, 6), margin, agree, -drop, -shift)  # ties: the stricter rule
            if best_key is None or key > best_key:
                best, best_key = rule, key
        if math.isinf(shift):
            from .loop import LEGACY

            report["legacy_score"] = round(score(traj, LEGACY, loss_weight), 4)
    report.update({"slices": [int(i) for i in idx], "score": round(best_key[0], 4), "loss_weight": loss_weight,
                   "grid": {"margin": list(MARGINS), "agree": list(AGREES), "iou_drop": list(IOU_DROPS),
                            "max_box_shift": [None if math.isinf(v) else v for v in BOX_SHIFTS]}})
    return best, report
