"""THE Dice + cross-entropy training loss of the package (CoSAM, the TTA source models and the scribble
full-supervision baseline all train with it).

    loss = (1 − soft Dice) + CE
    soft Dice = (2 Σ p·t + smooth) / (Σ p + Σ t + smooth)

* binary (``multiclass=False``): p = sigmoid(logits), t = float target of the logits' shape, CE =
  binary cross-entropy with logits (mean over pixels); MONAI's ``DiceCELoss(sigmoid=True, smooth_nr=s,
  smooth_dr=s, batch=...)`` computes the same numbers (tested);
* multiclass: p = softmax over dim 1, t = one-hot of an integer label map (B, H, W), CE = softmax
  cross-entropy; pixels labelled ``ignore_index`` enter neither term.

Dice is computed per channel, pooled over the whole batch (``per_sample=False``) or per sample and then
averaged (``per_sample=True``); ``present_only`` averages only over classes present in the batch's
target (a class absent from a batch then neither helps nor hurts).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _probs_and_target(logits, target, multiclass: bool, ignore_index):
    if multiclass:
        n = logits.shape[1]
        valid = None if ignore_index is None else (target != ignore_index).unsqueeze(1).float()
        p = torch.softmax(logits, 1)
        t = F.one_hot(target.long().clamp(max=n - 1), n).movedim(-1, 1).float()
        if valid is not None:
            p, t = p * valid, t * valid
        return p, t
    return torch.sigmoid(logits), target.float()


def dice_loss(logits, target, *, multiclass: bool = False, per_sample: bool = False, smooth: float = 1.0,
              ignore_index: int | None = None, present_only: bool = False) -> torch.Tensor:
    """1 − soft Dice (see the module doc), averaged over channels (and samples when ``per_sample``)."""
    p, t = _probs_and_target(logits, target, multiclass, ignore_index)
    dims = tuple(range(2, p.ndim)) if per_sample else (0, *range(2, p.ndim))
    inter = (p * t).sum(dims)
    t_sum = t.sum(dims)
    loss = 1 - (2 * inter + smooth) / (p.sum(dims) + t_sum + smooth)
    if present_only:
        loss = loss[t_sum > 0]
    return loss.mean()


def cross_entropy(logits, target, *, multiclass: bool = False, ignore_index: int | None = None) -> torch.Tensor:
    """The CE half: BCE with logits (binary) or softmax CE over pixels not labelled ``ignore_index``
    (zero, with a graph, when every pixel is ignored)."""
    if not multiclass:
        return F.binary_cross_entropy_with_logits(logits, target.float())
    if ignore_index is None:
        return F.cross_entropy(logits, target.long())
    if not (target != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target.long(), ignore_index=ignore_index)


def dice_ce_terms(logits, target, *, multiclass: bool = False, per_sample: bool = False, smooth: float = 1.0,
                  ignore_index: int | None = None, present_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(Dice term, CE term) of :func:`dice_ce_loss`, for callers that log them apart."""
    return (dice_loss(logits, target, multiclass=multiclass, per_sample=per_sample, smooth=smooth,
                      ignore_index=ignore_index, present_only=present_only),
            cross_entropy(logits, target, multiclass=multiclass, ignore_index=ignore_index))


def dice_ce_loss(logits, target, **kw) -> torch.Tensor:
    """(1 − soft Dice) + CE; keyword arguments as :func:`dice_loss`."""
    d, ce = dice_ce_terms(logits, target, **kw)
    return d + ce


__all__ = ["dice_loss", "cross_entropy", "dice_ce_terms", "dice_ce_loss"]
