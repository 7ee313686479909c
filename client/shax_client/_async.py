"""The asynchronous client: ``AsyncClient`` drives the shared flows with ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from shax_client._base import (
    BaseClient,
    Call,
    Flow,
    MinimizeResult,
    argnums_of,
    build_request,
    map_transport_error,
    minimize_x0,
    parse_body,
    raise_for_problem,
    restructure,
)
from shax_client._remote import AsyncRemoteFunction


class AsyncClient(BaseClient):
    """The same API as ``Client``, with coroutines::

        async with AsyncClient("http://127.0.0.1:8000") as client:
            rf = await client.compile(f, 0.5, -0.75)
            value, grads = await rf.value_and_grad(0.5, -0.75)

    ``transport`` is an async httpx transport (``httpx.ASGITransport(app)`` runs a shax app
    in-process); ``http`` an ``httpx.AsyncClient`` to use as is.
    """

    http_class = httpx.AsyncClient

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> httpx.Response:
        """One call, with bounded retries (connection errors, 503) when it is idempotent."""
        for attempt in range(self.retry.retries + 1):
            request = build_request(self._http, call, self.headers, self.base_url)
            try:
                response = await self._http.send(request, stream=call.stream)
            except httpx.TransportError as exc:
                if self.retry.retry_error(call, attempt, exc):
                    await asyncio.sleep(self.retry.delay(attempt))
                    continue
                raise map_transport_error(exc) from exc
            if call.stream and response.status_code >= 400:
                await response.aread()
                await response.aclose()
            if self.retry.retry_status(call, attempt, response.status_code):
                await response.aclose()
                await asyncio.sleep(self.retry.delay(attempt, response.headers.get("retry-after")))
                continue
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _run(self, flow: Flow) -> Any:
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._send(call))
        except StopIteration as stop:
            return stop.value

    async def request(self, method: str, path: str, json: Any = None) -> Any:
        response = await self._send(Call(method, path, json, idempotent=method in ("GET", "HEAD")))
        raise_for_problem(response)
        return parse_body(response)[0] if response.content else None

    async def compile(self, f, *specs_or_examples, wrt=None) -> AsyncRemoteFunction:
        entry, new = self._entry_for(f, specs_or_examples, wrt)
        if new:
            await self._run(self._upload_flow(entry))
        return AsyncRemoteFunction(self, entry)

    def value_and_grad(self, f, argnums=0, has_aux: bool = False):
        async def value_and_grad_f(*args):
            return await self._run(self._value_and_grad_flow(f, args, argnums, has_aux))

        value_and_grad_f.__name__ = f"value_and_grad_{getattr(f, '__name__', 'f')}"
        return value_and_grad_f

    def grad(self, f, argnums=0, has_aux: bool = False):
        vg = self.value_and_grad(f, argnums, has_aux)

        async def grad_f(*args):
            value, g = await vg(*args)
            return (g, value[1]) if has_aux else g

        grad_f.__name__ = f"grad_{getattr(f, '__name__', 'f')}"
        return grad_f

    async def vjp(self, f, *primals, has_aux: bool = False):
        """As ``Client.vjp``; ``vjp_fn`` is a coroutine function."""
        entry, out, aux = await self._run(self._vjp_outputs_flow(f, primals, has_aux))

        async def vjp_fn(cotangent):
            return await self._run(self._pullback_flow(entry, primals, cotangent, has_aux))

        return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)

    async def jvp(self, f, primals, tangents, has_aux: bool = False):
        return await self._run(self._jvp_user_flow(f, primals, tangents, has_aux))

    def hessian(self, f, argnums=0):
        async def hessian_f(*args):
            return await self._run(self._hessian_flow(f, args, argnums))

        hessian_f.__name__ = f"hessian_{getattr(f, '__name__', 'f')}"
        return hessian_f

    async def minimize(
        self,
        f,
        x0: Any,
        steps: int = 40,
        lr: float = 0.05,
        optimizer: str = "gd",
        progress: bool = True,
        every: int = 1,
        *,
        argnums=None,
        **hyper,
    ) -> MinimizeResult:
        args = minimize_x0(x0)
        nums = None if argnums is None else argnums_of(argnums, len(args))
        rf = await self.compile(f, *args, wrt=nums)
        result = await rf.minimize(args, steps, lr, optimizer, progress, every, **hyper)
        return restructure(result, rf._entry, x0)
