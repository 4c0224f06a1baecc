"""The parts CoSAM trains on top of a frozen SAM-family backbone, and their checkpoint.

SAM's mask decoder is a two-way transformer (prompt tokens <-> image embedding) followed by a mask
head (two transposed convs upscaling the image side, and a hypernetwork MLP turning the mask
token into per-pixel weights). ``CoSAM`` keeps the backbone's prompt encoder and transformer
frozen and fine-tunes two copies of the mask head: ``coarse_head`` for the prompt-free pass (no
sparse prompt, the no-mask dense embedding) and ``refine_head`` for the loop's prompted passes
(points, box, mask). With the transformer frozen its prompt-free output is fixed per slice and is
computed once for training, which is what makes training feasible on a 2-core CPU (see
docs/cosam.md). The third trained part is the error decoder (:mod:`.heads`).

The image encoder is not part of the model: embeddings come from
:class:`medsegsuite.sam.predictor.SlicePredictor`'s cache, so the loop never re-encodes. A
checkpoint stores only the trained parts (the two heads and the error decoder) and a model card;
the frozen parts come from the backbone at load time.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from ..errors import CheckpointError
from ..models.checkpoints import load_checkpoint, save_checkpoint, state_dict_of
from ..models.loader import architecture
from .heads import ErrorDecoder
from .prompts import Prompt

ARCH_PREFIX = "cosam/"
TRAINED = ("coarse_head.", "refine_head.", "error_decoder.")


class Adapter(nn.Module):
    """A residual conv adapter on the transformer's image output (spatial context the frozen
    transformer cannot learn); its last conv starts at zero, so a new head behaves like SAM's."""

    def __init__(self, dim: int, width: int = 64, depth: int = 2):
        super().__init__()
        from .heads import _Block, _gn

        self.body = nn.Sequential(nn.Conv2d(dim, width, 1), _gn(width), nn.GELU(),
                                  *[_Block(width, 2 ** i) for i in range(depth)], nn.Conv2d(width, dim, 1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, src):
        return src + self.body(src)


class MaskHead(nn.Module):
    """SAM's mask head (output upscaling + the first mask token's hypernetwork MLP), copied from a
    decoder, behind a small residual adapter (``adapter_depth`` 0 = none)."""

    def __init__(self, decoder, adapter_width: int = 64, adapter_depth: int = 2):
        super().__init__()
        dim = decoder.transformer_dim
        self.adapter = Adapter(dim, adapter_width, adapter_depth) if adapter_depth > 0 else nn.Identity()
        self.upscaling = copy.deepcopy(decoder.output_upscaling)
        self.hyper = copy.deepcopy(decoder.output_hypernetworks_mlps[0])

    def forward(self, mask_token, src):
        up = self.upscaling(self.adapter(src))
        w = self.hyper(mask_token)
        B, c, H, W = up.shape
        return (w[:, None, :] @ up.reshape(B, c, H * W)).reshape(B, 1, H, W)


class CoSAM(nn.Module):
    # exact fast routes of the passes below ({name: callable}), set on a routed copy by
    # cosam/decoder_routes.py and used only when no gradient is needed (never in training)
    routes: dict = {}
    decoder_route = "fp32"

    def __init__(self, backbone, error_width: int = 64, error_depth: int = 3, adapter_width: int = 64,
                 adapter_depth: int = 2):
        super().__init__()
        self.head_config = {"adapter_width": adapter_width, "adapter_depth": adapter_depth}
        self.backbone_name = backbone.name
        self.image_size = backbone.image_size
        # frozen parts are shared with the backbone (never trained, never stored)
        self.frozen = {"prompt_encoder": backbone.prompt_encoder, "mask_decoder": backbone.mask_decoder}
        self.coarse_head = MaskHead(backbone.mask_decoder, adapter_width, adapter_depth)
        self.refine_head = MaskHead(backbone.mask_decoder, adapter_width, adapter_depth)
        self.error_decoder = ErrorDecoder(backbone.prompt_encoder.embed_dim, error_width, error_depth)
        self.card: dict = {}

    @property
    def prompt_encoder(self):
        return self.frozen["prompt_encoder"]

    @property
    def mask_decoder(self):
        return self.frozen["mask_decoder"]

    # -- geometry ----------------------------------------------------------------------------
    @property
    def low_res(self) -> int:
        """Side of the decoder's mask grid (= the prompt encoder's mask input size)."""
        return int(self.prompt_encoder.mask_input_size[0])

    @property
    def structure(self) -> str:
        return self.card.get("structure", "structure")

    # -- passes (all take image embeddings (B, C, h, w); masks/logits are (B, 1, S, S)) ----------
    def transformer(self, emb, sparse, dense, with_iou: bool = False):
        """The frozen two-way transformer, one prompt set per embedding -> (mask token (B, C), src (B, C, h, w))
        (+ SAM's own IoU prediction for its first mask token (B,) with ``with_iou``)."""
        dec = self.mask_decoder
        B = emb.shape[0]
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], 0)[None].expand(B, -1, -1)
        tokens = torch.cat([out_tokens, sparse], 1)
        pos = self.prompt_encoder.get_dense_pe().expand(B, -1, -1, -1)
        hs, src = dec.transformer(emb + dense, pos, tokens)
        out = hs[:, 1], src.transpose(1, 2).reshape(emb.shape)
        return (*out, dec.iou_prediction_head(hs[:, 0])[:, 0]) if with_iou else out

    def mask_score(self, emb, mask):
        """SAM's frozen IoU head on a mask described to it as a prompt (its largest component's box and
        the mask as the dense prompt): how well SAM thinks that prompt outlines one object. The loop's
        second judge, independent of the trained error decoder. mask (B, 1, S, S) in {0, 1} -> (B,)."""
        from .prompts import largest_component_box

        prompts = [Prompt(box=largest_component_box(m[0].numpy() > 0.5)) for m in mask.cpu()]
        if (r := self._route("score", emb)) is not None:
            sparse = self._sparse(prompts, emb.device)
            if sparse.shape[1]:
                return r(emb, sparse, mask)
        return self.transformer(emb, self._sparse(prompts, emb.device), self.mask_dense(mask), with_iou=True)[2]

    def coarse_features(self, emb):
        B = emb.shape[0]
        sparse = emb.new_zeros((B, 0, self.prompt_encoder.embed_dim))
        return self.transformer(emb, sparse, self._no_mask(B, emb))

    def prompted_features(self, emb, prompts: list[Prompt], mask=None):
        sparse = self._sparse(prompts, emb.device)
        dense = self.mask_dense(mask) if mask is not None else self._no_mask(emb.shape[0], emb)
        return self.transformer(emb, sparse, dense)

    def _no_mask(self, B, emb):
        return self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(B, -1, *emb.shape[-2:])

    def _route(self, name: str, emb):
        return self.routes.get(name) if self.routes and emb.device.type == "cpu" and not torch.is_grad_enabled() \
            else None

    def coarse(self, emb):
        """Prompt-free logits: no sparse prompt, the no-mask dense embedding."""
        if (r := self._route("coarse", emb)) is not None:
            return r(emb)
        return self.coarse_head(*self.coarse_features(emb))

    def mask_dense(self, mask):
        """The prompt encoder's dense embedding of a binary mask (given as +-1 logits)."""
        return self.prompt_encoder._embed_masks(mask * 2 - 1)

    def errors(self, emb, mask):
        """Per-pixel error logits of ``mask`` (B, 1, S, S) in {0, 1}."""
        if (r := self._route("errors", emb)) is not None:
            return r(emb, mask)
        return self.error_decoder(emb, self.mask_dense(mask), mask)

    def _sparse(self, prompts: list[Prompt], device):
        scale = self.image_size / self.low_res
        pe = self.prompt_encoder
        out = []
        for p in prompts:
            pts = None
            if len(p.points):
                c = torch.as_tensor(np.asarray(p.points, np.float32) * scale, device=device)[None]
                pts = (c, torch.as_tensor(np.asarray(p.labels, np.int64), device=device)[None])
            box = None if p.box is None else torch.as_tensor(np.asarray(p.box, np.float32) * scale,
                                                             device=device)[None]
            if pts is None and box is None:
                out.append(torch.zeros((1, 0, pe.embed_dim), device=device))
            else:
                out.append(pe(points=pts, boxes=box, masks=None)[0])
        n = max(s.shape[1] for s in out)
        pad = pe.not_a_point_embed.weight[None]  # what SAM itself pads with
        return torch.cat([torch.cat([s, pad.expand(1, n - s.shape[1], -1)], 1) for s in out], 0)

    def prompted(self, emb, prompts: list[Prompt], mask=None):
        """Logits for one prompt set per embedding; ``mask`` (B, 1, S, S) is the dense mask prompt."""
        if mask is not None and (r := self._route("prompted", emb)) is not None:
            sparse = self._sparse(prompts, emb.device)
            if sparse.shape[1]:  # (a prompt set with no point and no box stays on fp32)
                return r(emb, sparse, mask)
        return self.refine_head(*self.prompted_features(emb, prompts, mask))

    # -- checkpoint ----------------------------------------------------------------------------
    def trained_state(self, half: bool = False) -> dict:
        sd = {}
        for k, v in self.state_dict().items():
            v = v.detach().cpu()
            sd[k] = v.half() if half and v.is_floating_point() and v.numel() > 10_000 else v
        return sd


def save_cosam(model: CoSAM, path, card: dict, half: bool = False):
    card = {**model.card, **card, "backbone": model.backbone_name,
            "error_decoder": model.error_decoder.config,
            "mask_head": model.head_config, "task": "cosam"}
    model.card = card
    return save_checkpoint(path, ARCH_PREFIX + model.backbone_name, model.trained_state(half), card)


def read_cosam(path, sha256=None, size=None) -> tuple[dict, dict, str]:
    """(state dict, card, backbone name) of a CoSAM checkpoint, refusing anything else."""
    obj = load_checkpoint(path, sha256, size)
    arch = obj.get("architecture", "")
    if not str(arch).startswith(ARCH_PREFIX):
        raise CheckpointError(f"{path} is not a CoSAM model (architecture '{arch or 'unknown'}'); train one "
                              "with 'medsegsuite cosam train' or use --model liver")
    return state_dict_of(obj, path=path), dict(obj.get("card") or {}), arch[len(ARCH_PREFIX):]


def build_cosam(sd: dict, card: dict, backbone, path="checkpoint") -> CoSAM:
    """A CoSAM model on ``backbone`` from its trained state dict and card (shapes checked first)."""
    cfg = card.get("error_decoder", {})
    head = card.get("mask_head", {})
    model = CoSAM(backbone, cfg.get("width", 64), cfg.get("depth", 3), head.get("adapter_width", 64),
                  head.get("adapter_depth", 2))
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    bad = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or extra or bad:
        raise CheckpointError(f"{path} does not fit a CoSAM model on '{backbone.name}': "
                              f"{len(missing)} missing, {len(extra)} unexpected, {len(bad)} wrong-shape tensors "
                              f"(e.g. {(missing + extra + bad)[0]})")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    model.card = card
    return model.eval()


def load_cosam(path, backbone, sha256=None, size=None) -> CoSAM:
    """A CoSAM model on ``backbone`` from a checkpoint (checksum-verified, weights_only)."""
    sd, card, bb_name = read_cosam(path, sha256, size)
    if bb_name.split("@")[0] != backbone.name.split("@")[0]:
        raise CheckpointError(f"{path} was trained on the '{bb_name}' backbone, not '{backbone.name}'")
    return build_cosam(sd, card, backbone, path)


@architecture(ARCH_PREFIX)
def _build_for_loader(state_dict, card, device, backbone=None, **_):
    """The model loader's builder for every ``cosam/<backbone>`` checkpoint (build kw: ``backbone``,
    the SamBackbone the checkpoint was trained on; the loader caches per backbone name)."""
    if backbone is None:
        raise CheckpointError("a CoSAM checkpoint needs its backbone to be built")
    return build_cosam(state_dict, card, backbone).to(device)
