"""The typed parameters of the scribble tasks, in one torch-free place: the task schemas, the CLI
options (`engine.schema.add_cli_options`) and `train.settings_with` all come from here."""
from __future__ import annotations

from ..engine.schema import Param, Schema

METHODS = ("maco", "pce", "pce+cpl", "pce+mcm", "full")
# Training settings and their defaults (the MCM and loss-weight values are those of `mcm.DEFAULTS`
# and `losses.DEFAULT_WEIGHTS`; test_scribble checks they agree).
DEFAULT_SETTINGS = {
    "method": "maco", "plane": "axial", "iterations": 600, "batch": 8, "lr": 1e-2, "weight_decay": 1e-4,
    "max_size": 160, "tau": 8.0, "w_cpl": 0.5, "w_cpl_dice": 1.0, "w_mcm": 1.0, "mcm_rampup": 0.2, "mask_ratio": 0.5,
    "patch": 16, "seed": 0, "net": None,
    # scribble geometry used better (docs/results/scribble.md): 2.5D input, image-aware 3D pseudo labels,
    # MCM on the patches that carry scribbles (the method's masking), slice-consistent probabilities
    "context": 1, "cpl": "grow3d", "soft_mm": 2.0, "mcm_mask": "scribble", "smooth_slices": 1.0,
}
CPL_MODES = ("grow3d", "euclidean2d")
MCM_MASKS = ("scribble", "attention")
# Quick per-case mode (train on the current volume's scribbled slices, then segment it): the recipe the
# evaluation measures (`scribble.evaluation.TRAIN`), slices at 96 px. 200 iterations were faster but left
# small structures under-trained (docs/results/scribble.md); at 600 a 128³ case took 250-420 s per run at
# one torch thread on the shared 2-core machine (load ~4). Grow from seeds is the instant option.
QUICK_SETTINGS = {"iterations": 600, "batch": 8, "max_size": 96}

_SETTING_HELP = {
    "method": ("choice", "training method: MaCo (pCE + CPL + MCM), an ablation, or full (dense labels)",
               {"choices": METHODS}),
    "plane": ("plane", "slice plane the 2D network is trained on (and later segments in)", {}),
    "iterations": ("int", "training iterations", {"range": (1, 100000)}),
    "batch": ("int", "slices per iteration (drawn with replacement)", {"range": (1, 512)}),
    "lr": ("float", "AdamW learning rate", {"range": (1e-8, 10.0)}),
    "weight_decay": ("float", "AdamW weight decay", {"range": (0.0, 1.0)}),
    "max_size": ("int", "slices are shrunk so their longer side is at most this (px)", {"range": (16, 4096)}),
    "tau": ("float", "CPL decay length in mm", {"range": (0.01, 1000.0)}),
    "w_cpl": ("float", "weight of the continuous-pseudo-label loss", {"range": (0.0, 100.0)}),
    "w_cpl_dice": ("float", "weight of a soft Dice term on the pseudo labels, added to their CE (keeps small "
                   "structures from being outvoted by the background; 0 = CE only)", {"range": (0.0, 100.0)}),
    "w_mcm": ("float", "weight of the masked-context consistency loss", {"range": (0.0, 100.0)}),
    "mcm_rampup": ("float", "fraction of training over which the MCM weight ramps up", {"range": (0.0, 1.0)}),
    "mask_ratio": ("float", "MCM masking ratio", {"range": (0.0, 0.99)}),
    "patch": ("int", "MCM patch size in pixels", {"range": (1, 512)}),
    "seed": ("int", "random seed", {"range": (0, None)}),
    "context": ("int", "neighbouring slices on each side given to the 2D network as extra channels (2.5D)",
                {"range": (0, 4)}),
    "cpl": ("choice", "pseudo labels: grow3d = image-aware, on every slice: Grow from seeds' 3D labels softened over "
            "soft_mm at their borders; euclidean2d = the paper's decay of the 2D distance to the strokes, scribbled "
            "slices only", {"choices": CPL_MODES}),
    "soft_mm": ("float", "grow3d pseudo labels: softening length (mm) across the propagated borders", {"range": (0.1, 100.0)}),
    "mcm_mask": ("choice", "MCM masks: scribble = about mask_ratio of the patches that carry strokes (the method); "
                 "attention = where the model predicts foreground", {"choices": MCM_MASKS}),
    "smooth_slices": ("float", "3D consistency: Gaussian smoothing of class probabilities across slices (sigma in "
                      "slices, 0 = off) before the argmax", {"range": (0.0, 10.0)}),
    "net": ("dict", "network config overrides (name unet|basicunet, channels, strides, ...)", {"cli": False}),
}


def setting_params(base: dict | None = None) -> list[Param]:
    """One Param per training setting; ``base`` overrides defaults (the quick mode's)."""
    d = {**DEFAULT_SETTINGS, **(base or {})}
    return [Param(k, t, d[k], h, **kw) for k, (t, h, kw) in _SETTING_HELP.items()]


SETTING_NAMES = tuple(_SETTING_HELP)
SETTINGS_SCHEMA = Schema(setting_params())

CLASSES = Param("classes", "strs", None, "structure names (background excluded); label value c in the "
                "scribbles is classes[c-1]. Default: those of init_model")
UNLABELLED_P = Param("unlabelled", "int", 255, "value of unlabelled voxels in the scribble arrays", range=(0, 255),
                     cli=False)
INIT_MODEL = Param("init_model", "model", None, "continue training from this model (registry id; a checkpoint "
                   "path in-process only); or pass its bytes as the 'init_model' input", cli=False)
CASE_GEOMETRY = Param("case_geometry", "dict", None, "geometry of the extra training cases image_1, image_2, …: "
                      "{\"1\": {\"spacing\": [mm, mm, mm], \"direction\": 3×3 IJK-to-RAS}, …}; default 1 mm and "
                      "the LPS array order", cli=False)
KEEP_LARGEST = Param("keep_largest", "strs", None, "keep only the largest 3D connected piece of these classes "
                     "('all': every class)", cli=False)
MODEL = Param("model", "model", None, "scribble model: registry id (a checkpoint path in-process only); or pass "
              "its bytes as the 'model' input", cli=False)

TRAIN_PARAMS = [CLASSES, UNLABELLED_P, INIT_MODEL, CASE_GEOMETRY, *setting_params()]
QUICK_PARAMS = [CLASSES, UNLABELLED_P, INIT_MODEL, CASE_GEOMETRY, KEEP_LARGEST, *setting_params(QUICK_SETTINGS)]
SEGMENT_PARAMS = [MODEL, KEEP_LARGEST]
GROW_PARAMS = [CLASSES, UNLABELLED_P]
