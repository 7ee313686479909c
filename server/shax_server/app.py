"""The app factory: ``create_app(settings)`` wires settings, cache, pool, routers and errors.

The lifespan builds the per-process state (cache, shared store, worker pool) and flips readiness;
``/v2/health/ready`` answers 503 until then. Middleware order, outermost first: request metrics,
body-size limit, then FastAPI's own stack (exception handlers render problem+json).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from shax_server import schemas
from shax_server.cache import ProgramCache
from shax_server.deps import ServiceState
from shax_server.metrics import Metrics
from shax_server.middleware import BodyLimit, RequestMetrics
from shax_server.pool import WorkerPool
from shax_server.problems import install_handlers
from shax_server.routes import oip, ops, programs
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
            app.openapi_schema = doc
        return app.openapi_schema

    return build


def create_app(settings: Settings | None = None, store: SharedStore | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        metrics = Metrics()
        cache = ProgramCache(settings, store or make_store(settings.redis_url), metrics)
        metrics.cache_entries.read = lambda: len(cache)
        metrics.cache_bytes.read = lambda: cache.bytes
        pool = WorkerPool(settings, metrics)
        state = ServiceState(settings, metrics, cache, pool)
        app.state.shax = state
        app.state.metrics_sink.target = metrics
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            pool.shutdown()

    app = FastAPI(title="shax", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    install_handlers(app)
    app.include_router(programs.router)
    app.include_router(oip.health)
    app.include_router(oip.models)
    app.include_router(ops.router)
    app.openapi = _openapi(app)
    # the metrics middleware is built before the lifespan runs; it reads the metrics through
    # this indirection so each lifespan's Metrics is the one counted
    app.state.metrics_sink = _MetricsSink()
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics_sink)
    return app


class _MetricsSink:
    """Forwards to the current lifespan's Metrics; drops observations before startup."""

    target: Metrics | None = None

    @property
    def requests(self):
        return self.target.requests if self.target else _Null()

    @property
    def latency(self):
        return self.target.latency if self.target else _Null()


class _Null:
    def inc(self, *a, **k):
        pass

    def observe(self, *a, **k):
        pass
