"""The *generalised* (structure-agnostic) error decoder: correcting box-prompted SAM masks of any structure.

CoSAM's shipped models pair an error decoder with structure-specific heads (liver). The paper's generalised
decoder is one error decoder trained across the structures of several images, so that it can judge masks of
structures it never saw. Here it sits beside SAM's *own* frozen prompted decoder (no trained mask head at all):

- :class:`SamCorrector` is a :class:`~medsegsuite.cosam.model.CoSAM` whose only trained part is the
  :class:`~medsegsuite.cosam.heads.ErrorDecoder`; its ``prompted`` pass is SAM's own mask head (first mask
  token), so :func:`medsegsuite.cosam.loop.self_correct` runs on it unchanged, starting from a given mask
  (box-prompted or propagated SAM), with the card's calibrated :class:`~medsegsuite.cosam.loop.AcceptRule`.
- :func:`train_generalised` trains the error decoder on (embedding, mask with errors) -> error map, where the
  masks are box-prompted SAM's own predictions (boxes jittered as a user draws them) and the synthetic errors of
  :mod:`medsegsuite.cosam.perturb` (large ones included), over every structure of every training image.
- :func:`correct_masks` is the loop for any structure from start masks on slice resolution.

The checkpoint stores the error decoder only (architecture ``cosam-generalised/<backbone>``). None is shipped:
the one trained by ``scripts/generalised_decoder_eval.py`` did not generalise to held-out structures
(docs/results/generalised_decoder.md).
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn

from ..errors import CheckpointError, InputError
from ..models.checkpoints import load_checkpoint, save_checkpoint, state_dict_of
from ..models.loader import architecture
from .heads import ErrorDecoder
from .loop import AcceptRule, self_correct, to_slice
from .model import CoSAM
from .perturb import perturb
from .prompts import Prompt
from .train import error_loss, lowres_targets

ARCH_PREFIX = "cosam-generalised/"


class SamCorrector(CoSAM):
    """The generalised error decoder on a frozen SAM backbone; SAM's own mask head decodes the loop's prompts."""

    def __init__(self, backbone, error_width: int = 64, error_depth: int = 3):
        nn.Module.__init__(self)
        self.head_config = {}
        self.backbone_name = backbone.name
        self.image_size = backbone.image_size
        self.frozen = {"prompt_encoder": backbone.prompt_encoder, "mask_decoder": backbone.mask_decoder}
        self.error_decoder = ErrorDecoder(backbone.prompt_encoder.embed_dim, error_width, error_depth)
        self.card: dict = {}

    def coarse(self, emb):
        raise InputError("the generalised error decoder has no prompt-free pass: give it a start mask "
                         "(a box-prompted or propagated SAM mask)")

    def sam_head(self, tok, src):
        """SAM's own frozen mask head (output upscaling + the first mask token's hypernetwork)."""
        dec = self.mask_decoder
        up = dec.output_upscaling(src)
        w = dec.output_hypernetworks_mlps[0](tok)
        B, c, H, W = up.shape
        return (w[:, None, :] @ up.reshape(B, c, H * W)).reshape(B, 1, H, W)

    def prompted(self, emb, prompts: list[Prompt], mask=None):
        """SAM's logits (B, 1, S, S) for one prompt set per embedding (``mask``: the dense mask prompt)."""
        return self.sam_head(*self.prompted_features(emb, prompts, mask))

    def trained_state(self, half: bool = False) -> dict:
        sd = {}
        for k, v in self.state_dict().items():
            v = v.detach().cpu()
            sd[k] = v.half() if half and v.is_floating_point() else v
        return sd


def box_to_lowres(box, shape_hw, S: int) -> np.ndarray:
    """A box (x0, y0, x1, y1) in slice pixels -> the decoder's S x S grid (the slice is resized to a square)."""
    H, W = shape_hw
    return np.asarray(box, np.float32) * np.array([S / W, S / H, S / W, S / H], np.float32)


def jittered_box(mask2d: np.ndarray, rng, jitter: float = 0.05, min_px: float = 2.0):
    """The bounding box of a slice's reference mask with each edge moved by up to max(min_px, jitter x side)
    pixels (a user's box is never exact); None for an empty mask."""
    r, c = np.nonzero(mask2d)
    if not len(r):
        return None
    H, W = mask2d.shape
    x0, x1, y0, y1 = c.min(), c.max() + 1, r.min(), r.max() + 1
    dx, dy = max(min_px, jitter * (x1 - x0)), max(min_px, jitter * (y1 - y0))
    j = rng.uniform(-1, 1, 4) * np.array([dx, dy, dx, dy])
    b = np.array([x0, y0, x1, y1], np.float32) + j
    b[[0, 2]] = np.clip(b[[0, 2]], 0, W)
    b[[1, 3]] = np.clip(b[[1, 3]], 0, H)
    if b[2] - b[0] < 1 or b[3] - b[1] < 1:
        return np.array([x0, y0, x1, y1], np.float32)
    return b


@torch.inference_mode()
def box_sam(corrector: SamCorrector, emb, boxes_lowres, batch: int = 16) -> torch.Tensor:
    """Box-prompted SAM's low-res logits (N, 1, S, S), one box per embedding (what a user's box gives)."""
    out = []
    for s in range(0, len(boxes_lowres), batch):
        e = emb[s:s + batch].float()
        out.append(corrector.prompted(e, [Prompt(box=b) for b in boxes_lowres[s:s + batch]]))
    return torch.cat(out)


def train_generalised(corrector: SamCorrector, emb, slice_of, gts, starts, steps: int = 400, batch: int = 8,
                      lr: float = 3e-4, p_sam: float = 0.5, p_large: float = 0.3, alpha: float = 0.2,
                      seed: int = 0, log=print) -> dict:
    """Train the error decoder in place. Samples are (structure, slice) pairs: ``slice_of[n]`` indexes
    ``emb`` (slice embeddings, (M, C, h, w)), ``gts[n]`` is the reference on the decoder grid (S, S) bool and
    ``starts[n]`` a list of box-prompted SAM masks (S, S) bool of that pair. Each batch item is, with
    probability ``p_sam``, one of the SAM masks, else a synthetic corruption (:func:`perturb`) of the reference
    or of a SAM mask. Target = mask XOR reference; loss :func:`~medsegsuite.cosam.train.error_loss`."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ed = corrector.error_decoder
    opt = torch.optim.Adam(ed.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(1.0 - s / steps, 0.0) ** 0.9)
    ed.train()
    t0, hist = time.time(), []
    n = len(gts)
    for step in range(steps):
        pick = rng.choice(n, size=min(batch, n), replace=False)
        masks = []
        for i in pick:
            u = rng.random()
            if u < p_sam and starts[i]:
                masks.append(starts[i][rng.integers(len(starts[i]))])
            else:
                base = starts[i][rng.integers(len(starts[i]))] if starts[i] and rng.random() < 0.5 else gts[i]
                masks.append(perturb(base, rng, alpha, p_large=p_large))
        m = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
        g = torch.from_numpy(np.stack([gts[i] for i in pick]).astype(np.float32))[:, None]
        e = emb[[slice_of[i] for i in pick]].float()
        loss = error_loss(corrector.errors(e, m), (m != g).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist.append(loss.item())
        if log and (step % 25 == 0 or step == steps - 1):
            log(f"generalised error decoder step {step + 1}/{steps}  error loss {np.mean(hist[-25:]):.4f}  "
                f"({time.time() - t0:.0f} s)")
    ed.eval()
    return {"steps": steps, "batch": batch, "lr": lr, "p_sam": p_sam, "p_large": p_large, "alpha": alpha,
            "seed": seed, "samples": n, "seconds": round(time.time() - t0, 1),
            "final_loss": round(float(np.mean(hist[-50:])), 4)}


@torch.inference_mode()
def correct_masks(corrector: SamCorrector, emb, start_logits, rounds: int = 3, k_points: int = 5,
                  rule: AcceptRule | None = None, batch: int = 16):
    """The loop from given start logits (N, 1, S, S): [(final logits (N, 1, S, S), rounds accepted per slice,
    stop reasons)]. ``rule``: the card's calibrated rule by default."""
    finals, acc, stops = [], [], []
    for s in range(0, len(start_logits), batch):
        res = self_correct(corrector, emb[s:s + batch].float(), rounds, k_points,
                           start_logits=start_logits[s:s + batch], rule=rule)
        finals.append(res.rounds[-1])
        acc += res.accepted
        stops += res.stop
    return torch.cat(finals), acc, stops


def correct_slice_mask(corrector: SamCorrector, emb, mask2d: np.ndarray, rounds: int = 3, k_points: int = 5):
    """One slice's mask (H, W) bool corrected by the loop; the mask itself when no round is accepted
    (so an abstaining loop returns exactly what it was given). -> (mask, rounds accepted, stop reason)."""
    S = corrector.low_res
    start = lowres_targets(mask2d[None], S) * 2 - 1
    final, acc, stop = correct_masks(corrector, emb, start, rounds, k_points)
    if acc[0] == 0:
        return mask2d, 0, stop[0]
    return to_slice(final, mask2d.shape)[0], acc[0], stop[0]


# -- checkpoint ---------------------------------------------------------------------------------------

def save_generalised(corrector: SamCorrector, path, card: dict, half: bool = True):
    card = {**corrector.card, **card, "backbone": corrector.backbone_name,
            "error_decoder": corrector.error_decoder.config, "task": "cosam-generalised"}
    corrector.card = card
    return save_checkpoint(path, ARCH_PREFIX + corrector.backbone_name, corrector.trained_state(half), card)


def build_generalised(sd: dict, card: dict, backbone, path="checkpoint") -> SamCorrector:
    cfg = card.get("error_decoder", {})
    model = SamCorrector(backbone, cfg.get("width", 64), cfg.get("depth", 3))
    own = model.state_dict()
    bad = sorted(set(own) ^ set(sd)) + [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{path} does not fit a generalised error decoder on '{backbone.name}' (e.g. {bad[0]})")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    model.card = card
    return model.eval()


def load_generalised(path, backbone, sha256=None, size=None) -> SamCorrector:
    obj = load_checkpoint(path, sha256, size)
    arch = str(obj.get("architecture", ""))
    if not arch.startswith(ARCH_PREFIX):
        raise CheckpointError(f"{path} is not a generalised error decoder (architecture '{arch or 'unknown'}')")
    if arch[len(ARCH_PREFIX):].split("@")[0] != backbone.name.split("@")[0]:
        raise CheckpointError(f"{path} was trained on the '{arch[len(ARCH_PREFIX):]}' backbone, not '{backbone.name}'")
    return build_generalised(state_dict_of(obj, path=path), dict(obj.get("card") or {}), backbone, path)


@architecture(ARCH_PREFIX)
def _build_for_loader(state_dict, card, device, backbone=None, **_):
    """The model loader's builder for ``cosam-generalised/<backbone>`` checkpoints (build kw: ``backbone``)."""
    if backbone is None:
        raise CheckpointError("a generalised error decoder needs its SAM backbone to be built")
    return build_generalised(state_dict, card, backbone).to(device)
