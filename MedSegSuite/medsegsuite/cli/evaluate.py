"""``medsegsuite evaluate``: score prediction sets against references (DSC, NSD, HD95, ASD), per structure
and centre, with paired statistics, box plots and a markdown report. Also ``medsegsuite sampledata
export``, which writes the bundled sample references to files.

Inputs are files or folders. A file is a `.seg.nrrd` (named segments) or a labelmap (NIfTI/NRRD/MHA;
names from its ``.labels.json`` side file or matched by label value through the preset). In a folder,
every such file is a case named by its file name without extension, and every sub-folder is a case
whose files are one binary mask per structure, named by file name (SegRap's layout). ``--ref lits117``
scores against the bundled LiTS-117 reference.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import InputError
from ..volume.planes import PLANES, SliceEngine, check_plane, parse_slices

SEG_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
SAMPLES = {"lits117": "LiTS-117", "lits-117": "LiTS-117", "lits": "LiTS-117"}


def register(sub):
    p = sub.add_parser(
        "evaluate", help="score segmentations against references: DSC, NSD, HD95, ASD, statistics, plots",
        description="Writes OUT/metrics.csv (long form: [method,][centre,]case,structure,dice,nsd,hd95,asd), "
        "OUT/summary.csv (per method/centre/structure), OUT/comparisons.csv (Wilcoxon signed-rank + Holm, "
        "when several --pred), OUT/plots/*.png and OUT/report.md. See docs/evaluation.md.")
    p.add_argument("--pred", action="append", required=True, metavar="[NAME=]PATH",
                   help="predictions: a file or a folder of cases; repeat for several methods (named by the "
                   "folder or file name, or NAME=PATH)")
    p.add_argument("--ref", required=True, metavar="PATH|lits117",
                   help="references: a file or a folder with the same case names, or 'lits117' (bundled sample)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--preset", metavar="segrap|touchstone|lits|FILE",
                   help="structures, label values and NSD tolerances (default: the reference's segment names, "
                   "--tolerance for all; 'lits' with --ref lits117)")
    p.add_argument("--tolerance", type=float, default=1.0, metavar="MM",
                   help="NSD tolerance when no preset is given (default 1 mm)")
    p.add_argument("--group-by", choices=["centre", "center"], help="also summarise, compare and plot per centre")
    p.add_argument("--centres", "--centers", metavar="CSV", help="CSV mapping case -> centre (columns case,centre)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--slices", metavar="SPEC",
                   help="score only these slices of --plane: 'a:b', 'every:K' or 'i,j,k' (numbered as the "
                   "methods number them; surface metrics then use each slice's 2D contours)")
    g.add_argument("--slices-from", metavar="REPORT_JSON",
                   help="score the slices a demo run evaluated (report.json settings.evaluated_slices and plane)")
    p.add_argument("--plane", choices=PLANES, default="axial",
                   help="anatomical plane of --slices, found from each case's direction matrix (default axial)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG box plots")
    p.set_defaults(func=run)

    s = sub.add_parser("sampledata", help="write the bundled sample data (LiTS-117) to files",
                       description="medsegsuite sampledata export --out DIR writes DIR/LiTS-117.seg.nrrd (reference: "
                       "liver = labels 1+2, tumour = label 2) and DIR/LiTS-117_ct.nrrd (HU).")
    ssub = s.add_subparsers(dest="action", metavar="ACTION")
    e = ssub.add_parser("export", help="write LiTS-117 CT and reference segmentation")
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--no-image", action="store_true", help="write the reference segmentation only")
    e.set_defaults(func=run_export)
    f = ssub.add_parser("fetch", help="download the pinned real cases (TotalSegmentator, pyradiomics, ...) "
                        "into the data cache ($MEDSEGSUITE_DATA, default ~/.cache/medsegsuite/realdata)")
    f.add_argument("sources", nargs="*", metavar="SOURCE", help="only these sources (default: all)")
    f.set_defaults(func=run_fetch)
    s.set_defaults(func=lambda args: s.print_help())


# ---- inputs ---------------------------------------------------------------------------------------

def case_id(path: Path) -> str:
    name = path.name
    for suf in SEG_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return path.stem


def _is_seg_file(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(SEG_SUFFIXES) and not p.name.startswith(".")


def discover(path: Path) -> dict[str, Path]:
    """case id -> file or per-structure folder."""
    if not path.exists():
        raise InputError(f"not found: {path}")
    if path.is_file():
        if not _is_seg_file(path):
            raise InputError(f"{path} is not a segmentation file ({', '.join(SEG_SUFFIXES)})")
        return {case_id(path): path}
    cases = {}
    for p in sorted(path.iterdir()):
        if _is_seg_file(p) or (p.is_dir() and any(_is_seg_file(q) for q in p.iterdir())):
            cid = case_id(p) if p.is_file() else p.name
            if cid in cases:
                raise InputError(f"two inputs for case '{cid}' in {path}: {cases[cid].name} and {p.name}")
            cases[cid] = p
    if not cases:
        raise InputError(f"no segmentation files ({', '.join(SEG_SUFFIXES)}) or case folders in {path}")
    return cases


def load_case(path: Path):
    """A Segmentation from a file, or from a folder holding one binary mask file per structure."""
    from ..io import Segmentation, read_image, read_segmentation

    if path.is_file():
        return read_segmentation(path)
    seg = None
    for f in sorted(q for q in path.iterdir() if _is_seg_file(q)):
        vol = read_image(f)
        if seg is None:
            seg = Segmentation(vol.geometry)
        seg.geometry.require_same(vol.geometry, what=f"structure file {f}")
        seg.add(case_id(f), vol.array != 0)
    return seg


def _sample_reference(sample: str):
    """A loader for a bundled reference (only LiTS-117 so far)."""
    from ..sampledata import lits117_segmentation

    assert sample == "LiTS-117", sample
    return lits117_segmentation


def slices_from_report(path) -> tuple:
    """(plane, indices) from a demo report.json (``settings.plane``); reports written before planes
    carry an array ``axis`` instead, returned as (axis, indices)."""
    try:
        settings = json.loads(Path(path).read_text(encoding="utf-8"))["settings"]
        idx = [int(i) for i in settings["evaluated_slices"]]
        if "plane" in settings:
            return check_plane(settings["plane"]), idx
        return int(settings.get("axis", 2)), idx
    except FileNotFoundError:
        raise InputError(f"--slices-from: {path} not found") from None
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise InputError(f"--slices-from: {path} has no settings.evaluated_slices ({e}); "
                         "give a demo report.json") from None


def _partial_slices(report: Path) -> bool:
    try:
        settings = json.loads(report.read_text(encoding="utf-8")).get("settings", {})
    except (OSError, ValueError, AttributeError):
        return False
    return "evaluated_slices" in settings and settings.get("slices") != "all"


def read_centres(path) -> dict[str, str]:
    p = Path(path)
    if not p.exists():
        raise InputError(f"--centres file not found: {p}")
    rows = [r for r in csv.reader(p.read_text(encoding="utf-8").splitlines()) if r and any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["case", "centre"], ["case", "center"]):
        rows = rows[1:]
    out = {}
    for r in rows:
        if len(r) < 2:
            raise InputError(f"{p}: each line needs case,centre; got {r}")
        out[r[0].strip()] = r[1].strip()
    return out


def _pred_sets(specs) -> dict[str, Path]:
    sets = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or Path(spec).exists():
            path, name = spec, None
        path = Path(path)
        name = name or (path.name if path.is_dir() else case_id(path))
        if name in sets:
            raise InputError(f"two prediction sets are named '{name}'; name them with --pred NAME=PATH")
        sets[name] = path
    return sets


# ---- commands -------------------------------------------------------------------------------------

def run(args) -> int:
    from ..metrics import evaluate, load_preset
    from ..metrics.report import write_report

    sample = SAMPLES.get(str(args.ref).lower()) if not Path(args.ref).exists() else None
    if sample:
        references = {sample: _sample_reference(sample)}
        preset_spec = args.preset or "lits"
    else:
        references = {cid: (lambda p=p: load_case(p)) for cid, p in discover(Path(args.ref)).items()}
        preset_spec = args.preset
    preset = load_preset(preset_spec) if preset_spec else None

    predictions = {}
    only = next(iter(references)) if len(references) == 1 else None
    for name, path in _pred_sets(args.pred).items():
        found = discover(path)
        if only and path.is_file():  # one file against one reference: names need not match
            found = {only: path}
        elif only and only not in found and path.is_dir():
            # a folder of results for the one reference case (e.g. demo_out): each file is a method
            for cid, p in found.items():
                if cid in predictions:
                    raise InputError(f"two prediction sets are named '{cid}'; name them with --pred NAME=PATH")
                predictions[cid] = {only: (lambda p=p: load_case(p))}
            continue
        predictions[name] = {cid: (lambda p=p: load_case(p)) for cid, p in found.items()}

    group = bool(args.group_by)
    centres = None
    if args.centres:
        centres = read_centres(args.centres)
        unknown = sorted(set(references) - set(centres))
        if unknown:
            raise InputError(f"--centres has no centre for case(s) {unknown[:5]}")
    elif group:
        raise InputError("--group-by centre needs --centres FILE.csv (columns case,centre)")

    slices = None
    if args.slices_from:
        slices = slices_from_report(args.slices_from)
    elif args.slices:
        g = next(iter(references.values()))().geometry
        n = SliceEngine(g.shape, g.direction, args.plane).n_slices
        slices = (args.plane, parse_slices(args.slices.strip(), n))

    notes = []
    if slices is None:
        for name, path in _pred_sets(args.pred).items():
            rep = (path if path.is_dir() else path.parent) / "report.json"
            if rep.exists() and _partial_slices(rep):
                notes.append(f"{rep} says only some slices were segmented: if '{name}' is demo output, add "
                             f"--slices-from {rep} to score those slices only (else missing slices count as misses)")
                print(f"[evaluate] warning: {notes[-1]}")
    rows = evaluate(predictions, references, preset, centres, slices, args.tolerance, log=print)
    scored = list(dict.fromkeys(r["structure"] for r in rows))
    tolerances = preset.tolerances if preset else {n: args.tolerance for n in scored}
    settings = {"predictions": ", ".join(f"{m} = {p}" for m, p in _pred_sets(args.pred).items())
                + (f" (methods: {', '.join(predictions)})" if len(predictions) > len(args.pred) else ""),
                "references": str(args.ref),
                "preset": (f"{preset.name}: {preset.description}" if preset.description else preset.name)
                if preset else f"none (the references' segment names, NSD tolerance {args.tolerance:g} mm)",
                "NSD tolerances (mm)": ", ".join(f"{n} {tolerances[n]:g}" for n in scored),
                "slices": "all (3D surfaces)" if slices is None else
                f"{len(slices[1])} slice(s) "
                + (f"of the {slices[0]} plane" if isinstance(slices[0], str) else f"along array axis {slices[0]}")
                + f": {slices[1][:12]}"
                f"{' ...' if len(slices[1]) > 12 else ''} (DSC over those slices, surface metrics from "
                "their 2D contours placed in 3D; see docs/evaluation.md)",
                "empty masks": "both empty: DSC = NSD = 1, HD95 = ASD = 0; one empty: DSC = NSD = 0, "
                "HD95 = ASD = NaN (counted as n/a)"}
    if notes:
        settings["warning"] = "; ".join(notes)
    if sample:
        settings["references"] += " (bundled LiTS-117, assumed 2 mm isotropic spacing)"
    files = write_report(rows, args.out, settings, group_by_centre=group, plots=not args.no_plots)
    print(f"[evaluate] {len(rows)} rows; wrote " + ", ".join(str(p) for k, p in files.items()
                                                             if not k.startswith("box_")))
    return 0


def run_export(args) -> int:
    from ..io import write_image, write_segmentation
    from ..sampledata import lits117_ct, lits117_segmentation

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = write_segmentation(lits117_segmentation(), out / "LiTS-117.seg.nrrd")
    print(f"wrote {ref}")
    if not args.no_image:
        print(f"wrote {write_image(lits117_ct(), out / 'LiTS-117_ct.nrrd')}")
    return 0


def run_fetch(args) -> int:
    from ..sampledata.real import fetch

    for name, path in fetch(args.sources or None).items():
        print(f"{name}: {path}")
    return 0
