"""What the endpoints do, independent of routing: read bodies, compile, check and run tensors.

Bodies are parsed with orjson and tensors converted with NumPy (``shax_core.wire``); pydantic
models exist only to document the API, never to validate tensor data element by element.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import Request
from starlette.responses import Response

from shax_core.ir import Type
from shax_core.wire import (
    DATATYPE_OF_IR,
    HEADER_LENGTH,
    BinaryReader,
    TensorError,
    decode_tensor,
    encode_tensors,
    join_body,
    split_body,
)
from shax_server.compilation import Compiled, build, prepare, read_program
from shax_server.deps import ServiceState
from shax_server.encoding import inflate
from shax_server.problems import Problem, not_found


async def read_body(request: Request) -> tuple[dict, BinaryReader]:
    """The JSON object of a request (and the binary tail when the binary extension is used)."""
    settings = request.app.state.shax.settings
    body = inflate(
        await request.body(), request.headers.get("content-encoding"), settings.max_body_bytes
    )
    max_depth = settings.max_json_depth
    doc, tail = split_body(body, request.headers.get(HEADER_LENGTH), max_depth)
    if not isinstance(doc, dict):
        raise Problem(
            400, "Invalid request", "the body must be a JSON object", kind="invalid-request"
        )
    return doc, BinaryReader(tail)


async def compile_program(state: ServiceState, doc: dict) -> tuple[Compiled, bool]:
    """Compile (or find) the program a body carries as ``program`` or ``graph``."""
    source = await state.pool.run(_prepare, doc, state.settings)
    return await state.cache.get_or_build(
        source, lambda s: build(s, state.settings), state.pool.run
    )


def _prepare(doc: dict, settings):
    return prepare(read_program(doc), doc.get("wrt"), settings, doc.get("residuals"))


async def find_program(state: ServiceState, program_id: str) -> Compiled:
    entry = await state.cache.lookup(program_id, lambda s: build(s, state.settings), state.pool.run)
    if entry is None:
        raise not_found(f"no program with id {program_id!r}; POST it to /v1/programs first")
    return entry


# ---------------------------------------------------------------------------------------------
# tensors


def _fill(obj: Any, name: str, t: Type) -> Any:
    """Native endpoints let a tensor omit name, datatype and shape: the program knows them."""
    if not isinstance(obj, dict):
        return obj
    filled = {"name": name, "datatype": DATATYPE_OF_IR[t.dtype], "shape": list(t.shape)}
    filled.update(obj)
    return filled


def check_tensor(name: str, array: np.ndarray, t: Type) -> np.ndarray:
    if array.dtype != t.np_dtype:
        raise TensorError(
            name, f"expected datatype {DATATYPE_OF_IR[t.dtype]} ({t}), got {_oip(array.dtype)}"
        )
    if tuple(array.shape) != t.shape:
        raise TensorError(
            name,
            f"expected shape {list(t.shape)} ({math.prod(t.shape)} elements, {t}), "
            f"got shape {list(array.shape)}",
        )
    return array


def _oip(dtype: np.dtype) -> str:
    for k, v in DATATYPE_OF_IR.items():
        if np.dtype({"f32": np.float32, "f64": np.float64, "bool": np.bool_}[k]) == dtype:
            return v
    return str(dtype)


def decode_positional(
    items: Any,
    reader: BinaryReader,
    names: Sequence[str],
    types: Sequence[Type],
    *,
    member: str,
    max_elements: int,
) -> list[np.ndarray]:
    """A native body's list of tensors, matched to the program by position."""
    if not isinstance(items, list):
        raise Problem(
            400,
            "Invalid request",
            f"'{member}' must be a list of tensor objects",
            kind="invalid-request",
        )
    if len(items) != len(names):
        raise Problem(
            400,
            "Invalid request",
            f"'{member}' has {len(items)} tensor(s); the program expects {len(names)}: "
            + ", ".join(f"{n} {t}" for n, t in zip(names, types, strict=True)),
            kind="invalid-request",
        )
    arrays = []
    for obj, name, t in zip(items, names, types, strict=True):
        chunk = reader.take(obj)
        label, array = decode_tensor(
            _fill(obj, name, t), chunk, default_name=name, max_elements=max_elements
        )
        arrays.append(check_tensor(label, array, t))
    return arrays


def default_cotangents(entry: Compiled) -> list[np.ndarray]:
    """Cotangents may be left out only when every output is a scalar: then they are 1.0."""
    outs = entry.program.out_types
    if not all(t.shape == () and t.is_float for t in outs):
        raise Problem(
            400,
            "Invalid request",
            "'cotangents' is required unless every output is a float scalar; expected "
            + ", ".join(f"{n} {t}" for n, t in zip(entry.cotangent_names, outs, strict=True)),
            kind="invalid-request",
        )
    return [np.ones((), dtype=t.np_dtype) for t in outs]


def binary_output(doc: dict) -> bool:
    params = doc.get("parameters")
    flag = doc.get("binary_data_output")
    if flag is None and isinstance(params, dict):
        flag = params.get("binary_data_output")
    if flag is not None and not isinstance(flag, bool):
        raise Problem(
            400,
            "Invalid request",
            "'binary_data_output' must be true or false",
            kind="invalid-request",
        )
    return bool(flag)


def tensor_response(
    doc: dict, members: dict[str, Sequence[tuple[str, np.ndarray]]], binary: bool
) -> Response:
    """JSON (or binary-extension) response with ``members`` as lists of tensor objects."""
    chunks: list[bytes] = []
    out = dict(doc)
    for member, named in members.items():
        objs, raw = encode_tensors(named, binary)
        out[member] = objs
        chunks += raw
    body, headers = join_body(out, chunks)
    media_type = headers.pop("content-type")
    return Response(body, media_type=media_type, headers=headers)


# ---------------------------------------------------------------------------------------------
# evaluation (runs in the worker pool)


def run_forward(entry: Compiled, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return entry.forward_exe.run(inputs)


def run_vjp(entry: Compiled, inputs, cotangents) -> tuple[list, list]:
    results = entry.vjp_exe.run([*inputs, *cotangents])
    n = len(entry.program.outs)
    return results[:n], results[n:]


def run_jvp(entry: Compiled, settings, inputs, tangents) -> tuple[list, list]:
    results = entry.jvp_exe(settings).run([*inputs, *tangents])
    n = len(entry.program.outs)
    return results[:n], results[n:]
