"""Client sessions held by leases: what each client owns (images, jobs), and the reaper that frees
the memory of clients that vanished (a lease not renewed within its TTL is released: its queued and
running jobs are cancelled, and images no other session holds are dropped with their embeddings).

The reaper also stops jobs past their time limit and drops images (with the results computed on
them) that nobody used for ``image_idle_ttl`` seconds, so patient images do not outlive their use."""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from .. import protocol as P
from ..engine.interface import TERMINAL_STATES

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP error with a protocol error code and a message a user can act on."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


@dataclass
class Session:
    id: str
    client_name: str
    user: str = "local"
    role: str = "admin"
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    images: OrderedDict = field(default_factory=OrderedDict)  # image id -> None, oldest first
    jobs: set = field(default_factory=set)


class SessionManager:
    def __init__(self, backend, ttl: float, max_sessions: int, max_images_per_session: int,
                 max_sessions_per_user: int = 10**6, job_time_limit: float | None = None,
                 training_time_limit: float | None = None, image_idle_ttl: float | None = None, audit=None):
        self.backend = backend
        self.ttl = ttl
        self.max_sessions = max_sessions
        self.max_sessions_per_user = max_sessions_per_user
        self.max_images_per_session = max_images_per_session
        self.job_time_limit = job_time_limit
        self.training_time_limit = training_time_limit
        self.image_idle_ttl = image_idle_ttl
        self.audit = audit
        self.image_used: dict[str, float] = {}  # image id -> last use (monotonic)
        self.instance = secrets.token_hex(4)  # a new one per server process: tells "restarted" apart
        self.sessions: dict[str, Session] = {}
        self.holders: dict[str, set] = {}      # image id -> session ids holding it
        self.job_owner: dict[str, str] = {}
        self.released: list[tuple[str, str]] = []  # (session id, reason), for logs and tests
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="medsegsuite-lease-reaper", daemon=True)
        self._reaper.start()

    # -- sessions ------------------------------------------------------------------------------
    def open(self, client_name: str, user: str = "local", role: str = "admin", capped: bool = True) -> Session:
        """A new session for ``user``; ``capped``: count it against the per-user limit (a shared key or
        the keyless loopback user is many people: only --max-sessions bounds those)."""
        with self.lock:
            mine = sum(1 for x in self.sessions.values() if x.user == user)
            if capped and mine >= self.max_sessions_per_user:
                raise ApiError(429, P.E_BUSY,
                               f"{user} already holds {mine} sessions, the per-user limit (--max-sessions-per-user "
                               f"{self.max_sessions_per_user}); close one (or wait {self.ttl:g} s for an abandoned "
                               "one to lapse)", {"Retry-After": str(max(1, int(self.ttl)))})
            if len(self.sessions) >= self.max_sessions:
                raise ApiError(503, P.E_SERVER_FULL,
                               f"the server already serves {len(self.sessions)} sessions, its limit "
                               f"(--max-sessions {self.max_sessions}); try again when a client disconnects",
                               {"Retry-After": str(max(1, int(self.ttl)))})
            s = Session(f"{self.instance}.{secrets.token_hex(12)}", client_name[:80], user, role)
            self.sessions[s.id] = s
        log.info("session %s opened by %s on %s (%d open)", s.id[:13], s.user, s.client_name, len(self.sessions))
        return s

    def get(self, sid: str | None) -> Session:
        """The caller's session, its lease renewed; 410 with a specific code when it is gone."""
        if not sid:
            raise ApiError(400, P.E_SESSION_MISSING,
                           f"this request needs a session: open one with POST {P.PREFIX}/sessions and send "
                           f"its id in the {P.SESSION_HEADER} header")
        with self.lock:
            s = self.sessions.get(sid)
            if s is None:
                if sid.split(".")[0] != self.instance:
                    raise ApiError(410, P.E_SERVER_RESTARTED,
                                   "the server restarted since this session was opened: its images and jobs "
                                   "are gone; reconnect (open a new session) and upload the image again")
                raise ApiError(410, P.E_SESSION_EXPIRED,
                               "this session's lease expired (no heartbeat within "
                               f"{self.ttl:g} s) or it was closed; its jobs were cancelled and images "
                               "released; reconnect and upload the image again")
            s.last_seen = time.monotonic()
            return s

    def close(self, sid: str, reason: str = "closed") -> None:
        with self.lock:
            s = self.sessions.pop(sid, None)
            if s is None:
                return
            self.released.append((sid, reason))
            del self.released[:-256]
            jobs = list(s.jobs)
            for jid in jobs:
                self.job_owner.pop(jid, None)
            images = list(s.images)
        for jid in jobs:
            job = self.backend.worker.jobs.get(jid)
            if job is None:
                continue
            if job.state not in TERMINAL_STATES:
                self.backend.cancel(jid)
            else:
                job.result = None  # nobody can fetch it any more: free its masks now
        for image_id in images:
            self._detach(sid, image_id)
        self.backend.close_session(None, client=sid)  # its interactive sessions and TTA streams go too
        log.info("session %s released (%s): %d jobs, %d images", sid[:13], reason, len(jobs), len(images))

    def _reap_loop(self):
        every = [self.ttl / 8, 5.0] + [t / 4 for t in (self.job_time_limit, self.image_idle_ttl) if t]
        while not self._stop.wait(max(min(every), 0.05)):
            try:
                self.reap()
            except Exception:
                log.exception("reaper")

    def reap(self) -> list[str]:
        now = time.monotonic()
        with self.lock:
            dead = [sid for sid, s in self.sessions.items() if now - s.last_seen > self.ttl]
        for sid in dead:
            self.close(sid, "lease expired")
        self._stop_overdue_jobs()
        self._drop_idle_images()
        return dead

    def _stop_overdue_jobs(self) -> None:
        now = time.time()
        for job in list(self.backend.worker.jobs.values()):
            if job.state in TERMINAL_STATES or job.cancel_event.is_set():
                continue
            limit = self.training_time_limit if job.kind == "training" else self.job_time_limit
            started = job.started
            if limit and started is not None and now - started > limit:
                opt = "--training-time-limit" if job.kind == "training" else "--job-time-limit"
                job.error = (f"stopped: '{job.task}' ran longer than this server's time limit of {limit:g} s "
                             f"(medsegsuite serve {opt}); use a smaller region or fewer slices")
                self.backend.cancel(job.id)
                if self.audit is not None:
                    self.audit.write("job.time_limit", "stopped", user=job.user, task=job.task, job=job.id)

    def touch_image(self, image_id: str) -> None:
        self.image_used[image_id] = time.monotonic()

    def _drop_idle_images(self) -> None:
        if not self.image_idle_ttl:
            return
        now = time.monotonic()
        busy = {j.image_id for j in self.backend.worker.jobs.values() if j.state not in TERMINAL_STATES}
        with self.lock:
            idle = [i for i, t in self.image_used.items() if now - t > self.image_idle_ttl and i not in busy]
            for image_id in idle:
                self.image_used.pop(image_id, None)
                for sid in list(self.holders.get(image_id, ())):
                    s = self.sessions.get(sid)
                    if s is not None:
                        s.images.pop(image_id, None)
                self.holders.pop(image_id, None)
                self.backend.release_image(image_id)
                for job in self.backend.worker.jobs.values():  # results computed on it go too
                    if job.image_id == image_id and job.state in TERMINAL_STATES:
                        job.result = None
        for image_id in idle:
            log.info("image %s dropped after %g s unused", image_id[:12], self.image_idle_ttl)

    def stop(self) -> None:
        self._stop.set()
        for sid in list(self.sessions):
            self.close(sid, "server stopped")

    # -- images --------------------------------------------------------------------------------
    def attach(self, s: Session, image_id: str) -> None:
        """Record that ``s`` holds the image; beyond its quota, its oldest image is let go."""
        with self.lock:
            self.touch_image(image_id)
            s.images[image_id] = None
            s.images.move_to_end(image_id)
            self.holders.setdefault(image_id, set()).add(s.id)
            extra = list(s.images)[: max(0, len(s.images) - self.max_images_per_session)]
        for old in extra:
            self.detach(s, old)

    def detach(self, s: Session, image_id: str) -> None:
        with self.lock:
            s.images.pop(image_id, None)
        self._detach(s.id, image_id)

    def _detach(self, sid: str, image_id: str) -> None:
        with self.lock:
            h = self.holders.get(image_id)
            if h is not None:
                h.discard(sid)
            if h:
                return
            self.holders.pop(image_id, None)
            self.image_used.pop(image_id, None)
            # under the lock, so an upload of the same image by another client cannot slip in between
            self.backend.release_image(image_id)

    # -- jobs ----------------------------------------------------------------------------------
    def add_job(self, s: Session, job_id: str) -> None:
        with self.lock:
            s.jobs.add(job_id)
            self.job_owner[job_id] = s.id
            # forget jobs the worker has already trimmed from its history
            gone = [j for j in s.jobs if j not in self.backend.worker.jobs]
            for j in gone:
                s.jobs.discard(j)
                self.job_owner.pop(j, None)

    def idle_images(self, s: Session) -> list[str]:
        """The session's images no unfinished job of it uses, oldest first (what may make room)."""
        busy = {j.image_id for jid in s.jobs if (j := self.backend.worker.jobs.get(jid)) is not None
                and j.state not in TERMINAL_STATES}
        return [i for i in s.images if i not in busy]

    def job_of(self, s: Session, job_id: str):
        """The worker's job if it belongs to ``s`` (other clients' jobs are invisible)."""
        job = self.backend.worker.jobs.get(job_id)
        if job is None or self.job_owner.get(job_id) != s.id:
            raise ApiError(404, P.E_JOB_UNKNOWN, f"unknown job id '{job_id}' (finished long ago, or not yours)")
        return job
