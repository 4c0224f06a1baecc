"""Batch work on Ray (``medsegsuite batch --ray``): a folder of cases through one task, one Ray task per case.

The driver reads each case and puts it in Ray's object store; a Ray task runs the registered task on a
`LocalBackend` of its worker process (kept between cases, so models load once per worker) and returns
the masks, which the driver writes. So workers need no shared file system, and a case whose worker or
node dies is run again elsewhere (``max_retries``, Ray's retry of system failures). A case that fails on
its own input is reported, not retried: running it again would fail the same way. `BatchRun.cancel`
stops cases not yet finished (``ray.cancel``); cases already written stay written.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.interface import JobEvent, JobState
from ..errors import InputError

_BACKEND = None  # one per Ray worker process: its model cache survives from case to case


@dataclass
class CaseOutcome:
    case: str
    state: str                      # done, failed or cancelled
    outputs: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    error: str = ""


def _run_case(task: str, case: str, volume, params: dict, device: str, task_modules: tuple) -> dict:
    """Runs inside a Ray worker: one case through ``task``; masks and report back to the driver."""
    import importlib

    import ray

    from ..engine import LocalBackend
    from ..engine.interface import run_job
    from ..errors import MedSegError

    global _BACKEND
    for m in task_modules:
        importlib.import_module(m)
    marker = os.environ.get("MEDSEGSUITE_RAY_MARKERS")  # tests: which node started which case
    if marker:
        node = ray.get_runtime_context().get_node_id()
        Path(marker, f"{case}.{node}.{os.getpid()}").touch()
    if _BACKEND is None:
        _BACKEND = LocalBackend(device, allow_paths=False)
    try:
        r = run_job(_BACKEND, task, volume, params)
    except MedSegError as e:  # the case's own fault: reported, not retried
        return {"state": "failed", "error": str(e)}
    finally:
        _BACKEND.close_session(None)
    info = dict(r.info, node=ray.get_runtime_context().get_node_id(), pid=os.getpid())
    return {"state": "done", "masks": r.masks, "info": info}


def list_cases(folder) -> list[Path]:
    from ..io.image import is_image_path

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of cases")
    cases = sorted(p for p in folder.iterdir() if is_image_path(p))
    if not cases:
        raise InputError(f"no images (NIfTI, NRRD, MHA, DICOM folders) in {folder}")
    return cases


def _case_name(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".seg.nrrd", ".nrrd", ".nii", ".mha", ".mhd"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


class BatchRun:
    """A batch in flight: ``wait()`` for the outcomes, ``cancel()`` to stop it; ``on_progress`` gets a
    `JobEvent` per finished case (fits `progress.ProgressPrinter`)."""

    def __init__(self, cases, task: str, out, params: dict | None = None, device: str = "cpu",
                 max_retries: int = 3, num_cpus: float = 1.0, num_gpus: float = 0.0, task_modules: tuple = (),
                 on_progress=None, resources: dict | None = None):
        import ray

        from ..io.image import read_image

        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.on_progress = on_progress
        self._cancel = threading.Event()
        self.names = [_case_name(Path(c)) for c in cases]
        if len(set(self.names)) != len(self.names):
            raise InputError("two cases share a name; give each case its own file name")
        remote = ray.remote(max_retries=max_retries, retry_exceptions=False, num_cpus=num_cpus,
                            num_gpus=num_gpus, resources=resources or {})(_run_case)
        self.refs, self.grids = {}, {}
        for name, path in zip(self.names, cases):
            vol = read_image(path)  # the driver reads: workers need no access to the folder
            self.grids[name] = vol.geometry  # the outputs' grid
            self.refs[remote.remote(task, name, ray.put(vol), params or {}, device, tuple(task_modules))] = name
        self.outcomes: dict[str, CaseOutcome] = {}
        self._seq = 0

    def cancel(self) -> None:
        import ray

        self._cancel.set()
        for ref in self.refs:
            ray.cancel(ref, force=True)

    def _write(self, name: str, masks: dict) -> list[str]:
        from ..io.image import write_image
        from ..volume import Volume

        files = []
        for seg, m in masks.items():
            f = self.out / f"{name}_{seg}.nrrd"
            write_image(Volume.from_geometry(m.astype("uint8"), self.grids[name], name=f"{name}_{seg}"), f)
            files.append(f.name)
        return files

    def _report(self, message: str) -> None:
        self._seq += 1
        if self.on_progress:
            done = len(self.outcomes)
            state = JobState.DONE if done == len(self.names) else JobState.RUNNING
            self.on_progress(JobEvent(self._seq, state, done / len(self.names), message, time.time()))

    def wait(self, timeout: float | None = None) -> list[CaseOutcome]:
        import ray
        from ray.exceptions import RayError, TaskCancelledError

        pending = list(self.refs)
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} of {len(self.refs)} cases still running")
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in ready:
                name = self.refs[ref]
                try:
                    r = ray.get(ref)
                except TaskCancelledError:
                    self.outcomes[name] = CaseOutcome(name, "cancelled")
                    self._report(f"{name}: cancelled")
                    continue
                except RayError as e:  # retries used up (workers kept dying), or the task raised
                    self.outcomes[name] = CaseOutcome(name, "failed", error=f"{type(e).__name__}: {e}"[:500])
                    self._report(f"{name}: failed")
                    continue
                if r["state"] != "done":
                    self.outcomes[name] = CaseOutcome(name, "failed", error=r["error"])
                else:
                    files = self._write(name, r["masks"])
                    self.outcomes[name] = CaseOutcome(name, "done", files, r["info"])
                self._report(f"{name}: {self.outcomes[name].state}")
        return [self.outcomes[n] for n in self.names]


def run_batch(folder, task: str, out, params: dict | None = None, **kw) -> list[CaseOutcome]:
    """Every image in ``folder`` through ``task`` as Ray tasks (Ray already initialised); masks as
    ``out/<case>_<segment>.nrrd``."""
    return BatchRun(list_cases(folder), task, out, params, **kw).wait()
