"""*Pseudo* brain masks for real T1 MRs that have no manual brain label: deepbet (MIT, pretrained, weights in
its wheel), cached on disk per image fingerprint. A model's output, not ground truth: every result that
uses one says *pseudo*."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MissingDataError


def _cache_dir() -> Path:
    from ..sampledata.real import data_root

    return data_root() / "pseudo" / "deepbet-1.0.2"


def deepbet_mask(volume) -> np.ndarray:
    """deepbet's brain mask of ``volume`` on its grid (bool); ~35 s on 2 cores the first time, then cached."""
    import tempfile

    from ..io import read_image, write_image

    out = _cache_dir() / f"{volume.fingerprint()[:16]}.nii.gz"
    if not out.exists():
        try:
            from deepbet import BrainExtraction
        except ImportError as e:
            raise MissingDataError("pseudo brain masks need deepbet: pip install deepbet==1.0.2") from e
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as d:
            img = Path(d) / "t1.nii.gz"
            write_image(volume, img)
            BrainExtraction(no_gpu=True).run(str(img), mask_path=str(Path(d) / "mask.nii.gz"))
            m = read_image(Path(d) / "mask.nii.gz")
            write_image(m.with_array((m.array > 0).astype(np.uint8)), out)
    return read_image(out).array > 0
