"""One thread-safe LRU for the caches of compiled functions and executors."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

__all__ = ["CACHE_SIZE", "LRU"]

# compiled functions and executors kept per scope; older ones are rebuilt on demand
CACHE_SIZE = 64


class LRU:
    """A thread-safe mapping that keeps the `size` most recently used entries."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The value for `key` (now the most recently used), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
