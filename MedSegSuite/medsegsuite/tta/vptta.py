"""VPTTA (Chen et al., CVPR 2024, "Each Test Image Deserves A Specific Prompt"): the source model
stays frozen; each test image gets its own low-frequency Fourier prompt, trained for one step
(batch 1, a continual stream, no reset) to align the network's BN statistics.

Pieces, as in the reference code:

* :class:`FourierPrompt` — an s×s prompt per image channel, s = int(α·image size) (at least 1),
  α = 0.01, initialised to ones. The image's FFT amplitude is fftshift-ed, multiplied by the prompt
  padded with ones to H×W at offset ⌊(H−s)/2⌋, ifftshift-ed, recombined with the original phase;
  the prompted image is the real part of the inverse FFT. The memory key is the *unprompted*
  shifted amplitude's central s×s block.
* :class:`PromptMemory` — FIFO of (key, prompt) pairs (cap 40); once it holds ≥ 16 entries a new
  image's prompt starts from the softmax(cos/0.2)-weighted sum of the prompts of its 16 most
  cosine-similar keys, otherwise from ones.
* :class:`WarmupBatchNorm2d` — every BN normalises with λ_t·(batch statistics) + (1−λ_t)·(source
  running statistics), λ_t = 1/(√t/5 + 1), t counting images from 1; it also records the
  alignment loss mean|μ_mix − μ_inst| + mean|σ_mix − σ_inst| (mixed statistics detached).
* :class:`VPTTA` — per image: initialise the prompt (memory or ones), one Adam step (lr 0.05,
  betas (0.9, 0.99), the optimiser state persists over the stream) on the BN loss averaged over
  layers, predict with the updated prompt, push (key, prompt) into the memory.

Deliberate departures: the reference bank pops only when it holds *more* than its size, so it
keeps 41 entries; this one keeps exactly 40. A blank (constant) slice, common at the ends of a
volume, makes the reference's loss gradient NaN and poisons the prompt, Adam state and memory for
the rest of the stream; here that image's update is skipped, a zero key has similarity 0 and
non-finite entries are never stored (identical results on every other image). Like the reference (its ``fftshift`` has no ``dim`` and
so also rolls the channel axis, with batch 1), the shift here runs over the channel and spatial axes:
identical to the reference for one image, and for one-channel images simply the 2D shift.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SHIFT_DIMS = (-3, -2, -1)  # see the module docstring


def prompt_size(image_size: int, alpha: float = 0.01) -> int:
    s = int(image_size * alpha)
    return s if s > 1 else 1


def warmup_lambda(t: int, warm_n: int = 5) -> float:
    """λ_t = 1 / (√t / warm_n + 1): the weight of the current image's BN statistics."""
    return 1.0 / (math.sqrt(t) / warm_n + 1.0)


class FourierPrompt(nn.Module):
    def __init__(self, image_size: int, channels: int = 1, alpha: float = 0.01):
        super().__init__()
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.size = prompt_size(self.image_size, alpha)
        self.data_prompt = nn.Parameter(torch.ones(1, self.channels, self.size, self.size))

    @torch.no_grad()
    def set(self, values) -> None:
        self.data_prompt.copy_(torch.as_tensor(values, dtype=self.data_prompt.dtype).reshape(self.data_prompt.shape))

    @staticmethod
    def spectrum(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fftshift-ed amplitude, phase) of ``x``: the prompt-independent part, reusable for one image."""
        spec = torch.fft.fft2(x, dim=(-2, -1))
        return torch.fft.fftshift(spec.abs(), dim=SHIFT_DIMS), spec.angle()

    def forward(self, x: torch.Tensor, spectrum=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompted image, key = central s×s of the unprompted shifted amplitude)."""
        h, w = x.shape[-2:]
        s = self.size
        top, left = (h - s) // 2, (w - s) // 2
        amp, pha = spectrum if spectrum is not None else self.spectrum(x)
        mask = F.pad(self.data_prompt, (left, w - left - s, top, h - top - s), mode="constant", value=1.0)
        amp_p = torch.fft.ifftshift(amp * mask, dim=SHIFT_DIMS)
        key = amp[..., top:top + s, left:left + s]
        out = torch.fft.ifft2(torch.complex(torch.cos(pha) * amp_p, torch.sin(pha) * amp_p), dim=(-2, -1),
                              s=[h, w]).real
        return out, key


class PromptMemory:
    """FIFO memory bank of (low-frequency amplitude key, prompt) pairs with cosine retrieval."""

    def __init__(self, size: int = 40, neighbours: int = 16, temperature: float = 0.2):
        self.size, self.neighbours, self.temperature = int(size), int(neighbours), float(temperature)
        self.keys: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.keys)

    def ready(self) -> bool:
        return len(self.keys) >= self.neighbours

    def push(self, key, value) -> None:
        k = np.asarray(key, dtype=np.float32).ravel()
        v = np.array(value, dtype=np.float32)
        if not (np.all(np.isfinite(k)) and np.all(np.isfinite(v))):
            return  # never store a broken entry (see VPTTA.predict)
        for i, old in enumerate(self.keys):  # an identical key replaces its value in place (as a dict does)
            if old.shape == k.shape and np.array_equal(old, k):
                self.values[i] = v
                return
        if len(self.keys) >= self.size:
            self.keys.pop(0)
            self.values.pop(0)
        self.keys.append(k)
        self.values.append(v)

    def retrieve(self, key) -> np.ndarray:
        """softmax(cos/T)-weighted sum of the prompts of the top-k most cosine-similar keys."""
        if not self.ready():
            raise RuntimeError(f"the memory holds {len(self)} entries; retrieval needs {self.neighbours}")
        q = np.asarray(key, dtype=np.float64).ravel()
        keys = np.stack(self.keys).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = keys @ q / (np.linalg.norm(keys, axis=1) * np.linalg.norm(q))
        cos = np.nan_to_num(cos, nan=0.0)  # a blank image has an all-zero key: similarity 0, not NaN
        top = np.argpartition(cos, -self.neighbours)[-self.neighbours:]
        a = cos[top] / self.temperature
        w = np.exp(a - a.max())
        w /= w.sum()
        out = sum(wi * self.values[i].astype(np.float64) for wi, i in zip(w, top))
        return out.astype(np.float32)

    def state(self) -> dict:
        return {"keys": [k.tolist() for k in self.keys], "values": [v.tolist() for v in self.values]}


class WarmupBatchNorm2d(nn.BatchNorm2d):
    """BN normalising with warm-up-mixed statistics and recording VPTTA's alignment loss."""

    def __init__(self, num_features: int, warm_n: int = 5, eps: float = 1e-5):
        super().__init__(num_features, eps=eps)
        self.warm_n = warm_n
        self.sample_num = 0
        self.new_sample = False
        self.bn_loss = None

    def mixed_statistics(self, x: torch.Tensor, cur_mu=None, cur_var=None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.new_sample:
            self.sample_num += 1
        c = x.shape[1]
        if cur_mu is None:
            cur_mu = x.mean((0, 2, 3), keepdim=True).detach()
            cur_var = x.var((0, 2, 3), keepdim=True).detach()
        lam = 1.0 / (math.sqrt(self.sample_num) / self.warm_n + 1.0)
        mu = lam * cur_mu + (1 - lam) * self.running_mean.view(1, c, 1, 1)
        var = lam * cur_var + (1 - lam) * self.running_var.view(1, c, 1, 1)
        return mu, var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        track = torch.is_grad_enabled()  # the loss is only needed when training the prompt
        if x.shape[0] == 1:
            # one image: its batch statistics are its instance statistics (same unbiased variance),
            # so compute them once
            inst_mu = x.mean((2, 3), keepdim=True)
            n = x.shape[2] * x.shape[3]
            d = x - inst_mu  # two-pass unbiased variance (= x.var, several times faster on CPU)
            inst_var = (d * d).mean((2, 3), keepdim=True) * (n / max(n - 1, 1))
            mu, var = self.mixed_statistics(x, inst_mu.detach(), inst_var.detach())
            inst_std = inst_var.sqrt() if track else None
        else:
            # a batch of one volume's slices: per-image moments once, the batch's moments from them
            # (the same values as x.mean / x.var over (0, 2, 3), without another pass over x)
            b, n = x.shape[0], x.shape[2] * x.shape[3]
            inst_mu = x.mean((2, 3), keepdim=True)
            d = x - inst_mu
            ss = (d * d).sum((2, 3), keepdim=True)  # per image Σ(x − μ_i)²
            with torch.no_grad():
                bmu = inst_mu.mean(0, keepdim=True)
                bvar = (ss.sum(0, keepdim=True) + n * ((inst_mu - bmu) ** 2).sum(0, keepdim=True)) / max(b * n - 1, 1)
            mu, var = self.mixed_statistics(x, bmu, bvar)
            inst_std = (ss / max(n - 1, 1)).sqrt() if track else None
        if track:
            self.bn_loss = (mu - inst_mu).abs().mean() + (var.sqrt() - inst_std).abs().mean()
        # (x − μ_mix) / √(σ²_mix + eps) · γ + β, fused; μ_mix, σ²_mix carry no gradient (detached)
        return F.batch_norm(x, mu.flatten(), var.flatten(), self.weight, self.bias, False, 0.0, self.eps)


def convert_batchnorm(model: nn.Module, warm_n: int = 5) -> nn.Module:
    """Replace every BatchNorm2d of ``model`` (in place) by a WarmupBatchNorm2d with its state."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, WarmupBatchNorm2d):
            new = WarmupBatchNorm2d(child.num_features, warm_n, child.eps).to(child.weight.device)
            new.load_state_dict(child.state_dict(), strict=False)
            setattr(model, name, new)
        else:
            convert_batchnorm(child, warm_n)
    return model


def warmup_layers(model: nn.Module) -> list[WarmupBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, WarmupBatchNorm2d)]


def set_new_sample(model: nn.Module, flag: bool) -> None:
    for m in warmup_layers(model):
        m.new_sample = flag


class VPTTA:
    """One image (the reference) or one batch of a volume's slices at a time; the source weights never
    change (only the prompt trains)."""

    name = "vptta"

    def __init__(self, net: nn.Module, image_size: int, channels: int = 1, alpha: float = 0.01,
                 lr: float = 0.05, betas=(0.9, 0.99), memory_size: int = 40, neighbours: int = 16,
                 warm_n: int = 5, iters: int = 1):
        self.net = net
        self.image_size, self.channels, self.alpha = image_size, channels, alpha
        self.lr, self.betas, self.iters = lr, tuple(betas), int(iters)
        self.memory_size, self.neighbours, self.warm_n = memory_size, neighbours, warm_n
        self.reset()

    def reset(self):
        self.model = convert_batchnorm(copy.deepcopy(self.net), self.warm_n)
        self.model.eval()
        self.model.requires_grad_(False)
        self.prompt = FourierPrompt(self.image_size, self.channels, self.alpha)
        self.optimizer = torch.optim.Adam(self.prompt.parameters(), lr=self.lr, betas=self.betas,
                                          weight_decay=0.0)
        self.memory = PromptMemory(self.memory_size, self.neighbours)
        self.last_loss = None

    @property
    def images_seen(self) -> int:
        layers = warmup_layers(self.model)
        return layers[0].sample_num if layers else 0

    def bn_loss(self) -> torch.Tensor:
        losses = [m.bn_loss for m in warmup_layers(self.model)]
        return sum(losses) / len(losses)

    def adapt(self, x: torch.Tensor) -> None:
        """Initialise the prompt (memory or ones), train it on ``x`` and store (key, prompt).

        ``x`` is one image (the reference's batch 1) or a batch of slices of one volume: then the
        batch's statistics feed the BN alignment (the reference formula for a batch), one prompt serves
        the batch, and its memory key is the mean of the images' keys."""
        set_new_sample(self.model, True)
        with torch.no_grad():
            spec = self.prompt.spectrum(x)  # the same for the key, the update and the prediction
            _, key = self.prompt(x, spec)
            key = key.mean(0, keepdim=True)
        if self.memory.ready():
            init = self.memory.retrieve(key.cpu().numpy())
        else:
            init = np.ones(tuple(self.prompt.data_prompt.shape), dtype=np.float32)
        self.prompt.set(init)
        for _ in range(self.iters):
            px, _ = self.prompt(x, spec)
            self.model(px)
            loss = self.bn_loss()
            self.optimizer.zero_grad()
            loss.backward()
            g = self.prompt.data_prompt.grad
            if torch.isfinite(loss) and g is not None and bool(torch.isfinite(g).all()):
                self.optimizer.step()
            # else: a blank (constant) image makes σ_inst = 0 and d√σ² infinite; skip its update so
            # the prompt and Adam state stay finite (the reference would turn NaN from here on)
            set_new_sample(self.model, False)
            self.last_loss = float(loss.detach())
        set_new_sample(self.model, False)
        self.memory.push(key.cpu().numpy(), self.prompt.data_prompt.detach().cpu().numpy())

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` with the current prompt (BN: its warm-up mix with ``x``'s statistics)."""
        px, _ = self.prompt(x)
        return self.model(px)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The reference's step for one image (or one batch): adapt on it, then predict it."""
        self.adapt(x)
        return self.infer(x)
