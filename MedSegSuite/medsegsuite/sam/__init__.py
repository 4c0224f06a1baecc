"""SAM-family backbones (LiteMedSAM, official SAM ViT-B/L/H, MedSAM) behind one small interface."""
from .backbones import SamBackbone, load_litemedsam, preprocess_slice

__all__ = ["SamBackbone", "load_litemedsam", "preprocess_slice"]
