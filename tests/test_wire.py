"""Tensor objects and the binary extension framing (shax_core.wire)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from shax_core import wire


def roundtrip_json(array):
    obj, raw = wire.encode_tensor("x", array)
    assert raw is None
    return wire.decode_tensor(orjson.loads(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_json_round_trip_keeps_dtype_and_nonfinite(dtype):
    a = np.array([[0.1, np.nan], [np.inf, -np.inf], [-0.0, 3e38]], dtype=dtype)
    name, b = roundtrip_json(a)
    assert name == "x" and b.dtype == dtype and b.shape == (3, 2)
    assert b.tobytes() == a.tobytes()


def test_json_float32_is_short():
    obj, _ = wire.encode_tensor("x", np.array([0.1], np.float32))
    assert orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).endswith(b'"data":[0.1]}')


def test_bool_and_nested_and_scalar():
    _, b = wire.decode_tensor(
        {"name": "m", "shape": [2], "datatype": "BOOL", "data": [True, False]}
    )
    assert b.dtype == np.bool_ and b.tolist() == [True, False]
    _, s = wire.decode_tensor({"name": "s", "shape": [], "datatype": "FP32", "data": 2})
    assert s.shape == () and s.dtype == np.float32
    _, n = wire.decode_tensor(
        {"name": "n", "shape": [2, 1], "datatype": "FP64", "data": [[1], [2]]}
    )
    assert n.tolist() == [[1.0], [2.0]]


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ({"shape": [2], "datatype": "FP16", "data": [1, 2]}, "datatype must be one of"),
        ({"shape": [3], "datatype": "FP32", "data": [1, 2]}, "needs 3 elements"),
        ({"shape": [2], "datatype": "FP32", "data": ["nan", 1]}, "is not a number"),
        ({"shape": [2], "datatype": "FP32", "data": [True, False]}, "must hold numbers"),
        ({"shape": [2], "datatype": "BOOL", "data": [1, 0]}, "true and false"),
        ({"shape": [-1], "datatype": "FP32", "data": []}, "non-negative"),
        ({"shape": [2], "datatype": "FP32"}, "neither data"),
    ],
)
def test_bad_tensors_name_the_tensor(obj, needle):
    with pytest.raises(wire.TensorError) as info:
        wire.decode_tensor({"name": "t", **obj})
    assert info.value.name == "t" and needle in info.value.message


def test_element_limit_is_checked_from_the_declared_shape():
    with pytest.raises(wire.TensorLimitError):
        wire.decode_tensor(
            {"name": "t", "shape": [10**9], "datatype": "FP32", "data": []}, max_elements=1000
        )


def test_binary_framing_round_trip_bit_exact():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((512, 2048)).astype(np.float32)  # 4 MiB
    a.flat[::997] = np.nan
    a.flat[1::997] = np.inf
    m = rng.standard_normal(5) > 0
    objs, chunks = wire.encode_tensors([("a", a), ("m", m), ("j", np.ones(2))], [True, True, False])
    body, headers = wire.join_body({"inputs": objs}, chunks)
    assert headers["content-type"] == wire.BINARY_CONTENT_TYPE
    doc, tail = wire.split_body(body, headers[wire.HEADER_LENGTH.lower()])
    reader = wire.BinaryReader(tail)
    got = wire.decode_tensors(doc["inputs"], reader, member="inputs")
    reader.finish()
    assert got.names == ["a", "m", "j"]
    assert got.arrays[0].dtype == np.float32 and got.arrays[0].tobytes() == a.tobytes()
    assert got.arrays[1].tolist() == m.tolist()
    assert got.arrays[2].tolist() == [1.0, 1.0]


def test_binary_framing_errors():
    obj, raw = wire.encode_tensor("a", np.zeros(4, np.float32), binary=True)
    body, headers = wire.join_body({"inputs": [obj]}, [raw])
    n = headers[wire.HEADER_LENGTH.lower()]
    doc, tail = wire.split_body(body + b"extra", n)
    reader = wire.BinaryReader(tail)
    wire.decode_tensors(doc["inputs"], reader, member="inputs")
    with pytest.raises(wire.FramingError, match="not claimed"):
        reader.finish()
    doc, tail = wire.split_body(body[:-1], n)
    with pytest.raises(wire.TensorError, match="runs past the end"):
        wire.decode_tensors(doc["inputs"], wire.BinaryReader(tail), member="inputs")
    with pytest.raises(wire.FramingError):
        wire.split_body(body, "0")
    with pytest.raises(wire.FramingError, match="not valid JSON"):
        wire.split_body(b"{", None)
    obj["parameters"]["binary_data_size"] = 3
    with pytest.raises(wire.TensorError, match="needs 16"):
        wire.decode_tensor(obj, memoryview(b"abc"))
    bad_bool = {"name": "m", "shape": [2], "datatype": "BOOL"}
    with pytest.raises(wire.TensorError, match="0 or 1"):
        wire.decode_tensor(bad_bool, memoryview(b"\x00\x07"))


# ---- scan_json: vectorized depth and top-level members (issue 12) -----------------------------


def _reference_depth(text: bytes) -> int:
    """Depth by walking every character (what scan_json must agree with, without the loop)."""
    depth = best = 0
    in_string = escaped = False
    for ch in text.decode():
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def test_scan_json_agrees_with_a_character_walk_on_random_documents():
    import json
    import random

    import orjson

    from shax_core.wire import scan_json

    rng = random.Random(12)
    tricky = ['a"[\\', '\\\\"{', "", 'x\\\\\\"', '"', "\\" * 17 + '"[', "[{", "}]"]

    def value(depth=0):
        r = rng.random()
        if depth > 5 or r < 0.3:
            return rng.choice([1, 2.5, True, None, *tricky])
        if r < 0.65:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(["k", '\\"', "[{", "a\\"]): value(depth + 1) for _ in range(3)}

    for i in range(300):
        doc = {"a": value(), 'b"': value(), "inputs": [value()]} if i % 2 else value()
        text = json.dumps(doc, indent=rng.choice([None, 1])).encode()
        for chunk in (5, 64, 1 << 22):  # chunk boundaries inside escape runs, strings, numbers
            scan = scan_json(text, chunk)
            assert scan.depth == _reference_depth(text), (text, chunk)
            if isinstance(doc, dict) and doc:
                got = {k: orjson.loads(text[s:e]) for k, s, e in scan.members}
                assert got == doc, (text, chunk)
                assert text[scan.span[0]] == ord("{") and text[scan.span[1]] == ord("}")
            else:
                assert scan.members is None


def test_scan_json_has_no_per_character_path_for_escapes():
    """A body full of escaped quotes scans in whole-array passes: the scan's Python-level
    work does not grow with the number of escapes (counted as calls into _escaped rounds)."""
    import shax_core.wire as wire

    body = b'{"x":"' + b'\\"[' * 200_000 + b'"}'
    rounds = []
    real = wire._escaped

    def counting(part, quotes, carry):
        rounds.append(quotes.size)
        return real(part, quotes, carry)

    wire._escaped = counting
    try:
        scan = wire.scan_json(body, chunk=1 << 16)
    finally:
        wire._escaped = real
    assert scan.depth == 1 and scan.members[0][0] == "x"
    assert len(rounds) == -(-len(body) // (1 << 16))  # one vectorized call per chunk
