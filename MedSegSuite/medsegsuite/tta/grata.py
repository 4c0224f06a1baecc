"""GraTa (AAAI 2025, "Gradient Alignment-based Test-Time Adaptation"): align a pseudo gradient with an
auxiliary gradient and scale the step by how well they agree.

As in the reference code: only BN γ/β train and BN normalises with the test image's statistics
(train mode, no running statistics). One step per image:

1. g_aux = ∇ of the auxiliary loss, the reference's entropy mean_pixels Σ_c −p_c·log(p_c + 1e-6),
   p = sigmoid(logits) (one-sided, as published), at θ;
2. θ′ = θ − g_aux;
3. g_pse = ∇ at θ′ of the pseudo loss: BCE-with-logits between the prediction on a strongly
   style-augmented, min–max normalised image and a soft pseudo label, the mean sigmoid over 6 views
   (identity, horizontal flip, vertical flip, three rotations; each inverted back);
4. cos = cosine of g_aux and g_pse over all BN parameters (+1e-12 in the denominator);
5. restore θ, then an Adam step (betas (0.9, 0.999)) with g_pse at lr η₀·(cos + 1)²/4, η₀ = 1e-4.

The model is reset per target domain (``reset()``; the evaluation resets at each centre, the task at
each volume). The strong style augmentation is this project's own (brightness, contrast, gamma,
noise, blur: the kinds the reference's batchgenerators transform draws), seeded for repeatability.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .common import bn_affine_params, one_sided_entropy, per_image_statistics, use_test_statistics


def lr_multiplier(cos: float) -> float:
    """(cos + 1)² / 4: 1 when the gradients agree, 0.25 when orthogonal, 0 when opposed."""
    return 0.25 * (float(cos) + 1.0) ** 2


def view(x: torch.Tensor, k: int) -> torch.Tensor:
    """View k of the reference's Rotate_and_Flip: 0 h-flip, 1 v-flip, 2 rot90, 3 rot180, 4 rot270."""
    if k == 0:
        return x.flip(-1)
    if k == 1:
        return x.flip(-2)
    if k == 2:
        return x.flip(-1).transpose(-2, -1)
    if k == 3:
        return x.flip(-1).flip(-2)
    if k == 4:
        return x.transpose(-2, -1).flip(-1)
    raise ValueError(k)


def unview(y: torch.Tensor, k: int) -> torch.Tensor:
    if k == 0:
        return y.flip(-1)
    if k == 1:
        return y.flip(-2)
    if k == 2:
        return y.transpose(-2, -1).flip(-1)
    if k == 3:
        return y.flip(-1).flip(-2)
    if k == 4:
        return y.flip(-1).transpose(-2, -1)
    raise ValueError(k)


def normalise_0_1(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-8)


def strong_style(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A strong intensity (style) augmentation of images in [0, 1]; geometry untouched."""
    def u(a, b):
        return float(a + (b - a) * torch.rand((), generator=gen))

    y = x * u(0.7, 1.3)                                        # brightness
    m = y.mean(dim=(-2, -1), keepdim=True)
    y = (y - m) * u(0.65, 1.5) + m                             # contrast
    y = normalise_0_1(y).clamp(0, 1) ** u(0.7, 1.5)            # gamma
    if torch.rand((), generator=gen) < 0.5:                    # blur
        sigma = u(0.5, 1.0)
        r = max(1, int(round(2 * sigma)))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=y.dtype) / sigma) ** 2)
        k = (k / k.sum()).to(y.device)
        c = y.shape[1]
        y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    y = y + u(0.0, 0.1) * torch.randn(y.shape, generator=gen).to(y.device)  # noise
    return normalise_0_1(y)


class GraTa:
    name = "grata"

    def __init__(self, net: torch.nn.Module, lr: float = 1e-4, betas=(0.9, 0.999), seed: int = 0):
        self.source_state = copy.deepcopy(net.state_dict())
        self.model = copy.deepcopy(net)
        self.lr, self.betas, self.seed = lr, tuple(betas), seed
        self.reset()

    def reset(self):
        self.model.load_state_dict(self.source_state, strict=False)
        use_test_statistics(self.model)
        self.params = bn_affine_params(self.model)
        self.optimizer = torch.optim.Adam(self.params, lr=self.lr, betas=self.betas)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.last_cos = None
        self.last_lr = None

    def aux_loss(self, x):
        return one_sided_entropy(self.model(x))

    def pseudo_label(self, x):
        """The mean sigmoid over the six views of ``x``, each view predicted with its own BN statistics.
        One image (the per-volume schedule's update, the papers' stream): the views run as one batch
        with per-image statistics (the same numbers, ~1.3x faster); several: one forward per view."""
        with torch.no_grad():
            if x.shape[0] == 1 and x.shape[-1] == x.shape[-2]:
                with per_image_statistics(self.model):
                    out = self.model(torch.cat([x] + [view(x, k) for k in range(5)]))
                preds = [out[:1]] + [unview(out[k + 1:k + 2], k) for k in range(5)]
            else:
                preds = [self.model(x)] + [unview(self.model(view(x, k)), k) for k in range(5)]
            return torch.stack(preds).sigmoid().mean(0)

    def pseudo_loss(self, x, x_aug=None):
        target = self.pseudo_label(x)
        if x_aug is None:
            x_aug = strong_style(x, self.gen)
        return F.binary_cross_entropy_with_logits(self.model(x_aug), target)

    def step(self, x: torch.Tensor, x_aug: torch.Tensor | None = None) -> float:
        """One GraTa update on image ``x``; returns the gradient cosine."""
        self.optimizer.zero_grad()
        self.aux_loss(x).backward()
        old = [p.detach().clone() for p in self.params]
        g_aux = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.params]
        with torch.no_grad():
            for p, g in zip(self.params, g_aux):
                p.sub_(g)
        self.optimizer.zero_grad()
        self.pseudo_loss(x, x_aug).backward()
        g_pse = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in self.params]
        dot = sum((a * b).sum() for a, b in zip(g_aux, g_pse))
        n_pse = torch.norm(torch.stack([g.norm(2) for g in g_pse]), 2)
        n_aux = torch.norm(torch.stack([g.norm(2) for g in g_aux]), 2)
        cos = float(dot / (n_pse * n_aux + 1e-12))
        with torch.no_grad():
            for p, o in zip(self.params, old):
                p.copy_(o)
        self.last_cos = cos
        self.last_lr = self.lr * lr_multiplier(cos)
        for group in self.optimizer.param_groups:
            group["lr"] = self.last_lr
        self.optimizer.step()
        return cos

    def adapt(self, x: torch.Tensor) -> None:
        """One GraTa step on ``x`` (one image, or a batch of one volume's slices)."""
        self.step(x)

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` with the adapted BN γ/β (BN: ``x``'s own statistics)."""
        return self.model(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.adapt(x)
        return self.infer(x)
