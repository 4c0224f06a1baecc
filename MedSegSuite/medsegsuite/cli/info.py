"""``medsegsuite info``: what is installed and usable here."""
from __future__ import annotations

import json


def register(sub):
    p = sub.add_parser("info", help="versions, device, sample data and models available here",
                       description="Prints, as JSON, the medsegsuite, torch, monai and numpy versions, this "
                       "machine (CPU model, cores, memory, GPU; the same facts every results file records), the "
                       "device 'auto' would use, whether the LiTS-117 and Colin27 sample data are installed (or the "
                       "command that installs them), and the registered model ids. Run it first when "
                       "something does not work.")
    p.set_defaults(func=run)


def run(args):
    from .. import __version__
    from ..engine.device import CPU_WARNING, resolve_device
    from ..errors import MissingDataError

    import torch

    from ..provenance import provenance

    prov = provenance()
    out = {"medsegsuite": __version__, "torch": torch.__version__,
           **{k: v for k, v in prov["packages"].items() if k not in ("medsegsuite", "torch")},
           "machine": {k: prov[k] for k in ("cpu", "logical_cores", "usable_cores", "memory_gb", "gpu",
                                            "torch_threads", "python", "os")},
           "git": prov["git"]}
    dev = resolve_device("auto")
    out["device"] = dev
    data = {}
    from ..sampledata import colin_paths, lits117_paths

    for name, fn in (("lits117", lits117_paths), ("colin27", colin_paths)):
        try:
            fn()
            data[name] = "available"
        except MissingDataError as e:
            data[name] = str(e)
    out["sample_data"] = data
    from ..models import default_registry

    out["models"] = sorted(default_registry().entries)
    print(json.dumps(out, indent=2))
    if dev == "cpu":
        print("note: " + CPU_WARNING)
