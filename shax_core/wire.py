"""Tensors on the wire: Open Inference Protocol tensor objects and the binary tensor extension.

This is the one module both the server and the client use to turn arrays into bytes and back, so
the two cannot drift apart. It imports NumPy and orjson only.

A tensor object (KServe v2 / Open Inference Protocol)::

    {"name": "a0", "shape": [2, 2], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}

``data`` is row-major, flat or nested. Datatypes: ``FP32`` (f32), ``FP64`` (f64), ``BOOL`` (bool),
``INT32`` (i32), ``INT64`` (i64; indices and counts); integer data must hold integers in range;
anything else is refused rather than coerced. f32 stays f32 both ways.

Non-finite floats in JSON: JSON has no spelling for them, so shax writes and reads the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the spelling of JavaScript and TF Serving) in place
of the number. Only those three strings are accepted; on input the bare tokens ``NaN``,
``Infinity`` and ``-Infinity`` (what Python's json module, and so tritonclient, writes) are read
as those strings too. The binary extension carries IEEE bits and
is exact.

Binary tensor extension (Triton): the body is the JSON object followed by the raw little-endian
bytes of every tensor that has ``"parameters": {"binary_data_size": n}`` (and no ``data``), in the
order the tensors appear in the JSON; the ``Inference-Header-Content-Length`` header gives the
byte length of the JSON part. ``split_body`` and ``join_body`` do the framing; ``decode_tensor``
and ``encode_tensor`` the per-tensor work.

Decoding never validates element by element in Python on the common path: numbers go through one
``np.asarray`` and binary through ``np.frombuffer``. Only data containing the non-finite strings
takes a (bounded) Python pass.

When the types are known (a compiled program's inputs), ``decode_expected`` takes a shorter way
for the common case (nothing declared but the expected datatype and shape, numbers of a kind
the datatype takes, or exactly the expected binary bytes) and gives up on anything else, which
the general way decodes or refuses with its message. ``encode_body`` writes all-JSON responses
straight from the arrays and falls back to ``encode_tensors`` when a value is not finite.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from shax_core.ir import (  # the JSON spelling of floats, shared with the graph
    ShaxError,
    Type,
    decode_float,
    encode_float,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"

# OIP datatype name <-> little-endian NumPy dtype
DATATYPES: dict[str, np.dtype] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BOOL": np.dtype("bool"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
}
IR_DTYPES = {"FP32": "f32", "FP64": "f64", "BOOL": "bool", "INT32": "i32", "INT64": "i64"}
DATATYPE_OF_IR = {v: k for k, v in IR_DTYPES.items()}


MAX_RANK = 32


class TensorError(ShaxError):
    """A tensor object is malformed or does not match what was expected; names the tensor."""

    def __init__(self, name: str, message: str):
        super().__init__(f"tensor {name!r}: {message}")
        self.name = name
        self.message = message


# ---------------------------------------------------------------------------------------------
# tensor objects


def check_shape(name: str, shape: Any, max_elements: int | None = None) -> tuple[int, ...]:
    """A declared shape as a tuple of non-negative ints, refused early if it is too large."""
    if not isinstance(shape, list | tuple) or len(shape) > MAX_RANK:
        raise TensorError(
            name, f"shape must be a list of at most {MAX_RANK} integers, got {shape!r}"
        )
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0 or d > 2**62:
            raise TensorError(name, f"shape must hold non-negative integers, got {list(shape)}")
    shape = tuple(shape)
    n = math.prod(shape)
    if max_elements is not None and n > max_elements:
        raise TensorLimitError(
            name, f"shape {list(shape)} has {n} elements, more than the limit of {max_elements}"
        )
    return shape


class TensorLimitError(TensorError):
    """A tensor is larger than the configured element limit."""


def _datatype(name: str, datatype: Any) -> np.dtype:
    if not isinstance(datatype, str) or datatype not in DATATYPES:  # a list is unhashable
        raise TensorError(name, f"datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}")
    return DATATYPES[datatype]


def _json_array(name: str, data: Any, dtype: np.dtype) -> np.ndarray:
    """JSON data (flat or nested list, or a bare scalar) as a NumPy array of ``dtype``."""
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError) as e:
        raise TensorError(name, f"data is not a regular (rectangular) array: {e}") from None
    kind = raw.dtype.kind
    if dtype.kind == "b":
        if kind != "b":
            raise TensorError(name, "BOOL data must hold only true and false")
        return raw
    if dtype.kind == "i":
        return _int_array(name, raw, dtype)
    if kind in "iuf":
        with np.errstate(over="ignore"):
            return _in_range(name, raw, raw.astype(dtype, copy=False))
    if kind == "b":
        raise TensorError(name, f"{_dt_name(dtype)} data must hold numbers, found true/false")
    # strings (NaN spellings) or objects (huge ints): a bounded pass over the elements
    try:
        flat = [decode_float(v) for v in np.ravel(np.asarray(data, dtype=object))]
    except (ValueError, TypeError) as e:
        raise TensorError(name, f"bad element in data: {e}") from None
    with np.errstate(over="ignore"):
        wide = np.asarray(flat, dtype=np.float64)
        return _in_range(name, wide, wide.astype(dtype)).reshape(raw.shape)


def _in_range(name: str, given: np.ndarray, cast: np.ndarray) -> np.ndarray:
    """``cast`` unless a finite value of ``given`` became infinite (1e39 is no FP32)."""
    if cast.dtype.kind == "f" and cast.dtype != given.dtype:
        overflow = np.isinf(cast) & np.isfinite(given)
        if overflow.any():
            i = int(np.flatnonzero(overflow.ravel())[0])
            value, kind = float(given.ravel()[i]), _dt_name(cast.dtype)
            raise TensorError(
                name,
                f"element {i} ({value!r}) is out of range for {kind} (largest finite: "
                f"{np.finfo(cast.dtype).max}); send Infinity if that is meant",
            )
    return cast


def _int_array(name: str, raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integer data: whole numbers within the dtype's range, never silently wrapped/truncated."""
    info = np.iinfo(dtype)
    if raw.dtype.kind in "iu":
        if raw.size and (raw.min() < info.min or raw.max() > info.max):
            raise TensorError(name, f"{_dt_name(dtype)} data out of range")
        return raw.astype(dtype, copy=False)
    if raw.dtype.kind == "f" and raw.size == 0:
        return raw.astype(dtype)
    raise TensorError(name, f"{_dt_name(dtype)} data must hold integers")


def _dt_name(dtype: np.dtype) -> str:
    for k, v in DATATYPES.items():
        if v == dtype:
            return k
    return str(dtype)


def decode_tensor(
    obj: Any,
    binary: memoryview | None = None,
    *,
    default_name: str = "tensor",
    max_elements: int | None = None,
) -> tuple[str, np.ndarray]:
    """A tensor object -> ``(name, array)``.

    ``binary`` holds exactly this tensor's bytes when the object says ``binary_data_size``.
    The array has the declared shape and the datatype's native NumPy dtype.
    """
    if not isinstance(obj, dict):
        raise TensorError(default_name, f"a tensor must be an object, got {type(obj).__name__}")
    name = obj.get("name", default_name)
    if not isinstance(name, str):
        raise TensorError(default_name, "name must be a string")
    shape = check_shape(name, obj.get("shape"), max_elements)
    dtype = _datatype(name, obj.get("datatype"))
    n = math.prod(shape)
    if binary is not None and obj.get("data") is not None:
        raise TensorError(name, "has both data and parameters.binary_data_size: send one")
    if binary is not None:
        expected = n * dtype.itemsize
        if len(binary) != expected:
            raise TensorError(
                name,
                f"binary_data_size is {len(binary)} bytes, but shape {list(shape)} of "
                f"{_dt_name(dtype)} needs {expected}",
            )
        if dtype.kind == "b":
            raw = np.frombuffer(binary, dtype=np.uint8)
            if raw.size and raw.max() > 1:
                raise TensorError(name, "BOOL bytes must be 0 or 1")
            array = raw.view(np.bool_)
        else:
            array = np.frombuffer(binary, dtype=dtype)
        return name, array.reshape(shape).astype(dtype.newbyteorder("="), copy=False)
    if "data" not in obj:
        raise TensorError(name, "has neither data nor parameters.binary_data_size")
    array = _json_array(name, obj["data"], dtype)
    if array.size != n:
        raise TensorError(name, f"shape {list(shape)} needs {n} elements, data has {array.size}")
    if array.ndim > 1 and array.shape != shape:
        raise TensorError(
            name, f"nested data has shape {list(array.shape)}, declared shape is {list(shape)}"
        )
    return name, array.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def json_data(array: np.ndarray) -> np.ndarray | list:
    """Flat row-major JSON data of an array, non-finite values spelled as documented.

    Finite data stays an ndarray: orjson writes it natively (f32 with the shortest repr that
    round-trips in f32). Only data holding NaN or an infinity becomes a Python list.
    """
    flat = np.ascontiguousarray(array).ravel()
    if flat.dtype.kind == "b":
        return flat
    bad = np.flatnonzero(~np.isfinite(flat))
    if bad.size == 0:
        return flat
    values = flat.tolist()
    for i in bad:
        values[i] = encode_float(values[i])
    return values


def encode_tensor(name: str, array: np.ndarray, binary: bool = False) -> tuple[dict, bytes | None]:
    """An array -> (tensor object, raw bytes or None). Raw bytes are little-endian row-major."""
    array = np.asarray(array)
    datatype = DATATYPE_OF_IR.get(_ir_dtype(array.dtype))
    obj: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
    if binary:
        raw = np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
        obj["parameters"] = {"binary_data_size": len(raw)}
        return obj, raw
    obj["data"] = json_data(array)
    return obj, None


# native NumPy dtype -> IR dtype name (a dtype equal to the native one hashes alike)
_IR_OF_DTYPE = {np.dtype(DATATYPES[k].newbyteorder("=")): v for k, v in IR_DTYPES.items()}
_DATATYPE_OF_DTYPE = {dtype: DATATYPE_OF_IR[name] for dtype, name in _IR_OF_DTYPE.items()}


def _ir_dtype(dtype: np.dtype) -> str:
    name = _IR_OF_DTYPE.get(dtype)
    if name is None:
        raise ShaxError(f"cannot send dtype {dtype} (shax sends f32, f64, i32, i64, bool)")
    return name


def binary_size(obj: Any) -> int | None:
    """``parameters.binary_data_size`` of a tensor object, or None when its data is JSON."""
    if not isinstance(obj, dict):
        return None
    params = obj.get("parameters")
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        name = obj.get("name") if isinstance(obj.get("name"), str) else "tensor"
        raise TensorError(name, f"binary_data_size must be a non-negative integer, got {size!r}")
    return size


# ---------------------------------------------------------------------------------------------
# tensors whose type is known: the common case without the general checks


@dataclass(frozen=True)
class Expected:
    """What a program's type fixes about one tensor it takes: the datatype, the native dtype
    and the little-endian one of the wire, the shape (as a tuple and as the list a tensor
    object spells), the element count and the bytes of its binary form."""

    datatype: str
    dtype: np.dtype
    wire_dtype: np.dtype
    shape: tuple[int, ...]
    shape_list: list[int]
    size: int
    nbytes: int


@functools.lru_cache(maxsize=4096)
def expected(types: tuple[Type, ...]) -> tuple[Expected, ...]:
    """The ``Expected`` of each of ``types`` (computed once per tuple of types)."""
    out = []
    for t in types:
        datatype = DATATYPE_OF_IR[t.dtype]
        wire = DATATYPES[datatype]
        out.append(
            Expected(
                datatype, t.np_dtype, wire, t.shape, list(t.shape), t.size, t.size * wire.itemsize
            )
        )
    return tuple(out)


_F32_MAX = float(np.finfo(np.float32).max)
_NO_LIMIT = float("inf")


def decode_expected(
    items: list, reader: BinaryReader, types: Sequence[Expected], max_elements: int | None = None
) -> list[np.ndarray] | None:
    """The arrays of tensor objects ``items`` (one per entry of ``types``), when every object is
    in the common case; else None, and the general path (``decode_tensor`` and the checks
    against the types) decodes them or says what is wrong. The common case, which that path
    accepts with the same result: an object whose name is absent, null or a string, whose
    datatype and shape are absent, null or the expected ones (integers), within
    ``max_elements``, and either JSON ``data`` (numbers of a kind the datatype takes, in its
    range, of the expected size; nested only in the expected shape) or exactly the expected
    ``binary_data_size`` bytes left in ``reader``. ``reader`` moves on only when every
    object is decoded here."""
    if len(items) != len(types):
        return None
    limit = _NO_LIMIT if max_elements is None else max_elements
    tail, offset = reader.tail, reader.offset
    arrays = []
    for obj, e in zip(items, types):
        if type(obj) is not dict or e.size > limit:
            return None
        get = obj.get
        name, datatype, shape = get("name"), get("datatype"), get("shape")
        if (
            (name is not None and type(name) is not str)
            or (datatype is not None and datatype != e.datatype)
            or (shape is not None and (shape != e.shape_list or not _ints(shape)))
        ):
            return None
        data, params = get("data"), get("parameters")
        if params is None and data is not None:
            array = _expected_json(data, e)
            if array is None:
                return None
        elif data is None and type(params) is dict and len(params) == 1:
            size = params.get("binary_data_size")
            if type(size) is not int or size != e.nbytes or offset + size > len(tail):
                return None
            chunk = tail[offset : offset + size]
            offset += size
            if e.dtype.kind == "b":
                raw = np.frombuffer(chunk, dtype=np.uint8)
                if raw.size and raw.max() > 1:
                    return None
                array = raw.view(np.bool_).reshape(e.shape)
            else:
                wire = np.frombuffer(chunk, dtype=e.wire_dtype)
                array = wire.reshape(e.shape).astype(e.dtype, copy=False)
        else:
            return None
        arrays.append(array)
    reader.offset = offset
    return arrays


def _ints(shape: list) -> bool:
    for d in shape:
        if type(d) is not int:
            return False
    return True


def _expected_json(data: Any, e: Expected) -> np.ndarray | None:
    """JSON ``data`` as an array of ``e``, or None when it is not plainly one (see
    ``decode_expected``): what ``_json_array`` makes of it, without its error paths."""
    kind = e.dtype.kind
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError):
        return None
    if raw.size != e.size or (raw.ndim > 1 and raw.shape != e.shape):
        return None
    given = raw.dtype.kind
    if kind == "f":
        if given == "f":
            # f64 -> f32 only when no finite value can round to infinity (JSON numbers are
            # finite); beyond, the general path range-checks
            if e.dtype.itemsize == 4 and raw.size and float(np.abs(raw).max()) > _F32_MAX:
                return None
        elif given not in "iu":  # int64/uint64 magnitudes are far inside f32's range
            return None
        return raw.astype(e.dtype, copy=False).reshape(e.shape)
    if kind == "b":
        return raw.reshape(e.shape) if given == "b" else None
    if given not in "iu" or not raw.size:
        return None
    info = np.iinfo(e.dtype)
    if raw.min() < info.min or raw.max() > info.max:
        return None
    return raw.astype(e.dtype, copy=False).reshape(e.shape)


# ---------------------------------------------------------------------------------------------
# framing


class FramingError(ShaxError):
    """The body is not valid JSON, or the binary framing does not add up."""


class NestingError(FramingError):
    """The JSON part of a body nests arrays and objects deeper than allowed."""

    def __init__(self, depth: int, limit: int):
        super().__init__(
            f"the JSON body nests arrays/objects {depth} levels deep, more than the limit of "
            f"{limit}"
        )
        self.depth = depth
        self.limit = limit


_QUOTE, _BACKSLASH = ord('"'), ord("\\")
# structural characters of JSON text -> class code (0: not structural)
_CODE = np.zeros(256, dtype=np.int8)
for _c, _k in zip('"\\[{]},:', (1, 2, 3, 3, 4, 4, 5, 6), strict=True):
    _CODE[ord(_c)] = _k
_Q, _B, _OPEN, _CLOSE, _COMMA, _COLON = 1, 2, 3, 4, 5, 6
MAX_MEMBERS = 4096  # top-level members tracked by ``scan_json``; beyond, no member spans


def _openers(data: bytes | memoryview) -> int:
    raw = bytes(data) if isinstance(data, memoryview) else data
    return raw.count(b"[") + raw.count(b"{")


@dataclass(frozen=True)
class JsonScan:
    """What ``scan_json`` finds in JSON text without parsing it.

    ``depth``: the deepest nesting of ``[``/``{`` outside strings. ``members``: for a top-level
    object, ``(key, start, end)`` per member, ``text[start:end]`` being the member's value text
    (None when the top level is not an object or has more than MAX_MEMBERS members)."""

    depth: int
    members: tuple[tuple[str, int, int], ...] | None
    span: tuple[int, int] | None = None  # the top-level object's braces, when members is set


def _escaped(part: np.ndarray, quotes: np.ndarray, carry: int) -> np.ndarray:
    """Which ``quotes`` (positions in ``part``) are escaped: preceded by an odd run of
    backslashes, ``carry`` being the run that ended the previous chunk. Each round looks one
    byte further back, for the quotes whose run is still going; runs are rarely long, and
    after 16 rounds the rest are measured by searching the backslash positions."""
    escaped = (quotes == 0) & bool(carry & 1)
    active = np.flatnonzero(quotes > 0)
    active = active[part[quotes[active] - 1] == _BACKSLASH]
    run = 1
    while active.size and run < 16:
        at = quotes[active] - run - 1
        start = at < 0  # the run reaches the chunk start: the previous chunk's run continues it
        ended = np.zeros(active.size, dtype=bool)
        ended[~start] = part[at[~start]] != _BACKSLASH
        escaped[active[ended]] = run & 1
        escaped[active[start]] = (run + carry) & 1
        active = active[~(ended | start)]
        run += 1
    if active.size:
        q = quotes[active]
        other = np.r_[-1, np.flatnonzero(part[: int(q.max())] != _BACKSLASH)]
        last = other[np.searchsorted(other, q) - 1]  # the last non-backslash before each quote
        escaped[active] = (q - last - 1 + np.where(last < 0, carry, 0)) & 1
    return escaped


def scan_json(data: bytes | memoryview, chunk: int = 1 << 22) -> JsonScan:
    """Nesting depth and top-level member spans of JSON text, in vectorized NumPy passes over
    chunks (linear time, bounded memory, no per-character Python loop): safe to run on an
    untrusted body before any parser does. String contents never count: a quote ends a string
    unless an odd run of backslashes precedes it. On text that is not valid JSON the answer is
    some value (the parser refuses the text anyway)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    depth = best = 0
    in_string = False
    slash_run = 0  # backslashes ending the previous chunk
    events: list[tuple[int, int, int]] = []  # (position, code, depth after) at depth <= 1
    overflow = False
    for start in range(0, raw.size, chunk):
        part = raw[start : start + chunk]
        codes = _CODE[part]
        pos = np.flatnonzero(codes)
        if pos.size:
            kind = codes[pos]
            is_quote = kind == _Q
            toggles = is_quote.view(np.uint8).copy()
            quote_at = np.flatnonzero(is_quote)
            toggles[quote_at[_escaped(part, pos[quote_at], slash_run)]] = 0
            toggles[0] ^= in_string
            parity = np.bitwise_xor.accumulate(toggles)  # 1: inside a string
            outside = (parity == 0) & (kind >= _OPEN)
            where, kind = pos[outside], kind[outside]
            if kind.size:
                step = np.where(kind == _OPEN, 1, np.where(kind == _CLOSE, -1, 0))
                levels = depth + np.cumsum(step)
                best = max(best, int(levels.max()))
                depth = int(levels[-1])
                top = np.flatnonzero(levels - (step == 1) <= 1)
                if not overflow and top.size <= 4 * MAX_MEMBERS + 4 - len(events):
                    events += zip(
                        (where[top] + start).tolist(),
                        kind[top].tolist(),
                        levels[top].tolist(),
                        strict=True,
                    )
                else:
                    overflow = True
            in_string = bool(parity[-1])
        other = part[::-1] != _BACKSLASH
        n = int(np.argmax(other)) if other.any() else part.size
        slash_run = n + (slash_run if n == part.size else 0)
    members = None if overflow else _members(data, events)
    if not members:
        return JsonScan(best, None)
    close = next(p for p, code, level in reversed(events) if code == _CLOSE and level == 0)
    return JsonScan(best, members, (events[0][0], close))


def _members(data, events) -> tuple[tuple[str, int, int], ...] | None:
    """Member spans from the structural events at depth <= 1 of a top-level object."""
    if not events or events[0][1] != _OPEN or events[0][2] != 1 or data[events[0][0]] != 0x7B:
        return None
    out = []
    sep = events[0][0]  # the opening brace, then each top-level comma
    colon = None
    for position, code, level in events[1:]:
        if code == _OPEN or (code == _CLOSE and level >= 1):
            continue  # a member value's own brackets
        if level == 1 and code == _COLON and colon is None:
            colon = position
            continue
        if not ((level == 1 and code == _COMMA) or (level == 0 and code == _CLOSE)):
            return None
        if colon is None:
            return () if code == _CLOSE and not out and sep == events[0][0] else None
        try:
            key = orjson.loads(bytes(data[sep + 1 : colon]))
        except orjson.JSONDecodeError:
            return None
        if not isinstance(key, str):
            return None
        out.append((key, colon + 1, position))
        if code == _CLOSE:
            return tuple(out)
        sep, colon = position, None
    return None


def json_depth(data: bytes | memoryview, chunk: int = 1 << 22) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text, without parsing it (see ``scan_json``)."""
    return scan_json(data, chunk).depth


def frame(body: bytes, header_length: str | int | None) -> tuple[memoryview, memoryview]:
    """A body -> (its JSON part, its binary tail), by ``Inference-Header-Content-Length``."""
    view = memoryview(body)
    if header_length is None or header_length == "":
        return view, view[len(view) :]
    try:
        n = int(header_length)
    except ValueError:
        raise FramingError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if n <= 0 or n > len(body):
        raise FramingError(
            f"{HEADER_LENGTH} is {n}, but the body has {len(body)} bytes "
            "(a raw binary body without a JSON header is not supported)"
        )
    return view[:n], view[n:]


def split_body(
    body: bytes, header_length: str | int | None, max_depth: int | None = None
) -> tuple[Any, memoryview]:
    """A request or response body -> (parsed JSON object, the binary tail).

    ``max_depth`` bounds how deeply the JSON part may nest arrays and objects; it is checked
    before parsing (``NestingError``, a ``FramingError``).
    """
    json_part, tail = frame(body, header_length)
    if max_depth is not None and _openers(json_part) > max_depth:
        # depth <= the number of openers, so only bodies with many of them need the scan
        depth = json_depth(json_part)
        if depth > max_depth:
            raise NestingError(depth, max_depth)
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as e:
        doc = loads_nonfinite(json_part, e)
    return doc, tail


# a JSON string, or one of the bare tokens Python's json module (and so tritonclient) writes for
# non-finite floats; strings are matched first so that a token inside a string is left alone
_STRING_OR_NONFINITE = re.compile(rb'"(?:[^"\\]|\\.)*"|(-?Infinity|NaN)')


def loads_nonfinite(json_part: memoryview, error: Exception) -> Any:
    """JSON with bare ``NaN``/``Infinity``/``-Infinity`` tokens, read as the documented strings
    (which tensor decoding turns into the floats). Only tried when strict parsing failed.

    >>> loads_nonfinite(memoryview(b'[NaN, -Infinity, "NaN x", 1]'), None)
    ['NaN', '-Infinity', 'NaN x', 1]
    """
    raw = bytes(json_part)
    if b"NaN" not in raw and b"Infinity" not in raw:
        raise FramingError(f"body is not valid JSON: {error}") from None

    def quote(m: re.Match) -> bytes:
        return b'"' + m[1] + b'"' if m[1] else m[0]

    try:
        return orjson.loads(_STRING_OR_NONFINITE.sub(quote, raw))
    except orjson.JSONDecodeError as e:
        raise FramingError(f"body is not valid JSON: {e}") from None


class BinaryReader:
    """Hands out consecutive slices of the binary tail, in the order tensors appear."""

    def __init__(self, tail: memoryview):
        self.tail = tail
        self.offset = 0

    def take(self, obj: Any) -> memoryview | None:
        size = binary_size(obj)
        if size is None:
            return None
        if self.offset + size > len(self.tail):
            name = obj.get("name") if isinstance(obj.get("name"), str) else "tensor"
            raise TensorError(
                name,
                f"binary_data_size {size} runs past the end of the body "
                f"({len(self.tail) - self.offset} binary bytes left)",
            )
        chunk = self.tail[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def finish(self) -> None:
        if self.offset != len(self.tail):
            raise FramingError(
                f"{len(self.tail) - self.offset} binary bytes after the JSON header are not "
                "claimed by any tensor's binary_data_size"
            )


def join_body(doc: Any, chunks: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
    """(JSON object, raw chunks) -> (body, headers). Plain JSON when there are no chunks."""
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"content-type": "application/json"}
    body = b"".join([header, *chunks])
    return body, {"content-type": BINARY_CONTENT_TYPE, HEADER_LENGTH.lower(): str(len(header))}


# ---------------------------------------------------------------------------------------------
# whole requests and responses (the shape both endpoints families share)


@dataclass
class TensorList:
    """Named arrays decoded from one list member of a body (``inputs``, ``cotangents``, ...)."""

    names: list[str] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)


def decode_tensors(
    items: Any,
    reader: BinaryReader,
    *,
    member: str,
    max_elements: int | None = None,
) -> TensorList:
    """The tensor objects of one body member, reading binary chunks in order."""
    if not isinstance(items, list):
        raise FramingError(f"{member} must be a list of tensor objects")
    out = TensorList()
    for i, obj in enumerate(items):
        chunk = reader.take(obj)
        name, array = decode_tensor(
            obj, chunk, default_name=f"{member}[{i}]", max_elements=max_elements
        )
        out.names.append(name)
        out.arrays.append(array)
    return out


def encode_tensors(
    named: Sequence[tuple[str, np.ndarray]], binary: bool | Sequence[bool]
) -> tuple[list[dict], list[bytes]]:
    """Arrays -> (tensor objects, raw chunks in order). ``binary`` is one flag or one per array."""
    flags = [binary] * len(named) if isinstance(binary, bool) else list(binary)
    objs, chunks = [], []
    for (name, array), flag in zip(named, flags, strict=True):
        obj, raw = encode_tensor(name, array, binary=flag)
        objs.append(obj)
        if raw is not None:
            chunks.append(raw)
    return objs, chunks


def encode_body(
    doc: dict, members: dict[str, Sequence[tuple[str, np.ndarray]]], binary: bool | Sequence[bool]
) -> tuple[bytes, dict[str, str]]:
    """``doc`` with each of ``members`` (named arrays) as its list of tensor objects -> (body,
    headers): ``join_body`` of what ``encode_tensors`` makes of them.

    All-JSON bodies take a shorter way: the arrays go to orjson as they are (flat), without
    looking for non-finite values first. orjson writes a non-finite float as ``null``, so a
    body without ``null`` in it had none; any other body is encoded again the general way,
    which spells them as documented."""
    if binary is False or _all_json(members, binary):
        out = dict(doc)
        for member, named in members.items():
            objs = []
            for name, array in named:
                datatype = (
                    _DATATYPE_OF_DTYPE.get(array.dtype) if type(array) is np.ndarray else None
                )
                if datatype is None:
                    break  # not a plain array of a datatype shax sends: the general way
                objs.append(
                    {
                        "name": name,
                        "shape": array.shape,
                        "datatype": datatype,
                        "data": array.ravel(),
                    }
                )
            else:
                out[member] = objs
                continue
            break
        else:
            header = orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
            if b"null" not in header:
                return header, {"content-type": "application/json"}
    out = dict(doc)
    chunks: list[bytes] = []
    for member, named in members.items():
        objs, raw = encode_tensors(named, binary)
        out[member] = objs
        chunks += raw
    return join_body(out, chunks)


def _all_json(members: dict, flags) -> bool:
    """Flags, one per tensor of the one member, all false (as ``encode_tensors`` reads them)."""
    if isinstance(flags, bool) or len(members) != 1:
        return False
    (named,) = members.values()
    return len(named) == len(flags) and not any(flags)
