"""``medsegsuite export``: a segmentation on a DICOM series' grid -> RT Structure Set or DICOM SEG.

The segmentation is any `.seg.nrrd` or labelmap (or a structure set started with ``medsegsuite
structures init``, whose template gives each ROI its TG-263 name, colour, code and interpreted
type, and whose approvals are recorded). See docs/radiotherapy.md.
"""
from __future__ import annotations

from pathlib import Path

FORMATS = ("rtstruct", "dicom-seg")


def register(sub):
    p = sub.add_parser("export", help="write a segmentation as a DICOM RT Structure Set or DICOM SEG",
                       description="Writes one ROI (RTSTRUCT) or segment (SEG) per structure of --seg, referencing "
                       "the images of --reference (the CT series the segmentation lies on). See docs/radiotherapy.md.")
    p.add_argument("--seg", required=True, metavar="SEG", help=".seg.nrrd or labelmap on the series' grid")
    p.add_argument("--reference", required=True, metavar="DICOM_DIR",
                   help="the image series (folder, or FOLDER#SERIES_UID when it holds several)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, metavar="FILE", help="output file (.dcm)")
    p.add_argument("--template", metavar="NAME|FILE",
                   help="structure template for names, colours and codes (default: the structure set's own, if any)")
    p.add_argument("--skip-empty", action="store_true", help="leave empty structures out instead of refusing")
    p.add_argument("--label", default="MedSegSuite", help="structure set label (RTSTRUCT)")
    p.set_defaults(func=run)


def load_for_export(seg_path, template_spec=None):
    """(Segmentation, {name: Structure}, approver or None) for a segmentation file."""
    from ..io import read_segmentation
    from ..rt import StructureSet, load_template
    from ..rt.structures import SIDE_SUFFIX

    approver = None
    if Path(str(seg_path) + SIDE_SUFFIX).exists() and not template_spec:
        ss = StructureSet.load(seg_path)
        seg, template = ss.seg, ss.template
        drawn = [n for n, m in seg.masks.items() if m.any()]
        if drawn and all(ss.state(n) == "approved" for n in drawn):
            approver = ss.status[drawn[-1]]["history"][-1]["by"]
    else:
        seg = read_segmentation(seg_path)
        template = load_template(template_spec) if template_spec else None
        if template is not None:
            template.rename(seg)
    structures = {n: template.find(n) for n in seg.masks} if template is not None else {}
    return seg, {n: s for n, s in structures.items() if s is not None}, approver


def run(args) -> int:
    from ..dicom.rtstruct import write_rtstruct
    from ..dicom.seg import write_dicom_seg
    from ..dicom.series import scan_series

    reference = scan_series(args.reference)
    seg, structures, approver = load_for_export(args.seg, args.template)
    if args.format == "rtstruct":
        out = write_rtstruct(seg, reference, args.out, structures, label=args.label, skip_empty=args.skip_empty,
                             approved_by=approver)
    else:
        out = write_dicom_seg(seg, reference, args.out, structures, skip_empty=args.skip_empty)
    names = [n for n, m in seg.masks.items() if m.any()]
    print(f"wrote {out}: {len(names)} structure(s) {names} on series {reference.uid}"
          + (f"; approved by {approver}" if approver else ""))
    return 0
