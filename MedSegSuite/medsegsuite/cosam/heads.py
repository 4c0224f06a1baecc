"""The generalized error decoder: where is a mask wrong, given the image embedding and the mask?

Design (the paper leaves the head's form open): a small convolutional head, not a second copy of
SAM's mask decoder, so the shipped checkpoint stays small (~0.27 M parameters) and one pass costs a
few ms. Input: the frozen image embedding and the prompt encoder's dense embedding of the mask
(both C x h x w), concatenated; three residual conv blocks with growing dilation at h x w; two
transposed convs up to SAM's low-res mask grid (4h x 4w, 256 x 256 for LiteMedSAM), where the mask
itself (+-1) joins as one extra channel so thin boundary errors can be placed exactly. Output: one
error logit per low-res mask pixel.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, c), c)


class _Block(nn.Module):
    def __init__(self, c: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), _gn(c), nn.GELU(),
                                  nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation), _gn(c))

    def forward(self, x):
        return F.gelu(x + self.body(x))


class ErrorDecoder(nn.Module):
    def __init__(self, embed_dim: int = 256, width: int = 64, depth: int = 3):
        super().__init__()
        self.config = {"embed_dim": embed_dim, "width": width, "depth": depth}
        self.inp = nn.Sequential(nn.Conv2d(2 * embed_dim, width, 1), _gn(width), nn.GELU())
        self.blocks = nn.Sequential(*[_Block(width, 2 ** i) for i in range(depth)])
        w2, w4 = max(width // 2, 4), max(width // 4, 4)
        self.up = nn.Sequential(nn.ConvTranspose2d(width, w2, 2, 2), _gn(w2), nn.GELU(),
                                nn.ConvTranspose2d(w2, w4, 2, 2), nn.GELU())
        self.head = nn.Sequential(nn.Conv2d(w4 + 1, w4, 3, padding=1), nn.GELU(), nn.Conv2d(w4, 1, 1))

    def forward(self, image_embedding, dense_embedding, mask):
        """image/dense embeddings (B, C, h, w), mask (B, 1, 4h, 4w) in {0, 1} -> error logits (B, 1, 4h, 4w)."""
        x = self.blocks(self.inp(torch.cat([image_embedding, dense_embedding], 1)))
        x = self.up(x)
        return self.head(torch.cat([x, mask * 2 - 1], 1))
