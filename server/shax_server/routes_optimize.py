"""``POST /v1/programs/{id}/minimize``: gradient descent next to the cached program, streamed.

Used by the client SDK's ``minimize``; the app includes it with ``app.include_router(router)``.

Request (tensors are positional, like ``/vjp``'s ``inputs``; only the ``wrt`` inputs move)::

    {"x0": [tensor, ...], "steps": 40, "lr": 0.05, "optimizer": "gd" | "momentum" | "adam",
     "hyper": {"mass": 0.9}, "every": 1}

Response: ``application/x-ndjson``, one JSON object per line. A progress line every ``every``
steps (and for the first and the last point)::

    {"step": 1, "value": -0.23971277, "params": [tensor, ...]}

then one final line with every step's value::

    {"done": true, "steps": 40, "value": -0.5, "params": [tensor, ...],
     "trajectory": [{"step": 1, "value": -0.23971277}, ...]}

A stream lasts at most ``SHAX_MINIMIZE_SECONDS`` (default 30 s): past it, the last line is an
``{"error": ...}`` problem (``limit: minimize_seconds``) after the progress lines so far.

With ``"report": "moving"`` the params of progress and final lines are only the moving (``wrt``)
inputs, in order (the others are the request's, unchanged: the data need not travel back).

Step k reports f at the k-th point, the first point being ``x0`` (the seed's numbering): 40 steps
evaluate 40 points and apply 39 updates. The update rules are ``shax_core.optimize``'s, driven by
its ``iterate``; each step (VJP + update) runs in the server's worker pool, so the loop respects
the in-flight limit and the evaluation timeout. Bad requests are refused with problem+json before
the stream starts; an error after it started (e.g. the pool stays busy) becomes a last line
``{"error": {problem}}``.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from shax_core.ir import ShaxError
from shax_core.optimize import OPTIMIZERS, iterate, make_optimizer
from shax_core.wire import encode_float, encode_tensors
from shax_server.deps import State
from shax_server.problems import Problem, problem_for
from shax_server.routes.docs import problems
from shax_server.service import decode_positional, find_program, read_body

router = APIRouter(tags=["optimize"])  # protected where the app includes it

MAX_STEPS = 100_000
BUSY_RETRIES = 8  # a step refused by a full pool is retried this many times, then the stream ends
NDJSON = "application/x-ndjson"

REQUEST_SCHEMA = {
    "type": "object",
    "required": ["x0"],
    "properties": {
        "x0": {"type": "array", "items": {"type": "object"}, "description": "start point"},
        "steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS, "default": 40},
        "lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.05},
        "optimizer": {"type": "string", "enum": sorted(OPTIMIZERS), "default": "gd"},
        "hyper": {"type": "object", "additionalProperties": {"type": "number"}},
        "every": {"type": "integer", "minimum": 1, "default": 1},
        "report": {
            "type": "string",
            "enum": ["all", "moving"],
            "default": "all",
            "description": "params of every input, or only of the moving (wrt) ones: the "
            "others (data) are unchanged, so they need not travel back",
        },
    },
}


def _bad(detail: str) -> Problem:
    return Problem(400, "Invalid request", detail, kind="invalid-request")


def _int(doc: dict, key: str, default: int, lo: int, hi: int) -> int:
    v = doc.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _bad(f"'{key}' must be an integer from {lo} to {hi}, got {v!r}")
    return v


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise _bad(f"'{key}' must be a finite number, got {v!r}")
    return float(v)


def parse_options(doc: dict) -> dict:
    """Validated loop options of a request body (a Problem for anything off)."""
    steps = _int(doc, "steps", 40, 1, MAX_STEPS)
    every = _int(doc, "every", 1, 1, 2**31)
    lr = _number("lr", doc.get("lr", 0.05))
    if lr <= 0:
        raise _bad(f"'lr' must be positive, got {lr}")
    name = doc.get("optimizer", "gd")
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise _bad(f"'optimizer' must be one of {', '.join(sorted(OPTIMIZERS))}, got {name!r}")
    hyper = doc.get("hyper") or {}
    if not isinstance(hyper, dict):
        raise _bad("'hyper' must be an object of numbers")
    accepted = set(inspect.signature(OPTIMIZERS[name]).parameters) - {"lr"}
    for key, v in hyper.items():
        if key not in accepted:
            raise _bad(
                f"optimizer {name!r} has no hyperparameter {key!r}; it takes "
                + (", ".join(sorted(accepted)) or "none")
            )
        _number(f"hyper.{key}", v)
    report = doc.get("report", "all")
    if report not in ("all", "moving"):
        raise _bad(f"'report' must be 'all' or 'moving', got {report!r}")
    return {
        "steps": steps,
        "every": every,
        "lr": lr,
        "optimizer": name,
        "hyper": hyper,
        "report": report,
    }


def _tensors(names, arrays) -> list[dict]:
    objs, _ = encode_tensors(list(zip(names, arrays, strict=True)), False)
    return objs


def _scalar(value) -> Any:
    """A scalar for JSON: the NumPy scalar itself (orjson writes f32 with its shortest repr),
    or the wire's spelling of NaN and the infinities."""
    v = np.asarray(value)[()]
    return v if np.isfinite(v) else encode_float(float(v))


def _line(doc: dict) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


class _Loop:
    """The optimization as a generator advanced one step at a time in the worker pool."""

    def __init__(self, entry, x0: list[np.ndarray], options: dict):
        self.entry = entry
        self.wrt = list(entry.source.wrt)
        self.fixed = list(x0)
        self.moving_only = options.get("report") == "moving"
        out_type = entry.program.out_types[0]
        self.one = np.ones((), dtype=out_type.np_dtype)
        optimizer = make_optimizer(options["optimizer"], lr=options["lr"], **options["hyper"])
        start = [x0[i] for i in self.wrt]
        self.points = iterate(self._value_and_grad, start, options["steps"], optimizer)

    def _value_and_grad(self, xs):
        args = list(self.fixed)
        for i, x in zip(self.wrt, xs, strict=True):
            args[i] = x
        results = self.entry.require_vjp().run([*args, self.one])
        return results[0], results[1:]

    def step(self):
        """The next point (runs the VJP and, after yielding the previous point, the update)."""
        return next(self.points, None)

    def params(self, xs) -> list[np.ndarray]:
        if self.moving_only:
            return [np.asarray(x) for x in xs]
        args = list(self.fixed)
        for i, x in zip(self.wrt, xs, strict=True):
            args[i] = np.asarray(x)
        return args


async def _next_point(state, loop: _Loop):
    for attempt in range(BUSY_RETRIES + 1):
        try:
            return await state.pool.run(loop.step)
        except Problem as p:
            if p.status != 503 or attempt == BUSY_RETRIES:
                raise
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
    return None


async def _stream(state, entry, loop: _Loop, options: dict) -> AsyncIterator[bytes]:
    names = entry.input_names
    if loop.moving_only:
        names = [names[i] for i in loop.wrt]
    trajectory: list[dict] = []
    last = None
    seconds = state.settings.minimize_seconds
    deadline = time.monotonic() + seconds
    try:
        for _ in range(options["steps"]):
            if time.monotonic() > deadline:
                raise Problem(
                    413,
                    "Limit exceeded",
                    f"the optimization ran for the {seconds:g} s limit (SHAX_MINIMIZE_SECONDS) "
                    f"and stopped after {last.step if last else 0} of {options['steps']} steps; "
                    "continue from the last params",
                    kind="limit-exceeded",
                    limit="minimize_seconds",
                )
            point = await _next_point(state, loop)
            if point is None:
                break
            last = point
            value = _scalar(point.value)
            trajectory.append({"step": point.step, "value": value})
            if (
                point.step == 1
                or point.step % options["every"] == 0
                or (point.step == options["steps"])
            ):
                params = _tensors(names, loop.params(point.params))
                yield _line({"step": point.step, "value": value, "params": params})
        if last is None:  # steps >= 1, so this only happens if the loop ended early
            raise Problem(500, "Internal error", "the optimization produced no point")
        yield _line(
            {
                "done": True,
                "steps": last.step,
                "value": _scalar(last.value),
                "params": _tensors(names, loop.params(last.params)),
                "trajectory": trajectory,
            }
        )
    except Problem as p:
        yield _line({"error": p.body()})
    except ShaxError as e:
        yield _line({"error": problem_for(e).body()})


@router.post(
    "/v1/programs/{program_id}/minimize",
    summary="Gradient descent on a compiled scalar program, streamed as NDJSON",
    response_model=None,
    responses={
        200: {
            "description": "NDJSON: progress lines, then a final line with done: true",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        },
        **problems(400, 401, 404, 413, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": REQUEST_SCHEMA}},
        }
    },
)
async def minimize(program_id: str, request: Request, state: State) -> StreamingResponse:
    entry = await find_program(state, program_id)
    body = await read_body(request, entry)
    doc, reader = body.doc, body.reader
    outs = entry.program.out_types
    if len(outs) != 1 or outs[0].shape != () or not outs[0].is_float:
        raise _bad(
            "minimize needs a program with one float scalar output; this one returns "
            + ", ".join(str(t) for t in outs)
        )
    if not entry.source.wrt:
        raise _bad("the program has no differentiated (wrt) inputs to move")
    options = parse_options(doc)
    x0 = await body.run(
        decode_positional,
        doc.get("x0"),
        reader,
        entry.input_names,
        entry.program.in_types,
        member="x0",
        max_elements=state.settings.max_tensor_elements,
    )
    reader.finish()
    entry.require_vjp()  # a forward-only program is refused before the stream starts
    loop = _Loop(entry, x0, options)
    return StreamingResponse(_stream(state, entry, loop, options), media_type=NDJSON)
