"""Masked context modelling (MCM): hide image patches and ask the prediction on the masked image to
agree with the prediction on the full image.

Two ways to choose the patches:

* ``scribble`` (`scribble_patch_mask`, the method's and the default): about ``ratio`` (half) of the
  patches that **carry scribbles** are hidden, drawn at random; a slice without strokes has ``ratio``
  of all its patches hidden. The network must then infer the annotated structure from its context.
* ``attention`` (`patch_mask`, the earlier variant, kept for comparison):

Attention map: taken from the network's own **prediction** on the full image (detached), as the
foreground probability ``1 - p(background)`` (a class-agnostic saliency, available from any
segmentation network without hooks into its layers). It is average-pooled over ``patch``×``patch``
cells; ``round(ratio × cells)`` cells are drawn *without replacement* with probability
proportional to ``attention + floor`` (Gumbel top-k), so high-attention cells are masked more often
while every cell keeps some chance and the masked fraction is exactly the ratio. Masked pixels are
set to ``fill`` (0 = the mean of the normalised intensities).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULTS = {"ratio": 0.5, "patch": 16, "floor": 0.05, "fill": 0.0}


def attention_from_prediction(logits: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] logits -> [B, H, W] attention in 0..1 (foreground probability)."""
    p = torch.softmax(logits.detach().float(), dim=1)
    return 1.0 - p[:, 0]


def patch_mask(attention: torch.Tensor, ratio: float = DEFAULTS["ratio"], patch: int = DEFAULTS["patch"],
               floor: float = DEFAULTS["floor"], generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, H, W] attention -> [B, 1, H, W] float mask, 1 where the image is masked.

    Exactly ``round(ratio * n_cells)`` of the ``ceil(H/patch) * ceil(W/patch)`` cells are masked per
    image (edge cells may be partial)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"masking ratio must be in [0, 1], got {ratio}")
    if patch < 1:
        raise ValueError(f"patch size must be >= 1, got {patch}")
    b, h, w = attention.shape
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    a = attention.detach().float()[:, None]
    a = F.pad(a, (0, gw * patch - w, 0, gh * patch - h), mode="replicate")
    cells = F.avg_pool2d(a, patch).reshape(b, gh * gw)
    k = int(round(ratio * gh * gw))
    out = torch.zeros(b, gh * gw, device=attention.device)
    if k > 0:
        u = torch.rand(cells.shape, generator=generator, device="cpu").to(attention.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-9, 1 - 1e-9)))
        keys = torch.log(cells.clamp(min=0) + floor) + gumbel
        idx = keys.topk(k, dim=1).indices
        out.scatter_(1, idx, 1.0)
    m = out.reshape(b, 1, gh, gw)
    m = m.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    return m[:, :, :h, :w]


def apply_mask(image: torch.Tensor, mask: torch.Tensor, fill: float = DEFAULTS["fill"]) -> torch.Tensor:
    return image * (1 - mask) + fill * mask


def scribble_patch_mask(labels: torch.Tensor, ratio: float = DEFAULTS["ratio"], patch: int = DEFAULTS["patch"],
                        unlabelled: int = 255, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, H, W] scribble labels -> [B, 1, H, W] float mask hiding ``round(ratio × n)`` of the n
    patches that carry a stroke (at least one when n > 0); ``ratio`` of all patches where n = 0."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"masking ratio must be in [0, 1], got {ratio}")
    if patch < 1:
        raise ValueError(f"patch size must be >= 1, got {patch}")
    b, h, w = labels.shape
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    lab = (labels != unlabelled).float()[:, None]
    lab = F.pad(lab, (0, gw * patch - w, 0, gh * patch - h))
    carries = F.max_pool2d(lab, patch).reshape(b, gh * gw) > 0
    u = torch.rand((b, gh * gw), generator=generator, device="cpu").to(labels.device)
    out = torch.zeros(b, gh * gw, device=labels.device)
    for i in range(b):
        pool = carries[i] if carries[i].any() else torch.ones_like(carries[i])
        n = int(pool.sum())
        k = min(n, max(1 if ratio > 0 else 0, int(round(ratio * n))))
        if k:
            keys = torch.where(pool, u[i], torch.full_like(u[i], -1.0))
            out[i, keys.topk(k).indices] = 1.0
    m = out.reshape(b, 1, gh, gw).repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    return m[:, :, :h, :w]
