"""The bounded worker pool: compilation and evaluation run here, off the event loop.

NumPy releases the GIL in its kernels, so a few threads keep the event loop free to answer
health checks while a big program runs. Small evaluations (see ``runs_inline``) skip the pool.
At most ``max_inflight`` jobs are running or queued; beyond that a request gets 503 with
``Retry-After`` instead of waiting unboundedly. A job that
exceeds ``eval_timeout`` answers 503 too; its thread finishes in the background and only then
frees its slot, so timeouts cannot oversubscribe the pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor

from shax_server.metrics import Metrics
from shax_server.problems import Problem
from shax_server.settings import Settings


class WorkerPool:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.threads = settings.eval_threads
        self.executor: ThreadPoolExecutor | None = None
        self.max_inflight = settings.max_inflight
        self.timeout = settings.eval_timeout
        self.retry_after = settings.retry_after
        self.metrics = metrics
        self.inflight = 0

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
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except TimeoutError:
            raise self._busy(
                f"the job took longer than the {self.timeout:g} s limit (SHAX_EVAL_TIMEOUT)"
            ) from None

    def shutdown(self) -> None:
        """Stop the threads; a later job starts a fresh executor."""
        executor, self.executor = self.executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
