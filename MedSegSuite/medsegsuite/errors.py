"""Error types a user sees. Every message says what is wrong and what to do."""


class MedSegError(Exception):
    """Base class of the errors medsegsuite raises on purpose."""


class InputError(MedSegError, ValueError):
    """Bad input: wrong dimensions, NaN, empty or mismatched masks, malformed requests."""


class CheckpointError(MedSegError):
    """A model file is missing, corrupt, truncated, untrusted or does not match its registry entry."""


class MissingDataError(MedSegError, FileNotFoundError):
    """Sample data or an optional dependency is not installed; the message says how to install it."""


class JobCancelled(MedSegError):
    """A job stopped because the user asked it to."""


class Forbidden(MedSegError):
    """The caller's role may not do this (a server answers 403)."""
