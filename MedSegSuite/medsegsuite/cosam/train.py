"""Training CoSAM's trained parts on cached image embeddings (encoder, prompt encoder and the
decoder's transformer stay frozen).

Loss terms, for a batch of slices:
- coarse: prompt-free logits -> Ls(coarse, gt)
- error: a start mask corrupted by :func:`medsegsuite.cosam.perturb.perturb` (small and large
  errors); error logits vs target = mask XOR gt, weighted BCE with weight log((n_err + n_ok) / n_err)
  on error pixels -> Le. The start masks are errors like those the loop meets: the detached coarse
  mask, the reference, and (``fold_steps`` > 0) the coarse mask of a head trained only on the *other*
  contiguous half of the training slices (anatomy that head never saw); a last phase
  (``error_steps``) tunes the error decoder on the refine head's own rounds as well
- refined: the corrupted mask corrected by the (detached) predicted errors, turned into prompts
  exactly as the loop does (top-K error points, largest-component box, mask prompt) -> Ls(refined)
- guided: prompts from the ground truth (K points drawn from the true error pixels labelled by gt,
  the gt's largest-component box, the corrupted mask as mask prompt) -> Ls(guided)
Loss = Ls(coarse) + 1.0 Ls(refined) + 0.1 Ls(guided) + Le, Ls = Dice + BCE; Adam 1e-4, poly(0.9).
How the terms are optimised (two phases) is in :func:`train_cosam`.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from ..losses import dice_ce_loss
from ..metrics import slice_dice
from .loop import self_correct, to_slice
from .perturb import perturb
from .prompts import Prompt, build_prompts, largest_component_box


def seg_loss(logits, target):
    """Ls = Dice + BCE: the package's one Dice+CE loss, Dice per slice then averaged (smooth 1)."""
    return dice_ce_loss(logits, target, per_sample=True)


def error_loss(logits, target):
    """BCE with weight log((n_err + n_ok) / n_err) on error pixels (1 on correct pixels), per slice."""
    n = target[0].numel()
    n_err = target.flatten(1).sum(1).clamp_min(1.0)
    w_err = torch.log(n / n_err).clamp_min(1.0).view(-1, 1, 1, 1)
    w = torch.where(target > 0.5, w_err, torch.ones_like(target))
    return F.binary_cross_entropy_with_logits(logits, target, weight=w)


def _guided_prompt(gt: np.ndarray, pert: np.ndarray, k: int, rng) -> Prompt:
    wrong = np.argwhere(gt ^ pert)
    if len(wrong):
        pick = wrong[rng.choice(len(wrong), size=min(k, len(wrong)), replace=False)]
        pts = pick[:, ::-1].astype(np.float32)
        labels = gt[pick[:, 0], pick[:, 1]].astype(np.int64)
    else:
        pts, labels = np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    return Prompt(pts, labels, largest_component_box(gt))


def lowres_targets(masks2d: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W) bool -> (N, 1, S, S) float on the decoder grid (nearest)."""
    t = torch.from_numpy(np.asarray(masks2d, np.float32))[:, None]
    return F.interpolate(t, size=(size, size), mode="nearest")


def _perturbed_batch(model, emb, coarse_masks, gts, rng, alpha, foreign=None, p_large: float = 0.0):
    """(perturbed masks (B, S, S) bool, as float (B, 1, S, S)) from coarse masks or the references, or
    (where ``foreign`` holds one) a coarse mask from a head that never saw the slice (lightly perturbed)."""
    out = []
    for j in range(len(gts)):
        f = None if foreign is None else foreign[j]
        u = rng.random()
        if f is not None and u < 0.4:
            out.append(perturb(f, rng, alpha, p_identity=0.5, p_large=p_large / 2))
        else:
            out.append(perturb(coarse_masks[j] if rng.random() < 0.5 else gts[j], rng, alpha, p_large=p_large))
    pert = np.stack(out)
    return pert, torch.from_numpy(pert.astype(np.float32))[:, None]


def fold_coarse_masks(model, tok, src, gts, train_idx, steps: int, batch: int, lr: float, rng,
                      check=None) -> dict:
    """{slice: coarse mask (S, S) bool} from heads that never saw the slice: the training slices are
    cut into two contiguous halves, a fresh coarse head is trained on each (``steps`` steps) and
    predicts the other half. These are the large, real errors of anatomy the head has not seen."""
    from .model import MaskHead

    order = np.argsort(train_idx)
    halves = [order[:len(order) // 2], order[len(order) // 2:]]
    bank = {}
    for own, other in (halves, halves[::-1]):
        if not len(own) or not len(other):
            continue
        head = MaskHead(model.mask_decoder, **model.head_config)
        opt = torch.optim.Adam(head.parameters(), lr=lr)
        head.train()
        for _ in range(steps):
            if check:
                check()
            rows = rng.choice(own, size=min(batch, len(own)), replace=False)
            loss = seg_loss(head(tok[rows], src[rows].float()), gts[train_idx[rows]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            for s in range(0, len(other), 16):
                rows = other[s:s + 16]
                m = (head(tok[rows], src[rows].float()) > 0).numpy()[:, 0]
                bank.update({int(train_idx[r]): m[j] for j, r in enumerate(rows)})
    return bank


def _cat_features(feats):
    return torch.cat([f[0] for f in feats]), torch.cat([f[1] for f in feats])


@torch.no_grad()
def _features(fn, items, batch=8):
    """Run the frozen transformer over items in batches; keep (mask token, src fp16)."""
    out = []
    for s in range(0, len(items), batch):
        tok, src = fn(items[s:s + batch])
        out.append((tok, src.half()))
    return _cat_features(out)


def train_cosam(model, emb: torch.Tensor, masks2d, train_idx, steps: int = 300, batch: int = 8,
                lr: float = 1e-4, k_points: int = 5, alpha: float = 0.2, weights=(1.0, 1.0, 0.1, 1.0),
                seed: int = 0, refine_steps: int | None = None, variants: int = 2, log=print, progress=None,
                check_cancelled=None, fold_steps: int = 0, error_steps: int = 0, p_large: float = 0.0) -> dict:
    """Train in place. ``emb``: (N, C, h, w) embeddings of N slices; ``masks2d``: (N, H, W) references
    or (N, 1, S, S) targets already on the decoder grid (for cases of different slice sizes).

    Two phases that optimise the same loss terms as one joint run would (the prompts of the refined
    and guided branches are built from detached predictions, so no gradient crosses between the
    parameter groups): (1) coarse head + error decoder on Ls(coarse) + Le, with the frozen
    transformer's prompt-free output computed once; (2) refine head on Ls(refined) + 0.1 Ls(guided)
    over a pool of prompted transformer outputs built with the trained error decoder (``variants``
    corrupted masks per slice, plus one guided prompt set). ``fold_steps`` > 0 first trains two
    throw-away coarse heads on the two halves of the training slices (:func:`fold_coarse_masks`):
    their masks of the other half join the error decoder's and the refine head's training as real
    large errors. ``error_steps`` > 0 adds (3): the error decoder tuned on the refine head's own
    outputs, the fold masks and corrupted masks. ``p_large``: share of large synthetic errors."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    S = model.low_res
    if torch.is_tensor(masks2d) and masks2d.ndim == 4:
        gts = masks2d.float()
    else:
        gts = lowres_targets(masks2d, S)
    train_idx = np.asarray(list(train_idx))
    refine_steps = steps if refine_steps is None else refine_steps
    total = 2 * fold_steps + steps + refine_steps + error_steps
    check = check_cancelled or (lambda: None)
    wc, wr, wg, we = weights
    t0 = time.time()
    poly = lambda n: (lambda s: max(1.0 - s / n, 0.0) ** 0.9)  # noqa: E731

    # phase 1: coarse head + error decoder
    tok_c, src_c = _features(lambda ix: model.coarse_features(emb[ix].float()), list(train_idx))
    pos = {int(i): n for n, i in enumerate(train_idx)}
    bank = fold_coarse_masks(model, tok_c, src_c, gts, train_idx, fold_steps, batch, lr, rng, check) \
        if fold_steps > 0 else {}
    done0 = 2 * fold_steps
    if progress is not None and done0:
        progress(done0, total)
    foreign = (lambda ix: [bank.get(int(i)) for i in ix]) if bank else (lambda ix: None)  # noqa: E731
    params = list(model.coarse_head.parameters()) + list(model.error_decoder.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, poly(steps))
    model.train()
    hist = []
    for step in range(steps):
        check()
        idx = rng.choice(train_idx, size=min(batch, len(train_idx)), replace=False)
        rows = [pos[int(i)] for i in idx]
        e, g = emb[idx].float(), gts[idx]
        coarse = model.coarse_head(tok_c[rows], src_c[rows].float())
        lc = seg_loss(coarse, g)
        pert, pt = _perturbed_batch(model, e, (coarse.detach() > 0).numpy()[:, 0], g.numpy()[:, 0] > 0.5, rng, alpha,
                                    foreign(idx), p_large)
        le = error_loss(model.errors(e, pt), (pt != g).float())
        loss = wc * lc + we * le
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist.append([lc.item(), le.item()])
        if progress is not None:
            progress(done0 + step + 1, total)
        if log and (step % 25 == 0 or step == steps - 1):
            m = np.mean(hist[-25:], axis=0)
            log(f"phase 1 step {step + 1}/{steps}  coarse {m[0]:.3f}  error {m[1]:.3f}  ({time.time() - t0:.0f} s)")
    losses = {"coarse": round(float(np.mean([h[0] for h in hist[-25:]])), 4),
              "error": round(float(np.mean([h[1] for h in hist[-25:]])), 4)}
    del tok_c, src_c

    # phase 2: the refine head on prompts built as the loop builds them (and guided ones)
    model.eval()
    recipe = {"steps": steps, "refine_steps": refine_steps, "batch": batch, "lr": lr, "fold_steps": fold_steps,
              "error_steps": error_steps, "p_large": p_large, "fold_masks": len(bank)}
    if refine_steps <= 0:
        return {**recipe, "refine_steps": 0, "variants": 0, "seconds": round(time.time() - t0, 1),
                "final_losses": losses}
    with torch.no_grad():
        pool_r, pool_g, pool_idx = [], [], []
        for s in range(0, len(train_idx), batch):
            check()
            ix = train_idx[s:s + batch]
            e, g = emb[ix].float(), gts[ix]
            gn = g.numpy()[:, 0] > 0.5
            cm = (model.coarse(e) > 0).numpy()[:, 0]
            fm = foreign(ix)
            for v in range(variants + 1):
                pert, pt = _perturbed_batch(model, e, cm, gn, rng, alpha, fm, p_large)
                if v < variants:
                    if v == 0:  # the real coarse masks, as the loop's first round sees them
                        pert, pt = cm, torch.from_numpy(cm.astype(np.float32))[:, None]
                    elif v == 1 and fm is not None:  # a head that never saw the slice: large real errors
                        pert = np.stack([f if f is not None else c for f, c in zip(fm, cm)])
                        pt = torch.from_numpy(pert.astype(np.float32))[:, None]
                    ep = torch.sigmoid(model.errors(e, pt)).numpy()[:, 0]
                    corr = pert ^ (ep > 0.5)
                    prompts = [build_prompts(corr[j], ep[j], k_points) for j in range(len(ix))]
                    tok, src = model.prompted_features(e, prompts, torch.from_numpy(corr.astype(np.float32))[:, None])
                    pool_r.append((tok, src.half()))
                    pool_idx.append(ix)
                else:
                    gp = [_guided_prompt(gn[j], pert[j], k_points, rng) for j in range(len(ix))]
                    tok, src = model.prompted_features(e, gp, pt)
                    pool_g.append((tok, src.half()))
        tok_r, src_r = _cat_features(pool_r)
        tok_g, src_g = _cat_features(pool_g)
        idx_r = np.concatenate(pool_idx)
        idx_g = np.concatenate([train_idx[s:s + batch] for s in range(0, len(train_idx), batch)])
    opt = torch.optim.Adam(model.refine_head.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, poly(refine_steps))
    model.train()
    hist = []
    for step in range(refine_steps):
        check()
        rr = rng.choice(len(idx_r), size=min(batch, len(idx_r)), replace=False)
        rg = rng.choice(len(idx_g), size=min(max(batch // 2, 1), len(idx_g)), replace=False)
        lr_ = seg_loss(model.refine_head(tok_r[rr], src_r[rr].float()), gts[idx_r[rr]])
        lg = seg_loss(model.refine_head(tok_g[rg], src_g[rg].float()), gts[idx_g[rg]])
        loss = wr * lr_ + wg * lg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist.append([lr_.item(), lg.item()])
        if progress is not None:
            progress(done0 + steps + step + 1, total)
        if log and (step % 25 == 0 or step == refine_steps - 1):
            m = np.mean(hist[-25:], axis=0)
            log(f"phase 2 step {step + 1}/{refine_steps}  refined {m[0]:.3f}  guided {m[1]:.3f}  "
                f"({time.time() - t0:.0f} s)")
    if hist:
        losses.update({"refined": round(float(np.mean([h[0] for h in hist[-25:]])), 4),
                       "guided": round(float(np.mean([h[1] for h in hist[-25:]])), 4)})
    if error_steps > 0:
        losses["error_tuned"] = _tune_error_decoder(model, emb, gts, tok_r, src_r, idx_r, train_idx, foreign,
                                                    error_steps, batch, lr, alpha, p_large, rng, check, log,
                                                    lambda s_: progress(done0 + steps + refine_steps + s_, total)
                                                    if progress is not None else None)
    model.eval()
    return {**recipe, "variants": variants, "seconds": round(time.time() - t0, 1), "final_losses": losses}


def _tune_error_decoder(model, emb, gts, tok_r, src_r, idx_r, train_idx, foreign, steps, batch, lr, alpha,
                        p_large, rng, check, log, progress):
    """Phase 3: the error decoder on the masks the loop really shows it -- the refine head's own
    outputs on the pooled prompts (half of each batch), fold-head coarse masks and corrupted masks."""
    model.eval()
    with torch.no_grad():
        own = torch.cat([(model.refine_head(tok_r[s:s + 32], src_r[s:s + 32].float()) > 0).float()
                         for s in range(0, len(idx_r), 32)])
    opt = torch.optim.Adam(model.error_decoder.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(1.0 - s / steps, 0.0) ** 0.9)
    model.error_decoder.train()
    hist = []
    for step in range(steps):
        check()
        n_own = max(batch // 2, 1)
        rr = rng.choice(len(idx_r), size=min(n_own, len(idx_r)), replace=False)
        ix = rng.choice(train_idx, size=min(batch - len(rr), len(train_idx)), replace=False) if batch > len(rr) \
            else np.zeros(0, int)
        g = gts[ix]
        with torch.no_grad():
            cm = (model.coarse(emb[ix].float()) > 0).numpy()[:, 0] if len(ix) else np.zeros((0,) + g.shape[2:], bool)
        masks = own[rr]
        if len(ix):
            _, pt = _perturbed_batch(model, None, cm, g.numpy()[:, 0] > 0.5, rng, alpha, foreign(ix), p_large)
            masks = torch.cat([masks, pt])
        sl = np.concatenate([idx_r[rr], ix]).astype(int)
        le = error_loss(model.errors(emb[sl].float(), masks), (masks != gts[sl]).float())
        opt.zero_grad(set_to_none=True)
        le.backward()
        opt.step()
        sched.step()
        hist.append(le.item())
        if progress is not None:
            progress(step + 1)
        if log and (step % 25 == 0 or step == steps - 1):
            log(f"phase 3 step {step + 1}/{steps}  error {np.mean(hist[-25:]):.3f}")
    model.error_decoder.eval()
    return round(float(np.mean(hist[-25:])), 4)


@torch.inference_mode()
def evaluate(model, emb: torch.Tensor, masks2d: np.ndarray, idx, rounds: int = 4, k_points: int = 5,
             batch: int = 16, rule=None) -> dict:
    """Per-slice Dice of every round's mask (round 0 = coarse) on slices ``idx``; means too.
    ``rule``: the acceptance rule (default: the model card's)."""
    idx = list(idx)
    by_round = [[] for _ in range(rounds + 1)]
    runs, stops = [], []
    for s in range(0, len(idx), batch):
        chunk = idx[s:s + batch]
        res = self_correct(model, emb[chunk].float(), rounds, k_points, rule=rule)
        for t, lg in enumerate(res.rounds):
            pred = to_slice(lg, masks2d.shape[1:])
            by_round[t] += slice_dice(pred, np.asarray(masks2d)[chunk])
        runs += res.accepted
        stops += res.stop
    means = [round(float(np.mean(d)), 4) for d in by_round]
    return {"slices": idx, "dice_by_round": means, "coarse": means[0], "final": means[-1],
            "per_slice": {"coarse": [round(v, 4) for v in by_round[0]], "final": [round(v, 4) for v in by_round[-1]]},
            "rounds_accepted": runs, "stops": stops}
