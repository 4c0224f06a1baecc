"""Source networks for test-time adaptation and the slice pre-/post-processing they were trained with.

A source model is a 2D MONAI ``UNet`` with batch norm (``norm=BATCH``), one input channel, one output
logit per pixel (sigmoid, as in the VPTTA/GraTa reference code). Its model card says how to turn a
volume into network input, so a checkpoint carries everything needed to run it:

``structure`` (segment name), ``modality`` (``ct``: fixed HU window; ``mr``: per-volume percentiles
of the non-zero voxels, so any T1 works whatever its scanner scale), ``size`` (square input, px),
``window`` (ct only), ``channels``/``strides``/``num_res_units`` (the UNet).

Slices come from the one slice engine (`volume.SliceEngine`) in the ``RAS`` frame (array axes to
+R, +A, +S, whatever the volume's IJK order), in the card's ``plane`` (default axial, what the
shipped models were trained on); each slice is padded to a square (keeping the aspect ratio) and
resized to ``size``. :func:`logits_to_slices` undoes the pad + resize; the engine puts slices back
on the volume's grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError, InputError
from ..models.loader import architecture
from ..volume import SliceEngine, Volume

ARCHITECTURE = "tta-unet2d"
FRAME = "RAS"  # the frame the shipped source models were trained in (volume.planes)
DEFAULT_ARCH = {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1}


def build_unet(card: dict | None = None):
    """The MONAI 2D UNet with BatchNorm described by ``card`` (defaults: DEFAULT_ARCH)."""
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    c = {**DEFAULT_ARCH, **(card or {})}
    return UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=tuple(c["channels"]),
                strides=tuple(c["strides"]), num_res_units=int(c["num_res_units"]), norm=Norm.BATCH)


@dataclass
class SourceModel:
    """A loaded source network + its card (pre-processing recipe, structure name)."""

    net: object
    card: dict
    model_id: str = "model"

    @property
    def structure(self) -> str:
        return self.card.get("structure", "structure")

    @property
    def size(self) -> int:
        return int(self.card.get("size", 128))


@architecture(ARCHITECTURE)
def _build(state_dict: dict, card: dict, device: str = "cpu", **_):
    """The loader's builder for ``tta-unet2d`` checkpoints (registered in `models.loader`)."""
    from ..models.checkpoints import load_state_into

    net = build_unet(card)
    load_state_into(net, state_dict, "the TTA source model")
    return net.to(device).eval()


def load_source_model(model: str, device: str = "cpu") -> SourceModel:
    """A registry id (e.g. ``liver-source``) or a checkpoint path -> SourceModel in eval mode, through
    the shared cached loader (checksum once per file identity, built once per device). The network
    is shared: adapters work on their own copies and never change it."""
    from ..models.loader import load_model

    try:
        m = load_model(model, device, expect=ARCHITECTURE)
    except CheckpointError as e:
        if "this needs a" in str(e):
            raise CheckpointError(f"{e} (test-time adaptation needs a source model, e.g. liver-source, "
                                  "brain-source)") from None
        raise
    return SourceModel(m.net, m.card, m.entry.id)


# ---------------------------------------------------------------- intensities

def normalise_volume(array: np.ndarray, card: dict) -> np.ndarray:
    """Intensities -> roughly [0, 1] as the card says (done by the model itself, never by the user)."""
    a = np.asarray(array, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise InputError("the image holds NaN/Inf voxels; fix or mask them first")
    if card.get("modality", "ct") == "ct":
        lo, hi = card.get("window", [-160.0, 240.0])
    else:
        lo = float(np.percentile(a, 0.5))  # background (air) level
        fg = a[a > lo]
        hi = float(np.percentile(fg, 99.5)) if fg.size else lo  # bright tissue, ignoring outliers
    if hi <= lo:
        raise InputError("the image is constant; there is nothing to segment")
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------- slices <-> network input

def slice_engine(volume, card: dict | None = None) -> SliceEngine:
    """How a source model slices ``volume``: its card's plane (default axial) in the RAS frame."""
    return SliceEngine.for_volume(volume, (card or {}).get("plane", "axial"), frame=FRAME)


def slice_tensor(slices: np.ndarray, size: int):
    """[n, rows, cols] float32 slices -> [n, 1, size, size]: padded to a square (centred, keeping the
    aspect ratio), then resized."""
    import torch
    import torch.nn.functional as F

    t = _pad_square(torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))[:, None])
    if t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=t.shape[-1] > size)
    return t.contiguous()


def slices_from_volume(volume: Volume, card: dict, indices=None):
    """Normalised slices of the card's plane at the card's size: a float32 tensor [n, 1, S, S].

    ``indices`` count canonical slices (axial: inferior to superior; default all). Returns
    (tensor, indices, shape2d)."""
    eng = slice_engine(volume, card)
    idx = list(range(eng.n_slices)) if indices is None else [eng.check_index(i) for i in indices]
    stack = eng.stack(normalise_volume(volume.array, card), idx)
    return slice_tensor(stack, int(card.get("size", 128))), idx, tuple(stack.shape[1:])


def _pad_square(t):
    import torch.nn.functional as F

    h, w = t.shape[-2:]
    m = max(h, w)
    ph, pw = m - h, m - w
    return F.pad(t, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0) if (ph or pw) else t


def logits_to_slices(logits, shape2d) -> np.ndarray:
    """Network logits [n, 1, S, S] -> logits on the canonical slice grid [n, X, Y] (inverse of the
    pad + resize in :func:`slices_from_volume`)."""
    import torch.nn.functional as F

    h, w = shape2d
    m = max(h, w)
    t = logits.detach().float().cpu()
    if t.shape[-1] != m:
        t = F.interpolate(t, size=(m, m), mode="bilinear", align_corners=False)
    ph, pw = (m - h) // 2, (m - w) // 2
    return t[:, 0, ph:ph + h, pw:pw + w].numpy()
