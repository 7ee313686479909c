"""The transformations through the SDK against a real ``shax serve`` on 127.0.0.1: the same
checks as ``test_transforms.py`` (finite differences in f64), user names on the wire, the
minimize regression, OIP with tritonclient under the user's names."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from shax_client import AsyncClient, Client, NotFound

import shax_core as sx
import shax_core.numpy as snp
from shax_core import tree_util as tu
from tests.test_transforms import clip_gradient, safe_log
from tests.transforms_cases import (
    X3,
    Layer,
    Pair,
    check_regression_fit,
    close,
    fd_grad,
    fd_jacobian,
    mlp_loss,
    regression,
    rng_arrays,
    vector_fn,
)


@pytest.fixture(scope="module")
def c(server_url):
    with Client(server_url) as client:
        yield client


def test_grads_of_grads_to_third_order(c):
    def f(x):
        return snp.sin(x) * x

    x = np.float64(0.7)
    close(c.grad(f)(x), np.cos(x) * x + np.sin(x))
    # the inner derivatives are traced here, the outer one is taken on the server
    close(c.grad(sx.grad(f))(x), 2 * np.cos(x) - x * np.sin(x))
    close(c.grad(sx.grad(sx.grad(f)))(x), -3 * np.sin(x) - x * np.cos(x))
    d2 = sx.grad(sx.grad(f))
    close(c.grad(d2)(x), fd_grad(lambda v: d2(v[()]), np.array(x)), rtol=1e-6)


def test_hessian_of_a_small_loss(c):
    params, x, y = rng_arrays()

    def loss(w1):
        return mlp_loss(snp, {**params, "w1": w1}, x, y)

    h = c.hessian(loss)(params["w1"])
    assert h.shape == (3, 4, 3, 4)
    close(h, sx.hessian(loss)(params["w1"]), rtol=1e-9)
    close(h, fd_jacobian(sx.grad(loss), params["w1"]), rtol=1e-5, atol=1e-7)


def test_hessian_over_a_dict(c):
    params, x, y = rng_arrays()
    small = {"w2": params["w2"], "b1": params["b1"]}
    loss = lambda p: mlp_loss(snp, {**p, "w1": params["w1"]}, x, y)  # noqa: E731
    h = c.hessian(loss)(small)
    want = sx.hessian(loss)(small)
    for a in small:
        for b in small:
            close(h[a][b], want[a][b], rtol=1e-9)


def test_jacobians_both_modes_through_jvp_and_vjp(c):
    f = lambda x: vector_fn(snp, x)  # noqa: E731
    want = fd_jacobian(lambda x: vector_fn(np, x), X3)
    columns = [c.jvp(f, (X3,), (e,))[1] for e in np.eye(3)]
    close(np.stack(columns, axis=1), want, rtol=1e-6)
    out, vjp_fn = c.vjp(f, X3)
    close(out, vector_fn(np, X3))
    rows = [vjp_fn(e)[0] for e in np.eye(3)]
    close(np.stack(rows), want, rtol=1e-6)


@pytest.mark.parametrize(
    "tree",
    [
        (0.4, -1.5),
        [0.4, (-1.5, 2.0)],
        {"b": 0.4, "a": [-1.5, None]},
        Pair(0.4, -1.5),
        Layer(0.4, {"k": -1.5}),
    ],
    ids=lambda t: type(t).__name__,
)
def test_pytrees_of_every_kind_in_and_out(c, tree):
    leaves = [np.float64(v) for v in tu.tree_leaves(tree)]
    t64 = tu.tree_unflatten(tu.tree_structure(tree), leaves)

    def f(t):
        return sum(snp.sin(v) * v for v in tu.tree_leaves(t))

    g = c.grad(f)(t64)
    assert tu.tree_structure(g) == tu.tree_structure(tree)
    for gv, v in zip(tu.tree_leaves(g), leaves, strict=True):
        close(gv, np.cos(v) * v + np.sin(v))

    def h(t):
        return tu.tree_map(lambda v: v * 2.0, t)

    out, tangent = c.jvp(h, (t64,), (t64,))
    assert tu.tree_structure(out) == tu.tree_structure(tree)
    close(tu.tree_leaves(tangent), [2 * v for v in leaves])


def test_argnums_and_has_aux(c):
    def f(a, b, c_):
        return snp.sum(a * b * b + c_), {"b2": b * b}

    a, b, c3 = X3, X3 * 2, X3 * 3
    (value, aux), (gb, gc) = c.value_and_grad(f, argnums=(1, -1), has_aux=True)(a, b, c3)
    close(value, np.sum(a * b * b + c3))
    close(aux["b2"], b * b)
    close(gb, 2 * a * b)
    close(gc, np.ones(3))
    g, aux = c.grad(f, argnums=-3, has_aux=True)(a, b, c3)
    close(g, b * b)
    out, vjp_fn, aux = c.vjp(f, a, b, c3, has_aux=True)
    ga, gb, gc = vjp_fn(1.0)
    close(gb, 2 * a * b)
    out, t, aux = c.jvp(f, (a, b, c3), (np.ones(3), np.zeros(3), np.zeros(3)), has_aux=True)
    close(t, np.sum(b * b))


def test_custom_rules_through_the_sdk(c):
    x = np.array([0.0, 0.5, 2.0])
    g = c.grad(lambda x: snp.sum(safe_log(x)))(x)
    close(g, sx.grad(lambda x: snp.sum(safe_log(x)))(x))
    close(g, [1e3, 2.0, 0.5])
    g = c.grad(lambda x: snp.sum(clip_gradient(x * x) * 5.0))(x)
    close(g, [0.0, 1.0, 4.0])
    close(c.jvp(safe_log, (2.0,), (1.0,))[1], 0.5)


def test_integer_arrays_are_accepted(c):
    w, labels = np.array([1.0, 2.0, 3.0], np.float32), np.array([0, 2, 1])
    close(c.grad(lambda w, n: snp.sum(w * w * n))(w, labels), [0.0, 8.0, 6.0])
    g = c.grad(lambda x: x * x)(3)  # a Python int is an f32 value
    assert g.dtype == np.float32
    close(g, 6.0)
    with pytest.raises(sx.ShaxError, match="float inputs"):
        c.grad(lambda n: snp.sum(n * n))(labels)


def test_perturbation_confusion_through_the_sdk(c):
    close(c.grad(lambda x: x * sx.grad(lambda y: x + y)(1.0))(3.0), 1.0)


# ---------------------------------------------------------------------------------------------
# minimize: only argnums move; the data is sent every call, unchanged


def loss(w, b, X, y):
    r = X @ w + b - y
    return snp.sum(r * r) / 64.0


def test_minimize_with_argnums_leaves_data_untouched_and_converges(c):
    X, y = regression(64, seed=3)
    X0, y0 = X.copy(), y.copy()
    w0, b0 = np.zeros(3, np.float32), np.float32(0.0)
    result = c.minimize(loss, (w0, b0, X, y), steps=300, lr=0.1, argnums=(0, 1), progress=False)
    assert isinstance(result.params, tuple) and len(result.params) == 4
    check_regression_fit(result.params, result.value, (X, y), (X0, y0))
    # new data of the same shape: the same compiled program (no upload), moved params only
    uploads = c.uploads
    X2 = X * 2
    result = c.minimize(loss, (w0, b0, X2, y), steps=5, lr=0.01, argnums=(0, 1), progress=False)
    assert c.uploads == uploads
    np.testing.assert_array_equal(result.params[2], X2)


def test_minimize_over_a_dict_of_params(c):
    X, y = regression(64, seed=3)

    def model_loss(params, X, y):
        r = X @ params["w"] + params["b"] - y
        return snp.sum(r * r) / 64.0

    p0 = {"w": np.zeros(3, np.float32), "b": np.float32(0.0)}
    result = c.minimize(model_loss, [p0, X, y], steps=300, lr=0.1, argnums=0, progress=False)
    assert isinstance(result.params, list) and set(result.params[0]) == {"w", "b"}
    close(result.params[0]["w"], [1.0, -2.0, 0.5], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(result.params[1], X)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_async_client_mirrors(server_url):
    async with AsyncClient(server_url) as ac:
        close(
            await ac.grad(sx.grad(lambda x: snp.sin(x) * x))(0.7),
            2 * np.cos(0.7) - 0.7 * np.sin(0.7),
            rtol=1e-6,
        )
        out, vjp_fn = await ac.vjp(lambda p: p["a"] * p["b"], {"a": 2.0, "b": 3.0})
        (ct,) = await vjp_fn(1.0)
        close(ct["a"], 3.0)
        h = await ac.hessian(lambda x: snp.sum(x * x * x))(X3)
        close(h, np.diag(6 * X3), rtol=1e-6)
        X, y = regression(64, seed=3)
        result = await ac.minimize(
            loss,
            (np.zeros(3, np.float32), np.float32(0), X, y),
            steps=50,
            lr=0.1,
            argnums=(0, 1),
            progress=False,
        )
        np.testing.assert_array_equal(result.params[2], X)


# ---------------------------------------------------------------------------------------------
# the user's names on the wire


def test_user_names_in_the_ir_errors_and_signature(c, server_url):
    params, x, y = rng_arrays()

    def net(params, x, y):
        return mlp_loss(snp, params, x, y)

    rf = c.compile(net, params, x, y, wrt=0)
    names = [t["name"] for t in rf.signature["inputs"]]
    assert names == ["params.b1", "params.w1", "params.w2", "x", "y"]
    assert [g["name"] for g in rf.signature["gradients"]] == [
        "grad_params.b1",
        "grad_params.w1",
        "grad_params.w2",
    ]
    info = c.request("GET", f"/v1/programs/{rf.id}")
    assert info["program"].startswith("def program(params.b1 :: f64[4]")
    with pytest.raises(Exception) as error:  # a wrong shape names the tensor by the user's name
        rf(params, np.zeros((5, 4)), y)
    assert "'x'" in str(error.value) or getattr(error.value, "tensor", None) == "x"


def test_names_do_not_split_the_cache(server_url):
    def f1(x, w):
        return snp.sum(snp.sin(x) * w)

    def f2(a, b):
        return snp.sum(snp.sin(a) * b)

    with Client(server_url) as c1, Client(server_url) as c2:
        r1 = c1.compile(f1, X3, X3)
        r2 = c2.compile(f2, X3, X3)
        assert r1.id == r2.id
        assert [t["name"] for t in r1.signature["inputs"]] == ["x", "w"]
        assert [t["name"] for t in r2.signature["inputs"]] == ["a", "b"]


def test_tritonclient_sends_inputs_under_the_users_names(c, server_url):
    def f(x, w):
        return snp.sum(snp.sin(x) * w)

    x = np.array([0.1, 0.2, 0.3], np.float32)
    w = np.array([1.0, -1.0, 2.0], np.float32)
    rf = c.compile(f, x, w)
    tc = triton.InferenceServerClient(url=server_url.removeprefix("http://"))
    try:
        meta = tc.get_model_metadata(rf.id)
        assert [i["name"] for i in meta["inputs"]] == ["x", "w", "ct0"]
        assert [o["name"] for o in meta["outputs"]] == ["out0", "grad_x", "grad_w"]
        inputs = []
        for name, array in (("x", x), ("w", w)):
            i = triton.InferInput(name, list(array.shape), "FP32")
            i.set_data_from_numpy(array)
            inputs.append(i)
        result = tc.infer(rf.id, inputs)
        close(result.as_numpy("out0"), np.sum(np.sin(x) * w), rtol=1e-6)
        close(result.as_numpy("grad_x"), np.cos(x) * w, rtol=1e-6)
        close(result.as_numpy("grad_w"), np.sin(x), rtol=1e-6)
    finally:
        tc.close()


def test_big_closure_is_sent_as_a_binary_input(c):
    big = np.random.default_rng(0).normal(size=(65536, 8)).astype(np.float32)
    w = np.linspace(-1, 1, 8).astype(np.float32)

    def closure_loss(w):
        y = big @ w
        return snp.sum(y * y)

    rf = c.compile(closure_loss, w)
    assert [t["name"] for t in rf.signature["inputs"]] == ["w", "const0"]
    assert len(str(rf.program)) < 2000
    g = c.grad(closure_loss)(w)
    close(g, 2 * big.T.astype(np.float64) @ (big @ w), rtol=1e-3)


def test_minimize_reports_only_the_moving_params_when_asked(c, server_url):
    import httpx
    import orjson

    X, y = regression(64, seed=3)
    w0, b0 = np.zeros(3, np.float32), np.float32(0.0)
    rf = c.compile(loss, w0, b0, X, y, wrt=(0, 1))
    body = {
        "x0": [
            {"data": w0.tolist()},
            {"data": float(b0)},
            {"data": X.tolist()},
            {"data": y.tolist()},
        ],
        "steps": 3,
        "report": "moving",
    }
    r = httpx.post(f"{server_url}/v1/programs/{rf.id}/minimize", json=body, timeout=30)
    lines = [orjson.loads(line) for line in r.text.splitlines() if line.strip()]
    assert [p["name"] for p in lines[-1]["params"]] == ["w", "b"]  # X and y stay with the client
    assert all(len(line["params"]) == 2 for line in lines if "params" in line)
    body["report"] = "everything"
    r = httpx.post(f"{server_url}/v1/programs/{rf.id}/minimize", json=body, timeout=30)
    assert r.status_code == 400 and "report" in r.json()["detail"]


# ---------------------------------------------------------------------------------------------
# long work: its own timeout, and a line saying so


def test_uploads_use_the_compile_timeout_and_large_ones_say_so(caplog):
    import logging

    import httpx

    seen: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.extensions.get("timeout")
        return httpx.Response(404, json={"title": "stop here", "status": 404, "detail": "x"})

    def chain(x):
        for _ in range(2100):
            x = x * 0.999 + 0.001
        return snp.sum(x)

    transport = httpx.MockTransport(handler)
    with caplog.at_level(logging.INFO, logger="shax_client"):
        with Client("http://x", transport=transport, timeout=5, compile_timeout=321) as client:
            with pytest.raises(NotFound):
                client.grad(chain)(X3)
    assert seen["/v1/programs"]["read"] == 321  # not the per-call 5 s
    assert any("equations" in r.message for r in caplog.records if r.name == "shax_client")


def test_sdk_against_jax(c):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    try:
        jnp = jax.numpy
        params, x, y = rng_arrays()
        ours = c.grad(lambda p: mlp_loss(snp, p, x, y))(params)
        theirs = jax.grad(lambda p: mlp_loss(jnp, p, x, y))(params)
        for k in params:
            close(ours[k], theirs[k], rtol=1e-10)
        ours3 = c.grad(sx.grad(sx.grad(lambda v: snp.sin(v) * v)))(0.7)
        close(ours3, jax.grad(jax.grad(jax.grad(lambda v: jnp.sin(v) * v)))(0.7), rtol=1e-6)
    finally:
        jax.config.update("jax_enable_x64", False)
