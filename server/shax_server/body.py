"""Request bodies: bytes under limits and deadlines, tensor members under the program's budget.

Reading (``receive``): a declared ``Content-Length`` over the limit is refused before one byte
is read; a streamed body is counted as it arrives; a body that pauses longer than
``body_timeout`` between chunks, or takes longer than ``upload_timeout`` in all, is answered 408
and its connection closed. The limit is ``max_body_bytes``, or less when the program is known
before the body is read (by-id routes): a program taking E tensor elements in T tensors gets a
body of at most ``E * body_bytes_per_element + T * 1 KiB + 64 KiB`` bytes.

Parsing (``parse``): small bodies are parsed at once. A body over ``LAZY_BYTES`` is parsed in a
worker thread, and its JSON part is first scanned without parsing (``shax_core.wire.scan_json``:
depth and top-level member spans). Members that are not tensor lists are parsed first; then
``budgets(doc)`` (which may compile the program the body carries) says how many bytes each
tensor member may take, and a member over its budget is refused with 413 before its data is
parsed: a 60 MiB ``inputs`` for an ``f32[3]`` program costs a scan, not 1 GiB of Python floats.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable

import orjson
from fastapi import Request

from shax_core.ir import Type
from shax_core.wire import (
    HEADER_LENGTH,
    FramingError,
    NestingError,
    frame,
    loads_nonfinite,
    scan_json,
    split_body,
)
from shax_server.encoding import inflate
from shax_server.problems import Problem, limit_exceeded
from shax_server.settings import Settings

LAZY_BYTES = 1 << 20
TENSOR_MEMBERS = ("inputs", "cotangents", "tangents", "x0")
PER_TENSOR = 1024
SLACK = 64 * 1024

Budgets = Callable[[dict], dict[str, int]]


def tensor_budget(types: Iterable[Type], settings: Settings) -> int:
    """Most bytes of JSON (or binary) a list of tensors of ``types`` may take on the wire."""
    return sum(math.prod(t.shape) * settings.body_bytes_per_element + PER_TENSOR for t in types)


def entry_budgets(entry, settings: Settings) -> dict[str, int]:
    """Byte budgets of the tensor members of a request for the compiled program ``entry``."""
    return _per_entry(entry, ("budgets", settings.body_bytes_per_element), _budgets, settings)


def _budgets(entry, settings: Settings) -> dict[str, int]:
    p = entry.program
    inputs = tensor_budget(p.in_types, settings)
    return {
        "inputs": inputs,
        "x0": inputs,
        "cotangents": tensor_budget(p.out_types, settings),
        "tangents": tensor_budget((p.params[i].type for i in entry.source.wrt), settings),
    }


def body_budget(entry, settings: Settings) -> int:
    """Most bytes a whole evaluation body for ``entry`` may take (what a by-id route reads)."""
    b = entry_budgets(entry, settings)
    return min(settings.max_body_bytes, b["inputs"] + b["cotangents"] + b["tangents"] + SLACK)


def _per_entry(entry, key: tuple, fn, settings: Settings):
    """``fn(entry, settings)``, kept in a compiled entry's ``lazy`` memo (its types never
    change, and ``key`` holds the settings it depends on); computed each time for a program
    that is not compiled yet."""
    memo = getattr(entry, "lazy", None)
    if memo is None:
        return fn(entry, settings)
    value = memo.get(key)
    if value is None:
        value = memo[key] = fn(entry, settings)
    return value


def too_large(size: str, limit: int, why: str = "") -> Problem:
    """The 413 for a body of ``size`` bytes over ``limit`` (``why``: which limit, when it is
    the program's rather than ``max_body_bytes``); the connection is closed after it."""
    p = limit_exceeded(
        "max_body_bytes" if why == "" else "body_bytes_per_element",
        f"the request body is {size} bytes, more than the limit of {limit}{why}",
    )
    p.headers["Connection"] = "close"
    return p


async def receive(
    request: Request, settings: Settings, limit: int, why: str = "", declared: str | None = None
) -> bytes:
    """The whole body, refused (413, 408, or 400 for a client that left) as early as possible
    (``declared``: its Content-Length when the caller has read the headers already)."""
    if declared is None:
        declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(declared, limit, why)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.upload_timeout
    chunks: list[bytes] = []
    size = 0
    while True:
        # each chunk within body_timeout of the last, all of them within upload_timeout
        try:
            message = await _next_message(request, loop, deadline, settings.body_timeout)
        except TimeoutError:
            raise _too_slow(settings) from None
        if message["type"] != "http.request":
            raise Problem(400, "Client disconnected", "the client left mid-body", kind="gone")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(f"more than {limit}", limit, why)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _next_message(request: Request, loop, deadline: float, pause: float) -> dict:
    """The request's next ASGI message, waited for until ``min(now + pause, deadline)``.

    A message that is already here (a small body arrives with its headers) is taken without
    arming a timer: the receive coroutine is run up to its first wait, and only if it has to
    wait is the rest awaited under the deadline (``_Continued`` relays it to the event loop as
    ``await`` would)."""
    receiving = request.receive()
    if not hasattr(receiving, "send"):  # an awaitable that is no coroutine: just wait for it
        async with asyncio.timeout_at(min(loop.time() + pause, deadline)):
            return await receiving
    try:
        waiting_on = receiving.send(None)
    except StopIteration as done:
        if loop.time() > deadline:
            raise TimeoutError from None
        return done.value
    async with asyncio.timeout_at(min(loop.time() + pause, deadline)):
        return await _Continued(receiving, waiting_on)


class _Continued:
    """Awaitable: the rest of coroutine ``coro``, which was run up to its first wait and
    yielded ``waiting_on``; sends, throws (a cancellation) and close reach ``coro`` as they
    would through ``await coro``."""

    def __init__(self, coro, waiting_on):
        self.coro, self.waiting_on = coro, waiting_on

    def __await__(self):
        coro, yielded = self.coro, self.waiting_on
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001  (relayed to the coroutine)
                step = coro.throw
                value = exc
            else:
                step = coro.send
                value = sent
            try:
                yielded = step(value)
            except StopIteration as done:
                return done.value


def _too_slow(settings: Settings) -> Problem:
    return Problem(
        408,
        "Request timeout",
        "the request body arrived too slowly (SHAX_BODY_TIMEOUT "
        f"{settings.body_timeout:g} s between chunks, SHAX_UPLOAD_TIMEOUT "
        f"{settings.upload_timeout:g} s in all)",
        kind="timeout",
        headers={"Connection": "close"},
    )


def parse(
    body: bytes, header_length: str | None, settings: Settings, budgets: Budgets | None = None
) -> tuple[object, memoryview]:
    """(JSON object, binary tail) of a body; see the module docstring. Blocking: big bodies are
    parsed through ``parse_off_loop``."""
    if len(body) <= LAZY_BYTES or budgets is None:
        return split_body(body, header_length, settings.max_json_depth)
    json_part, tail = frame(body, header_length)
    scan = scan_json(json_part)
    if scan.depth > settings.max_json_depth:
        raise NestingError(scan.depth, settings.max_json_depth)
    if scan.members is None or bytes(json_part[: scan.span[0]]).strip():
        return _loads(json_part), tail
    if bytes(json_part[scan.span[1] + 1 :]).strip():
        raise FramingError("body is not valid JSON: trailing characters after the object")
    doc: dict = {}
    deferred = []
    for key, start, end in scan.members:
        if key in TENSOR_MEMBERS:
            doc.pop(key, None)
            deferred = [d for d in deferred if d[0] != key] + [(key, start, end)]
        else:
            doc[key] = _loads(json_part[start:end])
    limits = budgets(doc)
    for key, start, end in deferred:
        limit = limits.get(key)
        if limit is not None and end - start > limit:
            raise limit_exceeded(
                "body_bytes_per_element",
                f"'{key}' is {end - start} bytes of JSON, more than the {limit} bytes that the "
                f"program's tensors for it may take ({settings.body_bytes_per_element} bytes per "
                f"element, {PER_TENSOR} per tensor); refused before its data was parsed",
            )
        doc[key] = _loads(json_part[start:end])
    return doc, tail


_BODY_HEADERS = {b"content-length": 0, b"content-encoding": 1, HEADER_LENGTH.lower().encode(): 2}


def _body_headers(headers) -> list[str | None]:
    """Content-Length, Content-Encoding and Inference-Header-Content-Length of raw ASGI
    ``headers`` (the first of each, as ``Request.headers.get`` reads them), in one pass."""
    found: list[str | None] = [None, None, None]
    for name, value in headers:
        i = _BODY_HEADERS.get(name)
        if i is not None and found[i] is None:
            found[i] = value.decode("latin-1")
    return found


def _loads(text: memoryview | bytes):
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        return loads_nonfinite(memoryview(text), e)  # bare NaN/Infinity tokens, or the error


async def read(
    request: Request,
    settings: Settings,
    *,
    limit: int | None = None,
    budgets: Budgets | None = None,
) -> tuple[dict, memoryview, int]:
    """(JSON object, binary tail, body size) of a request; big bodies parsed off the loop."""
    limit = settings.max_body_bytes if limit is None else limit
    why = "" if limit == settings.max_body_bytes else " for this program's tensors"
    declared, encoding, header_length = _body_headers(request.scope["headers"])
    body = await receive(request, settings, limit, why, declared)
    if encoding is not None:
        # a compressed body obeys the same limit once inflated (a zip bomb stops there)
        body = inflate(body, encoding, limit)
    if len(body) > LAZY_BYTES:
        doc, tail = await asyncio.to_thread(parse, body, header_length, settings, budgets)
    else:
        doc, tail = parse(body, header_length, settings)
    if not isinstance(doc, dict):
        raise Problem(
            400, "Invalid request", "the body must be a JSON object", kind="invalid-request"
        )
    return doc, tail, len(body)
