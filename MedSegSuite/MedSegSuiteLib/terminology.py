"""Standard terminology (SNOMED CT codes) for the structures MedSegSuite writes, in the string form
Slicer stores in a segment's ``TerminologyEntry`` tag, so exports (DICOM SEG, RT planning) carry codes
and not only names.

Each entry names a context that really holds its category and type in Slicer's bundled terminologies
(checked at v5.8.1 and v5.10.0 against ``Testing/Data/slicer_qt_api.json``): organs from the General
Anatomy list; tumour as *Neoplasm* from the DICOM master list (the General Anatomy list has no
morphologically altered structures)."""
from __future__ import annotations

CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
DICOM_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
ANATOMY = ("SCT", "123037004", "Anatomical Structure")
ALTERED = ("SCT", "49755003", "Morphologically Altered Structure")

NEOPLASM = (DICOM_CONTEXT, ALTERED, ("SCT", "108369006", "Neoplasm"))

# lower-case segment name -> (category, type) in CONTEXT, or (context, category, type)
_CODES = {
    "liver": (ANATOMY, ("SCT", "10200004", "Liver")),
    "tumour": NEOPLASM,
    "tumor": NEOPLASM,
    "neoplasm": NEOPLASM,
    "brain": (ANATOMY, ("SCT", "12738006", "Brain")),
    "spleen": (ANATOMY, ("SCT", "78961009", "Spleen")),
    "pancreas": (ANATOMY, ("SCT", "15776009", "Pancreas")),
    "stomach": (ANATOMY, ("SCT", "69695003", "Stomach")),
    "aorta": (ANATOMY, ("SCT", "15825003", "Aorta")),
    "gall bladder": (ANATOMY, ("SCT", "28231008", "Gallbladder")),
    "gallbladder": (ANATOMY, ("SCT", "28231008", "Gallbladder")),
    "kidney": (ANATOMY, ("SCT", "64033007", "Kidney")),
}


def _code(c) -> str:
    return "^".join(c)


def terminology_entry(name: str) -> str | None:
    """Slicer's terminology string for a known structure name, else None (the name alone is kept)."""
    key = name.lower().replace("_", " ").strip()
    if key.endswith(" (before)"):
        key = key[: -len(" (before)")]
    codes = _CODES.get(key)
    if codes is None:
        return None
    context, category, typ = codes if len(codes) == 3 else (CONTEXT, *codes)
    return f"{context}~{_code(category)}~{_code(typ)}~^^~{ANATOMIC_CONTEXT}~^^~^^"


def set_terminology(segment, name: str) -> bool:
    """Tag a vtkSegment with the structure's codes; returns whether the name was known."""
    entry = terminology_entry(name)
    if entry is not None:
        segment.SetTag(segment.GetTerminologyEntryTagName(), entry)
    return entry is not None
