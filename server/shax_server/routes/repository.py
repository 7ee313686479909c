"""Triton's HTTP extensions: model repository, model configuration and statistics.

- ``POST /v2/repository/index`` (body ``{"ready": bool}``, optional): every model of the
  repository and every registered name, one row per loaded version.
- ``POST /v2/repository/models/{m}/load`` (optional ``{"parameters": {"config": "<json>"}}``):
  (re)load every version of a repository model (explicit model control; 200 once it is READY).
- ``POST /v2/repository/models/{m}/unload``: the name stops resolving (its programs stay in the
  cache under their content ids).
- ``GET /v2/models[/{m}[/versions/{v}]]/stats``: Triton's ``model_stats`` response.
- ``GET /v2/models/{m}[/versions/{v}]/config``: Triton's ``ModelConfig`` as JSON.

The app includes this router before the OIP one, so ``/v2/models/stats`` is this route and not
the metadata of a model called "stats".
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from shax_server.body import parse, receive
from shax_server.deps import State
from shax_server.encoding import inflate
from shax_server.models import (
    check_model_control,
    config_doc,
    find_model,
    load_config,
    load_model,
    stats_doc,
)
from shax_server.problems import Problem
from shax_server.routes.docs import problems

router = APIRouter(tags=["repository"])  # protected where the app includes it

VERSIONED = "/v2/models/{model_name}/versions/{model_version}"


def _json(doc) -> Response:
    return Response(orjson.dumps(doc), media_type="application/json")


async def _optional_body(request: Request) -> dict:
    """The JSON object of a body that may be empty (tritonclient posts an empty index body)."""
    settings = request.app.state.shax.settings
    raw = await receive(request, settings, settings.max_body_bytes)
    raw = inflate(raw, request.headers.get("content-encoding"), settings.max_body_bytes)
    if not raw.strip():
        return {}
    doc, _ = parse(raw, None, settings)
    if not isinstance(doc, dict):
        raise Problem(
            400, "Invalid request", "the body must be a JSON object", kind="invalid-request"
        )
    return doc


def _ok(description: str) -> dict:
    return {200: {"description": description, "content": {"application/json": {}}}}


@router.post(
    "/v2/repository/index",
    summary="Repository index: models, versions and their states",
    response_model=None,
    responses={**_ok("a list of {name, version, state, reason}"), **problems(400, 401, 503)},
)
async def index(request: Request, state: State) -> Response:
    doc = await _optional_body(request)
    ready = doc.get("ready", False)
    if not isinstance(ready, bool):
        raise Problem(
            400, "Invalid request", "'ready' must be true or false", kind="invalid-request"
        )
    return _json(state.registry.index(ready))


@router.post(
    "/v2/repository/models/{model_name}/load",
    summary="Load (or reload) a repository model; 200 once every version is ready",
    response_class=Response,
    responses={200: {"description": "loaded (empty body)"}, **problems(400, 401, 404, 413, 503)},
)
async def load(model_name: str, request: Request, state: State) -> Response:
    doc = await _optional_body(request)
    await load_model(state, model_name, load_config(doc.get("parameters")))
    return Response(status_code=200)


@router.post(
    "/v2/repository/models/{model_name}/unload",
    summary="Unload a model: its name stops resolving",
    response_class=Response,
    responses={200: {"description": "unloaded (empty body)"}, **problems(400, 401, 404, 503)},
)
async def unload(model_name: str, request: Request, state: State) -> Response:
    await _optional_body(request)  # parameters.unload_dependents: shax models have none
    check_model_control(state)
    async with state.registry.lock(model_name):
        state.registry.unload(model_name)
    return Response(status_code=200)


STATS = {"response_model": None, "responses": {**_ok("Triton's model_stats"), **problems(401, 404)}}


@router.get("/v2/models/stats", summary="Statistics of every model version", **STATS)
async def all_stats(state: State) -> Response:
    return _json(await stats_doc(state, None, None))


@router.get("/v2/models/{model_name}/stats", summary="Statistics of a model", **STATS)
async def model_stats(model_name: str, state: State) -> Response:
    return _json(await stats_doc(state, model_name, None))


@router.get(VERSIONED + "/stats", summary="Statistics of one model version", **STATS)
async def version_stats(model_name: str, model_version: str, state: State) -> Response:
    return _json(await stats_doc(state, model_name, model_version))


CONFIG = {
    "response_model": None,
    "responses": {**_ok("Triton's ModelConfig as JSON"), **problems(401, 404, 503)},
}


@router.get("/v2/models/{model_name}/config", summary="Model configuration", **CONFIG)
async def model_config(model_name: str, state: State) -> Response:
    return _json(config_doc(await find_model(state, model_name)))


@router.get(VERSIONED + "/config", summary="Configuration of one model version", **CONFIG)
async def version_config(model_name: str, model_version: str, state: State) -> Response:
    return _json(config_doc(await find_model(state, model_name, model_version)))
