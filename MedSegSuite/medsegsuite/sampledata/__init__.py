"""Real sample data: LiTS case 117 (CT, liver + tumour) and Colin27 T1 with the AAL atlas.

Neither is copied into this repository: LiTS-117 is read from the installed
``liver-ct-segmentation-package`` (its images carry the LiTS terms), Colin27/AAL from Debian's
``mricron-data``.
"""
from .lits import (LITS_SPACING_MM, lits117, lits117_ct, lits117_labels, lits117_segmentation,
                   lits117_paths)
from .colin import colin27, colin27_t1, aal_labels, aal_names, colin27_brain_mask, colin_paths

__all__ = ["LITS_SPACING_MM", "lits117", "lits117_ct", "lits117_labels", "lits117_segmentation",
           "lits117_paths", "colin27", "colin27_t1", "aal_labels", "aal_names", "colin27_brain_mask",
           "colin_paths"]
