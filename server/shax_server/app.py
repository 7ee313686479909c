"""The app factory: ``create_app(settings)`` wires settings, cache, pool, routers and errors.

Each app owns its state (cache, shared store, worker pool, metrics); the lifespan flips readiness
(``/v2/health/ready`` answers 503 outside it), probes the shared store's health while it runs,
and stops the pool's threads at shutdown. In front of everything, the cached-call fast path
(``fastpath.py``: answers cached evaluation calls itself, under the same rules, and passes
everything else on). Then the middleware, outermost first: request id, request metrics, API
keys (from the headers alone, before any body is read), body-size limit, then FastAPI's own
stack (exception handlers render problem+json).
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.types import Receive, Scope, Send

from shax_server import openapi_examples, routes_optimize, schemas
from shax_server.cache import ProgramCache
from shax_server.deps import Authorized, ServiceState
from shax_server.fastpath import FastPath, fast_calls
from shax_server.metrics import Metrics
from shax_server.middleware import Access, ApiKeyGate, BodyLimit, RequestID, RequestMetrics
from shax_server.models import load_repository
from shax_server.pool import WorkerPool
from shax_server.problems import install_handlers
from shax_server.repository import Registry
from shax_server.routes import oip, ops, programs, repository, site
from shax_server.settings import Settings
from shax_server.store import SharedStore, make_store

DESCRIPTION = """Automatic differentiation served over the network.

POST a program (IR text or JSON graph) once; the server runs the AD pipeline, caches the compiled
VJP under a content hash, and evaluates it on posted arrays. Tensors are Open Inference Protocol
tensor objects; large arrays can use the binary tensor extension. Errors are problem+json.
"""

DOC_MODELS = [
    schemas.Problem,
    schemas.CompileRequest,
    schemas.CompileResponse,
    schemas.ProgramInfo,
    schemas.VjpRequest,
    schemas.VjpByIdRequest,
    schemas.EvalRequest,
    schemas.JvpRequest,
    schemas.VjpResponse,
    schemas.EvalResponse,
    schemas.JvpResponse,
    schemas.ServerMetadata,
    schemas.ModelMetadata,
    schemas.InferRequest,
    schemas.InferResponse,
]


def _openapi(app: FastAPI):
    """The generated schema plus the documentation models the routes reference by name."""

    def build():
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _, defs = models_json_schema(
                [(m, "validation") for m in DOC_MODELS],
                ref_template="#/components/schemas/{model}",
            )
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in defs.get("$defs", {}).items():
                components.setdefault(name, schema)
            # request validation is answered 400 (problem+json), never FastAPI's 422
            for operations in doc.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            app.openapi_schema = openapi_examples.annotate(doc)  # examples, IR grammar
        return app.openapi_schema

    return build


def create_app(settings: Settings | None = None, store: SharedStore | None = None) -> ShaxApp:
    """A fresh app: its own cache, pool and metrics (nothing is shared between apps)."""
    settings = settings or Settings()
    metrics = Metrics()
    pool = WorkerPool(settings, metrics)
    store = store if store is not None else make_store(settings.redis_url)
    cache = ProgramCache(settings, store, metrics, pool)
    metrics.cache_entries.read = lambda: len(cache)
    metrics.cache_bytes.read = lambda: cache.bytes
    state = ServiceState(settings, metrics, cache, pool)
    state.registry = Registry(settings, metrics.forget_model)

    async def load_then_ready() -> None:
        # the server answers (live) while the repository compiles; ready once every model is
        # loaded or has failed (logged, UNAVAILABLE in the index with its reason)
        await load_repository(state)
        state.ready = True

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        probe = getattr(store, "probe", None)
        prober = asyncio.create_task(_probe_forever(probe, settings)) if probe else None
        grpc = None
        if settings.grpc_port is not None:
            from shax_server.grpc_server import make_server  # grpcio only when asked for

            grpc = make_server(state)
            await grpc.start()
        loading = None
        if state.registry.root is None:
            state.ready = True
        else:
            loading = asyncio.create_task(load_then_ready())
        try:
            yield
        finally:
            state.ready = False
            for task in (loading, prober):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if grpc is not None:
                await grpc.stop(grace=2)
            state.pool.shutdown()

    # /docs and /redoc come from site.install: assets shipped with the package, no CDN
    app = ShaxApp(
        title="shax",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.shax = state
    install_handlers(app)
    # the API-key check costs a dependency resolution per request: only where keys are set
    protected = Authorized if settings.api_keys else []
    app.include_router(programs.router, dependencies=protected)
    app.include_router(oip.health)
    # before oip.models: /v2/models/stats is the statistics route, not a model named "stats"
    app.include_router(repository.router, dependencies=protected)
    app.include_router(oip.models, dependencies=protected)
    app.include_router(ops.router)
    # POST /v1/programs/{id}/minimize
    app.include_router(routes_optimize.router, dependencies=protected)
    # landing page, offline docs, stage explorer
    site.install(app, protected)
    app.openapi = _openapi(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    access = Access(settings.api_keys, settings.open_paths)
    if settings.api_keys:
        app.add_middleware(ApiKeyGate, access=access)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(RequestID)  # every response, even a 413, carries the id
    if settings.fast_path:  # in front of it all: cached calls skip the stack, same rules
        calls = fast_calls(programs.router, oip.models)
        app.fast_path = FastPath(state, access, settings.max_body_bytes, calls)
    return app


class ShaxApp(FastAPI):
    """The FastAPI app, with the cached-call fast path (``fastpath.py``) asked first."""

    fast_path: FastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        call = None if fast is None else fast.match(scope)
        if call is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # as Starlette sets it: the route reads its state through it
        await fast.answer(call, scope, receive, send)


async def _probe_forever(probe, settings: Settings) -> None:
    """Ask the shared store whether it is up, every ``store_probe_interval`` seconds (what
    ``shax_redis_up`` reports: Redis' health now, not the last request's luck)."""
    while True:
        await asyncio.to_thread(probe)
        await asyncio.sleep(settings.store_probe_interval)
