"""Client sessions held by leases: what each client owns (images, jobs), and the reaper that frees
the memory of clients that vanished (a lease not renewed within its TTL is released: its queued and
running jobs are cancelled, and images no other session holds are dropped with their embeddings)."""
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
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    images: OrderedDict = field(default_factory=OrderedDict)  # image id -> None, oldest first
    jobs: set = field(default_factory=set)


class SessionManager:
    def __init__(self, backend, ttl: float, max_sessions: int, max_images_per_session: int):
        self.backend = backend
        self.ttl = ttl
        self.max_sessions = max_sessions
        self.max_images_per_session = max_images_per_session
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
    def open(self, client_name: str) -> Session:
        with self.lock:
            if len(self.sessions) >= self.max_sessions:
                raise ApiError(503, P.E_SERVER_FULL,
                               f"the server already serves {len(self.sessions)} sessions, its limit "
                               f"(--max-sessions {self.max_sessions}); try again when a client disconnects",
                               {"Retry-After": str(max(1, int(self.ttl)))})
            s = Session(f"{self.instance}.{secrets.token_hex(12)}", client_name[:80])
            self.sessions[s.id] = s
        log.info("session %s opened by %s (%d open)", s.id[:13], s.client_name, len(self.sessions))
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
        self.backend.worker.close_session(sid)  # its interactive sessions (last result, clicks) go too
        log.info("session %s released (%s): %d jobs, %d images", sid[:13], reason, len(jobs), len(images))

    def _reap_loop(self):
        while not self._stop.wait(min(max(self.ttl / 8, 0.05), 5.0)):
            self.reap()

    def reap(self) -> list[str]:
        now = time.monotonic()
        with self.lock:
            dead = [sid for sid, s in self.sessions.items() if now - s.last_seen > self.ttl]
        for sid in dead:
            self.close(sid, "lease expired")
        return dead

    def stop(self) -> None:
        self._stop.set()
        for sid in list(self.sessions):
            self.close(sid, "server stopped")

    # -- images --------------------------------------------------------------------------------
    def attach(self, s: Session, image_id: str) -> None:
        """Record that ``s`` holds the image; beyond its quota, its oldest image is let go."""
        with self.lock:
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

    def job_of(self, s: Session, job_id: str):
        """The worker's job if it belongs to ``s`` (other clients' jobs are invisible)."""
        job = self.backend.worker.jobs.get(job_id)
        if job is None or self.job_owner.get(job_id) != s.id:
            raise ApiError(404, P.E_JOB_UNKNOWN, f"unknown job id '{job_id}' (finished long ago, or not yours)")
        return job
