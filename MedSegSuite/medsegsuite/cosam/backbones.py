"""Backbones CoSAM can sit on, all as :class:`medsegsuite.sam.SamBackbone`:

- ``litemedsam`` (default): :func:`medsegsuite.sam.load_litemedsam` (TinyViT, 256 px).
- ``sam_vit_b`` / ``sam_vit_l`` / ``sam_vit_h``: official SAM checkpoints (1024 px) through
  segment-anything's ``sam_model_registry``; images are scaled to 0-255 and normalised with SAM's
  pixel mean/std, as SAM was trained.
- ``medsam``: MedSAM (ViT-B layout, 1024 px); images in [0, 1] go in as they are (MedSAM's own
  preprocessing).
- ``tiny_sam``: a tiny random SAM (128 px, 32 channels) with a fixed seed, for fast tests.

Official checkpoints are plain state dicts with keys ``image_encoder.*``, ``prompt_encoder.*`` and
``mask_decoder.*`` (MedSAM's may be wrapped in ``{"model": ...}``); anything else is refused with a
:class:`~medsegsuite.errors.CheckpointError` before a tensor is copied. Slices are resized to the
square input (no aspect-preserving padding), the same for every backbone here.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, InputError
from ..models.checkpoints import load_checkpoint, load_state_into, sha256_file, state_dict_of
from ..sam.backbones import SamBackbone, load_litemedsam

SAM_KINDS = {"sam_vit_b": "vit_b", "sam_vit_l": "vit_l", "sam_vit_h": "vit_h", "medsam": "vit_b"}
BACKBONES = ("litemedsam", *SAM_KINDS, "tiny_sam")
_PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
_SAM_MEAN, _SAM_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


class NormalizedEncoder(nn.Module):
    """SAM's pixel normalisation in front of its encoder: x in [0, 1] -> (255 x - mean) / std."""

    def __init__(self, encoder, mean=_SAM_MEAN, std=_SAM_STD):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return self.encoder((x * 255.0 - self.mean) / self.std)


def check_sam_layout(sd: dict, path="checkpoint") -> dict:
    if not isinstance(sd, dict) or not sd:
        raise CheckpointError(f"{path} holds no state dict")
    odd = [k for k in sd if not str(k).startswith(_PARTS)]
    if odd:
        raise CheckpointError(f"{path} does not have the official SAM/MedSAM key layout (keys start with "
                              f"image_encoder., prompt_encoder., mask_decoder.); e.g. '{odd[0]}'. Use the "
                              "original sam_vit_*.pth / medsam_vit_b.pth file")
    missing = [p for p in _PARTS if not any(str(k).startswith(p) for k in sd)]
    if missing:
        raise CheckpointError(f"{path} lacks the {', '.join(m.rstrip('.') for m in missing)} weights")
    return sd


def load_sam_backbone(kind: str, checkpoint, device: str = "cpu") -> SamBackbone:
    """Official SAM ViT-B/L/H or MedSAM from a checkpoint path or an already loaded state dict."""
    from segment_anything import sam_model_registry

    if kind not in SAM_KINDS:
        raise InputError(f"unknown SAM backbone '{kind}'; use one of {', '.join(SAM_KINDS)}")
    if checkpoint is None:
        raise InputError(f"the {kind} backbone needs its checkpoint file (it cannot be downloaded here)")
    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint)
        sd, tag = state_dict_of(load_checkpoint(path), path=path), sha256_file(path)[:8]
    else:
        path, sd, tag = "state dict", checkpoint, "mem"
    sd = check_sam_layout(state_dict_of(sd, path=path), path)
    sam = sam_model_registry[SAM_KINDS[kind]](checkpoint=None)
    load_state_into(sam, sd, path=f"{path} (as {kind})")
    sam.eval().to(device)
    enc = sam.image_encoder if kind == "medsam" else NormalizedEncoder(sam.image_encoder).to(device)
    return SamBackbone(enc, sam.prompt_encoder, sam.mask_decoder, sam.image_encoder.img_size, f"{kind}@{tag}")


def build_tiny_sam(seed: int = 0, device: str = "cpu") -> SamBackbone:
    """A tiny SAM (ViT 2x32 on 128 px, 16x16x32 embedding, 64 px masks); same seed, same weights."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc = ImageEncoderViT(img_size=128, patch_size=8, in_chans=3, embed_dim=32, depth=2, num_heads=2,
                              mlp_ratio=2.0, out_chans=32, qkv_bias=True,
                              norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=False,
                              window_size=0, global_attn_indexes=(1,))
        pe = PromptEncoder(embed_dim=32, image_embedding_size=(16, 16), input_image_size=(128, 128),
                           mask_in_chans=8)
        dec = MaskDecoder(num_multimask_outputs=3, transformer_dim=32, iou_head_depth=2, iou_head_hidden_dim=32,
                          transformer=TwoWayTransformer(depth=1, embedding_dim=32, mlp_dim=64, num_heads=2))
    for m in (enc, pe, dec):
        m.eval().to(device)
    return SamBackbone(enc, pe, dec, 128, "tiny_sam")


def base_name(name: str) -> str:
    """Backbone kind without the checkpoint tag ('sam_vit_b@1a2b3c4d' -> 'sam_vit_b')."""
    return name.split("@")[0]


def load_backbone(name: str, device: str = "cpu", checkpoint=None) -> SamBackbone:
    kind = base_name(name)
    if kind == "litemedsam":
        return load_litemedsam(device)
    if kind == "tiny_sam":
        return build_tiny_sam(device=device)
    if kind in SAM_KINDS:
        return load_sam_backbone(kind, checkpoint, device)
    raise InputError(f"unknown backbone '{name}'; use one of {', '.join(BACKBONES)}")
