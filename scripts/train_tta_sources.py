"""Rebuild the shipped TTA demo source models into Resources/Models (a few minutes on 2 CPU cores):
    .venv/bin/python scripts/train_tta_sources.py [--only liver-source] [--epochs N]
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSegSuite"))

from medsegsuite.tta.train import SOURCES, train_source, write_registry  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(SOURCES), help="which models (default: all)")
    ap.add_argument("--epochs", type=int, help="override the epochs of each recipe")
    ap.add_argument("--out", default=str(ROOT / "Resources" / "Models"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    for mid in a.only or SOURCES:
        print("wrote", train_source(mid, a.out, a.epochs))
    print("wrote", write_registry(a.out))
