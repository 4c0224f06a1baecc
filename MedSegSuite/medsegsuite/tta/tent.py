"""TENT (Wang et al., ICLR 2021): minimise the prediction entropy by updating only BN γ/β, with BN
normalising by the test image's statistics. The baseline every TTA paper compares with.

As in the reference (one step per batch, Adam), the prediction returned for an image is the one of
the forward pass that computed the loss, i.e. before that image's update. The entropy of a
one-logit sigmoid output is the binary entropy (TENT's softmax entropy for two classes).
"""
from __future__ import annotations

import copy

import torch

from .common import binary_entropy, bn_affine_params, use_test_statistics


class Tent:
    name = "tent"

    def __init__(self, net: torch.nn.Module, lr: float = 1e-3, betas=(0.9, 0.999), steps: int = 1,
                 episodic: bool = False):
        self.source_state = copy.deepcopy(net.state_dict())
        self.model = copy.deepcopy(net)
        self.lr, self.betas, self.steps, self.episodic = lr, tuple(betas), int(steps), episodic
        self.reset()

    def reset(self):
        self.model.load_state_dict(self.source_state, strict=False)
        use_test_statistics(self.model)
        self.optimizer = torch.optim.Adam(bn_affine_params(self.model), lr=self.lr, betas=self.betas)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.episodic:
            self.reset()
        out = None
        for _ in range(self.steps):
            out = self.model(x)
            loss = binary_entropy(out).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return out.detach()
