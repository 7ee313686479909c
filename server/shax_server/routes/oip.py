"""The Open Inference Protocol (KServe v2 / Triton REST), JSON and binary tensor extension.

A model is a registered name (``/v2/models/{name}``, its latest version, or
``/v2/models/{name}/versions/{version}``) or a compiled program's bare content id. Its inputs
are the program's arguments, named as the client (or the repository's program) named them, then
its output cotangents; its outputs are the program's outputs then the gradients (names: see
``shax_server.compilation`` and a version's config). Inputs are matched by name; the canonical
names ``a0, a1, ...`` are accepted too. Cotangents may be left out when every output is a float
scalar (then 1.0).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request
from starlette.responses import Response

from shax_server.deps import State
from shax_server.models import (
    decode_inputs,
    find_model,
    metadata_doc,
    output_types,
    run_inference,
)
from shax_server.problems import Problem
from shax_server.routes.docs import body, ok, problems
from shax_server.service import check_output, evaluation_response, read_body, tensor_response

health = APIRouter(tags=["health"])
models = APIRouter(tags=["inference"])  # protected where the app includes it


def _version() -> str:
    try:
        return version("shax")
    except PackageNotFoundError:
        return "0"


EXTENSIONS = [
    "binary_tensor_data",
    "model_repository",
    "model_configuration",
    "statistics",
    "request_compression",  # Content-Encoding: gzip or deflate, bounded by max_body_bytes
    "nonfinite_json",  # bare NaN, Infinity, -Infinity tokens in JSON input
    "health_head",  # HEAD on the health routes
]


@health.get("/v2", summary="Server metadata", response_model=None, responses=ok("ServerMetadata"))
async def server_metadata() -> Response:
    return tensor_response(
        {"name": "shax", "version": _version(), "extensions": EXTENSIONS}, {}, False
    )


@health.head("/v2/health/live", response_class=Response, include_in_schema=False)
@health.get(
    "/v2/health/live",
    response_class=Response,
    summary="Liveness: 200 when the process answers",
    responses={200: {"description": "live (empty body)"}},
)
async def live() -> Response:
    return Response(status_code=200)


@health.head("/v2/health/ready", response_class=Response, include_in_schema=False)
@health.get(
    "/v2/health/ready",
    response_class=Response,
    summary="Readiness: 200 once the cache, worker pool and repository models are up",
    responses={200: {"description": "ready (empty body)"}, **problems(503)},
)
async def ready(state: State) -> Response:
    if not state.ready:
        raise Problem(
            503,
            "Not ready",
            "the server is starting (loading the model repository) or stopping",
            kind="not-ready",
            headers={"Retry-After": "1"},
        )
    return Response(status_code=200)


VERSIONED = "/v2/models/{model_name}/versions/{model_version}"


@models.get(
    "/v2/models/{model_name}",
    summary="Model metadata: inputs (args, cotangents) and outputs (outputs, gradients)",
    response_model=None,
    responses={**ok("ModelMetadata"), **problems(401, 404, 503)},
)
async def model_metadata(model_name: str, state: State) -> Response:
    return tensor_response(metadata_doc(state, await find_model(state, model_name)), {}, False)


@models.get(
    VERSIONED,
    summary="Metadata of one version of a named model",
    response_model=None,
    responses={**ok("ModelMetadata"), **problems(401, 404, 503)},
)
async def version_metadata(model_name: str, model_version: str, state: State) -> Response:
    model = await find_model(state, model_name, model_version)
    return tensor_response(metadata_doc(state, model), {}, False)


@models.head("/v2/models/{model_name}/ready", response_class=Response, include_in_schema=False)
@models.get(
    "/v2/models/{model_name}/ready",
    response_class=Response,
    summary="Model readiness: 200 when the model is loaded (or the program is compiled)",
    responses={200: {"description": "ready (empty body)"}, **problems(401, 404, 503)},
)
async def model_ready(model_name: str, state: State) -> Response:
    await find_model(state, model_name)
    return Response(status_code=200)


@models.head(VERSIONED + "/ready", response_class=Response, include_in_schema=False)
@models.get(
    VERSIONED + "/ready",
    response_class=Response,
    summary="Readiness of one version of a named model",
    responses={200: {"description": "ready (empty body)"}, **problems(401, 404, 503)},
)
async def version_ready(model_name: str, model_version: str, state: State) -> Response:
    await find_model(state, model_name, model_version)
    return Response(status_code=200)


def _flag(value, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise Problem(400, "Invalid request", f"{what} must be true or false", kind="invalid-request")


def _requested_outputs(doc: dict, available: list[str]) -> list[tuple[str, bool]]:
    """(name, as binary) for each output to return, in the order the client asked for."""
    params = doc.get("parameters")
    params = {} if params is None else params  # null is absent; false, 0, "" are not objects
    if not isinstance(params, dict):
        raise Problem(
            400, "Invalid request", "'parameters' must be an object", kind="invalid-request"
        )
    default = bool(_flag(params.get("binary_data_output"), "binary_data_output"))
    wanted = doc.get("outputs")
    if wanted is None:
        return [(n, default) for n in available]
    if not isinstance(wanted, list):
        raise Problem(400, "Invalid request", "'outputs' must be a list", kind="invalid-request")
    out = []
    for i, o in enumerate(wanted):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise Problem(
                400,
                "Invalid request",
                f"outputs[{i}] must be an object with a name",
                kind="invalid-request",
            )
        if o["name"] not in available:
            raise Problem(
                400,
                "Invalid request",
                f"unknown output {o['name']!r}; the model has {', '.join(available)}",
                kind="invalid-request",
            )
        oparams = o.get("parameters")
        oparams = {} if oparams is None else oparams
        if not isinstance(oparams, dict):
            raise Problem(
                400,
                "Invalid request",
                f"outputs[{i}].parameters must be an object",
                kind="invalid-request",
            )
        flag = _flag(oparams.get("binary_data"), f"outputs[{i}].parameters.binary_data")
        out.append((o["name"], default if flag is None else flag))
    return out


INFER_DOC = {
    "response_model": None,
    "responses": {**ok("InferResponse", binary=True), **problems(400, 401, 404, 408, 413, 503)},
    "openapi_extra": body("InferRequest"),
}


@models.post(
    "/v2/models/{model_name}/infer",
    summary="Inference (OIP): outputs and gradients; JSON or binary tensor extension",
    **INFER_DOC,
)
async def infer(model_name: str, request: Request, state: State) -> Response:
    return await infer_model(state, request, model_name, None)


@models.post(VERSIONED + "/infer", summary="Inference on one version of a named model", **INFER_DOC)
async def infer_version(
    model_name: str, model_version: str, request: Request, state: State
) -> Response:
    return await infer_model(state, request, model_name, model_version)


async def infer_model(state, request: Request, name: str, label: str | None) -> Response:
    """``POST /v2/models/{name}[/versions/{label}]/infer`` (the routes, and the fast path's
    calls of loaded models)."""
    # the model first: its tensors bound the body that is read (and a 404 reads no body)
    model = await find_model(state, name, label)
    request_body = await read_body(request, model.entry)
    doc = request_body.doc
    if doc.get("id") is not None and not isinstance(doc["id"], str):
        raise Problem(
            400,
            "Invalid request",
            f"'id' must be a string (the protocol's request id), got {doc['id']!r}",
            kind="invalid-request",
        )
    items = doc.get("inputs")
    if not isinstance(items, list):
        raise Problem(
            400,
            "Invalid request",
            "'inputs' must be a list of tensor objects",
            kind="invalid-request",
        )
    limit = state.settings.max_tensor_elements
    reader = request_body.reader
    names = model.names
    wanted = _requested_outputs(doc, [*names.outputs, *names.gradients])
    out_types = output_types(model)
    check_output(state.settings, [out_types[n] for n, _ in wanted], [b for _, b in wanted])

    async def decode(model):
        return await request_body.run(
            decode_inputs, model, items, reader.take, limit, reader.finish
        )

    header = {"model_name": model.name}
    if model.version is not None:
        header["model_version"] = model.version
    if isinstance(doc.get("id"), str):
        header["id"] = doc["id"]

    async def respond(results):
        return await evaluation_response(
            header,
            {"outputs": [(n, results[n]) for n, _ in wanted]},
            [b for _, b in wanted],
        )

    return await run_inference(state, model, decode, respond)
