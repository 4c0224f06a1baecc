"""Provenance is recorded, not typed: medsegsuite.provenance, the report writers, and no results writer
carrying a hand-typed machine description."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from medsegsuite import __version__
from medsegsuite.provenance import (command_line, cpu_features, cpu_model, provenance, with_provenance,
                                    write_json, write_markdown)

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"date", "command", "cpu", "cpu_features", "logical_cores", "usable_cores", "memory_gb", "load_avg_1_5min",
          "torch_threads", "gpu", "python", "os", "packages", "git"}


def test_provenance_has_the_measured_fields():
    import numpy
    import torch

    p = provenance(argv=["benchmarks/x.py", "--repeats", "3"], extra={"device": "cpu"})
    assert FIELDS <= set(p) and p["device"] == "cpu"
    assert p["command"] == "python benchmarks/x.py --repeats 3"
    assert p["logical_cores"] == os.cpu_count() and p["torch_threads"] == torch.get_num_threads()
    assert p["packages"]["medsegsuite"] == __version__ and p["packages"]["numpy"] == numpy.__version__
    assert p["packages"]["torch"] == torch.__version__ and p["packages"]["monai"] != "not installed"
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in p["gpu"]
    else:
        assert p["gpu"] in ("none", "Apple MPS")
    if Path("/proc/cpuinfo").exists():  # the CPU model is read from the machine
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        if names:
            assert p["cpu"] == " ".join(names[0].split()) == cpu_model()
        # the widest vector extension is read from the flags (machines with one model name differ 4x by it)
        flags = set(next((ln.split(":", 1)[1] for ln in Path("/proc/cpuinfo").read_text().splitlines()
                          if ln.split(":")[0].strip() in ("flags", "Features")), "").split())
        widest = ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "AVX" if "avx" in flags
                  else None)
        assert p["cpu_features"] == cpu_features()
        if widest:
            assert f", {widest}" in p["cpu_features"] or p["cpu_features"].startswith(widest)
            assert ("bf16" in p["cpu_features"]) == ("avx512_bf16" in flags)
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", p["git"]["commit"]) and isinstance(p["git"]["dirty"], bool)
    json.dumps(p)  # plain data


def test_command_line_forms():
    assert command_line(["/x/site-packages/medsegsuite/__main__.py", "info"]) == "python -m medsegsuite info"
    assert command_line(["/venv/bin/medsegsuite", "evaluate", "--out", "a b"]) == "medsegsuite evaluate --out 'a b'"


def test_markdown_writer_puts_provenance_under_the_title(tmp_path):
    prov = provenance(argv=["bench.py"])
    out = write_markdown(tmp_path / "r" / "x.md", ["# Speed", "", "| a |", "|---|", "| 1 |"], prov)
    lines = out.read_text().splitlines()
    assert lines[0] == "# Speed" and lines[2].startswith("**Provenance**")
    block = "\n".join(lines[2:12])
    cpu = prov["cpu"] + (f" ({prov['cpu_features']})" if prov["cpu_features"] else "")
    assert f"- machine: {cpu}, {prov['logical_cores']} logical cores" in block
    assert "- command: `python bench.py`" in block and "GPU: " in block and f"medsegsuite {__version__}" in block
    assert lines[-3:] == ["| a |", "|---|", "| 1 |"]
    untitled = with_provenance("no title", prov)
    assert untitled.startswith("**Provenance**") and untitled.endswith("no title")


def test_json_writer_puts_provenance_first(tmp_path):
    prov = provenance()
    d = json.loads(write_json(tmp_path / "a.json", {"dice": 0.9}, prov).read_text())
    assert list(d) == ["provenance", "dice"] and d["provenance"]["cpu"] == prov["cpu"]
    d = json.loads(write_json(tmp_path / "b.json", [1, 2], prov).read_text())
    assert list(d) == ["provenance", "results"] and d["results"] == [1, 2]


def test_no_results_writer_types_a_machine_description():
    """Machine facts come from medsegsuite.provenance only: no hand-typed machine names, no ad hoc
    platform guesses in the library or the benchmarks."""
    bad = re.compile(r"dev machine|platform\.(processor|machine)\(")
    files = [*(ROOT / "MedSegSuite" / "medsegsuite").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    hits = [f"{f.relative_to(ROOT)}:{i}" for f in files if f.name != "provenance.py"
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if bad.search(line)]
    assert not hits, hits
    assert "NOTES" not in (ROOT / "MedSegSuite/medsegsuite/tta/evaluate.py").read_text()  # old numbers block


def test_library_does_not_import_the_cli():
    """The progress printer lives in the library; only the CLI imports medsegsuite.cli."""
    pkg = ROOT / "MedSegSuite" / "medsegsuite"
    hits = [str(f.relative_to(pkg)) for f in pkg.rglob("*.py") if "cli" not in f.relative_to(pkg).parts
            and f.name != "__main__.py" and re.search(r"from \.+cli\b|import medsegsuite\.cli\b|from medsegsuite\.cli\b",
                                                      f.read_text(encoding="utf-8"))]
    assert not hits, hits
    from medsegsuite.cli.common import ProgressPrinter
    from medsegsuite.progress import ProgressPrinter as P

    assert ProgressPrinter is P
