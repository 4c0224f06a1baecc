"""Where a client finds the server's API key: a file, else the environment; never plain settings."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

KEY_ENV = "MEDSEGSUITE_API_KEY"


def read_api_key(path: str | os.PathLike | None = None) -> str | None:
    """The key in ``path`` (whitespace stripped), else ``$MEDSEGSUITE_API_KEY``, else None (no key)."""
    if path:
        p = Path(path).expanduser()
        try:
            key = p.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise InputError(f"API key file {p} does not exist (ask the server's admin for the key)") from None
        except OSError as e:
            raise InputError(f"cannot read API key file {p}: {e.strerror}") from None
        if not key:
            raise InputError(f"API key file {p} is empty")
        return key
    key = os.environ.get(KEY_ENV, "").strip()
    return key or None
