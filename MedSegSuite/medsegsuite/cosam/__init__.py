"""CoSAM — self-correcting SAM (arXiv 2411.10136): a prompt-free coarse mask, a learned error decoder
that says where the mask is wrong, and a loop that turns the corrected mask into prompts.

Modules: ``model`` (the trained parts and their checkpoint), ``heads`` (the error decoder),
``perturb`` (synthetic mask errors for training), ``prompts`` (points/box/mask from a corrected
mask), ``loop`` (the self-correcting loop), ``train`` (training on cached embeddings), ``backbones``
(official SAM / MedSAM / tiny SAM loaders), ``fast_encoder`` (faster CPU encoder routes),
``pipeline`` (slices of a plane through the slice engine), ``params`` (the tasks' typed parameters,
torch-free), ``tasks`` (backend tasks ``cosam.segment``, ``cosam.click``, ``cosam.train``), ``demo``
(the demo step). Importing the package does not import torch (the CLI reads ``params``).
"""

__all__ = ["CoSAM", "load_cosam", "save_cosam"]


def __getattr__(name):
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(name)
