"""The safety gate: keep the source model's prediction of a volume unless adaptation can be trusted.

Test-time adaptation has no labels to check itself against, and on a case the source model already
handles it can only lose (issue 17: a real T1 of another scanner lost 0.16 Dice to per-image VPTTA).
So each volume's adapted prediction passes label-free checks, each a number a user can read:

* **feature shift** — how far the volume's BN-layer feature statistics (per-slice channel means and
  standard deviations, averaged over the volume, measured in the plain pass) lie from the source
  model's running statistics: |μ̄ − μ_s|/σ_s + |log σ̄/σ_s|, averaged over channels and layers. A volume
  that looks like the source data (shift below ``min_shift``) has nothing to adapt to: keep the source.
* **structure kept** — an adapted mask that is empty where the source found the structure is refused.
* **agreement** — Dice between the adapted and the source masks. When the two masks are of similar size
  (the source's at least ``comparable_size`` of the adapted one) but agree less than ``min_agreement``,
  adaptation moved the structure rather than recovered it: keep the source. (When the source found
  little or nothing, as under a strong shift, disagreement is what adaptation is for.)

The mean entropy before and after is reported with the decision, not used by it: under a strong shift
the source is often *confidently* empty, so a rise in entropy after adaptation goes with a large gain
(measured on the SYNTHETIC centres of the previous evaluation, where the thresholds were also chosen:
source volumes shift 0.11-0.12, shifted ones 0.15-1.1; never tuned on the physical shifts or real cases
the results report). The thresholds are in `GATE` and docs/tta.md.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

GATE = {
    "min_shift": 0.2,         # below: the volume looks like the source data; keep the source prediction
    "min_agreement": 0.5,     # adapted vs source Dice below this, with masks of comparable size: keep the source
    "comparable_size": 0.5,   # "comparable": the source mask holds at least this fraction of the adapted one
}


@dataclass
class GateDecision:
    accepted: bool
    reason: str
    signals: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class FeatureStatistics:
    """Forward hooks on every BN layer of a network in eval mode: the per-slice channel means and
    variances of each BN input, summed over the slices seen, to compare with the running statistics."""

    def __init__(self, net):
        from .common import bn_layers

        self.layers = [m for m in bn_layers(net) if m.running_mean is not None]
        self.sums = [None] * len(self.layers)
        self.count = 0
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]

    def _hook(self, i):
        def hook(module, inputs, output):
            x = inputs[0].detach().float()
            m = x.mean((2, 3))
            v = x.var((2, 3), unbiased=False)
            s = (m.sum(0), v.sum(0))
            self.sums[i] = s if self.sums[i] is None else (self.sums[i][0] + s[0], self.sums[i][1] + s[1])
            if i == 0:
                self.count += x.shape[0]
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def shift(self) -> float:
        """Mean over layers and channels of |μ̄ − μ_s| / σ_s + |log(σ̄ / σ_s)| (0 = the source's statistics)."""
        if not self.count:
            return float("nan")
        vals = []
        for m, s in zip(self.layers, self.sums):
            mu, var = (t / self.count for t in s)
            rm, rv = m.running_mean.float(), m.running_var.float().clamp_min(1e-8)
            z = (mu - rm).abs() / rv.sqrt()
            r = 0.5 * (var.clamp_min(1e-8) / rv).log().abs()
            vals.append(float((z + r).mean()))
        return float(np.mean(vals))


def decide(shift: float, entropy_before: float, entropy_after: float, agreement: float,
           foreground_adapted: float, foreground_source: float, thresholds: dict | None = None) -> GateDecision:
    """Accept the adapted prediction or keep the source one, with the reason in words.
    ``foreground_*``: the fraction of the volume's voxels each mask holds."""
    t = {**GATE, **(thresholds or {})}
    sig = {"feature_shift": float(shift), "entropy_before": float(entropy_before),
           "entropy_after": float(entropy_after), "entropy_change": float(entropy_after - entropy_before),
           "agreement_dice": float(agreement), "foreground_adapted": float(foreground_adapted),
           "foreground_source": float(foreground_source)}
    if not np.isfinite(shift) or shift < t["min_shift"]:
        reason = (f"kept the source prediction: the volume's feature statistics are close to the source's "
                  f"(shift {shift:.2f} < {t['min_shift']:g}), so there is nothing to adapt to")
        return GateDecision(False, reason, sig, t)
    if foreground_adapted == 0 and foreground_source > 0:
        return GateDecision(False, "kept the source prediction: the adapted mask is empty where the source "
                            "found the structure", sig, t)
    if agreement < t["min_agreement"] and foreground_source >= t["comparable_size"] * foreground_adapted:
        reason = (f"kept the source prediction: the adapted mask disagrees with the source's (agreement Dice "
                  f"{agreement:.2f} < {t['min_agreement']:g}) although both are of similar size: adaptation "
                  "moved the structure rather than recovered it")
        return GateDecision(False, reason, sig, t)
    reason = (f"adapted prediction used: feature shift {shift:.2f} ≥ {t['min_shift']:g}, agreement with the "
              f"source {agreement:.2f}, mean entropy {entropy_before:.3f} -> {entropy_after:.3f}")
    return GateDecision(True, reason, sig, t)
