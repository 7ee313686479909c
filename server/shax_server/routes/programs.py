"""The native API: compile programs, read their stages, evaluate forward, VJP and JVP."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from shax_server.compilation import pipeline_version, runs_inline
from shax_server.deps import State
from shax_server.models import name_program
from shax_server.problems import Problem
from shax_server.routes.docs import body, ok, problems
from shax_server.service import (
    Body,
    binary_output,
    check_output,
    compile_program,
    decode_positional,
    default_cotangents,
    evaluation_response,
    find_program,
    read_body,
    read_body_with_program,
    run_forward,
    run_jvp,
    run_vjp,
    tensor_response,
)

router = APIRouter(tags=["programs"])  # protected where the app includes it

ERRORS = problems(400, 401, 408, 413, 503)
ID_ERRORS = problems(400, 401, 404, 408, 413, 503)


def _json(doc) -> Response:
    return tensor_response(doc, {}, False)


@router.post(
    "/v1/programs",
    summary="Compile a program (IR text or JSON graph) and cache its VJP",
    response_model=None,
    responses={**ok("CompileResponse"), **ERRORS, **problems(409)},
    openapi_extra=body("CompileRequest"),
)
async def compile_(request: Request, state: State) -> Response:
    body = await read_body(request)
    doc = body.doc
    entry, cached = await compile_program(state, doc)
    out = {
        "id": entry.key,
        "cached": cached,
        "pipeline_version": pipeline_version(),
        "signature": entry.signature(),
    }
    if doc.get("name") is not None:  # the program becomes a version of a named model
        model = await name_program(state, entry, doc["name"], doc.get("version"))
        out.update(name=model.name, version=model.version)
    elif doc.get("version") is not None:
        raise Problem(400, "Invalid request", "'version' needs a 'name'", kind="invalid-request")
    return _json(out)


@router.get(
    "/v1/programs/{program_id}",
    summary="Signature and the IR text of every pipeline stage",
    response_model=None,
    responses={**ok("ProgramInfo"), **problems(401, 404, 503)},
)
async def get_program(program_id: str, state: State) -> Response:
    entry = await find_program(state, program_id)
    stages = await state.pool.run(entry.stage_texts)
    return _json(
        {
            "id": entry.key,
            "pipeline_version": pipeline_version(),
            "signature": entry.signature(),
            "program": str(entry.source.named_program()),
            "stages": stages,
        }
    )


def _decode(state, body: Body, member: str, names, types) -> list:
    """The tensors of request member ``member``, by position, checked against ``types``."""
    limit = state.settings.max_tensor_elements
    return decode_positional(
        body.doc.get(member), body.reader, names, types, member=member, max_elements=limit
    )


def _inputs(state, entry, body: Body) -> list:
    return _decode(state, body, "inputs", entry.input_names, entry.in_types)


def _vjp_arguments(state, entry, body: Body) -> tuple[list, list]:
    inputs = _inputs(state, entry, body)
    if body.doc.get("cotangents") is None:
        cotangents = default_cotangents(entry)
    else:
        cotangents = _decode(state, body, "cotangents", entry.cotangent_names, entry.out_types)
    body.reader.finish()
    return inputs, cotangents


async def _vjp(state, entry, body: Body, extra: dict) -> Response:
    binary = binary_output(body.doc)
    check_output(state.settings, entry.vjp_out_types, binary)
    inputs, cotangents = await body.run(_vjp_arguments, state, entry, body)
    small = runs_inline(entry.require_vjp(), state.settings)
    outs, grads = await state.pool.run(run_vjp, entry, inputs, cotangents, inline=small)
    return await evaluation_response(
        {"id": entry.key, **extra},
        {
            "outputs": list(zip(entry.output_names, outs, strict=True)),
            "gradients": list(zip(entry.gradient_names, grads, strict=True)),
        },
        binary,
    )


@router.post(
    "/vjp",
    summary="One round trip: compile on a miss (program, graph or id), then evaluate the VJP",
    response_model=None,
    responses={**ok("VjpResponse", binary=True), **ID_ERRORS},
    openapi_extra=body("VjpRequest"),
)
async def vjp_inline(request: Request, state: State) -> Response:
    body = await read_body_with_program(request)
    doc = body.doc
    if "id" in doc and doc["id"] is not None:
        if doc.get("program") is not None or doc.get("graph") is not None:
            raise Problem(
                400,
                "Invalid request",
                "give either 'id' or the program, not both",
                kind="invalid-request",
            )
        if not isinstance(doc["id"], str):
            raise Problem(400, "Invalid request", "'id' must be a string", kind="invalid-request")
        entry, cached = await find_program(state, doc["id"]), True
    else:
        entry, cached = await compile_program(state, doc, body.source)
    return await _vjp(state, entry, body, {"cached": cached})


@router.post(
    "/v1/programs/{program_id}/vjp",
    summary="Evaluate a compiled program's VJP: outputs and gradients",
    response_model=None,
    responses={**ok("VjpResponse", binary=True), **ID_ERRORS},
    openapi_extra=body("VjpByIdRequest"),
)
async def vjp(program_id: str, request: Request, state: State) -> Response:
    return await vjp_by_id(state, request, program_id)


async def vjp_by_id(state, request: Request, program_id: str) -> Response:
    """``POST /v1/programs/{program_id}/vjp`` (the route, and the fast path's cache hits)."""
    entry = await find_program(state, program_id)
    return await _vjp(state, entry, await read_body(request, entry), {})


@router.post(
    "/v1/programs/{program_id}/eval",
    summary="Evaluate a compiled program forward only",
    response_model=None,
    responses={**ok("EvalResponse", binary=True), **ID_ERRORS},
    openapi_extra=body("EvalRequest"),
)
async def eval_(program_id: str, request: Request, state: State) -> Response:
    entry = await find_program(state, program_id)
    body = await read_body(request, entry)
    binary = binary_output(body.doc)
    check_output(state.settings, entry.program.out_types, binary)
    inputs = await body.run(_inputs, state, entry, body)
    body.reader.finish()
    small = runs_inline(entry.forward_exe, state.settings)
    outs = await state.pool.run(run_forward, entry, inputs, inline=small)
    return await evaluation_response(
        {"id": entry.key},
        {"outputs": list(zip(entry.output_names, outs, strict=True))},
        binary,
    )


@router.post(
    "/v1/programs/{program_id}/jvp",
    summary="Forward mode: output tangents for input tangents (one per wrt input)",
    response_model=None,
    responses={**ok("JvpResponse", binary=True), **ID_ERRORS},
    openapi_extra=body("JvpRequest"),
)
async def jvp(program_id: str, request: Request, state: State) -> Response:
    entry = await find_program(state, program_id)
    body = await read_body(request, entry)
    p = entry.program
    binary = binary_output(body.doc)
    check_output(state.settings, [*p.out_types, *p.out_types], binary)
    wrt = entry.source.wrt
    names, types = entry.tangent_names, [p.params[i].type for i in wrt]

    def arguments():
        inputs = _inputs(state, entry, body)
        tangents = _decode(state, body, "tangents", names, types)
        body.reader.finish()
        return inputs, tangents

    inputs, tangents = await body.run(arguments)
    outs, touts = await state.pool.run(run_jvp, entry, state.settings, inputs, tangents)
    return await evaluation_response(
        {"id": entry.key},
        {
            "outputs": list(zip(entry.output_names, outs, strict=True)),
            "tangents": [(f"tout{i}", t) for i, t in enumerate(touts)],
        },
        binary,
    )
