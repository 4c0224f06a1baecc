"""What every backend offers, local or remote. Plain data only: numpy arrays, dicts, strings."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from ..errors import MedSegError
from ..volume import Volume

API_VERSION = "1.0"


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


TERMINAL_STATES = {JobState.DONE, JobState.CANCELLED, JobState.FAILED}


class JobFailed(MedSegError):
    """A job ended in the failed or cancelled state; ``state`` says which."""

    def __init__(self, message: str, state: JobState = JobState.FAILED):
        super().__init__(message)
        self.state = state


@dataclass
class JobEvent:
    seq: int
    state: JobState
    fraction: float = 0.0
    message: str = ""
    time: float = 0.0

    def to_dict(self) -> dict:
        return {"seq": self.seq, "state": self.state.value, "fraction": self.fraction,
                "message": self.message, "time": self.time}

    @classmethod
    def from_dict(cls, d: dict) -> "JobEvent":
        return cls(int(d["seq"]), JobState(d["state"]), float(d["fraction"]), d.get("message", ""),
                   float(d.get("time", 0.0)))


@dataclass
class JobResult:
    """Named masks (bool, [i, j, k], on the job image's grid) + extra arrays + a JSON-able report.

    ``crops`` are partial updates (an interactive click): ``{name: (offset (i, j, k), bool array)}``
    means "replace this box of segment ``name`` with this array; leave the rest as it is"."""

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    crops: dict[str, tuple] = field(default_factory=dict)


def apply_crop(mask: np.ndarray, offset, crop: np.ndarray) -> np.ndarray:
    """Write a crop into ``mask`` in place (and return it); a crop outside the mask is an error."""
    off = tuple(int(o) for o in offset)
    crop = np.asarray(crop)
    if len(off) != mask.ndim or crop.ndim != mask.ndim or any(
            o < 0 or o + n > m for o, n, m in zip(off, crop.shape, mask.shape)):
        raise MedSegError(f"a crop of shape {crop.shape} at {off} does not fit a mask of shape {mask.shape}")
    mask[tuple(slice(o, o + n) for o, n in zip(off, crop.shape))] = crop
    return mask


@runtime_checkable
class Backend(Protocol):
    """The one interface panels, CLI and batch scripts use. `LocalBackend` and `RemoteBackend` both
    implement it, so a panel never knows where its job runs."""

    def handshake(self) -> dict:
        """``{"api_version", "server_version", "device", "tasks": [...]}``."""

    def set_image(self, volume: Volume) -> str:
        """Hand an image to the backend once; the returned id (its content fingerprint) names it in
        later jobs. Setting the same image again is free."""

    def release_image(self, image_id: str) -> None: ...

    def list_models(self, task: str | None = None) -> list[dict]:
        """The models this backend can run (the server's registry for a remote one)."""

    def list_tasks(self) -> list[dict]:
        """Every task with its kind and typed parameters (`TaskSpec.to_dict`)."""

    def import_model(self, path, model_id: str, architecture: str | None = None, task: str = "",
                     structures=None, description: str = "") -> dict:
        """Register a checkpoint with this backend (uploaded to a server); weights_only loads only."""

    def close_session(self, name: str) -> None:
        """Forget an interactive session's state (last result, clicks)."""

    def start_job(self, task: str, image_id: str | None = None, params: dict | None = None,
                  inputs: dict[str, np.ndarray] | None = None) -> str:
        """Queue a job; returns its id at once."""

    def events(self, job_id: str, since: int = 0, wait: float = 0.0) -> list[JobEvent]:
        """Progress events with ``seq > since``, in order. ``wait`` > 0: when there is none yet, wait
        up to that many seconds for one (a long-poll: it returns as soon as one arrives)."""

    def state(self, job_id: str) -> JobState: ...

    def wait(self, job_id: str, timeout: float | None = None,
             on_event: Callable[[JobEvent], None] | None = None) -> JobState: ...

    def cancel(self, job_id: str) -> None: ...

    def result(self, job_id: str) -> JobResult:
        """The result of a done job; raises `JobFailed` for a failed or cancelled one."""

    def close(self) -> None: ...


def run_job(backend: Backend, task: str, image: Volume | None = None, params: dict | None = None,
            inputs: dict | None = None, on_event=None, timeout: float | None = None) -> JobResult:
    """Convenience for CLI and scripts: set the image, run one job to the end, return its result."""
    image_id = backend.set_image(image) if image is not None else None
    job = backend.start_job(task, image_id, params or {}, inputs)
    try:
        backend.wait(job, timeout=timeout, on_event=on_event)
    except KeyboardInterrupt:
        backend.cancel(job)
        raise
    return backend.result(job)
