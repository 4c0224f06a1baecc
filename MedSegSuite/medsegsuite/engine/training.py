"""Training off the click path: jobs of ``kind="training"`` run in their own process.

A training job (``cosam.train``, ``scribble.train``, ``dyna.night``, ...) can take minutes; on the
interactive worker thread it would freeze every seat's clicks. The `TrainingLane` runs each one in
a child process started with ``spawn`` (no forked torch/CUDA state), ``slots`` at a time, with fewer
torch threads and a lower priority (``os.nice``) than the interactive worker, so a click still finds
a free core. The caller sees the same `Job`: the child's progress arrives as its events, cancel asks
the child to stop and terminates it after a grace period, and a child that dies (segfault,
``os._exit``, the kernel's OOM killer) fails the job with a message while the worker keeps serving.

Request and result cross the pipe as `medsegsuite.wire` messages (a JSON header + raw numpy arrays),
not pickles. The child gets the image as a Volume with its fingerprint, fresh model caches, and no
interactive session (``ctx.session`` is None): training jobs share no state with clicks.
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from pathlib import Path

from .. import wire
from ..errors import InputError, JobCancelled, MedSegError
from .interface import TERMINAL_STATES, JobResult, JobState
from .worker import is_oom, next_round_robin

log = logging.getLogger(__name__)

_PIPE_LIMITS = wire.Limits(max_body_bytes=2**42, max_array_bytes=2**42, max_header_bytes=2**30,
                           max_arrays=1 << 20, max_ndim=8)
MODES = ("process", "thread")


def default_threads() -> int:
    """Torch threads of a training child: ``MEDSEGSUITE_TRAIN_THREADS``, else half the cores (1 on a
    2-core machine), so the interactive worker keeps at least one core for clicks."""
    n = int(os.environ.get("MEDSEGSUITE_TRAIN_THREADS", "0") or 0)
    return n if n > 0 else max(1, (os.cpu_count() or 2) // 2)


def default_nice() -> int:
    return int(os.environ.get("MEDSEGSUITE_TRAIN_NICE", "10") or 0)


def python_executable() -> str | None:
    """The Python to spawn children with, or None when there is none (then training runs on a thread).

    Inside Slicer ``sys.executable`` is the Slicer application, not Python: its ``PythonSlicer``
    launcher (same folder, or ``bin/`` beside it) runs the same interpreter and packages."""
    exe = Path(sys.executable or "")
    if exe.name.lower().startswith(("python", "pythonslicer")):
        return str(exe)
    for cand in (exe.with_name("PythonSlicer"), exe.parent.parent / "bin" / "PythonSlicer",
                 exe.with_name("PythonSlicer.exe")):
        if cand.is_file():
            return str(cand)
    return None


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = (" (killed from outside: most often the system ran out of memory; train on fewer or smaller "
                "cases, a smaller batch, or a machine with more memory)" if -code == getattr(signal, "SIGKILL", 9)
                else "")
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


# -- the child --------------------------------------------------------------------------------
def _send(conn, meta: dict, arrays: dict | None = None) -> None:
    conn.send_bytes(wire.pack(meta, arrays, level=None))


def _resolve(module: str, qualname: str):
    mod = sys.modules.get("__mp_main__") if module == "__main__" else None
    mod = mod or importlib.import_module(module)
    obj = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def child_main(conn, cancel, job_id: str, task: str, module: str, qualname: str, device: str,
               threads: int, nice: int) -> None:
    """Entry point of a training process: read the request, run the task, send events and the result."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["MEDSEGSUITE_THREADS"] = str(threads)
    if nice and hasattr(os, "nice"):
        try:
            os.nice(nice)
        except OSError:
            pass
    try:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    except ImportError:
        pass
    from ..volume import Geometry, Volume
    from .cache import BackendCaches
    from .tasks import JobContext

    try:
        meta, arrays = wire.unpack(conn.recv_bytes(), _PIPE_LIMITS, check_finite=False)
    except (EOFError, OSError):
        return  # the parent went away before sending the job
    _send(conn, {"type": "started", "pid": os.getpid(), "threads": threads})
    image = None
    if "image" in arrays:
        image = Volume.from_geometry(arrays.pop("image"), Geometry.from_dict(meta["geometry"]), meta.get("name", "volume"))
        if meta.get("image_id"):
            image.__dict__["_fingerprint"] = meta["image_id"]  # same id as in the parent: no re-hash
    inputs = {k[6:]: v for k, v in arrays.items() if k.startswith("input/")}
    inputs.update(meta.get("json_inputs") or {})

    def report(fraction: float, message: str) -> None:
        _send(conn, {"type": "progress", "fraction": fraction, "message": message})

    ctx = JobContext(job_id, device, BackendCaches(), report, cancel, session=None, **(meta.get("context") or {}))
    try:
        fn = _resolve(module, qualname)
        out = fn(ctx, image, meta.get("params") or {}, inputs)
        ctx.check_cancelled()
        r = out if isinstance(out, JobResult) else JobResult(**out)
        arrays = {f"mask/{k}": v for k, v in r.masks.items()}
        arrays.update({f"array/{k}": v for k, v in r.arrays.items()})
        arrays.update({f"crop/{k}": v[1] for k, v in r.crops.items()})
        _send(conn, {"type": "result", "info": r.info,
                     "crops": {k: [int(o) for o in v[0]] for k, v in r.crops.items()}}, arrays)
    except JobCancelled:
        _send(conn, {"type": "cancelled"})
    except MedSegError as e:
        _send(conn, {"type": "error", "message": str(e)})
    except BaseException as e:  # noqa: BLE001 - report every failure to the parent
        if is_oom(e):
            msg = (f"out of memory on {device} while running '{task}': train on fewer or smaller cases, "
                   "a smaller batch, or another device")
        else:
            msg = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        try:
            _send(conn, {"type": "error", "message": msg})
        except Exception:  # noqa: BLE001
            pass
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


# -- the parent side --------------------------------------------------------------------------
def _request(job, image, context: dict | None = None) -> bytes:
    """The job as one wire message: params (JSON), the image with its geometry, inputs as arrays
    (anything that is not an array travels as JSON)."""
    import numpy as np

    meta: dict = {"params": job.params, "json_inputs": {}, "context": context or {}}
    arrays: dict = {}
    if image is not None:
        meta.update(geometry=image.geometry.to_dict(), name=image.name, image_id=job.image_id)
        arrays["image"] = image.array
    for k, v in job.inputs.items():
        if isinstance(v, np.ndarray) or (isinstance(v, (list, tuple)) and v and not isinstance(v[0], str)):
            a = np.asarray(v)
            if a.dtype.name in wire.ALLOWED_DTYPES:
                arrays[f"input/{k}"] = a
                continue
        meta["json_inputs"][k] = v
    return wire.pack(meta, arrays, level=None)


def _result(meta: dict, arrays: dict) -> JobResult:
    return JobResult(masks={k[5:]: v for k, v in arrays.items() if k.startswith("mask/")},
                     arrays={k[6:]: v for k, v in arrays.items() if k.startswith("array/")},
                     info=meta.get("info") or {},
                     crops={k: (tuple(meta["crops"][k]), arrays[f"crop/{k}"]) for k in meta.get("crops") or {}})


def _importable(job) -> bool:
    """Whether a child process can find the task's function by module and name (a task defined in a
    function, or in an interactive console's ``__main__``, cannot: it runs on a thread instead)."""
    from .tasks import get_task

    fn = get_task(job.task).fn
    if "<locals>" in fn.__qualname__:
        return False
    return fn.__module__ != "__main__" or bool(getattr(sys.modules.get("__main__"), "__file__", None))


def _wait_stopped(pids, timeout: float = 0.05) -> None:
    """SIGSTOP is delivered asynchronously: wait (briefly, bounded) until every thread of each process
    is stopped, so the click that follows has the cores to itself from its first instruction (Linux
    /proc; elsewhere nothing to wait on)."""
    deadline = time.monotonic() + timeout
    for pid in list(pids):
        task_dir = f"/proc/{pid}/task"
        while time.monotonic() < deadline:
            try:
                states = []
                for tid in os.listdir(task_dir):
                    with open(f"{task_dir}/{tid}/stat", "rb") as f:
                        states.append(f.read().rsplit(b")", 1)[1].split()[0])
            except OSError:
                break  # gone, or no /proc
            if all(st in (b"T", b"t", b"Z", b"X") for st in states):
                break
            time.sleep(0.0005)


class TrainingLane:
    """Runs training jobs ``slots`` at a time, each in its own spawned process (``mode="process"``)
    or, where no Python can be spawned (a Slicer without PythonSlicer), on a thread of its own."""

    def __init__(self, worker, device: str, slots: int = 1, threads: int | None = None,
                 nice: int | None = None, cancel_grace: float = 3.0, mode: str | None = None):
        self.worker = worker
        self.device = device
        self.slots = max(1, int(slots))
        self.threads = threads or default_threads()
        self.nice = default_nice() if nice is None else int(nice)
        self.cancel_grace = cancel_grace
        mode = mode or os.environ.get("MEDSEGSUITE_TRAINING", "process")
        if mode not in MODES:
            raise InputError(f"training mode must be one of {MODES}, got '{mode}'")
        self.executable = python_executable() if mode == "process" else None
        if mode == "process" and self.executable is None:
            log.warning("no Python executable to start training processes from %s; training jobs run on "
                        "a thread of their own", sys.executable)
            mode = "thread"
        self.mode = mode
        self._queues: OrderedDict[str, deque] = OrderedDict()
        self._cv = threading.Condition()
        self._running: dict[str, object] = {}  # job id -> Process (or None on a thread)
        self._paused: set[int] = set()  # pids stopped while an interactive job runs
        self._stop = False
        self._thread = threading.Thread(target=self._dispatch, name="medsegsuite-training", daemon=True)
        self._thread.start()

    def pause(self) -> bool:
        """Stop every running training process (SIGSTOP) for the length of a click; True if any was."""
        if self.mode != "process" or not hasattr(signal, "SIGSTOP"):
            return False
        with self._cv:
            procs = [p for p in self._running.values() if p is not None and p.pid]
            for p in procs:
                try:
                    os.kill(p.pid, signal.SIGSTOP)
                    self._paused.add(p.pid)
                except OSError:
                    pass
            _wait_stopped(self._paused)
            return bool(self._paused)

    def resume(self) -> None:
        with self._cv:
            for pid in self._paused:
                try:
                    os.kill(pid, signal.SIGCONT)
                except OSError:
                    pass
            self._paused.clear()

    def _wake(self, proc) -> None:
        """A paused process acts on SIGTERM only once continued."""
        if hasattr(signal, "SIGCONT") and proc.pid:
            try:
                os.kill(proc.pid, signal.SIGCONT)
            except OSError:
                pass

    def busy_threads(self) -> int:
        """CPU threads the running training processes use (0 on a thread lane: those share ours)."""
        if self.mode != "process":
            return 0
        with self._cv:
            return self.threads * sum(1 for p in self._running.values() if p is not None)

    def submit(self, job) -> None:
        with self._cv:
            self._queues.setdefault(job.client, deque()).append(job)
            self._cv.notify_all()

    def _next(self):
        return next_round_robin(self._queues)

    def _dispatch(self):
        while True:
            with self._cv:
                job = None
                while not self._stop:
                    if len(self._running) < self.slots:
                        job = self._next()
                        if job is not None:
                            break
                    self._cv.wait(0.5)
                if self._stop:
                    return
                self._running[job.id] = None
            threading.Thread(target=self._run_guarded, args=(job,), name=f"medsegsuite-training-{job.id}",
                             daemon=True).start()

    def _run_guarded(self, job):
        try:
            if job.cancel_event.is_set():
                if job.state not in TERMINAL_STATES:
                    job.emit(JobState.CANCELLED, 0.0, "cancelled before it started")
                return
            if self.mode == "thread" or not _importable(job):
                self.worker._execute(job, with_session=False)
            else:
                self._run_process(job)
        except Exception as e:  # noqa: BLE001 - a broken lane must not leave a job hanging
            log.error("training job %s: %s", job.id, traceback.format_exc())
            if job.state not in TERMINAL_STATES:
                job.error = f"could not run the training process: {type(e).__name__}: {e}"
                job.emit(JobState.FAILED, 0.0, job.error)
        finally:
            with self._cv:
                self._running.pop(job.id, None)
                self._cv.notify_all()

    def _run_process(self, job):
        from .tasks import get_task

        spec = get_task(job.task)
        image = self.worker.images.get(job.image_id) if job.image_id else None
        if spec.needs_image and image is None:
            job.error = f"image '{job.image_id}' was released before the job ran"
            job.emit(JobState.FAILED, 0.0, job.error)
            return
        try:
            request = _request(job, image, self.worker.context_of(job))
        except MedSegError as e:
            job.error = f"{job.task}: {e}"
            job.emit(JobState.FAILED, 0.0, job.error)
            return
        ctx = mp.get_context("spawn")
        if self.executable and self.executable != sys.executable:
            ctx.set_executable(self.executable)
        parent, child = ctx.Pipe(duplex=True)
        cancel = ctx.Event()
        proc = ctx.Process(target=child_main, name=f"medsegsuite-train-{job.id}", daemon=True,
                           args=(child, cancel, job.id, job.task, spec.fn.__module__, spec.fn.__qualname__,
                                 self.device, self.threads, self.nice))
        job.emit(JobState.RUNNING, 0.0, f"starting a training process ({self.threads} thread(s))")
        proc.start()
        child.close()
        with self._cv:
            self._running[job.id] = proc
        job.pid = proc.pid
        fraction, terminal, cancel_deadline = 0.0, None, None
        try:
            parent.send_bytes(request)
            del request
        except (BrokenPipeError, OSError):
            pass  # the child died at start: its exit code says why, below
        while terminal is None:
            if job.cancel_event.is_set() and cancel_deadline is None:
                cancel.set()
                cancel_deadline = time.monotonic() + self.cancel_grace
            if cancel_deadline is not None and time.monotonic() > cancel_deadline and proc.is_alive():
                self._wake(proc)
                proc.terminate()  # it did not reach a cancel point in time
                proc.join(2.0)
                if proc.is_alive():
                    proc.kill()
                terminal = ("cancelled", "cancelled (training process stopped)")
                break
            try:
                ready = parent.poll(0.1)
                msg = parent.recv_bytes() if ready else None
            except (EOFError, OSError):
                msg, ready = None, False
                proc.join(5.0)
            if msg is None:
                if not ready and proc.is_alive():
                    continue
                proc.join(5.0)
                if job.cancel_event.is_set():
                    terminal = ("cancelled", "cancelled (training process stopped)")
                else:
                    terminal = ("failed", f"the training process of '{job.task}' {_exit_reason(proc.exitcode)} "
                                          "before it finished; nothing was saved. The interactive worker is "
                                          "unaffected; run the job again")
                break
            meta, arrays = wire.unpack(msg, _PIPE_LIMITS, check_finite=False)
            kind = meta.get("type")
            if kind == "started":
                job.emit(JobState.RUNNING, fraction, f"training in process {meta.get('pid')}")
            elif kind == "progress":
                fraction = float(meta.get("fraction", fraction))
                job.emit(JobState.RUNNING, fraction, str(meta.get("message", "")))
            elif kind == "result":
                job.result = _result(meta, arrays)
                terminal = ("done", "done")
            elif kind == "cancelled":
                terminal = ("cancelled", "cancelled")
            elif kind == "error":
                terminal = ("failed", str(meta.get("message")))
        parent.close()
        proc.join(self.cancel_grace)
        if proc.is_alive():
            proc.kill()
            proc.join(2.0)
        state, message = terminal
        if state == "done":
            job.emit(JobState.DONE, 1.0, "done")
        elif state == "cancelled":
            job.emit(JobState.CANCELLED, fraction, message)
        else:
            job.error = message
            job.emit(JobState.FAILED, fraction, message)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stop = True
            procs = [p for p in self._running.values() if p is not None]
            self._cv.notify_all()
        for p in procs:
            if p.is_alive():
                self._wake(p)
                p.terminate()
        for p in procs:
            p.join(timeout)
            if p.is_alive():
                p.kill()
        self._thread.join(timeout)
