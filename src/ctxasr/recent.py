"""A small thread-safe cache of the objects built last (retrievers, scorers, graphs)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """The last ``size`` objects built, by key: a server or a batch job reuses contexts.

    Thread-safe and single-flight: the first caller of a missing key builds it, outside
    the lock, and callers of the same key meanwhile wait for that build and get the same
    object (four requests with one new 100,000-term context build its index once, not
    four times over in time and memory). Builds of different keys run in parallel, and a
    build may ``get`` other keys of the same cache. A build that raises raises in every
    caller that waited for it and is not kept: the next caller tries again.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._building: dict[K, tuple[Future[V], int]] = {}  # key: (its value, builder thread)
        self._lock = threading.Lock()

    def get(self, key: K, build: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            pending = self._building.get(key)
            if pending is None:
                future: Future[V] = Future()
                self._building[key] = (future, threading.get_ident())
        if pending is not None:
            future, builder = pending
            if builder == threading.get_ident():
                raise RuntimeError(f"the build of {key!r} asked for its own key (a cycle)")
            return future.result()
        try:
            value = build()
        except BaseException as err:
            with self._lock:
                del self._building[key]
            future.set_exception(err)
            raise
        with self._lock:
            del self._building[key]
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        future.set_result(value)
        return value
