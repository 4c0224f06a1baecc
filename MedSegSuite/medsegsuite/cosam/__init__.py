"""CoSAM — self-correcting SAM (arXiv 2411.10136): a prompt-free coarse mask, a learned error decoder
that says where the mask is wrong, and a loop that turns the corrected mask into prompts.

Modules: ``model`` (the trained parts and their checkpoint), ``heads`` (the error decoder),
``perturb`` (synthetic mask errors for training), ``prompts`` (points/box/mask from a corrected
mask), ``loop`` (the self-correcting loop), ``train`` (training on cached embeddings), ``backbones``
(official SAM / MedSAM / tiny SAM loaders), ``fast_encoder`` (faster CPU encoder routes),
``pipeline`` (volumes slice by slice), ``tasks``
(backend task ``cosam.segment``), ``demo`` (the demo step).
"""
from .model import CoSAM, load_cosam, save_cosam

__all__ = ["CoSAM", "load_cosam", "save_cosam"]
