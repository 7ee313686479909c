"""Programs with loops and branches over the wire (real uvicorn on 127.0.0.1): POST /vjp with IR
text and with the JSON graph, cached by content, shown stage by stage, traced by the SDK; one
regression test per control-flow primitive, and the trip-count limit."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from shax_client import Client
from shax_server import Settings, create_app

import shax_core as sx
import shax_core.numpy as snp
from shax_core import lax
from shax_core.graph import to_graph

RNG = np.random.default_rng(7)


def rnn(h0, xs, w):
    def cell(h, x):
        h = snp.tanh(h @ w + x)
        return h, snp.sum(h)

    h, ys = lax.scan(cell, h0, xs)
    return snp.sum(h) + snp.sum(ys)


def branch(p, x):
    return snp.sum(lax.cond(p > 0.0, lambda a: snp.sin(a) * a, lambda a: snp.exp(a), x))


def deep(x, y):
    def body(i, c):
        x, y = c
        return snp.sin(x) * y + snp.cos(y), x * y - y

    x, y = lax.fori_loop(0, 50, body, (x, y))
    return x + y


def newton(a):
    def step(c):
        x, k = c
        return 0.5 * (x + a / x), k + 1.0

    return lax.while_loop(lambda c: c[1] < 8.0, step, (a, np.float32(0.0)), max_trips=100)[0]


def tensors(*arrays):
    return [{"data": np.asarray(a).tolist()} for a in arrays]


def values(objs):
    return [np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in objs]


def local_vjp(fn, args):
    program = sx.trace(fn, *args)
    return sx.evaluate(sx.vjp_program(program), *args, np.float32(1.0))


CASES = {
    "scan": (
        rnn,
        [
            RNG.standard_normal((2, 3), np.float32),
            RNG.standard_normal((6, 2, 3), np.float32),
            (0.5 * RNG.standard_normal((3, 3))).astype(np.float32),
        ],
    ),
    "cond": (branch, [np.float32(1.0), RNG.standard_normal(4, np.float32)]),
    "fori_loop": (deep, [np.float32(0.5), np.float32(0.3)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("form", ["text", "graph"])
def test_vjp_of_a_loop_program(client, name, form):
    fn, args = CASES[name]
    program = sx.trace(fn, *args)
    body = (
        {"program": sx.print_program(program)} if form == "text" else {"graph": to_graph(program)}
    )
    r = client.post("/vjp", json={**body, "inputs": tensors(*args)})
    assert r.status_code == 200, r.text
    doc = r.json()
    want = local_vjp(fn, args)
    got = values(doc["outputs"]) + values(doc["gradients"])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_loop_program_cached_and_shown_by_stage(client, name):
    fn, args = CASES[name]
    text = sx.print_program(sx.trace(fn, *args))
    first = client.post("/v1/programs", json={"program": text})
    assert first.status_code == 200, first.text
    again = client.post("/v1/programs", json={"graph": to_graph(sx.parse(text))})
    assert again.json()["id"] == first.json()["id"] and again.json()["cached"] is True
    r = client.get(f"/v1/programs/{first.json()['id']}")
    assert r.status_code == 200, r.text
    stages = r.json()["stages"]
    prim = {"scan": "scan", "fori_loop": "scan", "cond": "cond"}[name]
    for stage in ("typed", "linearized", "linear", "transposed", "vjp"):
        assert f"= {prim} " in stages[stage], stage
        sx.parse(stages[stage])  # every stage is IR text that parses back


def test_while_loop_evaluates_and_has_forward_mode(client):
    a = np.float32(2.0)
    text = sx.print_program(sx.trace(newton, a))
    want = np.sqrt(np.float64(a))
    # the program compiles (forward only): eval and jvp work, a VJP is a clear 400
    r = client.post("/v1/programs", json={"program": text})
    assert r.status_code == 200, r.text
    pid = r.json()["id"]
    r = client.post(f"/v1/programs/{pid}/eval", json={"inputs": tensors(a)})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(values(r.json()["outputs"])[0], want, rtol=1e-6)
    r = client.post(
        f"/v1/programs/{pid}/jvp", json={"inputs": tensors(a), "tangents": tensors(1.0)}
    )
    assert r.status_code == 200, r.text
    # d sqrt(a) / da = 1 / (2 sqrt(a)), the tangent of Newton's iteration at convergence
    tangent = [t for t in r.json()["outputs"] if t["name"].startswith("t")] or r.json()["tangents"]
    np.testing.assert_allclose(values(tangent)[0], 0.5 / want, rtol=1e-5)
    for path, body in (
        ("/vjp", {"program": text, "inputs": tensors(a)}),
        (f"/v1/programs/{pid}/vjp", {"inputs": tensors(a)}),
        (f"/v1/programs/{pid}/minimize", {"x0": tensors(a), "steps": 2}),
    ):
        r = client.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
        assert "while_loop" in r.text and "fori_loop" in r.text, r.text
    assert "= while_loop " in client.get(f"/v1/programs/{pid}").json()["stages"]["typed"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_sdk_traces_and_differentiates_loops(server_url, name):
    fn, args = CASES[name]
    with Client(server_url) as c:
        remote = c.compile(fn, *args)
        out, grads = remote.vjp(*args)
        assert "= scan " in remote.stages()["vjp"] or "= cond " in remote.stages()["vjp"]
    want = local_vjp(fn, args)
    for g, w in zip([out, *grads], want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_trip_count_over_the_limit_is_413_with_limit_and_value():
    def long(x):
        return lax.fori_loop(0, 5000, lambda i, c: c * 0.5, x)

    def nested(x):
        def outer(c, _):
            return lax.fori_loop(0, 100, lambda i, d: d + 1.0, c), None

        return lax.scan(outer, x, length=100)[0]

    settings = Settings(max_trip_count=1000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        for fn, value in [(long, "5000"), (nested, "10000")]:
            text = sx.print_program(sx.trace(fn, np.float32(1.0)))
            r = c.post("/vjp", json={"program": text, "inputs": tensors(np.float32(1.0))})
            assert r.status_code == 413, r.text
            doc = r.json()
            assert doc["limit"] == "max_trip_count"
            assert value in doc["detail"] and "1000" in doc["detail"]
        ok = sx.print_program(sx.trace(lambda x: lax.fori_loop(0, 999, lambda i, c: c, x), 1.0))
        r = c.post("/vjp", json={"program": ok, "inputs": tensors(np.float32(1.0))})
        assert r.status_code == 200, r.text


def test_explorer_engine_shows_a_scan_program():
    from shax_server.explore import explore

    fn, args = CASES["scan"]
    text = sx.print_program(sx.trace(fn, *args))
    doc = explore({"program": text}, Settings())
    assert "= scan" in str(doc)
    with pytest.raises(Exception, match="runs its body 6 times, more than the limit of 3"):
        explore({"program": text}, Settings(max_trip_count=3))
