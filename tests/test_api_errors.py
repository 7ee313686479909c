"""Every error class: status, problem+json shape and what the message says."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from shax_server import Settings, create_app

MEDIUM_SIG = "def f(a :: f32[6], b :: f32[2, 2]) = let y = mul b b in [y]"


def assert_problem(r: httpx.Response, status: int, *needles: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert {"type", "title", "status", "detail", "error"} <= set(doc)
    assert doc["status"] == status and doc["error"] == doc["detail"]
    assert "Traceback" not in r.text
    for n in needles:
        assert n in doc["detail"], (n, doc["detail"])
    return doc


def test_parse_error_has_line_and_column(client):
    r = client.post("/vjp", json={"program": "def f(a :: f32[]) =\n  let x = sin b in [x]"})
    doc = assert_problem(r, 400, "undefined variable b")
    assert (doc["line"], doc["column"]) == (2, 15)


def test_type_error_names_the_equation(client):
    prog = "def f(a :: f32[2], b :: f32[3]) = let x = add a b in [x]"
    doc = assert_problem(client.post("/v1/programs", json={"program": prog}), 400, "x = add")
    assert doc["title"] == "Type error"


@pytest.mark.parametrize(
    ("graph", "field", "needle"),
    [
        (
            {"inputs": [], "equations": [{"out": "y", "primitive": "nope"}], "outputs": []},
            "equations[0] (y).primitive",
            "unknown primitive",
        ),
        (
            {
                "inputs": [{"name": "a", "dtype": "f32", "shape": []}],
                "equations": [{"out": "y", "primitive": "sin", "inputs": ["a", "a"]}],
                "outputs": ["y"],
            },
            "equations[0] (y).inputs",
            "takes 1 input",
        ),
        (
            {
                "inputs": [],
                "equations": [{"out": "y", "primitive": "sin", "inputs": ["q"]}],
                "outputs": [],
            },
            "equations[0] (y).inputs[0]",
            "not defined",
        ),
        (
            {
                "inputs": [{"name": "a", "dtype": "f32", "shape": []}],
                "equations": [{"out": "a", "primitive": "sin", "inputs": ["a"]}],
                "outputs": ["a"],
            },
            "equations[0] (a).out",
            "bound twice",
        ),
        (
            {
                "inputs": [{"name": "a", "dtype": "f32", "shape": [2]}],
                "equations": [
                    {
                        "out": "y",
                        "primitive": "reduce_sum",
                        "params": {"axes": "x"},
                        "inputs": ["a"],
                    }
                ],
                "outputs": ["y"],
            },
            "equations[0] (y).params.axes",
            "expected a list",
        ),
    ],
)
def test_graph_errors_name_the_field(client, graph, field, needle):
    doc = assert_problem(client.post("/v1/programs", json={"graph": graph}), 400, needle)
    assert doc["field"] == field


@pytest.mark.parametrize(
    ("tensor", "needles"),
    [
        ({"data": [1, 2, 3]}, ["'b'", "shape [2, 2] needs 4 elements", "data has 3"]),
        ({"shape": [4], "data": [1, 2, 3, 4]}, ["'b'", "expected shape [2, 2]"]),
        ({"datatype": "FP64", "data": [1, 2, 3, 4]}, ["'b'", "expected datatype FP32"]),
        ({"datatype": "INT8", "data": [1, 2, 3, 4]}, ["'b'", "datatype must be one of"]),
        ({"data": [1, "x", 3, 4]}, ["'b'", "'x' is not a number"]),
        ({"data": [[1, 2], [3]]}, ["'b'", "not a regular"]),
    ],
)
def test_bad_tensor_names_the_input(client, tensor, needles):
    body = {
        "program": MEDIUM_SIG,
        "inputs": [{"data": [0] * 6}, {"name": "b", **tensor}],
        "cotangents": [{"data": [[1, 1], [1, 1]]}],
    }
    doc = assert_problem(client.post("/vjp", json=body), 400, *needles)
    assert doc["tensor"] == "b"


def test_wrong_number_of_inputs_and_missing_cotangents(client):
    body = {"program": MEDIUM_SIG, "inputs": [{"data": [0] * 6}]}
    # the program's own parameter names (a, b), not canonical ones, in the message
    assert_problem(
        client.post("/vjp", json=body), 400, "'inputs' has 1 tensor(s)", "a f32[6]", "b f32[2, 2]"
    )
    body["inputs"].append({"data": [0] * 4})
    assert_problem(client.post("/vjp", json=body), 400, "'cotangents' is required")


def test_malformed_bodies(client):
    assert_problem(client.post("/vjp", content=b"{nope"), 400, "not valid JSON")
    assert_problem(client.post("/vjp", json=[1, 2]), 400, "JSON object")
    assert_problem(client.post("/vjp", json={}), 400, "exactly one of")
    r = client.post("/vjp", content=b"{}", headers={"Inference-Header-Content-Length": "99"})
    assert_problem(r, 400, "Inference-Header-Content-Length")
    body = {
        "program": MEDIUM_SIG,
        "inputs": [{"data": [0] * 6}, {"parameters": {"binary_data_size": 16}}],
    }
    import orjson

    head = orjson.dumps(body)
    r = client.post(
        "/vjp",
        content=head + b"\0" * 8,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert_problem(r, 400, "runs past the end")


def test_unknown_id_is_404(client):
    missing = "0" * 64
    assert_problem(client.get(f"/v1/programs/{missing}"), 404, missing)
    assert_problem(client.post(f"/v1/programs/{missing}/vjp", json={"inputs": []}), 404)
    assert_problem(client.post("/vjp", json={"id": missing, "inputs": []}), 404)
    assert_problem(client.get(f"/v2/models/{missing}"), 404)
    assert_problem(client.post(f"/v2/models/{missing}/infer", json={"inputs": []}), 404)
    assert_problem(client.get("/no/such/route"), 404)


def test_oip_errors(client):
    pid = client.post("/v1/programs", json={"program": MEDIUM_SIG}).json()["id"]
    a0 = {"name": "a", "shape": [6], "datatype": "FP32", "data": [0] * 6}
    a1 = {"name": "b", "shape": [2, 2], "datatype": "FP32", "data": [0] * 4}
    r = client.post(f"/v2/models/{pid}/infer", json={"inputs": [a0]})
    assert_problem(r, 400, "missing input(s) b")
    r = client.post(f"/v2/models/{pid}/infer", json={"inputs": [a0, {**a1, "name": "zz"}]})
    assert_problem(r, 400, "unknown input 'zz'")
    r = client.post(f"/v2/models/{pid}/infer", json={"inputs": [a0, {**a1, "shape": [4]}]})
    assert_problem(r, 400, "'b'", "expected shape [2, 2]")
    r = client.post(
        f"/v2/models/{pid}/infer",
        json={"inputs": [a0, a1, {**a1, "name": "ct0"}], "outputs": [{"name": "nope"}]},
    )
    assert_problem(r, 400, "unknown output 'nope'")


def test_body_too_large_declared_and_streamed(client):
    big = b"x" * (16 * 1024 * 1024 + 1)
    doc = assert_problem(client.post("/vjp", content=big), 413, "limit")
    assert doc["limit"] == "max_body_bytes"

    def chunks():  # no Content-Length: chunked transfer encoding
        for _ in range(20):
            yield b"x" * (1024 * 1024)

    try:
        r = client.post("/vjp", content=chunks())
    except httpx.TransportError:
        pytest.skip("server closed the connection before the client finished sending")
    doc = assert_problem(r, 413, "limit")
    assert doc["limit"] == "max_body_bytes"


def test_program_limits(client):
    eqns = "\n".join(f"x{i + 1} = sin x{i}" for i in range(2001))
    prog = f"def f(x0 :: f32[]) = let {eqns} in [x2001]"
    doc = assert_problem(client.post("/v1/programs", json={"program": prog}), 413, "2001")
    assert doc["limit"] == "max_equations"

    prog = "def f(a :: f32[]) = let x = broadcast [] [100000,100000] a in [x]"
    doc = assert_problem(client.post("/v1/programs", json={"program": prog}), 413, "peak")
    assert doc["limit"] == "max_peak_bytes"

    body = {
        "program": "def f(a :: f32[3]) = let y = sin a in [y]",
        "inputs": [{"shape": [3000000], "data": [0]}],
    }
    doc = assert_problem(client.post("/vjp", json=body), 413, "3000000 elements")
    assert doc["limit"] == "max_tensor_elements"


# ---- in-process apps with special settings ------------------------------------------------


def _in_process(settings: Settings):
    app = create_app(settings)
    return app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


SIN = {"program": "def f(a :: f32[]) = let y = sin a in [y]", "inputs": [{"data": 1.0}]}


@pytest.mark.anyio
async def test_api_keys():
    app, c = _in_process(Settings(api_keys=["s3cret", "other"]))
    async with app.router.lifespan_context(app), c:
        r = await c.post("/vjp", json=SIN)
        doc = assert_problem(r, 401, "API key")
        assert "WWW-Authenticate" in r.headers
        assert "s3cret" not in r.text
        assert_problem(await c.post("/vjp", json=SIN, headers={"X-API-Key": "bad"}), 401)
        r = await c.post("/vjp", json=SIN, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 200, r.text
        r = await c.post("/vjp", json=SIN, headers={"Authorization": "Bearer other"})
        assert r.status_code == 200, r.text
        assert (await c.get("/v2/health/ready")).status_code == 200  # probes stay open
        assert doc["status"] == 401


@pytest.mark.anyio
async def test_busy_and_timeout(monkeypatch):
    from shax_server.routes import programs

    release, entered = threading.Event(), threading.Event()

    real = programs.run_vjp

    def slow(entry, inputs, cotangents):
        entered.set()
        release.wait(10)
        return real(entry, inputs, cotangents)

    monkeypatch.setattr(programs, "run_vjp", slow)
    # inline_eval_bytes=0: every evaluation goes through the pool (small ones skip it otherwise)
    app, c = _in_process(
        Settings(max_inflight=1, eval_timeout=5, retry_after=7, inline_eval_bytes=0)
    )
    async with app.router.lifespan_context(app), c:
        assert (await c.post("/v1/programs", json=SIN)).status_code == 200
        first = asyncio.create_task(c.post("/vjp", json=SIN))
        for _ in range(200):
            if entered.is_set():
                break
            await asyncio.sleep(0.01)
        r = await c.post("/vjp", json=SIN)
        assert_problem(r, 503, "in flight")
        assert r.headers["Retry-After"] == "7"
        release.set()
        assert (await first).status_code == 200

    release.clear()
    app, c = _in_process(Settings(eval_timeout=0.2, inline_eval_bytes=0))
    async with app.router.lifespan_context(app), c:
        r = await c.post("/vjp", json=SIN)
        assert_problem(r, 503, "longer than")
        assert "Retry-After" in r.headers
    release.set()


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_small_plans_run_on_the_event_loop_and_big_ones_in_the_pool():
    from shax_server.compilation import runs_inline

    import shax_core as sx

    settings = Settings()
    small = sx.compile(sx.parse("def f(a :: f32[6]) = let x = sin a in [x]"))
    big = sx.compile(sx.parse("def f(a :: f32[1000000]) = let x = sin a in [x]"))
    assert runs_inline(small, settings)
    assert not runs_inline(big, settings)  # 8 MB peak: a worker thread keeps the loop free
    assert not runs_inline(small, Settings(inline_eval_bytes=0))
