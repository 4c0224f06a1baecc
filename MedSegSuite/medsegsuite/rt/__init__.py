"""Radiotherapy contouring: structure templates (TG-263 names, colours, codes), structure sets with a
review status per structure (approved structures are locked against AI writes), and contouring any
structure from one box by propagating LiteMedSAM through the neighbouring slices."""
from .structures import STATUSES, StructureSet
from .templates import Structure, Template, available_templates, load_template

__all__ = ["STATUSES", "StructureSet", "Structure", "Template", "available_templates", "load_template"]
