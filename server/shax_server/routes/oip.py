"""The Open Inference Protocol (KServe v2 / Triton REST), JSON and binary tensor extension.

A compiled program is a model named by its id. Its inputs are the program's arguments, named as
the client named them (``x``, ``w``; see ``pipeline``), then its output cotangents (``ct0, ...``);
its outputs are the program's outputs (``out0, ...``) then the gradients (``grad_x, ...``).
Inputs are matched by name; the canonical names ``a0, a1, ...`` are accepted too (a program
compiled by another client under other names is the same model). Cotangents may be left out
when every output is a float scalar (then 1.0).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request
from starlette.responses import Response

from shax_core.wire import decode_tensor
from shax_server.compilation import runs_inline, tensor_meta
from shax_server.deps import State
from shax_server.problems import Problem
from shax_server.routes.docs import body, ok, problems
from shax_server.service import (
    check_output,
    check_tensor,
    default_cotangents,
    evaluation_response,
    expect_tensor,
    find_program,
    read_body,
    run_vjp,
    tensor_response,
)

health = APIRouter(tags=["health"])
models = APIRouter(tags=["inference"])  # protected where the app includes it

PLATFORM = "shax_vjp"


def _version() -> str:
    try:
        return version("shax")
    except PackageNotFoundError:
        return "0"


@health.get("/v2", summary="Server metadata", response_model=None, responses=ok("ServerMetadata"))
async def server_metadata() -> Response:
    return tensor_response(
        {"name": "shax", "version": _version(), "extensions": ["binary_tensor_data"]}, {}, False
    )


@health.get(
    "/v2/health/live",
    response_class=Response,
    summary="Liveness: 200 when the process answers",
    responses={200: {"description": "live (empty body)"}},
)
async def live() -> Response:
    return Response(status_code=200)


@health.get(
    "/v2/health/ready",
    response_class=Response,
    summary="Readiness: 200 once the cache and worker pool are up",
    responses={200: {"description": "ready (empty body)"}, **problems(503)},
)
async def ready(state: State) -> Response:
    if not state.ready:
        raise Problem(
            503,
            "Not ready",
            "the server is starting or stopping",
            kind="not-ready",
            headers={"Retry-After": "1"},
        )
    return Response(status_code=200)


def _metadata(entry) -> dict:
    p = entry.program
    inputs = [tensor_meta(n, t) for n, t in zip(entry.input_names, p.in_types, strict=True)]
    inputs += [tensor_meta(n, t) for n, t in zip(entry.cotangent_names, p.out_types, strict=True)]
    outputs = [tensor_meta(n, t) for n, t in zip(entry.output_names, p.out_types, strict=True)]
    outputs += [
        tensor_meta(n, p.params[i].type)
        for n, i in zip(entry.gradient_names, entry.source.wrt, strict=True)
    ]
    return {"name": entry.key, "platform": PLATFORM, "inputs": inputs, "outputs": outputs}


@models.get(
    "/v2/models/{model_id}",
    summary="Model metadata: a compiled program's inputs (args, cotangents) and outputs",
    response_model=None,
    responses={**ok("ModelMetadata"), **problems(401, 404, 503)},
)
async def model_metadata(model_id: str, state: State) -> Response:
    entry = await find_program(state, model_id)
    return tensor_response(_metadata(entry), {}, False)


@models.get(
    "/v2/models/{model_id}/ready",
    response_class=Response,
    summary="Model readiness: 200 when the program is compiled or can be, 404 otherwise",
    responses={200: {"description": "ready (empty body)"}, **problems(401, 404, 503)},
)
async def model_ready(model_id: str, state: State) -> Response:
    await find_program(state, model_id)
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


@models.post(
    "/v2/models/{model_id}/infer",
    summary="Inference (OIP): outputs and gradients; JSON or binary tensor extension",
    response_model=None,
    responses={**ok("InferResponse", binary=True), **problems(400, 401, 404, 408, 413, 503)},
    openapi_extra=body("InferRequest"),
)
async def infer(model_id: str, request: Request, state: State) -> Response:
    entry = await find_program(state, model_id)
    request_body = await read_body(request, entry)
    doc = request_body.doc
    if doc.get("id") is not None and not isinstance(doc["id"], str):
        raise Problem(
            400,
            "Invalid request",
            f"'id' must be a string (the protocol's request id), got {doc['id']!r}",
            kind="invalid-request",
        )
    wanted = _requested_outputs(doc, entry.output_names + entry.gradient_names)
    p = entry.program
    out_types = dict(zip(entry.output_names, p.out_types, strict=True))
    out_types.update(
        zip(entry.gradient_names, (p.params[i].type for i in entry.source.wrt), strict=True)
    )
    check_output(state.settings, [out_types[n] for n, _ in wanted], [b for _, b in wanted])
    given = await request_body.run(_decode_inputs, state, entry, request_body)
    inputs = [given[n] for n in entry.input_names]
    if any(n in given for n in entry.cotangent_names):
        cotangents = [given[n] for n in entry.cotangent_names]
    else:
        cotangents = default_cotangents(entry)
    small = runs_inline(entry.vjp_exe, state.settings)
    outs, grads = await state.pool.run(run_vjp, entry, inputs, cotangents, inline=small)
    results = dict(zip(entry.output_names + entry.gradient_names, outs + grads, strict=True))
    header = {"model_name": entry.key}
    if isinstance(doc.get("id"), str):
        header["id"] = doc["id"]
    return await evaluation_response(
        header,
        {"outputs": [(n, results[n]) for n, _ in wanted]},
        [b for _, b in wanted],
    )


def _decode_inputs(state, entry, request_body) -> dict:
    """The named input (and cotangent) tensors of an infer body, declared types checked
    against the program before any data is decoded; complete or refused."""
    doc, reader = request_body.doc, request_body.reader
    p = entry.program
    expected = dict(zip(entry.input_names, p.in_types, strict=True))
    expected.update(zip(entry.cotangent_names, p.out_types, strict=True))
    items = doc.get("inputs")
    if not isinstance(items, list):
        raise Problem(
            400,
            "Invalid request",
            "'inputs' must be a list of tensor objects",
            kind="invalid-request",
        )
    limit = state.settings.max_tensor_elements
    # the canonical names a0, a1, ... are accepted too (another client's names, same model)
    canonical = {f"a{i}": n for i, n in enumerate(entry.input_names) if f"a{i}" not in expected}
    seen = set()
    for i, obj in enumerate(items):
        if not isinstance(obj, dict) or not isinstance(obj.get("name", ""), str):
            decode_tensor(obj, None, default_name=f"inputs[{i}]")  # raises, naming the problem
        name = canonical.get(obj.get("name", f"inputs[{i}]"), obj.get("name", f"inputs[{i}]"))
        if name not in expected:
            raise Problem(
                400,
                "Invalid request",
                f"unknown input {name!r}; the model takes {', '.join(expected)}",
                kind="invalid-request",
                tensor=name,
            )
        if name in seen:
            raise Problem(
                400,
                "Invalid request",
                f"input {name!r} is given twice",
                kind="invalid-request",
                tensor=name,
            )
        seen.add(name)
        expect_tensor(obj, name, expected[name], limit)
    missing = [n for n in entry.input_names if n not in seen]
    if missing:
        raise Problem(
            400,
            "Invalid request",
            f"missing input(s) {', '.join(missing)}",
            kind="invalid-request",
            tensor=missing[0],
        )
    if any(n in seen for n in entry.cotangent_names):
        absent = [n for n in entry.cotangent_names if n not in seen]
        if absent:
            raise Problem(
                400,
                "Invalid request",
                f"missing cotangent(s) {', '.join(absent)}",
                kind="invalid-request",
                tensor=absent[0],
            )
    given = {}
    for i, obj in enumerate(items):
        chunk = reader.take(obj)
        name, array = decode_tensor(obj, chunk, default_name=f"inputs[{i}]", max_elements=limit)
        name = canonical.get(name, name)
        given[name] = check_tensor(name, array, expected[name])
    reader.finish()
    return given
