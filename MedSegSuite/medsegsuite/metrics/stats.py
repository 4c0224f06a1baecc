"""Paired comparisons between methods: Wilcoxon signed-rank tests with Holm correction.

Touchstone compares every pair of methods per organ on per-case scores with a Wilcoxon signed-rank
test and corrects for the many pairs with Holm's step-down method; this does the same. Pairs are
the cases both methods scored with a defined value (NaN distances of empty masks drop out).
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from .evaluation import HIGHER_IS_BETTER, METRICS


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.nonzero(np.isfinite(p))[0]
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def wilcoxon(a, b) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired samples -> (statistic, p).

    All-zero differences give p = 1 (no evidence of a difference); fewer than 2 pairs give NaN.
    """
    from scipy.stats import wilcoxon as _wilcoxon

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2:
        return float("nan"), float("nan")
    if np.all(d == 0):
        return 0.0, 1.0
    res = _wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def paired_comparisons(rows, metrics=METRICS, group_by_centre: bool = False, alpha: float = 0.05) -> list[dict]:
    """Every pair of methods, per metric x structure (x centre), Holm-corrected within each family.

    A family is one (metric, structure, centre): the method pairs compared on the same scores. Rows
    are long-form dicts with ``method, centre, case, structure`` and the metric columns. Returns dicts
    with the pair, number of paired cases, medians, median and mean difference (a - b), statistic, p, p_holm,
    and ``better`` (the method favoured at ``alpha`` after correction, or '').
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    if len(methods) < 2:
        return []
    structures = list(dict.fromkeys(r["structure"] for r in rows))
    centres = ["all"] + (sorted({r["centre"] for r in rows} - {"all"}) if group_by_centre else [])
    index = {}
    for r in rows:
        for c in {"all", r["centre"]}:
            index.setdefault((r["method"], r["structure"], c), {})[r["case"]] = r
    out = []
    for metric in metrics:
        for s in structures:
            for c in centres:
                family = []
                for a, b in combinations(methods, 2):
                    ra, rb = index.get((a, s, c), {}), index.get((b, s, c), {})
                    pairs = [(ra[k][metric], rb[k][metric]) for k in sorted(set(ra) & set(rb))
                             if np.isfinite(ra[k][metric]) and np.isfinite(rb[k][metric])]
                    x = np.asarray([p[0] for p in pairs], dtype=float)
                    y = np.asarray([p[1] for p in pairs], dtype=float)
                    stat, p = wilcoxon(x, y) if len(pairs) else (float("nan"), float("nan"))
                    family.append({"metric": metric, "structure": s, "centre": c, "method_a": a, "method_b": b,
                                   "n_pairs": len(pairs),
                                   "median_a": float(np.median(x)) if len(x) else float("nan"),
                                   "median_b": float(np.median(y)) if len(y) else float("nan"),
                                   "median_diff": float(np.median(x - y)) if len(x) else float("nan"),
                                   "mean_diff": float(np.mean(x - y)) if len(x) else float("nan"),
                                   "statistic": stat, "p": p})
                adj = holm([f["p"] for f in family])
                for f, q in zip(family, adj):
                    f["p_holm"] = float(q)
                    better = ""
                    diff = f["median_diff"] if f["median_diff"] != 0 else f["mean_diff"]
                    if np.isfinite(q) and q < alpha and diff != 0:
                        a_wins = (diff > 0) == HIGHER_IS_BETTER[metric]
                        better = f["method_a"] if a_wins else f["method_b"]
                    f["better"] = better
                out += family
    return out
