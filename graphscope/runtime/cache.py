"""One thread-safe LRU for the caches of compiled functions and executors, and the key part that
stands for an object by identity (a callable: an edit, a gradient's target)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

__all__ = ["CACHE_SIZE", "LRU", "Identity"]

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


class Identity:
    """A key part that stands for one object by identity and holds it: equal only to a key part
    of the same object, hashed by `id`. Holding it keeps the object alive as long as the cache
    entry is, so its `id` cannot pass to a new object meanwhile (a bare `id()` in a key can: a
    fresh lambda would find the executor built for a collected one)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other.obj is self.obj

    def __repr__(self) -> str:
        return f"Identity({self.obj!r})"
