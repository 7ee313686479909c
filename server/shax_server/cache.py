"""The compiled-program cache: an in-process LRU bounded by entries and bytes, single-flight.

Invariants:
- at most ``max_entries`` entries and (estimated) ``max_bytes`` bytes are held; the least
  recently used entry goes first, and an entry larger than ``max_bytes`` alone is never kept;
- concurrent requests for the same key while it compiles wait for that one compilation
  (single flight): the pipeline runs once per key per process;
- a miss consults the shared store (see ``store.py``) before compiling from scratch, and a fresh
  compilation is written back to it, as canonical IR text plus metadata (``wrt``, the pipeline
  version and the VJP program's IR text). An entry whose text is this program and whose VJP text
  parses with the expected signature is planned without running the AD pipeline (a store hit, no
  compile); anything unusable in the store is logged, counted and ignored (then compiled).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import shax_core
from shax_server.compilation import Compiled, Source, check_peak, pipeline_version, prepare
from shax_server.metrics import Metrics
from shax_server.settings import Settings
from shax_server.store import NullStore, SharedStore

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
        bind = getattr(store, "bind_metrics", None)
        if bind is not None:
            bind(metrics)  # the Redis store reports its errors and state in /metrics

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
        self,
        source: Source,
        build: Callable[[Source], Compiled],
        run: Run,
        stored: tuple[str, dict] | None = None,
    ) -> tuple[Compiled, bool]:
        """The entry for ``source`` and whether it was already compiled (in this process, or by
        a replica that shared it). ``stored`` is the store's entry when the caller has it."""
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
        fresh = False
        try:
            if stored is None and not isinstance(self.store, NullStore):
                stored = await self._store_call(self.store.get, source.key)
            entry = await run(_restore, source, stored, self.settings) if stored else None
            if entry is not None:
                self.metrics.store_hits.inc()
            else:
                if stored:
                    self.metrics.store_corrupt.inc()
                start = time.perf_counter()
                entry = await run(build, source)
                self.metrics.compile_time.observe(time.perf_counter() - start)
                fresh = True
            self._insert(entry)
            future.set_result(entry)
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self.building[source.key]
        if fresh:
            await self._store_call(_put, self.store, entry)
        return entry, not fresh

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
        source = await run(_source_from_store, key, stored, self.settings)
        if source is None:
            self.metrics.store_corrupt.inc()
            return None
        entry, _ = await self.get_or_build(source, build, run, stored)
        return entry

    async def get_or_build_pending(self, key: str) -> Compiled:
        self.metrics.cache_hits.inc()
        return await asyncio.shield(self.building[key])


def _source_from_store(key: str, stored: tuple[str, dict], settings: Settings) -> Source | None:
    """The program a store entry holds, or None (logged) when it is not the program ``key``."""
    try:
        text, metadata = stored
        residuals = metadata.get("residuals")
        source = prepare(shax_core.parse(text), metadata.get("wrt"), settings, residuals)
    except Exception as e:  # text that does not parse, bad wrt, over this replica's limits
        log.warning("ignoring shared-store entry %s: %s", key[:16], e)
        return None
    if source.key != key:
        log.warning("ignoring shared-store entry %s: its text hashes to %s", key[:16], source.key)
        return None
    return source


def _restore(source: Source, stored: tuple[str, dict], settings: Settings) -> Compiled | None:
    """``source`` planned from a store entry's VJP text without running the AD pipeline, or
    None (logged) when the entry is not this program's or its VJP text is unusable."""
    try:
        text, metadata = stored
        if text != source.text or metadata.get("wrt") != list(source.wrt):
            raise ValueError("it holds another program")
        vjp_text = metadata.get("vjp")
        if not isinstance(vjp_text, str):
            raise ValueError("it has no VJP text")
        vjp = shax_core.verify(shax_core.infer(shax_core.parse(vjp_text)))
        p = source.program
        want_in = [v.type for v in p.params] + [v.type for v in p.outs]
        want_out = [v.type for v in p.outs] + [p.params[i].type for i in source.wrt]
        if [v.type for v in vjp.params] != want_in or [v.type for v in vjp.outs] != want_out:
            raise ValueError("its VJP program has the wrong signature")
    except Exception as e:
        log.warning("not using shared-store entry %s: %s", source.key[:16], e)
        return None
    forward_exe = shax_core.compile(p)
    check_peak(forward_exe, "forward", settings)
    vjp_exe = shax_core.compile(vjp)
    check_peak(vjp_exe, "VJP", settings)
    nbytes = len(source.text) + len(vjp_text) + 1024  # as compilation.build counts it
    return Compiled(source, vjp, vjp_exe, forward_exe, nbytes)


def _put(store: SharedStore, entry: Compiled) -> None:
    """Share a fresh compilation: canonical source text, wrt, pipeline version, VJP text."""
    metadata = {
        "wrt": list(entry.source.wrt),
        "pipeline_version": pipeline_version(),
        "residuals": entry.source.residuals,
        "vjp": str(entry.vjp),
    }
    store.put(entry.key, entry.source.text, metadata)
