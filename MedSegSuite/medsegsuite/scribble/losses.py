"""MaCo's loss terms. Unlabelled pixels carry ``UNLABELLED`` and never enter the partial CE.

total = pCE(scribbled pixels) + w_cpl · CPL soft-label CE (all pixels) + w_mcm(t) · MCM consistency,
with ``w_mcm`` ramped up linearly over the first ``mcm_rampup`` fraction of iterations (the
prediction that defines both the attention map and the consistency target is poor at first).
Defaults are in :data:`DEFAULT_WEIGHTS` and docs/scribble.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .labels import UNLABELLED

DEFAULT_WEIGHTS = {"cpl": 0.5, "mcm": 1.0, "mcm_rampup": 0.2}


def partial_ce(logits: torch.Tensor, scribbles: torch.Tensor, unlabelled: int = UNLABELLED) -> torch.Tensor:
    """Cross-entropy over scribbled pixels only ([B, C, H, W] logits, [B, H, W] long labels).
    Zero (with a graph) when nothing is scribbled in the batch."""
    lab = scribbles != unlabelled
    if not lab.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, scribbles.long(), ignore_index=unlabelled)


def soft_ce(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a soft label map [B, C, H, W] (the CPL), averaged over pixels."""
    return -(soft * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def consistency(logits_masked: torch.Tensor, logits_full: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of class probabilities; the full-image prediction is the (detached)
    target, so only the masked branch learns to infer hidden context."""
    return F.mse_loss(torch.softmax(logits_masked, dim=1), torch.softmax(logits_full.detach(), dim=1))


def mcm_weight(step: int, total: int, weight: float, rampup: float) -> float:
    if rampup <= 0:
        return weight
    return weight * min(1.0, step / max(1.0, rampup * total))
