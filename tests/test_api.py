"""API tests against a real uvicorn on 127.0.0.1: the seed's medium through every route."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tritonclient.http as triton

from tests.conftest import FIXTURES
from tests.seed_numbers import DFT0 as G0
from tests.seed_numbers import DFT1 as G1
from tests.seed_numbers import SEED_A, SEED_B, SEED_CT, F

MEDIUM = (FIXTURES / "seed_medium_typed.shax").read_text()
X0, X1, CT = SEED_A, SEED_B, SEED_CT
INPUTS = [
    {"name": "arg0", "shape": [6], "datatype": "FP32", "data": X0.tolist()},
    {"name": "arg1", "shape": [2, 2], "datatype": "FP32", "data": X1.tolist()},
]
COTANGENTS = [{"name": "ct", "shape": [2], "datatype": "FP32", "data": CT.tolist()}]


def tensor(obj) -> np.ndarray:
    assert obj["datatype"] == "FP32"
    return np.asarray(obj["data"], dtype=np.float32).reshape(obj["shape"])


def check_medium(outputs, gradients):
    np.testing.assert_allclose(outputs[0], F, rtol=1e-5)
    np.testing.assert_allclose(gradients[0], G0, rtol=1e-5)
    np.testing.assert_allclose(gradients[1], G1, rtol=1e-5)


@pytest.fixture(scope="module")
def medium_id(client):
    r = client.post("/v1/programs", json={"program": MEDIUM})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_vjp_inline_ir_text(client):
    r = client.post("/vjp", json={"program": MEDIUM, "inputs": INPUTS, "cotangents": COTANGENTS})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [o["name"] for o in doc["outputs"]] == ["out0"]
    assert [g["name"] for g in doc["gradients"]] == ["grad_arg0", "grad_arg1"]
    check_medium([tensor(o) for o in doc["outputs"]], [tensor(g) for g in doc["gradients"]])


def test_compile_then_vjp_by_id(client, medium_id):
    r = client.post("/v1/programs", json={"program": MEDIUM})
    assert r.json()["cached"] is True and r.json()["id"] == medium_id
    sig = r.json()["signature"]
    assert sig["inputs"] == [
        {"name": "arg0", "datatype": "FP32", "shape": [6]},
        {"name": "arg1", "datatype": "FP32", "shape": [2, 2]},
    ]
    assert sig["outputs"] == [{"name": "out0", "datatype": "FP32", "shape": [2]}]
    r = client.post(
        f"/v1/programs/{medium_id}/vjp", json={"inputs": INPUTS, "cotangents": COTANGENTS}
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    check_medium([tensor(o) for o in doc["outputs"]], [tensor(g) for g in doc["gradients"]])


def test_vjp_by_id_inline_and_defaults(client, medium_id):
    # name, shape and datatype may be left out on native endpoints: the program knows them
    r = client.post(
        "/vjp",
        json={
            "id": medium_id,
            "inputs": [{"data": X0.tolist()}, {"data": X1.ravel().tolist()}],
            "cotangents": [{"data": CT.tolist()}],
        },
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    check_medium([tensor(o) for o in doc["outputs"]], [tensor(g) for g in doc["gradients"]])


def test_graph_form_gets_the_same_id(client, medium_id):
    from shax_core import parse
    from shax_core.graph import to_graph

    r = client.post("/v1/programs", json={"graph": to_graph(parse(MEDIUM))})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == medium_id


def test_renamed_program_gets_the_same_id(client, medium_id):
    renamed = re.sub(r"\bx(\d+)\b", r"tmp_\1", MEDIUM.replace("arg", "input_"))
    renamed = renamed.replace("medium", "other")
    assert renamed != MEDIUM
    r = client.post("/v1/programs", json={"program": renamed})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == medium_id
    # different wrt: a different compiled program, a different id
    r = client.post("/v1/programs", json={"program": renamed, "wrt": [1]})
    assert r.json()["id"] != medium_id
    # the user's names: those of this request, though the compiled entry is shared
    assert [g["name"] for g in r.json()["signature"]["gradients"]] == ["grad_input_1"]
    assert [i["name"] for i in r.json()["signature"]["inputs"]] == ["input_0", "input_1"]


def test_program_stages(client, medium_id):
    r = client.get(f"/v1/programs/{medium_id}")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc["stages"]) == {"typed", "rewritten", "linearized", "linear", "transposed", "vjp"}
    assert doc["program"].startswith("def program(arg0 :: f32[6]")


def test_eval_and_jvp(client, medium_id):
    r = client.post(f"/v1/programs/{medium_id}/eval", json={"inputs": INPUTS})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(tensor(r.json()["outputs"][0]), F, rtol=1e-5)
    # JVP agrees with the VJP by the dot-product test: <ct, J t> == <J^T ct, t>
    t0 = np.array([0.5, -1, 2, 0, 1, 3], dtype=np.float32)
    t1 = np.array([[1, 0], [-2, 0.25]], dtype=np.float32)
    r = client.post(
        f"/v1/programs/{medium_id}/jvp",
        json={"inputs": INPUTS, "tangents": [{"data": t0.tolist()}, {"data": t1.tolist()}]},
    )
    assert r.status_code == 200, r.text
    jt = tensor(r.json()["tangents"][0])
    lhs = float(CT @ jt)
    rhs = float(G0 @ t0 + (G1 * t1).sum())
    assert lhs == pytest.approx(rhs, rel=1e-4)


def test_scalar_output_defaults_cotangent_to_one(client):
    prog = "def f(a :: f32[3]) = let y = mul a a\n z = reduce_sum [0] y in [z]"
    r = client.post("/vjp", json={"program": prog, "inputs": [{"data": [1, 2, 3]}]})
    assert r.status_code == 200, r.text
    assert r.json()["gradients"][0]["data"] == [2.0, 4.0, 6.0]


def test_nonfinite_json_spelling(client):
    prog = "def f(a :: f32[4]) = let y = mul a a in [y]"
    data = [1.5, "NaN", "Infinity", "-Infinity"]
    r = client.post(
        "/vjp",
        json={"program": prog, "inputs": [{"data": data}], "cotangents": [{"data": [1, 1, 1, 1]}]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [2.25, "NaN", "Infinity", "Infinity"]
    assert r.json()["gradients"][0]["data"] == [3.0, "NaN", "Infinity", "-Infinity"]


def test_oip_metadata_and_health(client, medium_id):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get(f"/v2/models/{medium_id}/ready").status_code == 200
    meta = client.get("/v2").json()
    assert meta["name"] == "shax" and "binary_tensor_data" in meta["extensions"]
    model = client.get(f"/v2/models/{medium_id}").json()
    assert [i["name"] for i in model["inputs"]] == ["arg0", "arg1", "ct0"]
    assert [o["name"] for o in model["outputs"]] == ["out0", "grad_arg0", "grad_arg1"]


@pytest.mark.parametrize("binary", [False, True])
def test_triton_client(server_url, medium_id, binary):
    tc = triton.InferenceServerClient(url=server_url.removeprefix("http://"))
    try:
        assert tc.is_server_live() and tc.is_server_ready()
        assert tc.is_model_ready(medium_id)
        inputs = []
        for name, array in (("arg0", X0), ("a1", X1), ("ct0", CT)):  # a1: the canonical name
            i = triton.InferInput(name, list(array.shape), "FP32")
            i.set_data_from_numpy(array, binary_data=binary)
            inputs.append(i)
        outputs = [
            triton.InferRequestedOutput(n, binary_data=binary)
            for n in ("out0", "grad_arg0", "grad_arg1")
        ]
        result = tc.infer(medium_id, inputs, outputs=outputs, request_id="r1")
        assert result.get_response()["id"] == "r1"
        for n in ("out0", "grad_arg0", "grad_arg1"):
            assert result.as_numpy(n).dtype == np.float32
        check_medium(
            [result.as_numpy("out0")], [result.as_numpy("grad_arg0"), result.as_numpy("grad_arg1")]
        )
        # without requested outputs the client asks for binary_data_output: all outputs binary
        result = tc.infer(medium_id, inputs)
        check_medium(
            [result.as_numpy("out0")], [result.as_numpy("grad_arg0"), result.as_numpy("grad_arg1")]
        )
    finally:
        tc.close()


def test_binary_roundtrip_4mib_bit_exact(server_url, client):
    n = 1024 * 1024  # 4 MiB of f32
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32)
    x[::1000] = np.nan
    x[1::1000] = np.inf
    x[2::1000] = -np.inf
    x[3] = np.float32(1e-45)  # a subnormal
    prog = f"def ident(a :: f32[{n}]) = let y = a in [y]"
    pid = client.post("/v1/programs", json={"program": prog}).json()["id"]
    tc = triton.InferenceServerClient(url=server_url.removeprefix("http://"))
    try:
        a0 = triton.InferInput("a", [n], "FP32")
        a0.set_data_from_numpy(x, binary_data=True)
        ct = triton.InferInput("ct0", [n], "FP32")
        ct.set_data_from_numpy(x[::-1].copy(), binary_data=True)
        result = tc.infer(pid, [a0, ct])
        out = result.as_numpy("out0")
        assert out.dtype == np.float32
        assert out.tobytes() == x.tobytes()  # bit-exact, NaN payloads included
        grad = result.as_numpy("grad_a")
        np.testing.assert_array_equal(grad, x[::-1])
    finally:
        tc.close()


def test_native_binary_extension(client):
    from shax_core import wire

    prog = "def f(a :: f64[3], b :: f64[3]) = let y = mul a b in [y]"
    a = np.array([1.0, np.nan, -2.0])
    b = np.array([3.0, 4.0, np.inf])
    (ta, ra), (tb, rb) = wire.encode_tensor("a", a, True), wire.encode_tensor("b", b, True)
    body, headers = wire.join_body(
        {
            "program": prog,
            "inputs": [ta, tb],
            "cotangents": [{"data": [1, 1, 1]}],
            "binary_data_output": True,
        },
        [ra, rb],
    )
    r = client.post("/vjp", content=body, headers=headers)
    assert r.status_code == 200, r.text
    doc, tail = wire.split_body(r.content, r.headers[wire.HEADER_LENGTH])
    reader = wire.BinaryReader(tail)
    outs = wire.decode_tensors(doc["outputs"], reader, member="outputs")
    grads = wire.decode_tensors(doc["gradients"], reader, member="gradients")
    reader.finish()
    np.testing.assert_array_equal(outs.arrays[0], a * b)
    np.testing.assert_array_equal(grads.arrays[0], b)
    np.testing.assert_array_equal(grads.arrays[1], a)


def test_metrics(client, medium_id):
    text = client.get("/metrics").text
    for name in (
        "shax_requests_total",
        "shax_request_duration_seconds_bucket",
        "shax_compile_duration_seconds",
        "shax_cache_hits_total",
        "shax_cache_misses_total",
        "shax_cache_entries",
        "shax_evaluations_in_flight",
    ):
        assert name in text
