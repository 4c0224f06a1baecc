"""Caches the worker keeps across jobs: built models (by key) and per-slice image embeddings."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable


class LRUCache:
    """A small thread-safe LRU cache; ``get_or_create`` builds a missing value once."""

    def __init__(self, max_items: int = 8):
        self.max_items = max_items
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0

    def get_or_create(self, key, factory: Callable):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = factory()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
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
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def drop(self, predicate: Callable) -> int:
        with self._lock:
            keys = [k for k in self._items if predicate(k)]
            for k in keys:
                del self._items[k]
            return len(keys)

    def __len__(self):
        return len(self._items)


class BackendCaches:
    """``models``: built networks keyed by (model id, device); ``embeddings``: encoder outputs keyed by
    (backbone, image id, axis, slice, ...). Dropping an image drops its embeddings."""

    def __init__(self, max_models: int = 6, max_embeddings: int = 4096):
        self.models = LRUCache(max_models)
        self.embeddings = LRUCache(max_embeddings)

    def drop_image(self, image_id: str) -> None:
        self.embeddings.drop(lambda k: isinstance(k, tuple) and image_id in k)

    def drop_client(self, client: str) -> None:
        """Forget per-client entries (keys of the form ``(kind, ("client", id), ...)``: TTA streams)."""
        self.models.drop(lambda k: isinstance(k, tuple) and ("client", client) in k)
