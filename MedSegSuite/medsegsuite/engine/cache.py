"""Caches the worker keeps across jobs: built models (by key) and per-slice image embeddings."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Callable


def nbytes(value) -> int:
    """Memory held by an array or tensor value (0 for anything else)."""
    n = getattr(value, "nbytes", None)
    if isinstance(n, int):
        return n
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        return int(value.element_size() * value.nelement())
    return 0


class LRUCache:
    """A small thread-safe LRU cache; ``get_or_create`` builds a missing value once. With ``max_bytes``
    the least recently used items also go once the arrays/tensors held exceed it."""

    def __init__(self, max_items: int = 8, max_bytes: int | None = None):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0
        self.bytes = 0

    def _evict(self):
        while len(self._items) > self.max_items or (
                self.max_bytes is not None and self.bytes > self.max_bytes and len(self._items) > 1):
            _, old = self._items.popitem(last=False)
            self.bytes -= nbytes(old)

    def _set(self, key, value):
        if key in self._items:
            self.bytes -= nbytes(self._items[key])
        self._items[key] = value
        self.bytes += nbytes(value)
        self._items.move_to_end(key)
        self._evict()

    def get_or_create(self, key, factory: Callable):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = factory()
        with self._lock:
            self._set(key, value)
        return value

    def get(self, key, default=None):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            return default

    def put(self, key, value):
        with self._lock:
            self._set(key, value)

    def drop(self, predicate: Callable) -> int:
        with self._lock:
            keys = [k for k in self._items if predicate(k)]
            for k in keys:
                self.bytes -= nbytes(self._items.pop(k))
            return len(keys)

    def __len__(self):
        return len(self._items)


class BackendCaches:
    """``models``: built networks keyed by (model id, device); ``embeddings``: encoder outputs keyed by
    (backbone, image id, axis, slice, ...), at most ``max_embedding_mb`` of them (default
    ``$MEDSEGSUITE_EMBEDDING_CACHE_MB`` or 1536: a 300-slice CT's LiteMedSAM embeddings are 1.2 GB).
    Dropping an image drops its embeddings."""

    def __init__(self, max_models: int = 6, max_embeddings: int = 4096, max_embedding_mb: float | None = None):
        if max_embedding_mb is None:
            max_embedding_mb = float(os.environ.get("MEDSEGSUITE_EMBEDDING_CACHE_MB", 1536))
        self.models = LRUCache(max_models)
        self.embeddings = LRUCache(max_embeddings, int(max_embedding_mb * 2 ** 20))

    def drop_image(self, image_id: str) -> None:
        self.embeddings.drop(lambda k: isinstance(k, tuple) and image_id in k)

    def drop_client(self, client: str) -> None:
        """Forget per-client entries (keys of the form ``(kind, ("client", id), ...)``: TTA streams)."""
        self.models.drop(lambda k: isinstance(k, tuple) and ("client", client) in k)
