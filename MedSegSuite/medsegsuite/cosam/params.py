"""The typed parameters of the CoSAM tasks, declared once (torch-free, so the CLI builds its options
from them without importing torch)."""
from __future__ import annotations

from ..engine.schema import Param
from ..sam.params import ENCODER_PARAM

DECODER_ROUTES = ("auto", "onnx", "fp32")  # cosam/decoder_routes.py (kept here torch-free)
BACKBONES = ("litemedsam", "sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam", "tiny_sam")
# One forced round follows a click (the user is never vetoed); each further round costs a prompted
# decoder pass and an error-decoder pass (benchmarks/click_latency.py measures it).
CLICK_ITERATIONS = 1
# Fill-in by interpolation between agreeing slices (cosam/pipeline.py extent_first): on LiTS-117 it
# encodes 55 of 128 slices and moves Dice by < 0.001 (benchmarks/cosam_speed.py measures it per run).
INTERPOLATE_DICE = 0.9

SEGMENT_PARAMS = [
    Param("model", "model", "liver", "CoSAM model: registry id (a checkpoint path only in-process)"),
    Param("structure", "str", None, "output segment name (default: the model's structure)"),
    Param("plane", "plane", "axial", "anatomical plane the model segments (from the direction matrix)"),
    Param("slices", "slices", "all", "slices of that plane: 'all', 'every:K', 'a:b', 'i,j,k' or a list"),
    Param("roi", "ints", None, "voxel box i0,i1,j0,j1,k0,k1 of the input grid (end exclusive)", length=6),
    Param("iterations", "int", 4, "correction rounds T (0 = coarse mask only)", range=(0, 16)),
    Param("k_points", "int", 5, "points generated from the error map per round", range=(0, 32)),
    Param("window", "floats", None, "intensity window lo,hi (default: the model card's)", length=2),
    Param("propagate", "bool", False, "let each slice's result seed its neighbour"),
    Param("backbone_checkpoint", "model", None, "official SAM/MedSAM checkpoint for models trained on those"),
    ENCODER_PARAM,
    Param("decoder", "choice", "auto", "decoder passes' route: auto (ONNX Runtime on a CPU, exact to float "
          "rounding; PyTorch on a GPU), onnx or fp32 (plain PyTorch, the fallback)", choices=DECODER_ROUTES),
    Param("extent_step", "int", 4, "find the structure's extent first with every K-th slice, then segment only "
          "the slices it spans (0 or 1: every selected slice)", range=(0, 64)),
    Param("interpolate", "float", INTERPOLATE_DICE, "within that extent, shape-interpolate the slices between two "
          "segmented slices whose masks agree at this Dice or more instead of encoding them (bisection; 0: segment "
          "every slice)", range=(0.0, 1.0)),
    Param("field_of_view", "choice", "auto", "model: show the model windows at the pixel size and field of view "
          "it was trained at (locate, then segment in one window); slice: the whole slice squeezed into its input; "
          "auto: model when the image's field of view is over 1.5x (or under 1/1.5 of) the model's",
          choices=("auto", "model", "slice")),
    Param("return_rounds", "bool", False, "also return every round's mask as <structure>_round<t>", cli=False),
    Param("session", "str", None, "keep the result in this interactive session (then cosam.click)", cli=False),
]


CLICK_PARAMS = [
    Param("session", "str", None, "the interactive session cosam.segment started", required=True),
    Param("iterations", "int", CLICK_ITERATIONS, "correction rounds after the click (the first is always "
          "accepted; more rounds cost two decoder passes each)", range=(0, 16)),
    Param("k_points", "int", None, "points generated per round (default: the session's)", range=(0, 32)),
]


TRAIN_PARAMS = [
    Param("structure", "str", "structure", "segment name the model learns"),
    Param("plane", "plane", "axial", "anatomical plane of the training slices"),
    Param("window", "floats", None, "intensity window lo,hi (default: CT -160,240 for CT-like data, else "
          "percentiles)", length=2),
    Param("split", "str", "interleaved:4", "'interleaved:K' (every K-th slice held out) or 'block:F' (train on "
          "the first fraction F of the slices, validate on a far block after a gap)"),
    Param("steps", "int", 300, "phase-1 steps (coarse head + error decoder)", range=(0, 1_000_000)),
    Param("refine_steps", "int", None, "phase-2 steps (refine head; default = steps)", range=(0, 1_000_000)),
    Param("backbone", "choice", "litemedsam", "SAM-family backbone (official ones need backbone_checkpoint)",
          choices=BACKBONES),
    Param("backbone_checkpoint", "model", None, "official SAM/MedSAM checkpoint file for those backbones"),
    Param("batch", "int", 8, "slices per step", range=(1, 1024)),
    Param("lr", "float", 1e-4, "learning rate (Adam, poly decay)", range=(0.0, 1.0)),
    Param("seed", "int", 0, "random seed"),
    Param("fold_steps", "int", 0, "steps of each of two throw-away coarse heads trained on one half of the "
          "training slices; their masks of the other half teach the error decoder real, large errors",
          range=(0, 1_000_000)),
    Param("error_steps", "int", 0, "phase-3 steps: the error decoder tuned on the refine head's own rounds",
          range=(0, 1_000_000)),
    Param("p_large", "float", 0.0, "share of large synthetic errors (cuts, leaks) in the error decoder's training",
          range=(0.0, 1.0)),
    Param("calibrate", "bool", True, "hold out calibration slices and calibrate the loop's acceptance rule on "
          "them (stored in the model card)"),
    Param("case_names", "strs", None, "a name per case (reported)", cli=False),
    Param("domains", "strs", None, "a domain tag per case (scanner/centre), reported per tag"),
    Param("embedding_cache", "path", None, "keep encoder outputs in this file to reuse across runs"),
]
