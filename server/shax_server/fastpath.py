"""The cached-call fast path: hot evaluation calls answered in raw ASGI, ahead of FastAPI.

A cached ``POST /v1/programs/{program_id}/vjp`` spends about half its CPU in FastAPI's routing,
dependency resolution and the middleware layers around a route whose own work (read the body,
decode, evaluate, encode) is small. ``FastPath`` answers these calls in front of the app, when
they need no waiting to find their program:

- ``POST /v1/programs/{program_id}/vjp`` whose program is compiled in this process's cache;
- ``POST /v2/models/{model_name}/infer`` and ``.../versions/{model_version}/infer`` whose model
  (a registered version, or a bare program id) is compiled in the cache.

The app (``app.ShaxApp``) asks ``FastPath.match`` before anything of its own runs; a match is
answered by ``FastPath.answer``, which runs the route's own handler (``vjp_by_id`` of
``routes.programs``, ``infer_model`` of ``routes.oip``) under the same rules as the app, applied
by the same functions as the app's middleware (``middleware.py``): the request id (header in
and out, in every log record), the API keys (401 from the headers, before any body is read),
the declared body limit (413), the request metrics (route template and status, latency), and
errors rendered by the function the app's exception handlers call (``problems.error_response``).
The route's limits are the route's own: the body budget from the program's types,
``max_output_bytes`` from the output types, the tensor checks, the worker pool's bounds.

Everything else goes to the FastAPI app unchanged: other paths and methods, a ``root_path``, a
program that is not in the cache (the app looks in the shared store, joins a compilation, or
answers 404), a model that is still loading. ``SHAX_FAST_PATH=false`` sends everything there.

Two differences, both outside the answers' contract: an unexpected exception (a bug) is logged
and answered 500 here with the request id on it (the app answers the same 500 from Starlette's
outermost layer, without the id), and FastAPI's native OpenTelemetry hooks, when configured,
do not see the calls answered here.
"""

from __future__ import annotations

import time

from fastapi.routing import APIRoute, APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from shax_server import logs
from shax_server.deps import ServiceState
from shax_server.logs import request_id
from shax_server.middleware import (
    Access,
    declared_too_large,
    id_sender,
    record_request,
    request_id_for,
    with_request_id,
)
from shax_server.problems import Problem, error_response, problem_response
from shax_server.routes.oip import VERSIONED, infer_model
from shax_server.routes.programs import vjp_by_id


def _program_cached(state: ServiceState, program_id: str) -> bool:
    return state.cache.holds(program_id)


def _model_cached(state: ServiceState, model_name: str, model_version: str | None = None) -> bool:
    try:
        version = state.registry.find(model_name, model_version)
    except Problem:
        return False  # no such version: the app says so
    if version is None:
        return model_version is None and state.cache.holds(model_name)
    return state.cache.holds(version.source.key)


async def _infer(
    state: ServiceState, request: Request, model_name: str, model_version: str | None = None
) -> Response:
    return await infer_model(state, request, model_name, model_version)


# (route template, whether a call may take the fast path, its handler), for POST; a handler
# takes (state, request, **path parameters)
CALLS = (
    ("/v1/programs/{program_id}/vjp", _program_cached, vjp_by_id),
    ("/v2/models/{model_name}/infer", _model_cached, _infer),
    (VERSIONED + "/infer", _model_cached, _infer),
)


def fast_calls(*routers: APIRouter) -> list[tuple[APIRoute, object, object]]:
    """``CALLS`` with the route objects of ``routers`` (included in the app without a prefix):
    their path regex matches a call, and their template labels its metrics, as in the app."""
    routes = {
        r.path: r
        for router in routers
        for r in router.routes
        if isinstance(r, APIRoute) and "POST" in (r.methods or ())
    }
    return [(routes[path], eligible, handler) for path, eligible, handler in CALLS]


class FastPath:
    """The fast path of one app: ``match`` says whether a request is one of its ``calls`` (and
    eligible), ``answer`` serves it; the app (``app.ShaxApp``) asks before its own stack."""

    def __init__(self, state: ServiceState, access: Access, max_body_bytes: int, calls: list):
        self.state = state
        self.access = access
        self.max_body_bytes = max_body_bytes
        self.calls = calls
        self.counted = state.metrics.fast_path
        logs.install()

    def match(self, scope: Scope):
        """(route, handler, path parameters) of an eligible call, else None."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        path = scope["path"]
        for route, eligible, handler in self.calls:
            m = route.path_regex.match(path)
            if m is not None:
                convert = route.param_convertors
                params = {k: convert[k].convert(v) for k, v in m.groupdict().items()}
                return (route, handler, params) if eligible(self.state, **params) else None
        return None

    async def answer(self, call, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a matched call as the app would: request id, API key, declared body limit,
        the route's handler, its errors as problem+json, the request's metrics."""
        route, handler, params = call
        headers = scope["headers"]
        rid = request_id_for(headers)
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        try:
            self.counted.inc()
            refusal = self.access.refusal(scope["path"], headers) or declared_too_large(
                headers, self.max_body_bytes
            )
            if refusal is not None:
                response = problem_response(refusal)  # before routing: counted as unmatched
            else:
                scope["route"] = route
                scope["path_params"] = params
                try:
                    response = await handler(self.state, Request(scope, receive), **params)
                except Exception as exc:  # what the app's exception handlers answer
                    response = error_response(exc)
            status = response.status_code
            if type(response) is Response and response.background is None:
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": with_request_id(response.raw_headers, rid),
                    }
                )
                await send({"type": "http.response.body", "body": response.body})
            else:  # streamed (big binary tensors)
                await response(scope, receive, id_sender(send, rid))
        finally:
            record_request(self.state.metrics, scope, status, started)
            request_id.reset(token)
