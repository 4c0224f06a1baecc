"""Provenance of a results file, recorded when it is written (never typed by hand), and the writers.

Every results writer (benchmarks, method evaluations, ``medsegsuite evaluate``) goes through
:func:`write_markdown` / :func:`write_json`, so each file says on which machine, with which software
and from which command its numbers came: CPU model and cores, memory, load, torch threads, GPU,
package versions, git commit (+ uncommitted changes), command line, date.

No torch import here: torch's threads and GPUs are read only when the caller has loaded torch (a
results file of a torch-free command says so instead).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES = ("medsegsuite", "torch", "monai", "numpy")
MARK = "**Provenance**"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, sysctl on macOS, else platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, val = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and val.strip():
                return " ".join(val.split())
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5)
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


# Vector extensions that change CPU inference speed several-fold: two machines that both read "AMD EPYC"
# measured 1654 and ~370 ms for one LiteMedSAM encoder pass (AVX2 only vs AVX-512 with bf16).
_ISA = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"), ("asimd", "NEON"))
_ISA_EXTRAS = (("avx512_bf16", "bf16"), ("avx512_vnni", "VNNI"), ("amx_tile", "AMX"), ("avx512_fp16", "fp16"))


def cpu_features() -> str | None:
    """The CPU's family/model numbers and widest vector instruction set (from /proc/cpuinfo), e.g.
    "family 26, model 2, AVX-512 (bf16, VNNI)"; None where /proc/cpuinfo is not there."""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    fields: dict = {}
    for line in info.splitlines():
        if not line.strip():
            break  # the first processor's block describes them all
        key, _, val = line.partition(":")
        fields.setdefault(key.strip(), val.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    isa = next((name for flag, name in _ISA if flag in flags), "no vector extension listed")
    extras = [name for flag, name in _ISA_EXTRAS if flag in flags]
    if extras:
        isa += f" ({', '.join(extras)})"
    ident = ", ".join(f"{k.split()[-1]} {fields[k]}" for k in ("cpu family", "model") if fields.get(k))
    return f"{ident}, {isa}" if ident else isa


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(name: str) -> str:
    if name == "medsegsuite":
        from . import __version__

        return __version__
    mod = sys.modules.get(name)
    if getattr(mod, "__version__", None):  # the loaded module's own (e.g. torch's +cu130 build tag)
        return str(mod.__version__)
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _gpu() -> str:
    """GPU names as torch sees them (when loaded), else as nvidia-smi lists them; "none" when there is none."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            mps = getattr(torch.backends, "mps", None)
            if mps is not None and mps.is_available():
                return "Apple MPS"
        except Exception:  # a broken CUDA install must not stop a report  # noqa: BLE001
            pass
        return "none"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10)
            names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
            if out.returncode == 0 and names:
                return ", ".join(names)
        except (OSError, subprocess.SubprocessError):
            pass
    return "none"


def git_state(start=None) -> dict | None:
    """{"commit", "dirty"} of the git work tree holding ``start`` (default: this package), None outside one."""
    here = Path(start or Path(__file__).resolve().parent)
    if not shutil.which("git"):
        return None
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def command_line(argv=None) -> str:
    """The command as a user would retype it: ``python path/script.py ...``, ``python -m pkg ...`` or the
    console script's name."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    first = argv[0]
    p = Path(first)
    if p.name == "__main__.py":
        head = ["python", "-m", p.parent.name]
    elif p.suffix == ".py":
        try:
            first = p.resolve().relative_to(Path.cwd()).as_posix()
        except ValueError:
            pass
        head = ["python", first]
    else:
        head = [p.name or first]
    return shlex.join(head + [str(a) for a in argv[1:]])


def provenance(argv=None, extra: dict | None = None) -> dict:
    """What produced a results file, measured now. ``extra`` adds caller facts (e.g. the device used)."""
    torch = sys.modules.get("torch")
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load = [round(v, 2) for v in os.getloadavg()[:2]]
    except (AttributeError, OSError):
        load = None
    out = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(argv),
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": _memory_gb(),
        "load_avg_1_5min": load,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "gpu": _gpu(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "packages": {n: _version(n) for n in PACKAGES},
        "git": git_state(),
    }
    out.update(extra or {})
    return out


def provenance_markdown(prov: dict) -> str:
    """The provenance as a short markdown block (a label and one bullet per fact)."""
    cores = f"{prov['logical_cores']} logical cores"
    if prov.get("usable_cores") not in (None, prov["logical_cores"]):
        cores += f" ({prov['usable_cores']} usable by this process)"
    cpu = prov["cpu"] + (f" ({prov['cpu_features']})" if prov.get("cpu_features") else "")
    machine = [cpu, cores]
    if prov.get("memory_gb"):
        machine.append(f"{prov['memory_gb']:g} GB RAM")
    if prov.get("load_avg_1_5min"):
        machine.append("load average {:.2f} / {:.2f} (1 / 5 min) when written".format(*prov["load_avg_1_5min"]))
    threads = prov.get("torch_threads")
    git = prov.get("git")
    if git:
        g = f"`{git['commit'][:12]}`" + (" with uncommitted changes" if git.get("dirty") else "")
    else:
        g = "not a git checkout"
    lines = [f"{MARK} (recorded by `medsegsuite.provenance` when this file was written)", "",
             f"- date: {prov['date']}",
             f"- command: `{prov['command']}`",
             f"- machine: {', '.join(machine)}",
             f"- torch threads: {threads if threads is not None else 'n/a (torch not loaded)'}; GPU: {prov['gpu']}",
             f"- software: Python {prov['python']} on {prov['os']}; "
             + ", ".join(f"{k} {v}" for k, v in prov["packages"].items()),
             f"- git: {g}"]
    known = {"date", "command", "cpu", "cpu_features", "logical_cores", "usable_cores", "memory_gb",
             "load_avg_1_5min", "torch_threads", "gpu", "python", "os", "packages", "git"}
    lines += [f"- {k}: {v}" for k, v in prov.items() if k not in known]
    return "\n".join(lines)


def with_provenance(text: str, prov: dict | None = None) -> str:
    """``text`` (markdown) with the provenance block right under its first ``# `` title (or on top)."""
    block = provenance_markdown(prov or provenance())
    lines = text.split("\n")
    if lines and lines[0].startswith("# "):
        rest = lines[1:]
        while rest and not rest[0].strip():
            rest = rest[1:]
        return "\n".join([lines[0], "", block, ""] + rest)
    return block + "\n\n" + text


def write_markdown(path, text, prov: dict | None = None) -> Path:
    """Write a markdown results file (``text`` or a list of lines) headed by its provenance."""
    if not isinstance(text, str):
        text = "\n".join(text)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = with_provenance(text, prov)
    path.write_text(out if out.endswith("\n") else out + "\n", encoding="utf-8")
    return path


def write_json(path, data, prov: dict | None = None, indent: int = 1) -> Path:
    """Write a JSON results file whose first key is ``provenance`` (a list goes under ``results``)."""
    body = dict(data) if isinstance(data, dict) else {"results": data}
    body.pop("provenance", None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provenance": prov or provenance(), **body}, indent=indent, default=str),
                    encoding="utf-8")
    return path


__all__ = ["provenance", "provenance_markdown", "with_provenance", "write_markdown", "write_json", "cpu_model",
           "cpu_features", "git_state", "command_line"]
