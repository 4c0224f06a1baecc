"""Writing an evaluation out: long-form CSV, per-centre summary, paired comparisons, box plots, markdown.

Files in the output folder:

* ``metrics.csv`` — one row per (method,) (centre,) case, structure: ``dice, nsd, hd95, asd``
  (``method`` only when several prediction sets, ``centre`` only when grouping by centre);
* ``summary.csv`` — per method x centre x structure x metric: n, n_undefined, mean, std, median, q1, q3
  (centre ``all`` pools every case; per-centre rows when grouping);
* ``comparisons.csv`` — paired Wilcoxon signed-rank tests with Holm correction (several methods);
* ``plots/box_<metric>.png`` (per structure) and ``plots/box_<metric>_by_centre.png``;
* ``report.md`` — provenance (machine, software, command; :mod:`medsegsuite.provenance`), settings,
  tolerances, a table per metric, significant differences, the plots.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..provenance import write_markdown
from .evaluation import METRICS, finite, fmt, summarise
from .stats import paired_comparisons

LABELS = {"dice": "DSC", "nsd": "NSD", "hd95": "HD95 (mm)", "asd": "ASD (mm)"}


def metric_columns(rows, group_by_centre: bool) -> list[str]:
    several = len({r["method"] for r in rows}) > 1
    return (["method"] if several else []) + (["centre"] if group_by_centre else []) + [
        "case", "structure", *METRICS]


def write_metrics_csv(rows, path, group_by_centre: bool = False) -> Path:
    cols = metric_columns(rows, group_by_centre)
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([fmt(r[c], 6) if c in METRICS else r[c] for c in cols])
    return path


def read_metrics_csv(path) -> list[dict]:
    """Rows back from a metrics.csv (missing method/centre columns become 'method'/'all')."""
    out = []
    with Path(path).open(newline="") as f:
        for r in csv.DictReader(f):
            row = {"method": r.get("method", "method"), "centre": r.get("centre", "all"), "case": r["case"],
                   "structure": r["structure"]}
            row.update({m: float(r[m]) for m in METRICS})
            out.append(row)
    return out


def summary_rows(rows, group_by_centre: bool = False) -> list[dict]:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    structures = list(dict.fromkeys(r["structure"] for r in rows))
    centres = ["all"] + (sorted({r["centre"] for r in rows} - {"all"}) if group_by_centre else [])
    out = []
    for m in methods:
        for c in centres:
            for s in structures + ["(all structures)"]:
                sel = [r for r in rows if r["method"] == m and (c == "all" or r["centre"] == c)
                       and (s == "(all structures)" or r["structure"] == s)]
                if not sel:
                    continue
                for metric in METRICS:
                    out.append({"method": m, "centre": c, "structure": s, "metric": metric,
                                **summarise(r[metric] for r in sel)})
    return out


def _write_dicts(dicts, path, cols) -> Path:
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for d in dicts:
            w.writerow([fmt(d[c], 6) if isinstance(d[c], float) else d[c] for c in cols])
    return path


def box_plots(rows, folder, group_by_centre: bool = False, metrics=METRICS) -> list[Path]:
    """Box plots per structure (a box per method) and, when grouping, per centre (one panel per structure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    structures = list(dict.fromkeys(r["structure"] for r in rows))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    written = []

    def boxes(ax, groups, values_of):
        width = 0.8 / len(methods)
        for mi, m in enumerate(methods):
            data = [values_of(m, g) for g in groups]
            pos = [gi + (mi - (len(methods) - 1) / 2) * width for gi in range(len(groups))]
            keep = [(d, p) for d, p in zip(data, pos) if len(d)]
            if keep:
                bp = ax.boxplot([d for d, _ in keep], positions=[p for _, p in keep], widths=width * 0.9,
                                patch_artist=True, manage_ticks=False, flierprops={"markersize": 2})
                for patch in bp["boxes"]:
                    patch.set_facecolor(colours[mi % len(colours)])
                    patch.set_alpha(0.6)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, rotation=60 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center",
                           fontsize=7)
        ax.set_xlim(-0.6, len(groups) - 0.4)

    def legend(ax):
        if len(methods) > 1:
            handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i % len(colours)], alpha=0.6) for i in range(len(methods))]
            ax.legend(handles, methods, loc="best", fontsize=7, framealpha=0.7)

    for metric in metrics:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(structures) * max(1, len(methods)) + 2), 3.4))
        boxes(ax, structures, lambda m, s: finite(r[metric] for r in rows if r["method"] == m and r["structure"] == s))
        ax.set_ylabel(LABELS[metric])
        ax.set_title(f"{LABELS[metric]} per structure", fontsize=9)
        legend(ax)
        fig.tight_layout()
        p = folder / f"box_{metric}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        written.append(p)
        if group_by_centre:
            centres = sorted({r["centre"] for r in rows})
            n = len(structures)
            ncol = min(4, n)
            nrow = math.ceil(n / ncol)
            fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.6 * nrow), squeeze=False)
            for i, s in enumerate(structures):
                ax = axes[i // ncol, i % ncol]
                boxes(ax, centres, lambda m, c: finite(r[metric] for r in rows if r["method"] == m
                                                        and r["structure"] == s and r["centre"] == c))
                ax.set_title(s, fontsize=8)
                ax.set_ylabel(LABELS[metric], fontsize=7)
            for j in range(n, nrow * ncol):
                axes[j // ncol, j % ncol].axis("off")
            legend(axes[0, 0])
            fig.suptitle(f"{LABELS[metric]} per centre", fontsize=9)
            fig.tight_layout()
            p = folder / f"box_{metric}_by_centre.png"
            fig.savefig(p, dpi=80)
            plt.close(fig)
            written.append(p)
    return written


def markdown_report(rows, summary, comparisons, plots, settings: dict, out: Path) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    structures = list(dict.fromkeys(r["structure"] for r in rows))
    lines = ["# Segmentation evaluation", ""]
    for k, v in settings.items():
        lines.append(f"- **{k}**: {v}")
    lines += ["", f"{len({r['case'] for r in rows})} case(s), {len(structures)} structure(s), "
              f"{len(methods)} method(s). NSD at each structure's tolerance; HD95 and ASD in mm "
              "(surfel-area weighted, DeepMind surface-distance method). Cells: mean ± sd for DSC/NSD, "
              "median [q1, q3] for distances; `n/a` counts cases where exactly one mask was empty "
              "(distance undefined).", ""]
    index = {(d["method"], d["centre"], d["structure"], d["metric"]): d for d in summary}
    for metric in METRICS:
        lines += [f"## {LABELS[metric]}", "", "| structure | " + " | ".join(methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for s in structures + ["(all structures)"]:
            cells = []
            for m in methods:
                d = index.get((m, "all", s, metric))
                if d is None:
                    cells.append("")
                    continue
                if metric in ("dice", "nsd"):
                    cell = fmt(d["mean"], 3) + (f" ± {fmt(d['std'], 3)}" if np.isfinite(d["std"]) else "")
                else:
                    cell = f"{fmt(d['median'], 2)} [{fmt(d['q1'], 2)}, {fmt(d['q3'], 2)}]"
                if d["n_undefined"]:
                    cell += f" (n/a {d['n_undefined']})"
                cells.append(cell)
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
    centres = sorted({d["centre"] for d in summary} - {"all"})
    if centres:
        lines += ["## DSC per centre (mean over cases, all structures)", "",
                  "| centre | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for c in centres:
            cells = [fmt(index[(m, c, "(all structures)", "dice")]["mean"], 3)
                     if (m, c, "(all structures)", "dice") in index else "" for m in methods]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    if comparisons:
        sig = [c for c in comparisons if c["better"] and c["centre"] == "all"]
        lines += ["## Paired comparisons", "",
                  "Two-sided Wilcoxon signed-rank test per metric and structure over cases both methods "
                  "scored, Holm-corrected across method pairs; significant at p_holm < 0.05. All tests: "
                  "`comparisons.csv`.", ""]
        if sig:
            lines += ["| metric | structure | better | than | median diff | p_holm |", "|---|---|---|---|---|---|"]
            for c in sig:
                worse = c["method_b"] if c["better"] == c["method_a"] else c["method_a"]
                lines.append(f"| {c['metric']} | {c['structure']} | {c['better']} | {worse} | "
                             f"{fmt(c['median_diff'], 4)} | {c['p_holm']:.3g} |")
        else:
            lines.append("No difference is significant after Holm correction.")
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in plots] + [""]
    return "\n".join(lines)


def write_report(rows, out, settings: dict | None = None, group_by_centre: bool = False,
                 plots: bool = True) -> dict[str, Path]:
    """Write every output of an evaluation into folder ``out``; returns {kind: path}."""
    if not rows:
        from ..errors import InputError

        raise InputError("nothing was evaluated: no case had both a prediction and a reference")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"metrics": write_metrics_csv(rows, out / "metrics.csv", group_by_centre)}
    summary = summary_rows(rows, group_by_centre)
    files["summary"] = _write_dicts(summary, out / "summary.csv",
                                    ["method", "centre", "structure", "metric", "n", "n_undefined", "mean", "std",
                                     "median", "q1", "q3"])
    comparisons = paired_comparisons(rows, group_by_centre=group_by_centre)
    if comparisons:
        files["comparisons"] = _write_dicts(comparisons, out / "comparisons.csv",
                                            ["metric", "structure", "centre", "method_a", "method_b", "n_pairs",
                                             "median_a", "median_b", "median_diff", "mean_diff", "statistic", "p",
                                             "p_holm", "better"])
    pngs = box_plots(rows, out / "plots", group_by_centre) if plots else []
    for p in pngs:
        files[p.stem] = p
    md = markdown_report(rows, summary, comparisons, pngs, dict(settings or {}), out)
    files["report"] = write_markdown(out / "report.md", md)
    return files


__all__ = ["write_report", "write_metrics_csv", "read_metrics_csv", "summary_rows", "box_plots",
           "markdown_report"]
