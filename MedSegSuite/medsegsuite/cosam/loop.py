"""The self-correcting loop on a batch of slices (all on the decoder's low-res grid).

Round 0 is the start mask (the prompt-free coarse mask, or a mask to continue from). Each round:
predict the error map of the current mask; flip the pixels predicted wrong (the corrected mask);
build prompts from it (top-K error points labelled by the corrected mask, the box of its largest
component -- each edge moved at most ``rule.max_box_shift`` of the current box's size, so one
wrongly flipped blob cannot send SAM elsewhere -- the corrected mask as the dense prompt) plus the
user's clicks; decode again. A round must *earn* its acceptance (:class:`AcceptRule`, calibrated on
held-out slices and stored in the model card): the error decoder's predicted error area must fall by
a margin, the new mask must agree with the correction it was asked for, and a second, independent
judge -- SAM's own frozen IoU head (:meth:`CoSAM.mask_score`) -- must not score it lower. Otherwise
the slice abstains: it stops and keeps its current mask. A slice whose predicted error area is zero
stops at once. When the user has clicked, the first round is always accepted (the judges never veto
the user), clicked pixels are painted with the user's label in every mask, and generated points
never land next to a click.

``rounds[t]`` is each slice's accepted mask after round t (a slice that stopped carries its mask
forward), so every round of every slice can be reviewed and scored.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .prompts import build_prompts, largest_component_box, paint_clicks

STOP_NO_ERROR = "no predicted error left"
STOP_NOT_SHRINKING = "predicted error area stopped shrinking"
STOP_MAX_ROUNDS = "reached the round limit"
STOP_DISAGREES = "the new mask disagrees with the correction"
STOP_SAM_JUDGE = "SAM's IoU head scores the new mask lower"


@dataclass(frozen=True)
class AcceptRule:
    """When a round earns acceptance. ``margin``: the predicted error area must fall to at most
    (1 - margin) of the current one (and strictly fall); ``agree``: Dice(new mask, corrected mask)
    at least this; ``iou_drop``: SAM's IoU-head score may fall by at most this (0: must not fall);
    ``max_box_shift``: each edge of the prompt box moves at most this fraction of the current mask's
    box size (inf: unlimited). ``LEGACY`` is the rule before these judges (error area must shrink)."""
    margin: float = 0.1
    agree: float = 0.9
    iou_drop: float = 0.0
    max_box_shift: float = 0.25

    def to_dict(self) -> dict:
        return {k: (None if math.isinf(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d) -> "AcceptRule":
        if not d:
            return cls()
        return cls(**{k: (math.inf if d.get(k, getattr(cls, k)) is None else float(d.get(k, getattr(cls, k))))
                      for k in ("margin", "agree", "iou_drop", "max_box_shift")})

    def judge(self, old_area: float, new_area: float, agree: float, old_score=None, new_score=None) -> str:
        """'' when the round is accepted, else the reason it is not (one of the STOP_* texts)."""
        if self.margin > -math.inf and not (new_area < old_area and new_area <= old_area * (1.0 - self.margin)):
            return STOP_NOT_SHRINKING
        if agree < self.agree:
            return STOP_DISAGREES
        if old_score is not None and new_score is not None and new_score < old_score - self.iou_drop:
            return STOP_SAM_JUDGE
        return ""


LEGACY = AcceptRule(margin=0.0, agree=0.0, iou_drop=math.inf, max_box_shift=math.inf)


def accept_all(max_box_shift: float = math.inf) -> AcceptRule:
    """A rule that accepts every round (to record whole trajectories for calibration)."""
    return AcceptRule(margin=-math.inf, agree=-math.inf, iou_drop=math.inf, max_box_shift=max_box_shift)


def rule_of(model) -> AcceptRule:
    """The acceptance rule in a model's card (``acceptance``, written by ``cosam.train``). A model trained
    before the rule existed has no calibrated one, and an uncalibrated rule would change its measured
    behaviour, so it keeps the rule it was evaluated with (:data:`LEGACY`)."""
    d = (getattr(model, "card", None) or {}).get("acceptance")
    return AcceptRule.from_dict(d) if d else LEGACY


def limit_box(box, ref_box, max_shift: float, S: int):
    """``box`` with each edge moved at most ``max_shift`` x the reference box's size from ``ref_box``."""
    if box is None or ref_box is None or math.isinf(max_shift):
        return box
    size = max(float(ref_box[2] - ref_box[0]), float(ref_box[3] - ref_box[1]), S / 16.0)
    d = max_shift * size
    return np.clip(box, ref_box - d, ref_box + d).astype(np.float32)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


@dataclass
class LoopResult:
    rounds: list[torch.Tensor]  # T+1 tensors (B, 1, S, S) of logits (accepted state after each round)
    error_area: list[list[int]]  # per slice: predicted error area of each accepted state
    rounds_run: list[int]  # per slice: decoder passes made (including a rejected last one)
    accepted: list[int]  # per slice: rounds accepted (the final mask is rounds[accepted])
    stop: list[str] = field(default_factory=list)
    final_error: torch.Tensor | None = None  # (B, 1, S, S) error probability of the final mask (None: not computed)
    judged: list[list[dict]] = field(default_factory=list)  # per slice, per judged round: what the judges saw


def to_slice(logits: torch.Tensor, shape_hw) -> np.ndarray:
    """(B, 1, S, S) logits -> (B, H, W) bool at slice resolution (bilinear, as SAM post-processes).
    Shared by inference (pipeline) and evaluation (train), so it lives on the inference side."""
    return (F.interpolate(logits.float(), size=tuple(shape_hw), mode="bilinear", align_corners=False) > 0)[:, 0].numpy()


def _paint(mask_t, clicks, b, radius):
    if clicks is None or clicks[b] is None or not len(clicks[b][0]):
        return mask_t
    m = paint_clicks(mask_t[0].numpy() > 0.5, clicks[b][0], clicks[b][1], radius)
    return torch.from_numpy(m.astype(np.float32))[None]


@torch.inference_mode()
def self_correct(model, emb, rounds: int = 4, k_points: int = 5, start_logits=None, clicks=None,
                 threshold: float = 0.5, click_radius: float | None = None,
                 start_error=None, rule: AcceptRule | None = None, candidates: list | None = None) -> LoopResult:
    """Run the loop. ``clicks``: per slice None or (points (n, 2) x, y on the low-res grid, labels).
    ``rule``: the acceptance rule (default: the model card's, :func:`rule_of`). ``candidates``: a list
    that receives every judged round's candidate mask (slice, round, mask (S, S) bool, judges), for
    calibrating a rule (run it with a rule that accepts everything).

    ``start_error``: error probabilities (B, 1, S, S) of the start mask when already known (an
    interactive session keeps the map of the mask the user clicked on, i.e. before this call paints
    the new clicks in), which saves an error-decoder pass. When the last round
    is a forced one (one round after a click), its error map is never used, so it is not computed
    and ``final_error`` is None."""
    B = emb.shape[0]
    S = model.low_res
    rule = rule_of(model) if rule is None else rule
    click_radius = S / 128 if click_radius is None else click_radius
    logits = (model.coarse(emb) if start_logits is None else start_logits.to(emb)).float().clone()
    has_click = [clicks is not None and clicks[b] is not None and len(clicks[b][0]) > 0 for b in range(B)]
    mask = (logits > 0).float()
    for b in range(B):
        mask[b] = _paint(mask[b], clicks, b, click_radius)
    err = torch.sigmoid(model.errors(emb, mask)) if start_error is None else start_error.to(emb).float().clone()
    area = (err > threshold).flatten(1).sum(1).tolist()
    err_known = True
    use_sam_judge = not math.isinf(rule.iou_drop) or candidates is not None
    score: list = [None] * B  # SAM IoU-head score of each slice's current mask (computed when first needed)
    history = [torch.where(mask > 0, logits.abs().clamp_min(1e-3), -logits.abs().clamp_min(1e-3))]
    areas = [[a] for a in area]
    judged: list[list[dict]] = [[] for _ in range(B)]
    active = [area[b] > 0 or has_click[b] for b in range(B)]
    stop = ["" if active[b] else STOP_NO_ERROR for b in range(B)]
    runs, acc = [0] * B, [0] * B
    for t in range(1, rounds + 1):
        idx = [b for b in range(B) if active[b]]
        if idx:
            prompts, corr = [], []
            for b in idx:
                cur = (mask[b, 0] > 0.5).numpy()
                c = cur ^ (err[b, 0] > threshold).numpy()
                pts, labs = clicks[b] if has_click[b] else (None, None)
                c = paint_clicks(c, pts, labs, click_radius)
                corr.append(torch.from_numpy(c.astype(np.float32))[None])
                p = build_prompts(c, err[b, 0].numpy(), k_points, user_points=pts, user_labels=labs,
                                  threshold=threshold)
                if not (t == 1 and has_click[b]):  # the user's first round is not limited
                    p.box = limit_box(p.box, largest_component_box(cur), rule.max_box_shift, S)
                prompts.append(p)
            new = model.prompted(emb[idx], prompts, torch.stack(corr)).float()
            new_mask = (new > 0).float()
            for j, b in enumerate(idx):
                new_mask[j] = _paint(new_mask[j], clicks, b, click_radius)
            if t == rounds and all(t == 1 and has_click[b] for b in idx):  # accepted anyway, nothing follows
                new_err, new_area, err_known = None, [None] * len(idx), False
            else:
                new_err = torch.sigmoid(model.errors(emb[idx], new_mask))
                new_area = (new_err > threshold).flatten(1).sum(1).tolist()
            judge = [j for j, b in enumerate(idx) if not (t == 1 and has_click[b])]
            new_score = [None] * len(idx)
            if use_sam_judge and judge:
                sel = [idx[j] for j in judge]
                need = [b for b in sel if score[b] is None]
                if need:
                    for b, v in zip(need, model.mask_score(emb[need], mask[need]).tolist()):
                        score[b] = v
                for j, v in zip(judge, model.mask_score(emb[sel], new_mask[judge]).tolist()):
                    new_score[j] = v
            for j, b in enumerate(idx):
                runs[b] = t
                forced = t == 1 and has_click[b]
                why = ""
                if not forced:
                    nm = new_mask[j, 0].numpy() > 0.5
                    agree = _dice(nm, corr[j][0].numpy() > 0.5)
                    why = rule.judge(areas[b][-1], new_area[j], agree, score[b], new_score[j])
                    info = {"round": t, "old_area": areas[b][-1], "new_area": new_area[j], "agree": round(agree, 4),
                            "old_score": score[b], "new_score": new_score[j], "accepted": not why}
                    judged[b].append(info)
                    if candidates is not None:
                        candidates.append((b, t, nm, info))
                if forced or not why:
                    logits[b], mask[b] = new[j], new_mask[j]
                    if new_err is not None:
                        err[b] = new_err[j]
                    areas[b].append(new_area[j])
                    score[b] = new_score[j]
                    acc[b] = t
                    if new_area[j] == 0:
                        active[b], stop[b] = False, STOP_NO_ERROR
                else:
                    active[b], stop[b] = False, why
        # a painted click must survive thresholding of the stored logits
        history.append(torch.where(mask > 0, logits.abs().clamp_min(1e-3), -logits.abs().clamp_min(1e-3)))
    stop = [s or STOP_MAX_ROUNDS for s in stop]
    return LoopResult(history, areas, runs, acc, stop, err if err_known else None, judged)
