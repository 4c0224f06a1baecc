"""``medsegsuite structures``: contour a structure set from a template, structure by structure.

    medsegsuite structures templates
    medsegsuite structures init --template abdomen --image CT_DIR --out plan.seg.nrrd [--import RS.dcm]
    medsegsuite structures draft plan.seg.nrrd --image CT_DIR --structure Liver --cosam liver
    medsegsuite structures draft plan.seg.nrrd --image CT_DIR --structure GTVp --box 60 40 90 70 --slice 64
    medsegsuite structures status plan.seg.nrrd
    medsegsuite structures set plan.seg.nrrd Liver reviewed --by "Dr A"

AI drafts (CoSAM, box propagation) never touch an approved structure. See docs/radiotherapy.md.
"""
from __future__ import annotations

from .common import ProgressPrinter, add_backend_options, make_backend


def register(sub):
    p = sub.add_parser("structures", help="structure templates (TG-263) and a structure set's draft/review/approve",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    s = p.add_subparsers(dest="structures_command", metavar="ACTION")
    t = s.add_parser("templates", help="list the shipped templates (or show one)")
    t.add_argument("name", nargs="?", help="show this template's structures")
    t.set_defaults(func=run_templates)
    i = s.add_parser("init", help="start a structure set from a template on an image's grid")
    i.add_argument("--template", required=True, metavar="NAME|FILE", help="segrap, abdomen, brain or a JSON/CSV file")
    i.add_argument("--image", required=True, metavar="IMG", help="the planning image (DICOM folder, NIfTI, NRRD ...)")
    i.add_argument("--out", required=True, metavar="SET.seg.nrrd")
    i.add_argument("--import", dest="imports", nargs="+", metavar="SEG",
                   help="prior contours (RTSTRUCT, DICOM SEG, .seg.nrrd) to start from: matched by name/alias, drafted")
    i.add_argument("--by", default="import", help="who the imported drafts are from (default 'import')")
    i.set_defaults(func=run_init)
    st = s.add_parser("status", help="each structure's status (and the next one to do)")
    st.add_argument("set", metavar="SET.seg.nrrd")
    st.set_defaults(func=run_status)
    ss = s.add_parser("set", help="move a structure to drafted, reviewed or approved (or back)")
    ss.add_argument("set", metavar="SET.seg.nrrd")
    ss.add_argument("structure")
    ss.add_argument("status", choices=["todo", "drafted", "reviewed", "approved"])
    ss.add_argument("--by", required=True, help="who decides (recorded)")
    ss.add_argument("--note", help="a note for the history")
    ss.set_defaults(func=run_set)
    d = s.add_parser("draft", help="draft a structure with AI: CoSAM prompt-free, or a box/clicks + propagation")
    d.add_argument("set", metavar="SET.seg.nrrd")
    d.add_argument("--image", required=True, metavar="IMG")
    d.add_argument("--structure", required=True)
    g = d.add_mutually_exclusive_group(required=True)
    g.add_argument("--cosam", metavar="MODEL", help="a trained CoSAM model for this structure (e.g. liver)")
    g.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"),
                   help="a box on --slice (column/row of the slice): LiteMedSAM, propagated to the neighbours")
    g.add_argument("--points", nargs="+", metavar="x,y,label", help="clicks on --slice (1 = +, 0 = -)")
    d.add_argument("--slice", type=int, help="the slice the box/clicks are on (axial unless --plane)")
    d.add_argument("--plane", default="axial")
    d.add_argument("--window", nargs=2, type=float, metavar=("LO", "HI"), help="intensity window")
    d.add_argument("--slices", default="all", help="CoSAM: which slices (default all)")
    d.add_argument("--max-slices", type=int, help="propagation: at most this many slices each way")
    d.add_argument("--correct", metavar="MODEL", help="propagation: a generalised error decoder corrects each slice "
                   "(e.g. cosam_generalised; see docs/results/generalised_decoder.md)")
    add_backend_options(d)
    d.set_defaults(func=run_draft)
    p.set_defaults(func=lambda a: p.print_help())


def run_templates(args):
    from ..rt import available_templates, load_template

    if args.name:
        t = load_template(args.name)
        print(f"{t.name}: {t.title or ''} {len(t.structures)} structures\n{t.description}")
        for s in t.structures:
            code = f"{s.code[0]} {s.code[1]} {s.code[2]}" if s.code else "-"
            print(f"  {s.name:18s} {'TG-263' if s.tg263 else 'own   '} {s.interpreted_type:6s} {code}"
                  + (f"  (also {', '.join(s.aliases)})" if s.aliases else ""))
        return 0
    for n in available_templates():
        t = load_template(n)
        print(f"{n:12s} {len(t.structures):3d} structures  {t.title}")
    return 0


def run_init(args):
    from ..errors import InputError
    from ..io import read_image, read_segmentation
    from ..rt import StructureSet, load_template

    template = load_template(args.template)
    img = read_image(args.image)
    ss = StructureSet(template, img.geometry)
    for path in args.imports or []:
        seg = read_segmentation(path, reference=args.image)
        img.geometry.require_same(seg.geometry, f"imported contours {path}")
        matched = 0
        for name, m in seg.masks.items():
            s = template.find(name)
            if s is None:
                print(f"[structures] '{name}' from {path} is not in template '{template.name}': left out")
                continue
            if m.any():
                ss.write_ai(s.name, m, f"{args.by}: {path}")
                matched += 1
        if not matched:
            raise InputError(f"no structure of {path} matches template '{template.name}' (names {seg.names})")
    out = ss.save(args.out)
    print(f"wrote {out} (+ .structures.json): {len(template.structures)} structures from '{template.name}', "
          f"{sum(1 for r in ss.table() if r['status'] != 'todo')} drafted")
    return 0


def run_status(args):
    from ..rt import StructureSet

    ss = StructureSet.load(args.set)
    for r in ss.table():
        print(f"  {r['name']:18s} {r['status']:9s} {r['voxels']:9d} voxels")
    nxt = ss.next_structure()
    print(f"next: {nxt}" if nxt else "every structure is approved")
    return 0


def run_set(args):
    from ..rt import StructureSet

    ss = StructureSet.load(args.set)
    ss.set_status(args.structure, args.status, args.by, args.note)
    ss.save(args.set)
    print(f"{ss.template.require(args.structure).name}: {args.status} (by {args.by})")
    return 0


def run_draft(args):
    import numpy as np

    from ..engine.interface import run_job
    from ..errors import InputError
    from ..io import read_image
    from ..rt import StructureSet

    ss = StructureSet.load(args.set)
    name = ss.template.require(args.structure).name
    if ss.state(name) == "approved":  # refused before any model runs
        raise InputError(f"'{name}' is approved and locked against AI writes; reopen it to change it")
    img = read_image(args.image)
    img.geometry.require_same(ss.geometry, "the structure set")
    window = list(args.window) if args.window else None
    if args.cosam:
        task, params, inputs = "cosam.segment", {"model": args.cosam, "slices": args.slices, "plane": args.plane}, {}
        if window:
            params["window"] = window
        source = f"CoSAM ({args.cosam})"
    else:
        if args.slice is None:
            raise InputError("--box/--points need --slice (the slice they are drawn on)")
        params = {"slice": args.slice, "plane": args.plane, "structure": name, "window": window,
                  "box": list(args.box) if args.box else None, "max_slices": args.max_slices,
                  "correct": getattr(args, "correct", None)}
        params = {k: v for k, v in params.items() if v is not None}
        inputs = {}
        if args.points:
            try:
                inputs["points"] = np.array([[float(v) for v in p.split(",")] for p in args.points])
            except ValueError:
                raise InputError("--points are x,y,label triples, e.g. 40,52,1") from None
        task, source = "sam.propagate", "LiteMedSAM box propagation" + (
            f" corrected by {args.correct}" if getattr(args, "correct", None) else "")
    backend = make_backend(args)
    try:
        r = run_job(backend, task, img, params, inputs, on_event=ProgressPrinter(task))
    finally:
        backend.close()
    mask = next(iter(r.masks.values()))
    ss.write_ai(name, mask, source)
    ss.save(args.set)
    extra = f", slices {r.info['slices'][0]}-{r.info['slices'][-1]}, stopped {r.info.get('stopped')}" \
        if task == "sam.propagate" else ""
    print(f"{name}: drafted by {source}, {int(mask.sum())} voxels{extra}")
    return 0
