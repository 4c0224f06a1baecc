"""LiTS-117 as DICOM: a CT Image Storage series (and its reference liver/tumour as an RTSTRUCT), so
every radiotherapy step can be tried on the bundled sample. LiTS-117 records no spacing: the series
carries the 2 mm isotropic spacing the project assumes everywhere (:data:`.lits.LITS_SPACING_MM`)."""
from __future__ import annotations

from pathlib import Path

from .lits import LITS_SPACING_MM, lits117_ct, lits117_segmentation

NOTE = (f"LiTS-117 crop; spacing {LITS_SPACING_MM[0]:g} mm isotropic and patient position HFS are assumed "
        "(the source records neither)")


def export_lits117_dicom(out, with_reference: bool = True) -> list[Path]:
    """Write OUT/LiTS-117_ct/CT0001.dcm ... (+ OUT/LiTS-117_RS.dcm, the reference as RTSTRUCT with TG-263
    names Liver and GTVp); returns the paths written."""
    from ..dicom.ct import write_ct_series
    from ..dicom.rtstruct import write_rtstruct
    from ..dicom.series import scan_series
    from ..rt import load_template

    out = Path(out)
    ct = write_ct_series(lits117_ct(), out / "LiTS-117_ct", patient_name="LiTS^117", patient_id="LiTS-117",
                         study_description="LiTS-117 sample (MedSegSuite)", series_description="LiTS-117 CT",
                         image_comments=NOTE)
    written = [ct]
    if with_reference:
        seg = lits117_segmentation()
        template = load_template("abdomen")
        template.rename(seg)
        structures = {n: template.find(n) for n in seg.masks}
        written.append(write_rtstruct(seg, scan_series(ct), out / "LiTS-117_RS.dcm", structures,
                                      label="LiTS-117 ref"))
    return written
