"""The generalised (structure-agnostic) error decoder: train across structures of three real CTs, report it on
held-out structures (box-prompted LiteMedSAM alone vs corrected), and inside box -> propagation.

    PYTHONPATH=MedSegSuite .venv/bin/python scripts/generalised_decoder_eval.py [--steps 400] [--out docs/results]
        [--ship Resources/Models/cosam_generalised.pt] [--work /tmp/medsegsuite-generalised]

Data (real, local): LiTS-117 (manual liver and tumour), TotalSegmentator's two reference CTs (*pseudo* labels,
TotalSegmentator's own output). Slice embeddings are computed once and cached under ``--work``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

CT_WINDOW = [-160.0, 240.0]
CASES = ("lits-117", "ts-ct-native", "ts-ct-contrast")
# structures never used to train the decoder nor to calibrate its rule (reported)
TEST = {"spleen", "tumour"}
# structures never used to train the decoder, used to calibrate the acceptance rule
CALIB = {"kidney_left", "kidney_right", "pancreas", "gallbladder"}
MIN_LOWRES_PX = 60  # a structure's slice counts when its reference covers this many decoder-grid pixels


def log(*a):
    print(*a, flush=True)


def load_case(cid):
    from medsegsuite.sampledata import lits117
    from medsegsuite.sampledata.real import real_case

    if cid == "lits-117":
        ct, ref = lits117()
        return ct, {"liver": ref.masks["liver"], "tumour": ref.masks["tumour"]}, "manual"
    c = real_case(cid)
    return c.image, c.labels, c.label_kind


def embeddings(cid, image, work: Path, backbone):
    """(M, C, h, w) fp16 embeddings of every axial slice of ``image`` (cached in ``work``)."""
    import torch

    from medsegsuite.sam.predictor import SlicePredictor
    from medsegsuite.volume import SliceEngine

    f = work / f"emb_{cid}.pt"
    if f.is_file():
        return torch.load(f, weights_only=True)
    eng = SliceEngine.for_volume(image, "axial")
    pred = SlicePredictor(backbone, "cpu")
    t = time.time()
    got = pred.embeddings(image.array, cid, eng, list(range(eng.n_slices)), CT_WINDOW,
                          progress=lambda d, n: log(f"  {cid}: encoded {d}/{n}"))
    emb = torch.cat([got[k] for k in range(eng.n_slices)]).half()
    log(f"{cid}: {eng.n_slices} slices encoded in {time.time() - t:.0f} s ({backbone.encoder_route})")
    work.mkdir(parents=True, exist_ok=True)
    torch.save(emb, f)
    return emb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/medsegsuite-generalised")
    ap.add_argument("--stage", default="all", choices=("encode", "all"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from medsegsuite.sam.backbones import load_litemedsam
    from medsegsuite.sam.encoder_routes import with_route

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    bb = load_litemedsam("cpu")
    enc = with_route(bb, "auto", "cpu")
    for cid in CASES:
        image, labels, kind = load_case(cid)
        embeddings(cid, image, work, enc)


if __name__ == "__main__":
    main()
