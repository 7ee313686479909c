"""The compiled-program cache: an in-process LRU bounded by entries and bytes, single-flight.

Invariants:
- at most ``max_entries`` entries and (estimated) ``max_bytes`` bytes are held; the least
  recently used entry goes first, and an entry larger than ``max_bytes`` alone is never kept;
- concurrent requests for the same key while it compiles wait for that one compilation
  (single flight): the pipeline runs once per key per process;
- a miss consults the shared store (see ``store.py``) before compiling from scratch, and a fresh
  compilation is written back to it, as canonical IR text plus metadata.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import shax_core
from shax_server.metrics import Metrics
from shax_server.pipeline import Compiled, Source, pipeline_version, prepare
from shax_server.settings import Settings
from shax_server.store import SharedStore

log = logging.getLogger("shax_server")

Run = Callable[..., Awaitable]  # run(fn, *args) -> result, off the event loop


class ProgramCache:
    def __init__(self, settings: Settings, store: SharedStore, metrics: Metrics):
        self.max_entries = settings.cache_entries
        self.max_bytes = settings.cache_bytes
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.entries: OrderedDict[str, Compiled] = OrderedDict()
        self.bytes = 0
        self.building: dict[str, asyncio.Future] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def peek(self, key: str) -> Compiled | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def _insert(self, entry: Compiled) -> None:
        if entry.nbytes > self.max_bytes or entry.key in self.entries:
            return
        self.entries[entry.key] = entry
        self.bytes += entry.nbytes
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.nbytes

    async def get_or_build(
        self, source: Source, build: Callable[[Source], Compiled], run: Run
    ) -> tuple[Compiled, bool]:
        """The entry for ``source`` and whether it was already compiled in this process."""
        entry = self.peek(source.key)
        if entry is not None:
            self.metrics.cache_hits.inc()
            return entry, True
        pending = self.building.get(source.key)
        if pending is not None:
            self.metrics.cache_hits.inc()
            return await asyncio.shield(pending), True
        self.metrics.cache_misses.inc()
        future = asyncio.get_running_loop().create_future()
        self.building[source.key] = future
        try:
            start = time.perf_counter()
            entry = await run(build, source)
            self.metrics.compile_time.observe(time.perf_counter() - start)
            self._insert(entry)
            future.set_result(entry)
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self.building[source.key]
        metadata = {"wrt": list(source.wrt), "pipeline_version": pipeline_version()}
        await self._store_call(self.store.put, source.key, source.text, metadata)
        return entry, False

    async def _store_call(self, fn, *args):
        # the store is an optimisation: when it fails, serve from this process and say so
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception:
            log.warning("shared store call %s failed", getattr(fn, "__name__", fn), exc_info=True)
            return None

    async def lookup(
        self, key: str, build: Callable[[Source], Compiled], run: Run
    ) -> Compiled | None:
        """The entry for a program id: this process's cache, else the shared store, else None."""
        entry = self.peek(key)
        if entry is not None:
            self.metrics.cache_hits.inc()
            return entry
        if key in self.building:
            return await self.get_or_build_pending(key)
        stored = await self._store_call(self.store.get, key)
        if stored is None:
            return None
        text, metadata = stored
        source = await run(_source_from_store, text, metadata, self.settings)
        if source.key != key:
            return None  # written by another pipeline version: not this program any more
        entry, _ = await self.get_or_build(source, build, run)
        return entry

    async def get_or_build_pending(self, key: str) -> Compiled:
        self.metrics.cache_hits.inc()
        return await asyncio.shield(self.building[key])


def _source_from_store(text: str, metadata: dict, settings: Settings) -> Source:
    return prepare(shax_core.parse(text), metadata.get("wrt"), settings)
