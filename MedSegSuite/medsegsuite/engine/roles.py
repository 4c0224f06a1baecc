"""Roles a caller can hold, weakest first; each may do what the ones before it may.

* ``clinician`` — segment and adapt (interactive tasks);
* ``annotator`` — also train scribble models and CoSAM heads (training tasks);
* ``admin``     — also deploy models, run and deploy DyNA nights, manage users.

A task declares the least role that may run it (``@task(..., role=...)``); the worker checks it at
submission, so the rule holds for every backend. In-process callers are the machine's own user: admin.
"""
from __future__ import annotations

from ..errors import InputError

ROLES = ("clinician", "annotator", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}


def role_allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (unknown roles may do nothing)."""
    return _RANK.get(role, -1) >= _RANK.get(needed, len(ROLES))


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InputError(f"unknown role '{role}'; one of {', '.join(ROLES)}")
    return role
