"""The shared store: compiled programs shared across replicas, as text, never as pickles.

The in-process cache (``cache.py``) asks the store on a miss and writes to it after compiling.
What is stored is the *canonical IR text* of the source program plus a small JSON-able metadata
dict (``wrt``, ``pipeline_version``); any replica recompiles from that text, so nothing from the
store is ever executed as Python.

A store is anything with these two methods (blocking; the server calls them in its worker pool)::

    get(key: str) -> tuple[str, dict] | None
    put(key: str, text: str, metadata: dict) -> None
    exists(key: str) -> bool | None       # optional: lets replicas re-publish lost entries
    probe() -> bool                       # optional: a health check, run every second

Redis is one (``redis_store.py``): when ``SHAX_REDIS_URL`` is set, ``make_store`` returns
``redis_store.from_url(url)``. ``create_app(settings, store=...)`` also takes a store directly
(tests, other backends).
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable


@runtime_checkable
class SharedStore(Protocol):
    def get(self, key: str) -> tuple[str, dict] | None: ...

    def put(self, key: str, text: str, metadata: dict) -> None: ...


class NullStore:
    """No sharing: the embedded default (one process, no Redis)."""

    def get(self, key: str) -> tuple[str, dict] | None:
        return None

    def put(self, key: str, text: str, metadata: dict) -> None:
        return None

    def exists(self, key: str) -> bool:
        return True  # nothing to republish to


class MemoryStore:
    """A dict-backed store: what a Redis store does, inside one process (for tests)."""

    def __init__(self):
        self.items: dict[str, tuple[str, dict]] = {}

    def get(self, key: str) -> tuple[str, dict] | None:
        return self.items.get(key)

    def put(self, key: str, text: str, metadata: dict) -> None:
        self.items[key] = (text, dict(metadata))

    def exists(self, key: str) -> bool:
        return key in self.items


def make_store(redis_url: str | None) -> SharedStore:
    """The store the settings ask for: NullStore, or ``redis_store.from_url(url)``."""
    if not redis_url:
        return NullStore()
    try:
        module = importlib.import_module("shax_server.redis_store")
    except ImportError as e:
        raise RuntimeError(
            "SHAX_REDIS_URL is set but shax_server.redis_store is not available"
        ) from e
    return module.from_url(redis_url)
