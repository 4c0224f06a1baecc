"""Segmentation metrics (Dice, surface Dice, HD95, ASD), spacing-aware."""
from .overlap import dice

__all__ = ["dice"]
