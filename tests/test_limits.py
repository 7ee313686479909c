"""Static resource checks: each limit is a setting, is checked before anything runs, and is
refused with a clear 413/400 problem that names the limit (``limit`` member) and the value.

| setting             | checked                                   | status |
|---------------------|-------------------------------------------|--------|
| max_body_bytes      | Content-Length, then bytes as they stream | 413    |
| max_json_depth      | raw JSON bytes, before parsing            | 400    |
| max_equations       | parsed program, before typing             | 413    |
| max_peak_bytes      | every value's exact size, then the plan's | 413    |
|                     | peak live bytes (types + lifetimes)       |        |
| max_tensor_elements | each tensor's declared shape, before data | 413    |
| max_trip_count      | every loop's trip bound (nested: product)  | 413    |
"""

from __future__ import annotations

import time

import orjson
import pytest
from fastapi.testclient import TestClient
from shax_server import Settings, create_app

import shax_core as sx

LIMITS = Settings(
    max_body_bytes=64 * 1024,
    max_json_depth=16,
    max_equations=50,
    max_tensor_elements=1000,
    max_peak_bytes=1 << 20,
)


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(LIMITS), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def no_evaluation(monkeypatch):
    """Fails the test if any plan is run (limits must refuse before evaluation)."""

    def refuse(self, arrays):
        raise AssertionError("a plan ran although a limit should have refused it")

    monkeypatch.setattr(sx.Executable, "run", refuse)


def problem(r, status: int, limit: str, *needles: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["limit"] == limit, doc
    assert doc["type"].endswith("limit-exceeded")
    for n in needles:
        assert n in doc["detail"], (n, doc["detail"])
    return doc


def test_body_bytes_declared_and_streamed(client):
    r = client.post("/vjp", content=b" " * (64 * 1024 + 1))
    problem(r, 413, "max_body_bytes", str(64 * 1024 + 1), str(64 * 1024))

    def chunks():
        for _ in range(20):
            yield b" " * 8192

    r = client.post("/vjp", content=chunks())
    problem(r, 413, "max_body_bytes", str(64 * 1024))


def test_json_depth(client):
    ok = {"program": "def f(a :: f32[]) = let in [a]", "inputs": [{"data": 1.0}]}
    assert client.post("/vjp", json=ok).status_code == 200
    deep = b'{"inputs": ' + b"[" * 20 + b"1" + b"]" * 20 + b"}"
    problem(client.post("/vjp", content=deep), 400, "max_json_depth", "21 levels", "16")
    # brackets inside strings do not count: IR text full of [ is fine
    text = "def f(a :: f32[]) = let x = reshape [] a in [x]" + " -- " + "[" * 100
    r = client.post("/v1/programs", json={"program": text})
    assert r.status_code == 200, r.text


def test_equations(client, no_evaluation):
    eqns = " ".join(f"x{i + 1} = sin x{i}" for i in range(51))
    r = client.post("/v1/programs", json={"program": f"def f(x0 :: f32[]) = let {eqns} in [x51]"})
    problem(r, 413, "max_equations", "51 equations", "limit of 50")


def test_far_too_many_equations_are_refused_before_parsing(client, monkeypatch):
    import shax_server.compilation as compilation

    def refuse(*a, **k):
        raise AssertionError("parsed although the equation count alone refuses it")

    monkeypatch.setattr(compilation.shax_core, "parse", refuse)
    eqns = " ".join(f"x{i + 1} = sin x{i}" for i in range(500))
    r = client.post("/v1/programs", json={"program": f"def f(x0 :: f32[]) = let {eqns} in [x500]"})
    problem(r, 413, "max_equations", "about 500 equations", "before parsing")


def test_memory_bomb_is_refused_before_running(client, no_evaluation):
    start = time.perf_counter()
    bomb = "def f(a :: f32[]) = let x = broadcast [] [100000,100000] a in [x]"
    for path in ("/v1/programs", "/vjp"):
        r = client.post(path, json={"program": bomb, "inputs": [{"data": 1.0}]})
        problem(r, 413, "max_peak_bytes", "40000000000 bytes", str(1 << 20))
    assert time.perf_counter() - start < 2


def test_shapes_that_wrap_int64_are_refused(client, no_evaluation):
    """[2**32, 2**32] has 2**64 elements: 0 in int64 arithmetic, but not here."""
    for prog in [
        "def f(a :: f32[]) = let x = broadcast [] [4294967296,4294967296] a in [x]",
        "def f(a :: f32[]) = let c = fromList [4294967296,4294967296] [] in [c]",
        "def f(a :: f32[4294967296, 4294967296]) = let x = sin a in [x]",
    ]:
        r = client.post("/v1/programs", json={"program": prog})
        if "fromList" in prog:  # the constant's data cannot match: a type error
            assert r.status_code == 400 and str(2**64) in r.json()["detail"], r.text
        else:
            problem(r, 413, "max_peak_bytes", str(4 * 2**64))


def test_peak_from_lifetimes(client, no_evaluation):
    """Values of 512 KiB each: the plan frees each after its last use, so about two are live
    at once (not four), which is still over 1 MiB; a quarter of the size fits."""
    n = 128 * 1024  # f32 elements: 512 KiB
    chain = f"def f(a :: f32[{n}]) = let x = sin a y = cos x z = exp y in [z]"
    exe = sx.compile(sx.infer(sx.parse(chain)))
    assert 2 * 4 * n <= exe.peak_bytes < 4 * 4 * n  # freed after last use, not all four live
    r = client.post("/v1/programs", json={"program": chain})
    problem(r, 413, "max_peak_bytes", "peak", str(exe.peak_bytes))
    small = chain.replace(str(n), str(n // 4))
    assert client.post("/v1/programs", json={"program": small}).status_code == 200


def test_tensor_elements(client, no_evaluation):
    prog = "def f(a :: f32[3]) = let y = sin a in [y]"
    body = {"program": prog, "inputs": [{"shape": [10**12], "data": [0]}]}
    problem(client.post("/vjp", json=body), 413, "max_tensor_elements", "1000000000000", "1000")
    body = {"program": prog, "inputs": [{"shape": [2**32, 2**32], "data": []}]}
    problem(client.post("/vjp", json=body), 413, "max_tensor_elements", str(2**64))


def test_limits_are_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("SHAX_MAX_JSON_DEPTH", "7")
    monkeypatch.setenv("SHAX_MAX_PEAK_BYTES", "1234")
    s = Settings()
    assert (s.max_json_depth, s.max_peak_bytes) == (7, 1234)


@pytest.mark.parametrize("form", ["text", "graph"])
def test_lying_annotations_do_not_hide_a_memory_bomb(client, no_evaluation, form):
    """A fully annotated program is not trusted: its types are inferred again (fuzzing found
    that annotations alone made the peak check see 8 bytes for a 40 GB broadcast)."""
    text = "def f(a :: f32[]) = let x :: f32[1] = broadcast [] [100000,100000] a in [x]"
    if form == "text":
        body = {"program": text}
    else:
        from shax_core.graph import to_graph

        body = {"graph": to_graph(sx.parse(text))}
    r = client.post("/v1/programs", json=body)
    assert r.status_code in (400, 413), r.text
    assert "f32[1]" in r.json()["detail"] or r.json().get("limit") == "max_peak_bytes"


def test_wrong_annotation_in_a_graph_is_a_type_error(client):
    from shax_core.graph import to_graph

    g = to_graph(sx.parse("def f(a :: f32[2, 3]) = let x = transpose [1,0] a in [x]"))
    g["equations"][0]["params"]["perm"] = [0]
    g["equations"][0]["shape"] = [3, 2]
    r = client.post("/v1/programs", json={"graph": g})
    assert r.status_code == 400, r.text
    assert r.json()["title"] in ("Type error", "Invalid graph"), r.text


# ---- issue 12: sizes computed from types that must not under-count ------------------------


def _measured_peak(exe, args) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        exe.run(args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak + sum(a.nbytes for a in args)  # the caller holds the arguments throughout


@pytest.mark.parametrize(
    "text",
    [
        # a.T @ b.T: the VJP's outputs are transposes (views), copied when handed over
        "def f(a :: f32[256,1024], b :: f32[512,256]) = let x = transpose [1,0] a "
        "y = transpose [1,0] b z = dot x y in [z]",
        "def f(a :: f32[256,1024], b :: f32[512,256]) = let x = transpose [1,0] a "
        "y = transpose [1,0] b z = dot x y w = sin z s = reduce_sum [0,1] w in [s]",
        "def f(a :: f32[]) = let b = broadcast [] [512,512] a c = dot b b "
        "d = reduce_sum [0,1] c in [d]",
    ],
)
def test_plan_peak_bytes_bound_what_a_run_allocates(text):
    import numpy as np

    p = sx.infer(sx.parse(text))
    for prog in (p, sx.vjp_program(p, wrt=list(range(len(p.params))))):
        exe = sx.compile(prog)
        args = [np.ones(t.shape, t.np_dtype) for t in prog.in_types]
        measured = _measured_peak(exe, args)
        assert exe.peak_bytes >= 0.99 * measured, (prog.name, exe.peak_bytes, measured)
        assert exe.peak_bytes <= 1.5 * measured  # and not so loose that limits mean nothing


def test_cache_bytes_account_for_what_an_entry_holds():
    """An entry's ``nbytes`` (what the cache bound counts) is at least what building it
    allocated (tracemalloc), programs, plans and constants included: not the IR text alone."""
    import gc
    import tracemalloc

    from shax_server.compilation import build, prepare

    settings = Settings()
    chain = " ".join(f"x{i + 1} = {'sin' if i % 2 else 'exp'} x{i}" for i in range(400))
    literal = ",".join(str(i * 0.5) for i in range(2048))
    for text in (
        "def f(a :: f32[]) = let y = sin a in [y]",
        f"def f(x0 :: f32[8]) = let {chain} in [x400]",
        f"def f(a :: f32[2048]) = let c = fromList [2048] [{literal}] y = mul a c "
        "z = reduce_sum [0] y in [z]",
    ):
        gc.collect()
        tracemalloc.start()
        entry = build(prepare(sx.parse(text), None, settings), settings)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert held <= entry.nbytes <= 4 * held, (text[:40], held, entry.nbytes)
        assert entry.nbytes > 3 * (len(entry.source.text) + len(str(entry.vjp)))


def test_json_out_of_range_both_encodings_and_numeric_ids_are_refused(client):
    prog = "def f(a :: f32[2]) = let y = sin a z = reduce_sum [0] y in [z]"
    r = client.post("/vjp", json={"program": prog, "inputs": [{"data": [1.0, 1e39]}]})
    assert r.status_code == 400 and "out of range for FP32" in r.json()["detail"], r.text
    assert r.json()["tensor"] == "a"  # the parameter's own name
    pid = client.post("/v1/programs", json={"program": prog}).json()["id"]
    tensor = {"name": "a0", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}
    both = {**tensor, "parameters": {"binary_data_size": 8}}
    header = orjson.dumps({"inputs": [both]})
    r = client.post(
        f"/v2/models/{pid}/infer",
        content=header + b"\0" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400 and "both data and" in r.json()["detail"], r.text
    r = client.post(f"/v2/models/{pid}/infer", json={"id": 42, "inputs": [tensor]})
    assert r.status_code == 400 and "'id' must be a string" in r.json()["detail"], r.text
    r = client.post(f"/v2/models/{pid}/infer", json={"id": "42", "inputs": [tensor]})
    assert r.status_code == 200 and r.json()["id"] == "42", r.text
