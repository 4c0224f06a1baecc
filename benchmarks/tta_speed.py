"""Cost of test-time adaptation per volume against plain inference, measured side by side in one run.

For each source model, one volume (its held-out axial slices under a physical shift, so the gate lets
adaptation through) is segmented by plain batched inference (batch 16) and by each method's adapted pass
with its default per-volume schedule (`tta/options.py`), interleaved repeat by repeat so load changes hit
every method alike; the papers' image-by-image stream (batch 1) is timed too. Medians over repeats.

    .venv/bin/python benchmarks/tta_speed.py [--repeats 5] [--threads 1] [--device cpu]

Writes benchmarks/results/tta_speed.md (+ .json).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

CASES = {"liver-source": "dose-25%", "brain-source": "noise-7%"}
METHODS = ("tent", "vptta", "grata")


def volume_slices(model_id: str, device: str):
    from medsegsuite.tta.network import load_source_model, slice_engine, slices_from_volume
    from medsegsuite.tta.shifts import apply_shift, shifts_for
    from medsegsuite.tta.train import held_out, source_data

    src = load_source_model(model_id, device)
    vol, mask = source_data(model_id)
    v = apply_shift(vol, shifts_for(src.card["modality"])[CASES[model_id]], mask)
    idx = held_out(slice_engine(v, src.card).n_slices)
    x = slices_from_volume(v, src.card, idx)[0].to(device)
    return src, x


def timed(fn, device: str) -> float:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(model_id: str, repeats: int, device: str) -> dict:
    from medsegsuite.tta.options import check_options, schedule
    from medsegsuite.tta.pipeline import make_adapter, plain_logits, stream_logits

    src, x = volume_slices(model_id, device)
    runs = {"plain": [], **{m: [] for m in METHODS}, **{f"{m} (batch 1)": [] for m in ("vptta", "grata")}}
    for r in range(repeats + 1):  # the first round warms up (allocations, caches) and is dropped
        t = {"plain": timed(lambda: plain_logits(src.net, x), device)}
        for m in METHODS:
            o = check_options(m, None)
            s = schedule(o)
            a = make_adapter(m, src.net, src.size, o)
            t[m] = timed(lambda: stream_logits(a, x, batch=s["batch"], adapt_every=s["adapt_every"]), device)
        for m in ("vptta", "grata"):
            a = make_adapter(m, src.net, src.size)
            t[f"{m} (batch 1)"] = timed(lambda: stream_logits(a, x, batch=1, adapt_every=1), device)
        if r:
            for k, v in t.items():
                runs[k].append(v)
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"model": model_id, "shift": CASES[model_id], "slices": int(x.shape[0]), "median_s": med,
            "ratio": {k: v / med["plain"] for k, v in med.items()},
            "schedule": {m: schedule(check_options(m, None)) for m in METHODS}}


def main(argv=None):
    import torch

    from medsegsuite.provenance import provenance, write_json, write_markdown

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tta_speed.md"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.device.startswith("cuda"):
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    res = [measure(m, a.repeats, a.device) for m in CASES]
    prov = provenance(extra={"device": a.device})
    cols = ["plain", *METHODS, "vptta (batch 1)", "grata (batch 1)"]
    lines = ["# TTA cost per volume against plain inference (side by side, one run)", "",
             f"Medians over {a.repeats} interleaved repeats (after one warm-up round), device {a.device}, torch threads "
             f"{a.threads}; the machine may be shared (load average in the provenance). Plain: batched inference "
             "(batch 16). Methods: the adapted pass over the volume with their default per-volume schedule "
             f"(`tta/options.py`: batches of 16 slices; VPTTA's update on every {res[0]['schedule']['vptta']['adapt_every']}th "
             f"slice of a batch, GraTa's on every {res[0]['schedule']['grata']['adapt_every']}th, TENT on all), then the "
             "whole batch predicted. *batch 1*: the papers' image-by-image "
             "stream (adapt on each slice, then predict it). The `tta.adapt` task also runs one plain pass (the "
             "'(before)' segment and the safety gate): add 1.0 to a method's ratio for the task's total.", "",
             "| model (volume) | slices | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for r in res:
        lines.append(f"| {r['model']} ({r['shift']}, held-out slices) | {r['slices']} | "
                     + " | ".join(f"{r['median_s'][c]:.2f} s ({r['ratio'][c]:.2f}×)" for c in cols) + " |")
    lines += ["", "Target (issue 13, item 5): VPTTA and GraTa per volume ≤ 2.5× plain inference."]
    for r in res:
        for m in ("vptta", "grata"):
            ok = r["ratio"][m] <= 2.5
            lines.append(f"- {r['model']} {m}: {r['ratio'][m]:.2f}× ({'met' if ok else 'NOT met'}); image by image "
                         f"{r['ratio'][m + ' (batch 1)']:.2f}×")
    lines += ["", "Why not less: an adapted pass must at least predict every slice once (1×, plus the prompt FFT / "
              "batch-statistics overhead of its BN layers), and each update costs a forward and a backward pass "
              "over the slices it uses; the update's share is set by `adapt_every`."]
    out = write_markdown(a.out, "\n".join(lines), prov)
    write_json(Path(a.out).with_suffix(".json"), {"results": res}, prov)
    print("\n".join(lines))
    print("wrote", out)


if __name__ == "__main__":
    main()
