"""`LocalBackend`: the Backend interface in-process: interactive jobs on one persistent worker
thread, training jobs in their own processes (`engine.training`)."""
from __future__ import annotations

import time

from .. import __version__
from ..errors import InputError
from ..models.registry import default_registry
from ..volume import Volume
from .cache import BackendCaches
from .device import describe_device, resolve_device
from .interface import API_VERSION, TERMINAL_STATES, JobEvent, JobFailed, JobResult, JobState
from .tasks import available_tasks
from .worker import Worker


class LocalBackend:
    def __init__(self, device: str = "auto", max_images: int = 16, allow_paths: bool = True,
                 training: str | None = None, training_slots: int = 1, train_threads: int | None = None,
                 dyna_queue: bool = True, retention_days: float | None = None):
        """``allow_paths``: accept checkpoint/file paths in params (the user's own machine); a server
        passes False, so no request can name a server file. ``training`` ("process" | "thread"),
        ``training_slots`` and ``train_threads``: how training jobs run (see `engine.training`).
        ``dyna_queue``: keep DyNA day cases for the night (a server keeps none unless its
        administrator opts in); ``retention_days``: delete queued cases older than this."""
        self.device = resolve_device(device)
        self.caches = BackendCaches()
        self.images: dict[str, Volume] = {}
        self.max_images = max_images
        self.worker = Worker(self.device, self.caches, self.images, allow_paths=allow_paths, training=training,
                             training_slots=training_slots, train_threads=train_threads)
        self.worker.policy.update(dyna_queue=bool(dyna_queue), retention_days=retention_days)

    # -- Backend interface -------------------------------------------------------------------
    def handshake(self) -> dict:
        return {"api_version": API_VERSION, "server_version": __version__, "device": self.device,
                "device_name": describe_device(self.device), "tasks": sorted(available_tasks())}

    def set_dicom(self, source, series: str | None = None) -> dict:
        """One DICOM series (a folder, ``FOLDER#SERIES_UID``, a .zip file or zip bytes) as an image: the
        same answer as `RemoteBackend.set_dicom` (``id``, ``geometry``, ``dtype``, ``dicom``)."""
        from ..dicom.archive import read_series_archive
        from ..dicom.series import read_series, split_series_spec

        if isinstance(source, (bytes, bytearray)):
            vol = read_series_archive(bytes(source), series)
        else:
            folder, uid = split_series_spec(source)
            vol = (read_series_archive(folder.read_bytes(), series or uid) if folder.is_file()
                   else read_series(f"{folder}#{series or uid}" if (series or uid) else folder))
        image_id = self.set_image(vol)
        d = vol.meta["dicom"]
        return {"id": image_id, "dtype": vol.array.dtype.name, "geometry": vol.geometry.to_dict(), "name": vol.name,
                "dicom": {k: d[k] for k in d if k != "files"}}

    def set_image(self, volume: Volume) -> str:
        if not isinstance(volume, Volume):
            raise InputError("set_image takes a medsegsuite Volume")
        volume.require_finite()
        image_id = volume.fingerprint()
        if image_id not in self.images:
            if len(self.images) >= self.max_images:  # drop the oldest image that no job uses
                busy = {j.image_id for j in self.worker.jobs.values() if j.state not in TERMINAL_STATES}
                for old in list(self.images):
                    if old not in busy:
                        self.release_image(old)
                        break
            self.images[image_id] = volume
        return image_id

    def release_image(self, image_id: str) -> None:
        self.images.pop(image_id, None)
        self.caches.drop_image(image_id)
        self.worker.drop_image_sessions(image_id)

    def close_session(self, name: str | None, client: str = "local") -> None:
        """Forget an interactive session's state (its image stays set); ``None``: all of ``client``'s,
        with whatever else is kept for that client (its TTA streams)."""
        self.worker.close_session(client, name)
        if name is None:
            self.caches.drop_client(client)

    def list_tasks(self) -> list[dict]:
        """Every task with its typed parameters (what ``GET /tasks`` returns remotely)."""
        return [spec.to_dict() for _, spec in sorted(available_tasks().items())]

    def list_models(self, task: str | None = None) -> list[dict]:
        return [e.to_dict() for e in default_registry().list(task)]

    def import_model(self, path, model_id: str, architecture: str | None = None, task: str = "",
                     structures=None, description: str = "") -> dict:
        """Register a checkpoint file (after a weights_only test load) in this machine's user registry."""
        from ..models.registry import check_model_id

        entry = default_registry().import_checkpoint(path, check_model_id(model_id), architecture, structures,
                                                     task, description)
        return entry.to_dict()

    def start_job(self, task: str, image_id: str | None = None, params: dict | None = None,
                  inputs: dict | None = None, client: str = "local", allow_paths: bool | None = None,
                  user: str = "local", role: str = "admin", policy: dict | None = None) -> str:
        """``client``/``user``/``role``/``policy``: who asks, under which rules (a server passes its own)."""
        return self.worker.submit(task, image_id, params or {}, inputs or {}, client, allow_paths, user, role,
                                  policy).id

    def _job(self, job_id: str):
        job = self.worker.jobs.get(job_id)
        if job is None:
            raise InputError(f"unknown job id '{job_id}'")
        return job

    def events(self, job_id: str, since: int = 0, wait: float = 0.0) -> list[JobEvent]:
        return self._job(job_id).events_after(since, wait)

    def state(self, job_id: str) -> JobState:
        return self._job(job_id).state

    def wait(self, job_id: str, timeout: float | None = None, on_event=None) -> JobState:
        job = self._job(job_id)
        seen = 0
        deadline = None if timeout is None else time.time() + timeout
        while True:
            finished = job.done_event.wait(0.05)
            if on_event is not None:
                for e in self.events(job_id, seen):
                    seen = e.seq
                    on_event(e)
            if finished:
                return job.state
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state.value} after {timeout} s")

    def cancel(self, job_id: str) -> None:
        self.worker.cancel(job_id)

    def result(self, job_id: str) -> JobResult:
        job = self._job(job_id)
        if job.state == JobState.DONE:
            return job.result
        if job.state in (JobState.CANCELLED, JobState.FAILED):
            raise JobFailed(job.error or f"job {job_id} was {job.state.value}", job.state)
        raise JobFailed(f"job {job_id} is still {job.state.value}", job.state)

    def close(self) -> None:
        self.worker.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
