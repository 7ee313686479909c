"""Fuzzing the server's front door: bad bodies get 4xx problem+json, never a 5xx.

The app runs in process (Starlette's TestClient, server exceptions turned into responses so a
crash shows up as a 500 here rather than as a Python exception). Bodies are built from the valid
seed programs and then broken: mutated IR text and JSON graphs (the core fuzzers' strategies),
mutated tensors (shapes, datatypes, data, binary sizes), byte-level damage to the whole JSON
body, deep nesting, enormous numbers and unicode. Example counts are fixed and small.
"""

from __future__ import annotations

import json
import os

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shax_server import Settings, create_app
from test_fuzz_core import JSON_ODD, TEXTS, mutated_graph, mutated_text

FUZZ = settings(
    max_examples=int(os.environ.get("SHAX_FUZZ_EXAMPLES", "120")),
    deadline=None,
    derandomize="SHAX_FUZZ_EXAMPLES" not in os.environ,  # CI: fixed examples
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SMALL = Settings(
    max_body_bytes=1 << 20,
    max_equations=500,
    max_tensor_elements=1 << 16,
    max_peak_bytes=64 << 20,
    max_json_depth=40,
)
SIN = "def f(a :: f32[2]) = let y = sin a in [y]"


@pytest.fixture(scope="module")
def client():
    app = create_app(SMALL)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def check(r) -> None:
    """Success, or a 4xx problem+json; never a 5xx, never a traceback."""
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json"), r.text
        doc = r.json()
        assert {"type", "title", "status", "detail", "error"} <= set(doc), doc
        assert doc["status"] == r.status_code
    assert "Traceback" not in r.text


@FUZZ
@given(mutated_text(), st.sampled_from(["/v1/programs", "/vjp"]))
def test_mutated_ir_text(client, text, path):
    check(client.post(path, json={"program": text}))


@FUZZ
@given(mutated_graph(), st.sampled_from(["/v1/programs", "/vjp"]))
def test_mutated_graph(client, graph, path):
    check(client.post(path, json={"graph": graph}))


TENSOR = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["a0", "ct0", "x", "", "λ"]) | JSON_ODD,
        "shape": st.lists(st.sampled_from([0, 1, 2, -1, 2**31, 2**63, 10**30]), max_size=4)
        | JSON_ODD,
        "datatype": st.sampled_from(["FP32", "FP64", "BOOL", "INT8", "BYTES", "fp32"]) | JSON_ODD,
        "data": st.recursive(
            st.floats() | st.integers() | st.booleans() | st.sampled_from(["NaN", "x"]),
            lambda inner: st.lists(inner, max_size=3),
            max_leaves=8,
        )
        | JSON_ODD,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-2, 64) | JSON_ODD}
        )
        | JSON_ODD,
    },
)


@pytest.fixture(scope="module")
def program_id(client):
    r = client.post("/v1/programs", json={"program": SIN})
    assert r.status_code == 200, r.text
    return r.json()["id"]


@FUZZ
@given(
    st.lists(TENSOR, max_size=3),
    st.one_of(st.none(), st.lists(TENSOR, max_size=2)),
    st.sampled_from(["vjp", "eval", "jvp", "infer", "inline"]),
    st.binary(max_size=24),
    st.booleans(),
)
def test_mutated_tensors(client, program_id, inputs, cts, where, tail, framed):
    body: dict = {"inputs": inputs}
    if cts is not None:
        body["cotangents" if where != "jvp" else "tangents"] = cts
    path = {
        "vjp": f"/v1/programs/{program_id}/vjp",
        "eval": f"/v1/programs/{program_id}/eval",
        "jvp": f"/v1/programs/{program_id}/jvp",
        "infer": f"/v2/models/{program_id}/infer",
        "inline": "/vjp",
    }[where]
    if where == "inline":
        body["program"] = SIN
    head = json.dumps(body).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))} if framed else {}
    check(client.post(path, content=head + (tail if framed else b""), headers=headers))


def _valid_body() -> bytes:
    return orjson.dumps(
        {
            "program": TEXTS[0],
            "inputs": [{"data": [0.5] * 6}, {"data": [[1, 2], [3, 4]]}],
            "cotangents": [{"data": [1.0] * 2}],
        }
    )


@FUZZ
@given(st.data())
def test_byte_damage_to_a_valid_body(client, data):
    body = bytearray(_valid_body())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, max(0, len(body) - 1)))
        op = data.draw(st.sampled_from(["cut", "flip", "insert", "delete"]))
        if op == "cut":
            del body[i:]
        elif op == "flip" and body:
            body[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            body[i:i] = data.draw(
                st.sampled_from([b"[", b"{", b'"', b"\\", b"1e999", b"-0", "λ".encode(), b"\xff"])
            )
        elif body:
            del body[i]
    check(client.post("/vjp", content=bytes(body)))


@pytest.mark.parametrize("depth", [39, 41, 1000, 100_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_nesting(client, depth, opener):
    closer = "]" if opener == "[" else "}"
    inner = opener * depth + "1" + closer * depth
    r = client.post("/vjp", content=f'{{"program": "x", "inputs": {inner}}}')
    check(r)
    assert r.status_code == 400
    if depth + 1 > SMALL.max_json_depth:
        doc = r.json()
        assert doc["limit"] == "max_json_depth"
        assert str(depth + 1) in doc["detail"] and "40" in doc["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"program": 1e999999}',
        b'{"program": "def f(a :: f32[]) = let in [a]", "wrt": [99999999999999999999999]}',
        b'{"program": "def f(a :: f32[]) = let in [a]", "wrt": [1e308]}',
        b'{"graph": {"inputs": [{"name": "a", "dtype": "f32", "shape": [1e400]}]}}',
        b'{"program": "def \\u00e9(a :: f32[]) = let in [a]"}',
        b'{"program": "def f(a :: f32[]) = let \\ud800 = sin a in [a]"}',
        b'{"program": "\\u0000"}',
        '{"program": "def f(\U0001d4b6 :: f32[]) = let in [\U0001d4b6]"}'.encode(),
        b'{"id": {"$ne": 1}}',
        b'{"id": "../../etc/passwd"}',
        b'\xef\xbb\xbf{"program": "x"}',
        b"",
        b"null",
        b'"program"',
        b"[]" * 1000,
    ],
)
def test_odd_bodies(client, body):
    check(client.post("/vjp", content=body))
    check(client.post("/v1/programs", content=body))


def test_odd_ids_and_methods(client):
    for pid in ["x" * 10_000, "%00", "λ", "..", "0" * 64]:
        check(client.get(f"/v1/programs/{pid}"))
        check(client.post(f"/v2/models/{pid}/infer", json={"inputs": []}))
    check(client.put("/vjp", content=b"{}"))
    check(client.post("/vjp", content=b"{}", headers={"Inference-Header-Content-Length": "-5"}))
    check(
        client.post(
            "/vjp", content=b"{}", headers={"Inference-Header-Content-Length": "λ".encode()}
        )
    )


@pytest.mark.parametrize("datatype", [[], {}, ["FP32"]])
def test_unhashable_datatype_is_a_tensor_error(client, program_id, datatype):
    """Found by fuzzing: ``datatype not in DATATYPES`` raised TypeError (500) for a list."""
    body = {"inputs": [{"name": "a0", "shape": [2], "datatype": datatype, "data": [0, 0]}]}
    for path in (f"/v1/programs/{program_id}/eval", f"/v2/models/{program_id}/infer"):
        r = client.post(path, json=body)
        check(r)
        assert r.status_code == 400 and "datatype must be one of" in r.json()["detail"]


def test_server_stays_healthy_after_fuzzing(client):
    assert client.get("/v2/health/ready").status_code == 200
    r = client.post("/vjp", content=json.dumps({"program": SIN, "inputs": [{"data": [0, 0]}]}))
    assert r.status_code == 400  # a vector output needs cotangents
    r = client.post(
        "/vjp",
        json={"program": SIN, "inputs": [{"data": [0, 0]}], "cotangents": [{"data": [1, 1]}]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["gradients"][0]["data"] == [1.0, 1.0]
