"""What the endpoints do, independent of routing: read bodies, compile, check and run tensors.

Bodies are parsed with orjson and tensors converted with NumPy (``shax_core.wire``); pydantic
models exist only to document the API, never to validate tensor data element by element.

Order of checks for an evaluation (each before the expensive step it guards): the program (by
id, before the body is read: its types bound the body's size), the body's bytes, each tensor's
declared name, datatype and shape against the program (before its data is decoded), then the
response's size in the encoding asked for (``check_output``, from the output types, before
anything runs). Bodies and responses over ``LAZY_BYTES`` are decoded and encoded off the event
loop; big binary responses are streamed chunk by chunk, never joined into one buffer.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from fastapi import Request
from starlette.responses import Response, StreamingResponse

from shax_core.ir import Type
from shax_core.wire import (
    BINARY_CONTENT_TYPE,
    DATATYPE_OF_IR,
    HEADER_LENGTH,
    IR_DTYPES,
    BinaryReader,
    TensorError,
    check_shape,
    decode_tensor,
    encode_tensors,
    join_body,
)
from shax_server import body
from shax_server.compilation import Compiled, Source, prepare, read_program
from shax_server.deps import ServiceState
from shax_server.problems import Problem, limit_exceeded, not_found

LAZY_BYTES = body.LAZY_BYTES


class Body:
    """A parsed request body: its JSON object, a reader of its binary tail, its size, and the
    program it carried when that was prepared while parsing (``read_body_with_program``)."""

    def __init__(self, doc: dict, tail: memoryview, size: int, source: Source | None = None):
        self.doc = doc
        self.reader = BinaryReader(tail)
        self.size = size
        self.source = source

    async def run(self, fn, *args, **kwargs):
        """``fn(*args)`` (tensor decoding): in a thread for big bodies, else right here."""
        if self.size > LAZY_BYTES:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)


async def read_body(request: Request, entry: Compiled | None = None) -> Body:
    """The body of a request. With ``entry`` (the program, known from the path), the body may
    only be as big as that program's tensors can be, and that is checked before reading."""
    state: ServiceState = request.app.state.shax
    settings = state.settings
    if entry is None:
        doc, tail, size = await body.read(request, settings)
    else:
        doc, tail, size = await body.read(
            request,
            settings,
            limit=body.body_budget(entry, settings),
            budgets=lambda _: body.entry_budgets(entry, settings),
        )
    return Body(doc, tail, size)


async def read_body_with_program(request: Request) -> Body:
    """The body of a request that may carry its program (``/vjp``): when the body is big, the
    program is prepared while parsing, and the tensor members are held to its budget."""
    state: ServiceState = request.app.state.shax
    settings = state.settings
    prepared: dict[str, Source] = {}

    def budgets(doc: dict) -> dict[str, int]:
        if isinstance(doc.get("id"), str):
            entry = state.cache.peek(doc["id"])
            return body.entry_budgets(entry, settings) if entry is not None else {}
        if doc.get("program") is None and doc.get("graph") is None:
            return {}
        source = _prepare(doc, settings)
        prepared["source"] = source
        return body.entry_budgets(_Shape(source), settings)

    doc, tail, size = await body.read(request, settings, budgets=budgets)
    return Body(doc, tail, size, prepared.get("source"))


class _Shape:
    """What ``entry_budgets`` reads of a compiled entry, from a prepared source."""

    def __init__(self, source: Source):
        self.program = source.program
        self.source = source


async def compile_program(
    state: ServiceState, doc: dict, source: Source | None = None
) -> tuple[Compiled, bool]:
    """Compile (or find) the program a body carries as ``program`` or ``graph``."""
    if source is None:
        _precount(doc, state.settings)
        source = await state.cache.prepare(
            _request_key(doc), _prepare, doc, state.settings, cost=_text_cost(doc)
        )
    entry, cached = await state.cache.get_or_build(source)
    return entry.named(source), cached  # this request's names, the shared compiled parts


def _precount(doc: dict, settings) -> None:
    """413 at once for a program text with far more equations than ``max_equations``: every
    equation has an ``=``, so their count (C speed, no parsing) bounds the equations from
    above; only twice the limit is refused here (comments may hold ``=`` too), the exact
    count is checked after parsing."""
    text = doc.get("program")
    graph = doc.get("graph")
    if isinstance(text, str):
        n, what = text.count("=") - 1, "about"
    elif isinstance(graph, dict) and isinstance(graph.get("equations"), list):
        n, what = len(graph["equations"]), "exactly"
    else:
        return
    limit = settings.max_equations
    if n > 2 * limit or (what == "exactly" and n > limit):
        raise limit_exceeded(
            "max_equations",
            f"the program has {what} {n} equations, more than the limit of {limit} "
            "(the predicted compile cost); refused before parsing",
        )


def _request_key(doc: dict) -> str:
    """What identifies a posted program before it is parsed: its text or graph, and wrt."""
    raw = orjson.dumps([doc.get("program"), doc.get("graph"), doc.get("wrt")])
    return hashlib.sha256(raw).hexdigest()


def _text_cost(doc: dict) -> int:
    """A guess at a program's equation count before parsing it (picks the compile lane)."""
    text = doc.get("program")
    if isinstance(text, str):
        return len(text) // 24
    graph = doc.get("graph")
    eqns = graph.get("equations") if isinstance(graph, dict) else None
    return len(eqns) if isinstance(eqns, list) else 0


def _prepare(doc: dict, settings):
    return prepare(read_program(doc), doc.get("wrt"), settings)


async def find_program(state: ServiceState, program_id: str) -> Compiled:
    entry = await state.cache.lookup(program_id)
    if entry is None:
        raise not_found(f"no program with id {program_id!r}; POST it to /v1/programs first")
    return entry


# ---------------------------------------------------------------------------------------------
# tensors


def _fill(obj: Any, name: str, t: Type) -> Any:
    """Native endpoints let a tensor omit name, datatype and shape: the program knows them."""
    if not isinstance(obj, dict):
        return obj
    given = {k: v for k, v in obj.items() if v is not None}  # null: the program's
    return {"name": name, "datatype": DATATYPE_OF_IR[t.dtype], "shape": list(t.shape), **given}


def expect_tensor(obj: Any, name: str, t: Type, max_elements: int) -> None:
    """A tensor object's declared datatype and shape against the program's type ``t``, before
    any of its data is decoded (cheap: the data may be megabytes of JSON)."""
    if not isinstance(obj, dict):
        return  # decode_tensor says what is wrong
    label = obj.get("name") if isinstance(obj.get("name"), str) else name
    datatype = obj.get("datatype")
    if isinstance(datatype, str) and datatype in IR_DTYPES and datatype != DATATYPE_OF_IR[t.dtype]:
        raise TensorError(
            label, f"expected datatype {DATATYPE_OF_IR[t.dtype]} ({t}), got {datatype}"
        )
    shape = check_shape(label, obj.get("shape"), max_elements)
    if shape != t.shape:
        raise TensorError(
            label,
            f"expected shape {list(t.shape)} ({math.prod(t.shape)} elements, {t}), "
            f"got shape {list(shape)}",
        )


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
    # every tensor's declared datatype and shape first, then (all of them fit) their data
    filled = []
    for obj, name, t in zip(items, names, types, strict=True):
        obj = _fill(obj, name, t)
        expect_tensor(obj, name, t, max_elements)
        filled.append(obj)
    arrays = []
    for obj, name, t in zip(filled, names, types, strict=True):
        chunk = reader.take(obj)
        label, array = decode_tensor(obj, chunk, default_name=name, max_elements=max_elements)
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


# bytes one element takes in a JSON response at most: f32 "-1.1754944e-38," (orjson's shortest
# round-trip form), f64 "-2.2250738585072014e-308,", bool "false,"; "-Infinity", is 12
JSON_ELEMENT_BYTES = {"f32": 16, "f64": 25, "bool": 6}
JSON_TENSOR_BYTES = 256  # name, shape and datatype of one tensor object


def output_bytes(types: Sequence[Type], binary: bool | Sequence[bool]) -> int:
    """Bytes the tensors of ``types`` take in a response, per tensor in its encoding (exact
    for binary, an upper bound for JSON), computed from the types alone."""
    flags = [binary] * len(types) if isinstance(binary, bool) else list(binary)
    total = 0
    for t, flag in zip(types, flags, strict=True):
        n = math.prod(t.shape)
        total += JSON_TENSOR_BYTES + n * (
            t.np_dtype.itemsize if flag else JSON_ELEMENT_BYTES[t.dtype]
        )
    return total


def check_output(settings, types: Sequence[Type], binary: bool | Sequence[bool]) -> None:
    """413 before anything runs when the response would be over ``max_output_bytes``."""
    nbytes = output_bytes(types, binary)
    if nbytes > settings.max_output_bytes:
        encoding = "binary" if binary is True else "JSON" if binary is False else "the encodings"
        hint = "" if binary is True else "; binary_data_output makes it smaller"
        raise limit_exceeded(
            "max_output_bytes",
            f"the response would be {nbytes} bytes of tensors in {encoding} asked for "
            f"(from the output types: {', '.join(str(t) for t in types)}), more than the "
            f"limit of {settings.max_output_bytes}{hint}",
        )


async def evaluation_response(
    doc: dict, members: dict[str, Sequence[tuple[str, np.ndarray]]], binary
) -> Response:
    """``tensor_response`` for evaluation results: a big JSON body is encoded in a thread, and
    big binary tensors are streamed from the arrays' own buffers (never joined into a copy)."""
    arrays = [a for m in members.values() for _, a in m]
    flags = [binary] * len(arrays) if isinstance(binary, bool) else list(binary)
    binary_bytes = json_bytes = 0
    for array, flag in zip(arrays, flags, strict=True):
        if flag:
            binary_bytes += array.nbytes
        else:
            json_bytes += array.size
    if binary_bytes <= LAZY_BYTES and json_bytes * 16 <= LAZY_BYTES:
        return tensor_response(doc, members, binary)
    out = dict(doc)
    buffers: list[memoryview] = []
    i = 0
    for member, tensors in members.items():
        objs = []
        for name, array in tensors:
            if flags[i]:
                raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
                obj = {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": _oip(array.dtype),
                    "parameters": {"binary_data_size": raw.nbytes},
                }
                buffers.append(memoryview(raw.reshape(-1)).cast("B"))
            else:
                obj = encode_tensors([(name, array)], False)[0][0]
            objs.append(obj)
            i += 1
        out[member] = objs
    header = await asyncio.to_thread(orjson.dumps, out, option=orjson.OPT_SERIALIZE_NUMPY)
    if not buffers:
        return Response(header, media_type="application/json")
    length = len(header) + sum(b.nbytes for b in buffers)

    async def chunks():
        yield header
        for b in buffers:
            for start in range(0, b.nbytes, LAZY_BYTES):
                yield b[start : start + LAZY_BYTES]

    return StreamingResponse(
        chunks(),
        media_type=BINARY_CONTENT_TYPE,
        headers={HEADER_LENGTH: str(len(header)), "Content-Length": str(length)},
    )


# ---------------------------------------------------------------------------------------------
# evaluation (runs in the worker pool)


def run_forward(entry: Compiled, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return entry.forward_exe.run(inputs)


def run_vjp(entry: Compiled, inputs, cotangents) -> tuple[list, list]:
    results = entry.require_vjp().run([*inputs, *cotangents])
    n = len(entry.program.outs)
    return results[:n], results[n:]


def run_jvp(entry: Compiled, settings, inputs, tangents) -> tuple[list, list]:
    results = entry.jvp_exe(settings).run([*inputs, *tangents])
    n = len(entry.program.outs)
    return results[:n], results[n:]
