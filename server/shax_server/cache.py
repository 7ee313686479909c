"""The compiled-program cache: an in-process LRU bounded by entries and bytes, single-flight.

Invariants:
- at most ``max_entries`` entries and ``max_bytes`` bytes (``Compiled.nbytes``: what the entry
  really holds, plans, constants and programs included) are held; the least recently used
  entry goes first, and an entry larger than ``max_bytes`` alone is never kept;
- concurrent requests for the same key while it compiles wait for that one compilation
  (single flight): the pipeline runs once per key per process. A compilation outlives the
  request that started it: when the request times out (503), the compile still finishes, is
  cached and shared, and the retry finds it;
- a miss consults the shared store (see ``store.py``) before compiling from scratch, and a fresh
  compilation is written back to it, as canonical IR text plus metadata (``wrt``, the pipeline
  version, the VJP program's IR text and, with ``SHAX_CACHE_SECRET``, an HMAC-SHA256
  ``signature`` over all of it). A stored VJP is planned without running the AD pipeline only
  when its signature verifies under this replica's secret; otherwise (unsigned, mis-signed, or
  no secret configured) the entry's source text, which must hash to the program id, is
  compiled again, and refusals are counted (``shax_store_refused_total``). So a forged entry can
  cost a compile, never a wrong gradient;
- the store is kept in step: a program uploaded again, or served from this cache, is written
  back when the store has lost it (a Redis restart, an eviction, a corrupt entry deleted),
  checked on every upload and, for by-id hits, at most once per ``store_recheck_seconds`` per
  program; in the background either way (the answer never waits for it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict

import shax_core
from shax_server.compilation import (
    Compiled,
    Source,
    build,
    check_peak,
    entry_bytes,
    pipeline_version,
    prepare,
)
from shax_server.metrics import Metrics
from shax_server.pool import WorkerPool
from shax_server.settings import Settings
from shax_server.store import NullStore, SharedStore

log = logging.getLogger("shax_server")


def sign(secret: bytes, key: str, text: str, metadata: dict) -> str:
    """HMAC-SHA256 of a store entry (its id, source text and metadata but the signature)."""
    unsigned = {k: v for k, v in metadata.items() if k != "signature"}
    message = json.dumps([key, text, unsigned], sort_keys=True, separators=(",", ":"))
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


class ProgramCache:
    def __init__(self, settings: Settings, store: SharedStore, metrics: Metrics, pool: WorkerPool):
        self.max_entries = settings.cache_entries
        self.max_bytes = settings.cache_bytes
        self.settings = settings
        self.secret = (
            settings.cache_secret.get_secret_value().encode() if settings.cache_secret else None
        )
        self.store = store
        self.shared = not isinstance(store, NullStore)
        self.metrics = metrics
        self.pool = pool
        self.entries: OrderedDict[str, Compiled] = OrderedDict()
        self.bytes = 0
        self.building: dict[str, asyncio.Future] = {}
        self.checked: dict[str, float] = {}  # key -> when the store last had it (or got it)
        # posted programs being (or lately) prepared, by a hash of the request's text: a retry
        # after a timed-out request finds the parse/infer that request started
        self.preparing: dict[str, asyncio.Future] = {}
        self.prepared: OrderedDict[str, Source] = OrderedDict()
        self.tasks: set[asyncio.Task] = set()
        bind = getattr(store, "bind_metrics", None)
        if bind is not None:
            bind(metrics)  # the Redis store reports its errors and state in /metrics

    def __len__(self) -> int:
        return len(self.entries)

    def holds(self, key: str) -> bool:
        """Whether ``key`` is compiled and in this process's cache (a lookup needs no wait)."""
        return key in self.entries

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
            self.checked.pop(old.key, None)

    def _hit(self, entry: Compiled, upload: bool = False) -> Compiled:
        self.metrics.cache_hits.inc()
        self._republish(entry, upload)
        return entry

    async def get_or_build(
        self, source: Source, stored: tuple[str, dict] | None = None
    ) -> tuple[Compiled, bool]:
        """The entry for ``source`` and whether it was already compiled (in this process, or by
        a replica that shared it). ``stored`` is the store's entry when the caller has it."""
        entry = self.peek(source.key)
        if entry is not None:
            return self._hit(entry, upload=True), True
        pending = self.building.get(source.key)
        if pending is not None:
            self.metrics.cache_hits.inc()
            entry, _ = await self.pool.wait(pending, "compilation")  # (entry, restored)
            return entry, True
        self.metrics.cache_misses.inc()
        if stored is None and self.shared:
            stored = await self._store_call(self.store.get, source.key)
        usable = self._verified(source.key, stored)
        cost = len(source.program.eqns)
        job = self.pool.submit_compile(_compile, source, usable, self.settings, cost=cost)
        future = asyncio.wrap_future(job)
        self.building[source.key] = future
        start = time.perf_counter()
        waiting = [True]  # whether the request that started it still waits (then it publishes)

        def done(f: asyncio.Future) -> None:  # on the loop, whether or not anyone still waits
            self.building.pop(source.key, None)
            if f.cancelled() or f.exception() is not None:
                return
            entry, restored = f.result()
            self._insert(entry)
            if restored:
                self.metrics.store_hits.inc()
            else:
                self.metrics.compile_time.observe(time.perf_counter() - start)
                if not waiting[0]:
                    self._background(self._put(entry))

        future.add_done_callback(done)
        try:
            entry, restored = await self.pool.wait(future, "compilation")
        except BaseException:
            waiting[0] = False
            raise
        if not restored:
            await self._put(entry)  # before answering: other replicas can use its id at once
        return entry, restored

    async def prepare(self, request_key: str, fn, *args, cost: int) -> Source:
        """``fn(*args)`` (parse, infer, hash a posted program) in a compile lane, once per
        request text: concurrent and retried requests share it, also past a timeout."""
        source = self.prepared.get(request_key)
        if source is not None:
            return source
        future = self.preparing.get(request_key)
        if future is None:
            future = asyncio.wrap_future(self.pool.submit_compile(fn, *args, cost=cost))
            self.preparing[request_key] = future

            def done(f: asyncio.Future) -> None:
                self.preparing.pop(request_key, None)
                if not f.cancelled() and f.exception() is None:
                    self.prepared[request_key] = f.result()
                    while len(self.prepared) > 64:
                        self.prepared.popitem(last=False)

            future.add_done_callback(done)
        return await self.pool.wait(future, "compilation")

    def _verified(self, key: str, stored) -> tuple[str, dict] | None:
        """``stored`` when its VJP may be planned as it is (signature valid), else None."""
        if not stored:
            return None
        metadata = stored[1] if isinstance(stored, tuple) and len(stored) == 2 else None
        if self.secret is None:
            self.metrics.store_refused.inc("no-secret")
            return None
        signature = metadata.get("signature") if isinstance(metadata, dict) else None
        if not isinstance(signature, str):
            reason = "unsigned"
        elif not isinstance(stored[0], str) or not hmac.compare_digest(
            signature, sign(self.secret, key, stored[0], metadata)
        ):
            reason = "bad-signature"
        else:
            return stored
        self.metrics.store_refused.inc(reason)
        log.warning(
            "refusing shared-store entry %s (%s): recompiling it from its source", key[:16], reason
        )
        return None

    async def _store_call(self, fn, *args):
        # the store is an optimisation: when it fails, serve from this process and say so
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception:
            log.warning("shared store call %s failed", getattr(fn, "__name__", fn), exc_info=True)
            return None

    async def lookup(self, key: str) -> Compiled | None:
        """The entry for a program id: this process's cache, else the shared store, else None."""
        entry = self.peek(key)
        if entry is not None:
            return self._hit(entry)
        if key in self.building:
            self.metrics.cache_hits.inc()
            entry, _ = await self.pool.wait(self.building[key], "compilation")  # (entry, restored)
            return entry
        if not self.shared:
            return None
        stored = await self._store_call(self.store.get, key)
        if stored is None:
            return None
        source = await self.pool.compile(_source_from_store, key, stored, self.settings, cost=0)
        if source is None:
            self.metrics.store_corrupt.inc()
            return None
        entry, _ = await self.get_or_build(source, stored)
        return entry

    # -- keeping the store in step ----------------------------------------------------------------

    def _metadata(self, entry: Compiled) -> dict:
        metadata = {
            "wrt": list(entry.source.wrt),
            "pipeline_version": pipeline_version(),
            "residuals": entry.source.residuals,
            "vjp": None if entry.vjp is None else str(entry.vjp),
            "names": list(entry.source.names),
        }
        if self.secret is not None:
            metadata["signature"] = sign(self.secret, entry.key, entry.source.text, metadata)
        return metadata

    async def _put(self, entry: Compiled) -> None:
        if not self.shared:
            return
        metadata = await asyncio.to_thread(self._metadata, entry)
        await self._store_call(self.store.put, entry.key, entry.source.text, metadata)
        self.checked[entry.key] = time.monotonic()

    def _republish(self, entry: Compiled, upload: bool) -> None:
        if not self.shared:
            return
        now = time.monotonic()
        recheck = self.settings.store_recheck_seconds
        if not upload and now - self.checked.get(entry.key, 0.0) < recheck:
            return
        self.checked[entry.key] = now
        self._background(self._republish_if_missing(entry))

    async def _republish_if_missing(self, entry: Compiled) -> None:
        exists = getattr(self.store, "exists", None)
        if exists is None:
            return
        if await self._store_call(exists, entry.key) is False:
            self.metrics.store_republished.inc()
            await self._put(entry)

    def _background(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


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
    names = metadata.get("names")  # the parameter names it was compiled under (display only)
    if (
        isinstance(names, list)
        and len(names) == len(source.program.params)
        and all(isinstance(n, str) and n for n in names)
        and len(set(names)) == len(names)
    ):
        source = dataclasses.replace(source, names=tuple(names))
    return source


def _compile(
    source: Source, stored: tuple[str, dict] | None, settings: Settings
) -> tuple[Compiled, bool]:
    """(entry, whether it was planned from the store's verified VJP text) for ``source``."""
    if stored is not None:
        entry = _restore(source, stored, settings)
        if entry is not None:
            return entry, True
    return build(source, settings), False


def _restore(source: Source, stored: tuple[str, dict], settings: Settings) -> Compiled | None:
    """``source`` planned from a (signature-verified) store entry's VJP text without running
    the AD pipeline, or None (logged) when the entry is not this program's or is unusable."""
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
    return Compiled(
        source, vjp, vjp_exe, forward_exe, entry_bytes(source, vjp, forward_exe, vjp_exe)
    )
