"""The short ways of tensor decoding and encoding agree with the general ones.

``wire.decode_expected`` decodes tensor objects of a known type without the general checks,
and gives up (None) on anything outside the common case; ``service.decode_checked`` is the
general way with every check and error. Whatever the short way decodes, the general way
decodes to the same arrays (dtype, shape, bits, binary bytes consumed); whatever the general
way refuses, the short way gives up on. ``wire.encode_body`` writes the same bytes as
``join_body`` of ``encode_tensors``.
"""

from __future__ import annotations

import copy

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shax_server.service import decode_checked, decode_positional

from shax_core import wire
from shax_core.ir import Type

TYPES = [
    Type("f32", (2, 3)),
    Type("f64", (2,)),
    Type("bool", (3,)),
    Type("i32", (2,)),
    Type("i64", ()),
    Type("f32", ()),
    Type("f32", (1, 2)),
    Type("f64", (0,)),
]
OTHER_DATATYPE = {
    "FP32": "FP64",
    "FP64": "FP32",
    "BOOL": "INT32",
    "INT32": "INT64",
    "INT64": "FP32",
}
F32_MAX = float(np.finfo(np.float32).max)


def good_data(t: Type, values: list) -> list:
    """Row-major ``values`` nested as ``t.shape`` (JSON data as clients send it)."""
    return np.asarray(values, dtype=object).reshape(t.shape).tolist() if t.shape else values[0]


def data_candidates(t: Type, rng: np.random.Generator) -> list:
    n = t.size
    if t.dtype == "bool":
        flat = [bool(b) for b in rng.integers(0, 2, n)]
    elif t.dtype.startswith("i"):
        flat = [int(v) for v in rng.integers(-5, 5, n)]
    else:
        flat = [float(v) for v in rng.standard_normal(n)]
    ints = [int(v) for v in rng.integers(-5, 5, max(n, 1))][:n]
    out = [
        flat,
        good_data(t, flat),
        ints,
        [bool(v % 2) for v in ints],
        flat + flat[:1],  # one too many
        flat[:-1],
        [],
        None,
        "NaN",
        {"a": 1},
        5,
        2.5,
        True,
        [flat],  # nested one level too deep
    ]
    if n:
        out += [
            ["NaN", *flat[1:]],
            [1e39, *flat[1:]],  # finite, but no f32
            [F32_MAX, *flat[1:]],
            [3.4028235677973366e38, *flat[1:]],  # rounds to f32's largest, not to infinity
            [2**70, *flat[1:]],  # no int64: object data
            [2**31, *flat[1:]],  # no int32
            [2**63, *flat[1:]],  # uint64
            [-(2**31) - 1, *flat[1:]],
            [None, *flat[1:]],
            [[1, 2], *flat[1:]],  # ragged
        ]
    if len(t.shape) == 2:
        out.append(np.asarray(flat, dtype=object).reshape(t.shape[::-1]).tolist())
    return out


def binary_candidates(t: Type, rng: np.random.Generator) -> list[bytes]:
    dtype = wire.DATATYPES[wire.DATATYPE_OF_IR[t.dtype]]
    n = t.size * dtype.itemsize
    if t.dtype == "bool":
        good = bytes(rng.integers(0, 2, t.size).astype(np.uint8))
        return [good, bytes([2]) + good[1:] if good else b"\x02", good + b"\x00"]
    good = rng.standard_normal(t.size).astype(dtype).tobytes() if n else b""
    return [good, good[:-1], good + b"\x00" * dtype.itemsize]


def choose(draw, options: list, good: int):
    """One of ``options``; mostly one of the first ``good`` (an object a client would send),
    so that whole bodies of several tensors are often accepted too."""
    return draw(st.sampled_from(options[:good] if draw(st.integers(0, 4)) else options))


@st.composite
def tensor_object(draw, t: Type, rng_seed: int):
    rng = np.random.default_rng(rng_seed)
    datatype = wire.DATATYPE_OF_IR[t.dtype]
    shape = list(t.shape)
    obj: dict = {}
    name = choose(draw, ["absent", None, "x", 5], 3)
    if name != "absent":
        obj["name"] = name
    dt = choose(draw, ["absent", None, datatype, OTHER_DATATYPE[datatype], "XX", [1]], 3)
    if dt != "absent":
        obj["datatype"] = dt
    shapes = ["absent", None, shape, [*shape, 1], [float(d) for d in shape], [-1], "2"]
    if 1 in shape:
        shapes.append([True if d == 1 else d for d in shape])
    sh = choose(draw, shapes, 3)
    if sh != "absent":
        obj["shape"] = sh
    chunk = b""
    if draw(st.booleans()):
        obj["data"] = choose(draw, data_candidates(t, rng), 3)
        if draw(st.integers(0, 9)) == 0:
            obj["parameters"] = draw(st.sampled_from([{}, {"binary_data_size": 4}, None, 3]))
    else:
        chunk = choose(draw, binary_candidates(t, rng), 1)
        size = choose(draw, [len(chunk), len(chunk) + 1, -1, True, "4"], 1)
        obj["parameters"] = {"binary_data_size": size}
        if draw(st.integers(0, 9)) == 0:
            obj["parameters"]["other"] = 1
        if draw(st.integers(0, 9)) == 0:
            obj["data"] = draw(st.sampled_from([None, [1.0]]))
    return obj, chunk


@st.composite
def bodies(draw):
    types = draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=3))
    seed = draw(st.integers(0, 2**16))
    pairs = [draw(tensor_object(t, seed + i)) for i, t in enumerate(types)]
    tail = b"".join(chunk for _, chunk in pairs) + draw(st.sampled_from([b"", b"", b"\x00"]))
    return types, [obj for obj, _ in pairs], tail


def general(types, items, tail, max_elements):
    reader = wire.BinaryReader(memoryview(tail))
    names = [f"arg{i}" for i in range(len(types))]
    try:
        return decode_checked(
            copy.deepcopy(items), reader, names, types, max_elements=max_elements
        ), reader.offset
    except wire.TensorError as e:
        return e, reader.offset


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies(), st.sampled_from([None, 1_000_000, 3]))
def test_the_short_way_decodes_what_the_general_way_accepts_to_the_same_arrays(body, limit):
    types, items, tail = body
    check_agree(types, items, tail, limit)


def check_agree(types, items, tail, limit=None) -> bool:
    """The short way's answer agrees with the general way's; True when it decoded them."""
    reader = wire.BinaryReader(memoryview(tail))
    short = wire.decode_expected(copy.deepcopy(items), reader, wire.expected(tuple(types)), limit)
    want, offset = general(types, items, tail, limit)
    if short is None:
        assert reader.offset == 0  # nothing consumed: the general way starts afresh
        return False
    assert not isinstance(want, Exception), f"the short way accepted {items}: {want}"
    assert reader.offset == offset
    for a, b, t in zip(short, want, types, strict=True):
        assert type(a) is np.ndarray and a.dtype == b.dtype == t.np_dtype
        assert a.shape == b.shape == t.shape
        assert a.tobytes() == b.tobytes()
    return True


@pytest.mark.parametrize("t", TYPES, ids=str)
def test_every_data_and_binary_candidate_agrees(t):
    """Each candidate alone in an otherwise plain object, for every type (not sampled)."""
    rng = np.random.default_rng(0)
    decoded = 0
    for data in data_candidates(t, rng):
        for extra in ({}, {"shape": list(t.shape)}, {"name": "x"}):
            decoded += check_agree([t], [{**extra, "data": data}], b"")
    for chunk in binary_candidates(t, rng):
        for size in (len(chunk), len(chunk) + 1):
            obj = {"parameters": {"binary_data_size": size}}
            decoded += check_agree([t], [obj], chunk)
            decoded += check_agree([t], [obj], chunk + b"\x00")
    assert decoded >= 4  # the plain candidates, at least, took the short way


@pytest.mark.parametrize(
    "items",
    [
        [{"data": [1, 2, 3, 4, 5, 6]}, {"data": [[1.5, 2], [3, 4]]}],  # W1's body: data only
        [
            {"name": "a", "datatype": "FP32", "shape": [6], "data": [1, 2, 3, 4, 5, 6]},
            {"name": "b", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 2, 3, 4]},
        ],
        [{"name": None, "shape": None, "datatype": None, "data": [1e38] * 6}, {"data": [0] * 4}],
    ],
)
def test_the_common_bodies_take_the_short_way(items):
    types = (Type("f32", (6,)), Type("f32", (2, 2)))
    arrays = wire.decode_expected(items, wire.BinaryReader(memoryview(b"")), wire.expected(types))
    assert arrays is not None
    assert [a.dtype for a in arrays] == [np.float32, np.float32]
    assert [a.shape for a in arrays] == [(6,), (2, 2)]


def test_binary_tensors_take_the_short_way_and_move_the_reader_on():
    a = np.arange(6, dtype=np.float32)
    m = np.array([True, False, True])
    items = [{"parameters": {"binary_data_size": 24}}, {"parameters": {"binary_data_size": 3}}]
    reader = wire.BinaryReader(memoryview(a.tobytes() + m.tobytes()))
    types = (Type("f32", (2, 3)), Type("bool", (3,)))
    arrays = wire.decode_expected(items, reader, wire.expected(types))
    assert arrays is not None and reader.offset == 27
    assert arrays[0].tolist() == [[0, 1, 2], [3, 4, 5]] and arrays[1].tolist() == [1, 0, 1]
    reader.finish()


def test_positional_decoding_still_names_what_is_wrong():
    types = [Type("f32", (2,))]
    with pytest.raises(wire.TensorError, match=r"'x': element 0 \(1e\+39\) is out of range"):
        decode_positional(
            [{"name": "x", "data": [1e39, 1]}],
            wire.BinaryReader(memoryview(b"")),
            ["a"],
            types,
            member="inputs",
            max_elements=10,
        )


ARRAYS = [
    np.array([0.1, -2.5, 3e38], np.float32),
    np.array([[1.0, np.nan], [np.inf, -np.inf]], np.float64),
    np.array([np.nan], np.float32),
    np.float32(2.0) * np.ones((), np.float32),
    np.array([True, False]),
    np.array([1, -2], np.int32),
    np.array([2**40], np.int64),
    np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not contiguous
    np.zeros((0, 3), np.float64),
    np.array([1.0, 2.0], dtype=">f8"),  # not native: the general way
]


def outcome(fn, *args):
    """What ``fn(*args)`` returns, or the type and message of what it raises."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 (compared, not swallowed)
        return type(e), str(e)


def general_body(doc, members, binary):
    out = dict(doc)
    chunks = []
    for member, named in members.items():
        out[member], raw = wire.encode_tensors(named, binary)
        chunks += raw
    return wire.join_body(out, chunks)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("pick", [[0, 1], [2, 3], [4, 5, 6], [7], [8, 0], [9], [3, 4]])
def test_encode_body_writes_what_the_general_way_writes(pick, binary):
    named = [(f"t{i}", ARRAYS[i]) for i in pick]
    members = {"outputs": named[:1], "gradients": named[1:]}
    want = outcome(general_body, {"id": "k"}, members, binary)
    assert outcome(wire.encode_body, {"id": "k"}, members, binary) == want


@pytest.mark.parametrize("flags", [[True, False], [False, False], [False, True], [False]])
@pytest.mark.parametrize("pick", [[0, 1], [2, 9], [4, 5]])
def test_encode_body_takes_a_flag_per_tensor_of_one_member(pick, flags):
    members = {"outputs": [(f"t{i}", ARRAYS[i]) for i in pick]}
    want = outcome(general_body, {"id": "k"}, members, flags)
    assert outcome(wire.encode_body, {"id": "k"}, members, flags) == want


def test_encode_body_spells_non_finite_values_as_documented():
    body, headers = wire.encode_body({"id": "k"}, {"outputs": [("y", ARRAYS[1])]}, False)
    assert headers == {"content-type": "application/json"}
    assert orjson.loads(body)["outputs"][0]["data"] == [1.0, "NaN", "Infinity", "-Infinity"]
