"""Kept for scripts written against it: the encoder routes live in :mod:`medsegsuite.sam.encoder_routes`."""
from __future__ import annotations

from ..sam.encoder_routes import EXACT, ROUTES, routed_encoder, with_route

MODES = tuple(r for r in ROUTES if r != "auto")


def fast_backbone(backbone, mode: str):
    """A copy of ``backbone`` whose encoder takes route ``mode`` (see :func:`with_route`)."""
    return with_route(backbone, mode, "cpu")


__all__ = ["EXACT", "MODES", "fast_backbone", "routed_encoder"]
