"""The self-correcting loop on a batch of slices (all on the decoder's low-res grid).

Round 0 is the start mask (the prompt-free coarse mask, or a mask to continue from). Each round:
predict the error map of the current mask; flip the pixels predicted wrong (the corrected mask);
build prompts from it (top-K error points labelled by the corrected mask, the box of its largest
component, the corrected mask as the dense prompt) plus the user's clicks; decode again; predict
the new mask's error map. The new mask is accepted only if its predicted error area is smaller
than the current one's; otherwise the slice stops there and keeps its current mask ("stopped
shrinking"). A slice whose predicted error area is zero stops at once. When the user has clicked,
the first round is always accepted (the error decoder never vetoes the user), clicked pixels are
painted with the user's label in every mask, and generated points never land next to a click.

``rounds[t]`` is each slice's accepted mask after round t (a slice that stopped carries its mask
forward), so every round of every slice can be reviewed and scored.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .prompts import build_prompts, paint_clicks

STOP_NO_ERROR = "no predicted error left"
STOP_NOT_SHRINKING = "predicted error area stopped shrinking"
STOP_MAX_ROUNDS = "reached the round limit"


@dataclass
class LoopResult:
    rounds: list[torch.Tensor]  # T+1 tensors (B, 1, S, S) of logits (accepted state after each round)
    error_area: list[list[int]]  # per slice: predicted error area of each accepted state
    rounds_run: list[int]  # per slice: decoder passes made (including a rejected last one)
    accepted: list[int]  # per slice: rounds accepted (the final mask is rounds[accepted])
    stop: list[str] = field(default_factory=list)
    final_error: torch.Tensor | None = None  # (B, 1, S, S) error probability of the final mask (None: not computed)


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
                 threshold: float = 0.5, min_shrink: float = 0.0, click_radius: float | None = None,
                 start_error=None) -> LoopResult:
    """Run the loop. ``clicks``: per slice None or (points (n, 2) x, y on the low-res grid, labels).

    ``start_error``: error probabilities (B, 1, S, S) of the start mask when already known (an
    interactive session keeps the map of the mask the user clicked on, i.e. before this call paints
    the new clicks in), which saves an error-decoder pass. When the last round
    is a forced one (one round after a click), its error map is never used, so it is not computed
    and ``final_error`` is None."""
    B = emb.shape[0]
    S = model.low_res
    click_radius = S / 128 if click_radius is None else click_radius
    logits = (model.coarse(emb) if start_logits is None else start_logits.to(emb)).float().clone()
    has_click = [clicks is not None and clicks[b] is not None and len(clicks[b][0]) > 0 for b in range(B)]
    mask = (logits > 0).float()
    for b in range(B):
        mask[b] = _paint(mask[b], clicks, b, click_radius)
    err = torch.sigmoid(model.errors(emb, mask)) if start_error is None else start_error.to(emb).float().clone()
    area = (err > threshold).flatten(1).sum(1).tolist()
    err_known = True
    history = [torch.where(mask > 0, logits.abs().clamp_min(1e-3), -logits.abs().clamp_min(1e-3))]
    areas = [[a] for a in area]
    active = [area[b] > 0 or has_click[b] for b in range(B)]
    stop = ["" if active[b] else STOP_NO_ERROR for b in range(B)]
    runs, acc = [0] * B, [0] * B
    for t in range(1, rounds + 1):
        idx = [b for b in range(B) if active[b]]
        if idx:
            prompts, corr = [], []
            for b in idx:
                c = (mask[b, 0] > 0.5).numpy() ^ (err[b, 0] > threshold).numpy()
                pts, labs = clicks[b] if has_click[b] else (None, None)
                c = paint_clicks(c, pts, labs, click_radius)
                corr.append(torch.from_numpy(c.astype(np.float32))[None])
                prompts.append(build_prompts(c, err[b, 0].numpy(), k_points, user_points=pts, user_labels=labs,
                                             threshold=threshold))
            new = model.prompted(emb[idx], prompts, torch.stack(corr)).float()
            new_mask = (new > 0).float()
            for j, b in enumerate(idx):
                new_mask[j] = _paint(new_mask[j], clicks, b, click_radius)
            if t == rounds and all(t == 1 and has_click[b] for b in idx):  # accepted anyway, nothing follows
                new_err, new_area, err_known = None, [None] * len(idx), False
            else:
                new_err = torch.sigmoid(model.errors(emb[idx], new_mask))
                new_area = (new_err > threshold).flatten(1).sum(1).tolist()
            for j, b in enumerate(idx):
                runs[b] = t
                forced = t == 1 and has_click[b]
                if forced or new_area[j] < areas[b][-1] * (1.0 - min_shrink):
                    logits[b], mask[b] = new[j], new_mask[j]
                    if new_err is not None:
                        err[b] = new_err[j]
                    areas[b].append(new_area[j])
                    acc[b] = t
                    if new_area[j] == 0:
                        active[b], stop[b] = False, STOP_NO_ERROR
                else:
                    active[b], stop[b] = False, STOP_NOT_SHRINKING
        # a painted click must survive thresholding of the stored logits
        history.append(torch.where(mask > 0, logits.abs().clamp_min(1e-3), -logits.abs().clamp_min(1e-3)))
    stop = [s or STOP_MAX_ROUNDS for s in stop]
    return LoopResult(history, areas, runs, acc, stop, err if err_known else None)
