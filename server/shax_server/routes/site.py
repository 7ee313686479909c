"""The service's face: a landing page at ``/``, offline ``/docs`` and ``/redoc``, the stage
explorer at ``/explore`` (and ``/explore/{id}`` for a shared session) and its API.

Nothing is loaded from a CDN: Swagger UI and ReDoc come from the ``fastapi-offline`` package's
bundled files (mounted at ``/static/docs``), the explorer's HTML, CSS and dependency-free
JavaScript from ``shax_server/static`` (mounted at ``/static/site``).

``install(app, protected)`` mounts the files and includes the routers; the explorer's compute
endpoints get the API-key dependency ``protected`` (as the native API does). With API keys set,
the service's key gate closes every path, these pages too, unless ``SHAX_OPEN_PATHS`` opens them
(``PUBLIC_PAGES``); the explorer's page then asks for a key when it computes.
"""

from __future__ import annotations

import html
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from string import Template

import fastapi_offline
import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response

from shax_server.compilation import pipeline_version
from shax_server.deps import State, credentials_valid
from shax_server.explore import LINK_ID, LinkStore, explore, link_document, primitive_names
from shax_server.problems import Problem, not_found
from shax_server.routes.docs import problems
from shax_server.samples import SAMPLES
from shax_server.service import read_body

STATIC = Path(__file__).parent.parent / "static"
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
SITE_URL, DOCS_URL = "/static/site", "/static/docs"

pages = APIRouter(include_in_schema=False)
explorer = APIRouter(tags=["explorer"])  # compute: protected where the app includes it
explorer_public = APIRouter(tags=["explorer"])


# Pages may load only what this server serves. The docs pages need inline script and styles
# (Swagger UI's bootstrap, both UIs' styling) and blob workers (ReDoc's search); the CSP also
# stops the one outside fetch of the ReDoc bundle (the Redocly logo in its menu) before it
# reaches the network, so the docs never wait on a host this machine cannot reach.
PAGE_CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'"
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'"
)


def _page(html_text: str, csp: str = PAGE_CSP, **headers) -> HTMLResponse:
    return HTMLResponse(html_text, headers={"Content-Security-Policy": csp, **headers})


def package_version() -> str:
    try:
        return version("shax")
    except PackageNotFoundError:
        return "0"


_TENSORS = {
    "type": ["array", "null"],
    "items": {"description": "nested lists of numbers (or a tensor object with data)"},
}
# null means absent, as on the other native endpoints
EXPLORE_SCHEMA = {
    "type": "object",
    "required": ["program"],
    "properties": {
        "program": {"type": "string", "description": "IR text (see docs/ir.md)"},
        "inputs": {**_TENSORS, "description": "one per parameter; absent: stages only"},
        "tangents": {**_TENSORS, "description": "one per wrt input; default: the inputs"},
        "cotangents": {**_TENSORS, "description": "one per output; default: ones"},
        "wrt": {"type": ["array", "null"], "items": {"type": "integer"}},
        "rewrites": {"enum": ["shax", "seed", None], "default": "shax"},
    },
}


def _body(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _json(doc, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


# ---------------------------------------------------------------------------------------------
# the landing page


def wants_json(accept: str | None) -> bool:
    """Whether an Accept header prefers JSON to HTML: only when it names ``application/json``
    with a quality above that of ``text/html`` (absent: 0; wildcards alone mean HTML).

    >>> wants_json("application/json"), wants_json("text/html,*/*;q=0.8"), wants_json(None)
    (True, False, False)
    >>> wants_json("text/html;q=0.5, application/json")
    True
    """
    quality = {}
    for item in (accept or "").split(","):
        media, *params = (x.strip() for x in item.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        quality[media.lower()] = max(q, quality.get(media.lower(), 0.0))
    return quality.get("application/json", 0.0) > quality.get("text/html", 0.0)


# the pages a server with API keys can open to everyone (SHAX_OPEN_PATHS); the explorer's
# compute endpoints still ask for a key, which its page prompts for
PUBLIC_PAGES = (
    "/",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/explore",
    "/explore/*",
    "/static/*",
    "/v1/explore/samples",
)


def landing_document(request: Request, state) -> dict:
    """What the landing page says. Program ids are listed only to a caller who could use them
    (no API keys set, or the request carries one); the count is always given."""
    base = str(request.base_url).rstrip("/")
    keys = state.settings.api_keys
    shown = not keys or credentials_valid(request.scope.get("headers", ()), keys)
    models = list(state.cache.entries)
    return {
        "name": "shax",
        "description": "Automatic differentiation for NumPy-style Python, served over the "
        "network: POST a program once, get its outputs and gradients (You Only Linearize Once: "
        "traced, typed, rewritten, linearized, transposed, zipped).",
        "version": package_version(),
        "pipeline_version": pipeline_version(),
        "ready": state.ready,
        "models_loaded": len(models),
        "models": models[-20:] if shown else [],
        "links": {
            "explorer": f"{base}/explore",
            "docs": f"{base}/docs",
            "redoc": f"{base}/redoc",
            "openapi": f"{base}/openapi.json",
            "metrics": f"{base}/metrics",
            "health_live": f"{base}/v2/health/live",
            "health_ready": f"{base}/v2/health/ready",
        },
        "curl": (
            f"curl -s -X POST {base}/vjp -H 'content-type: application/json' -d "
            """'{"program": "def f(x :: f32[3]) = let y = mul x x  z = reduce_sum [0] y in [z]", """
            """"inputs": [{"data": [1, 2, 3]}]}'"""
        ),
    }


def _template(name: str) -> Template:
    return Template((STATIC / name).read_text(encoding="utf-8"))


@pages.get("/")
async def landing(request: Request, state: State) -> Response:
    doc = landing_document(request, state)
    if wants_json(request.headers.get("accept")):
        return Response(
            orjson.dumps(doc), media_type="application/json", headers={"Vary": "Accept"}
        )
    e = html.escape
    models = "".join(f"<li><code>{e(m)}</code></li>" for m in doc["models"]) or (
        "<li>none yet: POST a program to <code>/v1/programs</code> or <code>/vjp</code></li>"
    )
    page = _template("landing.html").substitute(
        version=e(doc["version"]),
        pipeline_version=e(doc["pipeline_version"]),
        ready="ready" if doc["ready"] else "starting",
        models_loaded=str(doc["models_loaded"]),
        models=models,
        curl=e(doc["curl"]),
        site=SITE_URL,
        base=e(str(request.base_url).rstrip("/")),
        **{f"link_{k}": e(v) for k, v in doc["links"].items()},
    )
    return _page(page, Vary="Accept")


# ---------------------------------------------------------------------------------------------
# API docs from the package's own files


@pages.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title="shax API (Swagger UI)",
        swagger_js_url=f"{root}{DOCS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{SITE_URL}/favicon.svg",
        swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": False},
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@pages.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title="shax API (ReDoc)",
        redoc_js_url=f"{root}{DOCS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{SITE_URL}/favicon.svg",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


# ---------------------------------------------------------------------------------------------
# the explorer


@pages.get("/explore")
async def explore_page() -> HTMLResponse:
    return _page(_template("explore.html").substitute(site=SITE_URL, link_id=""))


@pages.get("/explore/{link_id}")
async def explore_link_page(link_id: str) -> HTMLResponse:
    if not LINK_ID.match(link_id):
        raise not_found(f"no explorer session {link_id!r}: ids are 16 hex digits")
    return _page(_template("explore.html").substitute(site=SITE_URL, link_id=link_id))


@explorer.post(
    "/v1/explore",
    summary="Every pipeline stage of IR text, with equation counts, dataflow graphs and numbers",
    description=(
        "The stage explorer's engine. Body: `program` (IR text), optional `inputs` (one per "
        "parameter: nested lists or tensor objects), `tangents` (one per `wrt` input; default: "
        "the inputs, as in the seed), `cotangents` (one per output; default: ones), `wrt`, and "
        "`rewrites` (`shax`, the service's pipeline, or `seed`: the seed's canonical "
        "`dot_general` and `reduce_sum` lowered to slices). Answer: each stage's IR text, its "
        "equation count split into primal, residual and linear parts, and a layered dataflow "
        "graph; with inputs, the seed's numbers f(x), df(dx), dft(ct) and the VJP. Parse and "
        "type errors are problem+json with `line` and `column`."
    ),
    response_model=None,
    responses={200: {"description": "stages and numbers"}, **problems(400, 401, 413, 503)},
    openapi_extra=_body(EXPLORE_SCHEMA),
)
async def explore_api(request: Request, state: State) -> Response:
    doc = (await read_body(request)).doc
    return _json(await state.pool.run(explore, doc, state.settings))


@explorer_public.get(
    "/v1/explore/samples",
    summary="The explorer's samples (the seed's f and medium, an MLP, softmax cross-entropy)",
    response_model=None,
    responses={200: {"description": "samples by name, and the primitives' spellings"}},
)
async def samples() -> Response:
    return _json({"samples": SAMPLES, "primitives": primitive_names()})


@explorer.post(
    "/v1/explore/links",
    summary="Store an explorer session; its shareable link is /explore/{id}",
    response_model=None,
    responses={200: {"description": "the id and link"}, **problems(400, 401, 413)},
    openapi_extra=_body(EXPLORE_SCHEMA),
)
async def store_link(request: Request, state: State) -> Response:
    doc = (await read_body(request)).doc
    key, data = link_document(doc)
    links(request.app).put(key, data)
    store = state.cache.store
    try:
        await state.pool.run(store.put, f"explore-link:{key}", data.decode(), {"kind": "explore"})
    except Problem:
        pass  # the shared copy is best effort: this process keeps the session
    base = str(request.base_url).rstrip("/")
    return _json({"id": key, "url": f"{base}/explore/{key}"})


@explorer_public.get(
    "/v1/explore/links/{link_id}",
    summary="A stored explorer session",
    response_model=None,
    responses={200: {"description": "the session's request"}, **problems(404)},
)
async def load_link(link_id: str, request: Request, state: State) -> Response:
    if not LINK_ID.match(link_id):
        raise not_found(f"no explorer session {link_id!r}: ids are 16 hex digits")
    data = links(request.app).get(link_id)
    if data is None:
        stored = await state.pool.run(state.cache.store.get, f"explore-link:{link_id}")
        if stored is not None:
            data = _checked_link(link_id, stored[0])
            if data is not None:
                links(request.app).put(link_id, data)
    if data is None:
        raise not_found(f"no explorer session {link_id!r} (sessions live as long as the server)")
    return Response(data, media_type="application/json")


def _checked_link(link_id: str, text: str) -> bytes | None:
    """A session from the shared store, only if it is a session and has this id."""
    try:
        doc = orjson.loads(text)
        key, data = link_document(doc) if isinstance(doc, dict) else (None, b"")
    except (orjson.JSONDecodeError, Problem):
        return None
    return data if key == link_id else None


def links(app: FastAPI) -> LinkStore:
    return app.state.explore_links


def install(app: FastAPI, protected) -> None:
    """Mount the static files and include the pages and the explorer's API."""
    app.state.explore_links = LinkStore()
    app.mount(DOCS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    app.mount(SITE_URL, StaticFiles(directory=STATIC), name="site-assets")
    app.include_router(pages)
    app.include_router(explorer, dependencies=protected)
    app.include_router(explorer_public)
