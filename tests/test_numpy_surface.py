"""The NumPy surface from the user's side: jax.numpy semantics, clear refusals, the generated
docs, derivative conventions users notice, and programs using the new primitives over the wire.
"""

from __future__ import annotations

import numpy as np
import pytest
from shax_client import Client

import shax_core as sx
import shax_core.nn as nn
import shax_core.numpy as snp
from shax_core.ir import ShaxError, Type
from shax_core.numpy import docs
from shax_core.scipy.special import logsumexp

RNG = np.random.default_rng(0)


def traced(f, *args):
    """Evaluate ``f`` through trace + evaluate (the path the pipeline and server take)."""
    types = [sx.ir.type_of(a) for a in args]
    return sx.evaluate(sx.trace(f, *types), *args)[0]


def grad(f, *args, wrt=0):
    types = [sx.ir.type_of(a) for a in args]
    prog = sx.trace(f, *types)
    one = np.ones((), prog.outs[0].type.np_dtype)
    _, *gs = sx.evaluate(sx.vjp_program(prog, (wrt,)), *args, one)
    return gs[0]


# ---------------------------------------------------------------------------------------------
# docs and refusals


def test_docs_numpy_md_is_generated_from_the_code():
    with open("docs/numpy.md", encoding="utf-8") as f:
        on_disk = f.read()
    stale = "docs/numpy.md is stale: python -m shax_core.numpy.docs > docs/numpy.md"
    assert on_disk == docs.render(), stale


def test_docs_list_every_supported_name():
    text = docs.render()
    for name in snp.supported_names():
        assert f"| `{name}` |" in text


@pytest.mark.parametrize(
    "get",
    [
        lambda: snp.unique,
        lambda: snp.histogram,
        lambda: snp.fft,
        lambda: snp.linalg.svd,
        lambda: snp.linalg.eigh,
        lambda: nn.dot_product_attention,
        lambda: __import__("shax_core.lax", fromlist=["x"]).conv_general_dilated,
    ],
)
def test_unsupported_names_raise_a_clear_shax_error(get):
    with pytest.raises(snp.UnsupportedError) as info:
        get()
    assert isinstance(info.value, ShaxError) and isinstance(info.value, AttributeError)
    assert "docs/numpy.md" in str(info.value) and "is not supported" in str(info.value)
    assert not hasattr(snp, "unique")  # hasattr works (AttributeError)


def test_traced_boolean_mask_index_is_refused_with_advice():
    with pytest.raises(snp.UnsupportedError, match="where"):
        sx.trace(lambda x: x[x > 0], Type("f32", (4,)))


def test_spectral_norm_is_refused():
    with pytest.raises(snp.UnsupportedError, match="linalg.norm"):
        sx.trace(lambda x: snp.linalg.norm(x, ord=2), Type("f32", (3, 3)))


def test_out_of_range_constant_index_names_axis():
    with pytest.raises(snp.ShaxIndexError, match="axis 0 with size 3"):
        sx.trace(lambda x: x[np.array([0, 3])], Type("f32", (3,)))


# ---------------------------------------------------------------------------------------------
# semantics against NumPy (constant inputs, traced evaluation)

X = RNG.uniform(-1, 1, (3, 4, 5)).astype(np.float32)

INDEXES = [
    (0,),
    (-1, slice(None), 2),
    (slice(None, None, -1),),
    (slice(1, None, 2), slice(None, None, -2)),
    (Ellipsis, -1),
    (None, 1, Ellipsis, None),
    (slice(None), None, slice(3, 0, -1)),
    (np.array([2, 0, 2]),),
    (np.array([[0, 1], [2, 2]]), slice(None), np.array([4, 0])),
    (slice(None), np.array([1, 3]), np.array([[0], [4]])),
    (1, slice(None), np.array([0, 4, 4])),
    (np.array([True, False, True]),),
    (Ellipsis, np.array([True, False, True, True, False])),
    (np.array([-1, -3]), Ellipsis, 0),
]


@pytest.mark.parametrize("index", INDEXES, ids=repr)
def test_getitem_matches_numpy(index):
    got = traced(lambda x: x[index], X)
    np.testing.assert_array_equal(got, X[index])


@pytest.mark.parametrize(
    "fn",
    [
        lambda np_, x: np_.sum(x, axis=(0, -1), keepdims=True),
        lambda np_, x: np_.mean(x, axis=1),
        lambda np_, x: np_.max(x, axis=-1, keepdims=True),
        lambda np_, x: np_.min(x, axis=(1, 2)),
        lambda np_, x: np_.prod(x, axis=0),
        lambda np_, x: np_.var(x, axis=2, ddof=1),
        lambda np_, x: np_.std(x, keepdims=True),
        lambda np_, x: np_.cumsum(x, axis=1),
        lambda np_, x: np_.cumprod(x, axis=-1),
        lambda np_, x: np_.argmax(x, axis=1),
        lambda np_, x: np_.argmin(x),
        lambda np_, x: np_.sort(x, axis=0),
        lambda np_, x: np_.argsort(x, axis=-1),
        lambda np_, x: np_.flip(x, axis=(0, 2)),
        lambda np_, x: np_.roll(x, 3, axis=2),
        lambda np_, x: np_.tile(x, (2, 1, 1)),
        lambda np_, x: np_.repeat(x, 2, axis=1),
        lambda np_, x: np_.pad(x, ((1, 0), (0, 2), (1, 1)), mode="reflect"),
        lambda np_, x: np_.pad(x, 1, mode="edge"),
        lambda np_, x: np_.pad(x, (2, 1), constant_values=3.0),
        lambda np_, x: np_.diff(x, n=2, axis=-1),
        lambda np_, x: np_.moveaxis(x, 0, -1),
        lambda np_, x: np_.stack([x, x], axis=-2),
        lambda np_, x: np_.concatenate([x, x], axis=-1),
        lambda np_, x: np_.split(x, [1, 3], axis=1)[1],
        lambda np_, x: np_.einsum("ijk,ikl->ijl", x, np_.swapaxes(x, 1, 2)),
        lambda np_, x: np_.einsum("ijk->kj", x),
        lambda np_, x: np_.tensordot(x, x, axes=([1, 2], [1, 2])),
        lambda np_, x: np_.matmul(x, np_.swapaxes(x, -1, -2)),
        lambda np_, x: np_.matmul(x[0, 0], np_.swapaxes(x, -1, -2)),
        lambda np_, x: np_.trace(x[0, :, :4]),
        lambda np_, x: np_.diagonal(x, 1, 1, 2),
        lambda np_, x: np_.tril(x, -1),
        lambda np_, x: np_.triu(x, 1),
        lambda np_, x: np_.clip(x, -0.5, 0.25),
        lambda np_, x: np_.linalg.norm(x, axis=-1, keepdims=True),
        lambda np_, x: np_.linalg.norm(x[0], ord=1),
        lambda np_, x: np_.linalg.norm(x[0], ord=np_.inf),
        lambda np_, x: np_.take_along_axis(x, np_.argsort(x, axis=1), axis=1),
        lambda np_, x: np_.where(x > 0, x, 0.5),
    ],
)
def test_functions_match_numpy(fn):
    got = traced(lambda x: fn(snp, x), X)
    want = fn(np, X)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_linalg_matches_numpy():
    a = RNG.uniform(-1, 1, (2, 4, 4)) + 3 * np.eye(4)
    b = RNG.uniform(-1, 1, (2, 4))
    spd = a @ np.swapaxes(a, -1, -2)
    # JAX's rule: b of rank a.ndim - 1 is a stack of vectors (NumPy 2 reads it as matrices)
    x = traced(lambda a, b: snp.linalg.solve(a, b), a, b)
    np.testing.assert_allclose(x, np.linalg.solve(a, b[..., None])[..., 0], rtol=1e-10)
    for fn in (
        lambda np_, a, b: np_.linalg.inv(a),
        lambda np_, a, b: np_.linalg.det(a),
        lambda np_, a, b: np_.linalg.slogdet(a)[1],
        lambda np_, a, b: np_.linalg.cholesky(a @ np_.swapaxes(a, -1, -2)),
    ):
        np.testing.assert_allclose(
            traced(lambda a, b, fn=fn: fn(snp, a, b), a, b), fn(np, a, b), rtol=1e-10
        )
    L = np.linalg.cholesky(spd)
    x = traced(
        lambda L, b: __import__("shax_core.scipy.linalg", fromlist=["x"]).cho_solve((L, True), b),
        L,
        b,
    )
    np.testing.assert_allclose(x, np.linalg.solve(spd, b[..., None])[..., 0], rtol=1e-10)


def test_integer_arithmetic_stays_integer():
    k = np.array([3, -4, 7], np.int32)
    out = traced(lambda k: k * 2 + 1 - (k // 2) + k % 3, k)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, k * 2 + 1 - (k // 2) + k % 3)
    assert traced(lambda k: k / 2, k).dtype == np.float32  # true division, as JAX
    assert traced(lambda k: snp.sum(k > 0), k).dtype == np.int32


# ---------------------------------------------------------------------------------------------
# derivatives users notice


def test_relu_softplus_and_sigmoid_derivatives_at_the_edges():
    x = np.array([0.0, -100.0, 100.0, 6.0])
    assert grad(lambda x: nn.relu(x)[0], x)[0] == 0.0
    assert grad(lambda x: nn.softplus(x)[0], x)[0] == 0.5
    assert grad(lambda x: nn.relu6(x)[3], x)[3] == 0.0
    g = grad(lambda x: snp.sum(nn.sigmoid(x)), x)
    assert np.all(np.isfinite(g)) and g[1] < 1e-40
    assert np.isfinite(traced(lambda x: nn.log_sigmoid(x)[1], x))
    assert np.isclose(traced(lambda x: nn.softplus(x)[2], x), 100.0)


def test_logsumexp_is_stable_and_its_gradient_is_the_softmax():
    x = np.array([1000.0, 1000.0, -1000.0])
    assert np.isclose(traced(lambda x: logsumexp(x), x), 1000.0 + np.log(2.0))
    np.testing.assert_allclose(grad(lambda x: logsumexp(x), x), [0.5, 0.5, 0.0], atol=1e-300)


def test_sort_gradient_follows_the_permutation():
    x = np.array([3.0, -1.0, 2.0])
    w = np.array([1.0, 10.0, 100.0])
    g = grad(lambda x: snp.sum(snp.sort(x) * w), x)
    np.testing.assert_array_equal(g, [100.0, 1.0, 10.0])
    values, idx = traced(lambda x: snp.stack(snp.top_k(x, 2)[0:1] * 2), x), None
    assert idx is None and values.shape == (2, 2)


def test_at_add_sums_repeats_and_set_with_traced_indices_averages_them():
    x = np.zeros(4)
    idx = np.array([1, 1, 3], np.int32)
    v = np.array([1.0, 2.0, 5.0])
    add = traced(lambda x, i, v: x.at[i].add(v), x, idx, v)
    np.testing.assert_array_equal(add, [0.0, 3.0, 0.0, 5.0])
    put = traced(lambda x, i, v: x.at[i].set(v), x + 9, idx, v)
    np.testing.assert_array_equal(put, [9.0, 1.5, 9.0, 5.0])
    # constant indices: the last update wins, so only it receives the position's cotangent
    gv = grad(lambda v: snp.sum(snp.arange(4.0) * snp.zeros(4).at[idx].set(v)), v)
    np.testing.assert_allclose(gv, [0.0, 1.0, 3.0])
    gx = grad(lambda x: snp.sum(x.at[idx].set(v) * snp.arange(4.0)), x)
    np.testing.assert_array_equal(gx, [0.0, 0.0, 2.0, 0.0])


def test_embedding_gradient_accumulates_repeated_ids():
    table = RNG.uniform(-1, 1, (5, 3))
    ids = np.array([4, 0, 4, 4], np.int32)
    g = grad(lambda t, i: snp.sum(t[i] ** 2), table, ids)
    want = np.zeros_like(table)
    np.add.at(want, ids, 2 * table[ids])
    np.testing.assert_allclose(g, want, rtol=1e-12)


def test_prod_gradient_is_exact_at_zero():
    x = np.array([2.0, 0.0, 3.0, 0.0, 5.0])
    np.testing.assert_array_equal(grad(lambda x: snp.prod(x[:3]), x), [0, 6, 0, 0, 0])


# ---------------------------------------------------------------------------------------------
# over the wire: IR text, JSON graph, POST /vjp with i32 inputs, the client SDK


def _embedding_loss(table, ids):
    return snp.sum(snp.tanh(table[ids]) * 0.5) + snp.sum(snp.cumsum(table, axis=0)[-1])


def test_new_primitives_round_trip_text_and_graph():
    prog = sx.trace(_embedding_loss, Type("f32", (6, 3)), Type("i32", (5,)))
    vjp = sx.vjp_program(prog, (0,))
    for p in (prog, vjp):
        assert sx.parse(sx.print_program(p)) == p or sx.print_program(
            sx.parse(sx.print_program(p))
        ) == sx.print_program(p)
        from shax_core import graph

        assert sx.print_program(graph.from_graph(graph.to_graph(p))) == sx.print_program(p)
    assert "gather" in sx.print_program(prog) and "scatter_add" in sx.print_program(vjp)


def test_post_vjp_accepts_gather_program_with_int32_input(client):
    prog = sx.trace(_embedding_loss, Type("f32", (6, 3)), Type("i32", (5,)))
    table = RNG.uniform(-1, 1, (6, 3)).astype(np.float32)
    ids = np.array([0, 5, 5, 2, -1], np.int32)
    body = {
        "program": sx.print_program(prog),
        "inputs": [
            {"name": "a0", "shape": [6, 3], "datatype": "FP32", "data": table.ravel().tolist()},
            {"name": "a1", "shape": [5], "datatype": "INT32", "data": ids.tolist()},
        ],
        "cotangents": [{"name": "ct", "shape": [], "datatype": "FP32", "data": [1.0]}],
        "wrt": [0],
    }
    r = client.post("/vjp", json=body)
    assert r.status_code == 200, r.text
    doc = r.json()
    (g,) = doc["gradients"]
    got = np.asarray(g["data"], np.float32).reshape(g["shape"])
    want = np.ones((6, 3)) * (np.arange(6)[:, None] >= 0)  # d sum(cumsum[-1]) = 1 everywhere
    np.add.at(want, np.where(ids < 0, ids + 6, ids), 0.5 * (1 - np.tanh(table[ids]) ** 2))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    bad = dict(body, inputs=[body["inputs"][0], dict(body["inputs"][1], data=[0.5] * 5)])
    r = client.post("/vjp", json=bad)
    assert r.status_code in (400, 422) and "a1" in r.text and "integers" in r.text


def test_client_sdk_traces_and_differentiates_int_inputs(server_url):
    table = RNG.uniform(-1, 1, (6, 3)).astype(np.float32)
    ids = np.array([1, 1, 4, 0, 2], np.int32)
    with Client(server_url) as c:
        rf = c.compile(_embedding_loss, Type("f32", (6, 3)), Type("i32", (5,)), wrt=[0])
        value, grads = rf.value_and_grad(table, ids)
    prog = sx.trace(_embedding_loss, Type("f32", (6, 3)), Type("i32", (5,)))
    want_value, want_grad = sx.evaluate(sx.vjp_program(prog, (0,)), table, ids, np.float32(1))
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    g = grads[0] if isinstance(grads, tuple | list) else grads
    np.testing.assert_allclose(g, want_grad, rtol=1e-6)


def test_grad_takes_integer_index_arrays_as_jax_does():
    table = RNG.uniform(-1, 1, (5, 2)).astype(np.float32)
    ids = np.array([3, 3, 0], np.int32)
    g = sx.grad(lambda t, i: snp.sum(t[i] * 2.0))(table, ids)
    want = np.zeros_like(table)
    np.add.at(want, ids, 2.0)
    np.testing.assert_array_equal(g, want)
    with pytest.raises(ShaxError, match="float"):
        sx.grad(lambda t, i: snp.sum(t[i]), argnums=1)(table, ids)


@pytest.mark.parametrize("constant_index", [True, False])
@pytest.mark.parametrize(
    "method, reference",
    [
        ("max", np.maximum.at),
        ("min", np.minimum.at),
        ("multiply", np.multiply.at),
    ],
)
def test_at_updates_apply_every_repeated_update(method, reference, constant_index):
    # x.at[i].max(v) with i repeating is max(x, v1, v2), as JAX's scatter_max and NumPy's
    # np.maximum.at give: never an average of the updates
    x = RNG.uniform(0.5, 2.0, 5)
    idx = np.array([1, 3, 1, 1, 0], np.int32)
    v = RNG.uniform(0.5, 2.0, 5)
    want = x.copy()
    reference(want, idx, v)
    w = np.arange(1.0, 6.0)

    def update(x, v, i):
        return getattr(snp.asarray(x).at[idx if constant_index else i], method)(v)

    def f(x, v, i):
        return snp.sum(update(x, v, i) * w)

    np.testing.assert_allclose(traced(update, x, v, idx), want, rtol=1e-12)
    # gradients in both float arguments against central differences (f64)
    for wrt in (0, 1):
        g = grad(f, x, v, idx, wrt=wrt)
        eps, fd = 1e-6, np.zeros(5)
        for k in range(5):
            hi, lo = [x.copy(), v.copy()], [x.copy(), v.copy()]
            hi[wrt][k] += eps
            lo[wrt][k] -= eps
            fd[k] = (float(f(*hi, idx)) - float(f(*lo, idx))) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_at_set_with_constant_repeated_indices_keeps_the_last_update():
    x = np.zeros(4)
    idx = np.array([1, 1, 3], np.int32)
    v = np.array([1.0, 2.0, 5.0])
    want = x.copy()
    want[idx] = v  # NumPy: the last write wins
    got = traced(lambda x, v: snp.asarray(x).at[idx].set(v), x, v)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fn", ["split", "array_split"])
@pytest.mark.parametrize(
    "sections", [1, 2, 3, [1, 3], [2, 2, 5], np.array([1, 2]), [-1, 10], [3, -2], [-9, 2]]
)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_split_and_array_split_match_numpy(fn, sections, axis):
    a = np.arange(24.0).reshape(4, 6)
    if fn == "split" and isinstance(sections, int) and a.shape[axis] % sections:
        with pytest.raises(ShaxError, match="equal division"):
            snp.split(a, sections, axis=axis)
        with pytest.raises(ValueError):
            np.split(a, sections, axis=axis)
        return
    want = getattr(np, fn)(a, sections, axis=axis)
    got = getattr(snp, fn)(a, sections, axis=axis)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), w)


def test_grad_through_array_split_lands_on_its_piece():
    x = np.arange(7.0)  # array_split into 3: sizes 3, 2, 2, so piece 1 is x[3:5]
    g = sx.grad(lambda x: snp.sum(snp.array_split(x, 3)[1] ** 2))(x)
    np.testing.assert_array_equal(g, np.where((np.arange(7) >= 3) & (np.arange(7) < 5), 2 * x, 0))
