"""The synchronous client: ``Client`` drives the shared flows with ``httpx.Client``."""

from __future__ import annotations

import time
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
    restructure,
)
from shax_client._remote import RemoteFunction


class Client(BaseClient):
    """A shax server, seen from Python::

        with Client("http://127.0.0.1:8000") as client:
            df = client.grad(f)          # like jax.grad, evaluated on the server
            df(0.5, -0.75)

    ``transport`` is an httpx transport (``httpx.MockTransport``, ``httpx.WSGITransport``...);
    ``http`` an ``httpx.Client`` to use as is (e.g. a Starlette ``TestClient``), which the
    client then does not close. ``retries`` bounds the extra attempts of idempotent calls after
    a connection error or a 503 (exponential backoff from ``backoff`` seconds).
    """

    http_class = httpx.Client

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- I/O -------------------------------------------------------------------------------

    def _send(self, call: Call) -> httpx.Response:
        """One call, with bounded retries (connection errors, 503) when it is idempotent."""
        for attempt in range(self.retry.retries + 1):
            request = build_request(self._http, call, self.headers, self.base_url)
            try:
                response = self._http.send(request, stream=call.stream)
            except httpx.TransportError as exc:
                if self.retry.retry_error(call, attempt, exc):
                    time.sleep(self.retry.delay(attempt))
                    continue
                raise map_transport_error(exc) from exc
            if call.stream and response.status_code >= 400:
                response.read()
                response.close()
            if self.retry.retry_status(call, attempt, response.status_code):
                response.close()
                time.sleep(self.retry.delay(attempt, response.headers.get("retry-after")))
                continue
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _run(self, flow: Flow) -> Any:
        """Drive a flow to its result."""
        try:
            call = next(flow)
            while True:
                call = flow.send(self._send(call))
        except StopIteration as stop:
            return stop.value

    def request(self, method: str, path: str, json: Any = None) -> Any:
        """A raw JSON call (e.g. ``client.request("GET", "/v2/health/ready")``); errors typed."""
        from shax_client._base import parse_body, raise_for_problem

        response = self._send(Call(method, path, json, idempotent=method in ("GET", "HEAD")))
        raise_for_problem(response)
        return parse_body(response)[0] if response.content else None

    # -- the SDK ---------------------------------------------------------------------------

    def compile(self, f, *specs_or_examples, wrt=None) -> RemoteFunction:
        """Trace ``f`` at these types (specs or example arguments) and upload it, once per
        function and signature. ``wrt``: input indices to differentiate (default all float)."""
        entry, new = self._entry_for(f, specs_or_examples, wrt)
        if new:
            self._run(self._upload_flow(entry))
        return RemoteFunction(self, entry)

    def value_and_grad(self, f, argnums=0, has_aux: bool = False):
        """``(f(*args), ∇f(*args))`` computed on the server, like ``jax.value_and_grad``:
        pytrees in and out, ``argnums`` an int or a tuple (negative from the end),
        ``has_aux`` for ``f`` returning ``(value, aux)``."""

        def value_and_grad_f(*args):
            return self._run(self._value_and_grad_flow(f, args, argnums, has_aux))

        value_and_grad_f.__name__ = f"value_and_grad_{getattr(f, '__name__', 'f')}"
        return value_and_grad_f

    def grad(self, f, argnums=0, has_aux: bool = False):
        """``∇f`` computed on the server, like ``jax.grad``."""
        vg = self.value_and_grad(f, argnums, has_aux)

        def grad_f(*args):
            value, g = vg(*args)
            return (g, value[1]) if has_aux else g

        grad_f.__name__ = f"grad_{getattr(f, '__name__', 'f')}"
        return grad_f

    def vjp(self, f, *primals, has_aux: bool = False):
        """``(f(*primals), vjp_fn)`` (and ``aux``), like ``jax.vjp``: ``vjp_fn(cotangent)``
        returns one cotangent per primal; each call is one VJP on the server."""
        entry, out, aux = self._run(self._vjp_outputs_flow(f, primals, has_aux))

        def vjp_fn(cotangent):
            return self._run(self._pullback_flow(entry, primals, cotangent, has_aux))

        return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)

    def jvp(self, f, primals, tangents, has_aux: bool = False):
        """``(f(*primals), ∂f·tangents)`` by forward mode on the server, like ``jax.jvp``."""
        return self._run(self._jvp_user_flow(f, primals, tangents, has_aux))

    def hessian(self, f, argnums=0):
        """The Hessian of scalar ``f``, like ``jax.hessian`` (the gradient program traced
        here, differentiated again on the server)."""

        def hessian_f(*args):
            return self._run(self._hessian_flow(f, args, argnums))

        hessian_f.__name__ = f"hessian_{getattr(f, '__name__', 'f')}"
        return hessian_f

    def minimize(
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
        """Minimize scalar ``f`` from ``x0`` (a tuple/list: one argument per parameter, each
        a pytree) on the server. Only the arguments in ``argnums`` (default: all) move; the
        others (data) are sent as inputs on every call, so new data never recompiles and is
        never moved. ``params`` come back in ``x0``'s structure; a tqdm bar shows progress
        unless ``progress=False``."""
        args = minimize_x0(x0)
        nums = None if argnums is None else argnums_of(argnums, len(args))
        rf = self.compile(f, *args, wrt=nums)
        result = rf.minimize(args, steps, lr, optimizer, progress, every, **hyper)
        return restructure(result, rf._entry, x0)
