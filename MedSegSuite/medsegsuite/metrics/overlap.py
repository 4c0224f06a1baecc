"""Volume-overlap metrics."""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def dice(pred, ref) -> float:
    """Dice similarity coefficient of two binary masks; both empty -> 1.0, one empty -> 0.0."""
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    if p.shape != r.shape:
        raise InputError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    s = int(p.sum()) + int(r.sum())
    if s == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & r)) / s
