"""The synchronous client: ``Client`` drives the shared flows with ``httpx.Client``."""

from __future__ import annotations

import time
from typing import Any

import httpx

from shax_client._base import (
    DEFAULT_BINARY_THRESHOLD,
    DEFAULT_TIMEOUT,
    BaseClient,
    Call,
    Flow,
    MinimizeResult,
    build_request,
    map_transport_error,
    minimize_x0,
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

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        binary_threshold: int = DEFAULT_BINARY_THRESHOLD,
        program_format: str = "text",
    ):
        super().__init__(
            base_url,
            api_key=api_key,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            binary_threshold=binary_threshold,
            program_format=program_format,
        )
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=timeout, transport=transport)

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

    def value_and_grad(self, f, argnums=0):
        """``(f(*args), ∇f(*args))`` computed on the server, like ``jax.value_and_grad``."""

        def value_and_grad_f(*args):
            return self.compile(f, *args, wrt=argnums).value_and_grad(*args)

        value_and_grad_f.__name__ = f"value_and_grad_{getattr(f, '__name__', 'f')}"
        return value_and_grad_f

    def grad(self, f, argnums=0):
        """``∇f`` computed on the server, like ``jax.grad``."""
        vg = self.value_and_grad(f, argnums)

        def grad_f(*args):
            return vg(*args)[1]

        grad_f.__name__ = f"grad_{getattr(f, '__name__', 'f')}"
        return grad_f

    def minimize(
        self,
        f,
        x0: Any,
        steps: int = 40,
        lr: float = 0.05,
        optimizer: str = "gd",
        progress: bool = True,
        every: int = 1,
        **hyper,
    ) -> MinimizeResult:
        """Minimize scalar ``f`` from ``x0`` (a tuple/list: one argument per parameter) on the
        server; a tqdm bar shows progress unless ``progress=False``."""
        args = minimize_x0(x0)
        rf = self.compile(f, *args)
        return rf.minimize(args, steps, lr, optimizer, progress, every, **hyper)
