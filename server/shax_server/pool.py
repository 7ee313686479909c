"""The bounded worker pools: evaluation, and compilation in two lanes, all off the event loop.

NumPy releases the GIL in its kernels, so a few threads keep the event loop free to answer
health checks while a big program runs. Small evaluations (see ``runs_inline``) skip the pool.

Evaluation: at most ``max_inflight`` jobs are running or queued; beyond that a request gets 503
with ``Retry-After`` instead of waiting unboundedly. A job that exceeds ``eval_timeout`` answers
503 too; its thread finishes in the background and only then frees its slot, so timeouts cannot
oversubscribe the pool.

Compilation has its own threads, so compiles never hold evaluation threads, and two lanes of
one thread each: programs predicted cheap (at most ``small_compile_equations`` equations) and
the rest. A small program therefore never queues behind a big one. At most
``max_compile_queue`` compilations are running or queued (503 beyond). A compilation is not
cancelled when its request gives up (``wait`` answers 503 after ``eval_timeout``): it finishes,
and whoever awaits the same future (the cache keeps it) gets the result.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import Future, ThreadPoolExecutor

from shax_server.metrics import Metrics
from shax_server.problems import Problem
from shax_server.settings import Settings


class WorkerPool:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.threads = settings.eval_threads
        self.executor: ThreadPoolExecutor | None = None
        self.lanes: dict[str, ThreadPoolExecutor] = {}
        self.max_inflight = settings.max_inflight
        self.max_compiles = settings.max_compile_queue
        self.small_compile = settings.small_compile_equations
        self.timeout = settings.eval_timeout
        self.retry_after = settings.retry_after
        self.metrics = metrics
        self.inflight = 0
        self.compiling = 0

    def _busy(self, detail: str) -> Problem:
        return Problem(
            503,
            "Service busy",
            detail,
            kind="busy",
            headers={"Retry-After": str(self.retry_after)},
        )

    def _release(self, _future) -> None:
        # called from the worker thread when the job ends; hop back to the loop
        try:
            self.loop.call_soon_threadsafe(self._decrement)
        except RuntimeError:  # the loop is closed: the app is shutting down
            pass

    def _decrement(self) -> None:
        self.inflight -= 1
        self.metrics.inflight.add(-1)

    async def run(self, fn, *args, inline: bool = False):
        """``fn(*args)`` in a worker thread, refused with 503 when the pool is full.

        ``inline`` runs a job known to be small (microseconds to a millisecond) right here on
        the event loop: the thread hop would cost more than the job."""
        if inline:
            return fn(*args)
        if self.inflight >= self.max_inflight:
            self.metrics.rejected.inc()
            raise self._busy(
                f"{self.inflight} evaluations are in flight (limit {self.max_inflight}); "
                "retry later"
            )
        self.loop = asyncio.get_running_loop()
        self.inflight += 1
        self.metrics.inflight.add(1)
        if self.executor is None:
            self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix="shax-eval")
        # the job sees the request's context (its request id in log records), as to_thread does
        ctx = contextvars.copy_context()
        future = self.executor.submit(ctx.run, functools.partial(fn, *args))
        future.add_done_callback(self._release)
        return await self.wait(asyncio.wrap_future(future), "job")

    async def wait(self, future: asyncio.Future, what: str):
        """The result of ``future``, or 503 after ``eval_timeout`` (the job carries on)."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            goes_on = "; it goes on, and a retry gets its result" if what == "compilation" else ""
            raise self._busy(
                f"the {what} took longer than the {self.timeout:g} s limit "
                f"(SHAX_EVAL_TIMEOUT){goes_on}"
            ) from None

    def submit_compile(self, fn, *args, cost: int) -> Future:
        """Start ``fn(*args)`` in the compile lane for a job of ``cost`` (equations); 503 when
        ``max_compile_queue`` compilations are already running or queued."""
        if self.compiling >= self.max_compiles:
            self.metrics.compile_rejected.inc()
            raise self._busy(
                f"{self.compiling} compilations are running or queued (limit "
                f"{self.max_compiles}, SHAX_MAX_COMPILE_QUEUE); retry later"
            )
        lane = "small" if cost <= self.small_compile else "large"
        executor = self.lanes.get(lane)
        if executor is None:
            executor = self.lanes[lane] = ThreadPoolExecutor(1, f"shax-compile-{lane}")
        loop = asyncio.get_running_loop()
        self.compiling += 1
        self.metrics.compiling.add(1)

        def finished(_):
            try:
                loop.call_soon_threadsafe(self._compile_done)
            except RuntimeError:
                pass

        ctx = contextvars.copy_context()
        future = executor.submit(ctx.run, functools.partial(fn, *args))
        future.add_done_callback(finished)
        return future

    def _compile_done(self) -> None:
        self.compiling -= 1
        self.metrics.compiling.add(-1)

    async def compile(self, fn, *args, cost: int):
        """``fn(*args)`` in a compile lane (preparing a program: parse, infer, hash)."""
        return await self.wait(
            asyncio.wrap_future(self.submit_compile(fn, *args, cost=cost)), "job"
        )

    def shutdown(self) -> None:
        """Stop the threads; a later job starts a fresh executor."""
        executors = [self.executor, *self.lanes.values()]
        self.executor, self.lanes = None, {}
        for executor in executors:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
