"""JAX's semantics for the transformations, from the user's side: higher order, Jacobians in
both modes, pytrees of every registered kind, has_aux, argnums, custom rules, names.
Checked against finite differences in f64, and against JAX when it is installed."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import shax_core as sx
import shax_core.numpy as snp
from shax_core import tree_util as tu
from shax_core.api import LIFT_ELEMENTS, trace_pytree
from tests.transforms_cases import (
    X3,
    Layer,
    Pair,
    check_regression_fit,
    close,
    cubic,
    fd_grad,
    fd_jacobian,
    mlp_loss,
    regression,
    rng_arrays,
    vector_fn,
)

# ---------------------------------------------------------------------------------------------
# pytrees


class Registered:
    """A user class registered as a pytree node."""

    def __init__(self, a, b, tag):
        self.a, self.b, self.tag = a, b, tag


tu.register_pytree_node(
    Registered,
    lambda r: ((r.a, r.b), r.tag),
    lambda tag, c: Registered(c[0], c[1], tag),
    lambda r, tag: ["a", "b"],
)

TREES = [
    (1.0, 2.0),
    [1.0, (2.0, 3.0)],
    {"b": 1.0, "a": [2.0, None]},
    None,
    Pair(1.0, 2.0),
    Layer(1.0, {"k": 2.0}),
    Registered(1.0, 2.0, "t"),
]


@pytest.mark.parametrize("tree", TREES, ids=lambda t: type(t).__name__)
def test_flatten_unflatten_round_trip(tree):
    leaves, treedef = tu.tree_flatten(tree)
    rebuilt = tu.tree_unflatten(treedef, leaves)
    assert tu.tree_structure(rebuilt) == treedef
    assert tu.tree_leaves(rebuilt) == leaves
    doubled = tu.tree_map(lambda v: v * 2, tree)
    assert tu.tree_leaves(doubled) == [v * 2 for v in leaves]
    assert type(doubled) is type(tree)


def test_dict_leaves_in_sorted_key_order_and_named_by_path():
    tree = {"w2": 1.0, "w1": [2.0, 3.0], "b": Pair(4.0, 5.0)}
    assert tu.tree_leaves(tree) == [4.0, 5.0, 2.0, 3.0, 1.0]
    assert tu.leaf_names(tree, "params") == [
        "params.b.w",
        "params.b.b",
        "params.w1.0",
        "params.w1.1",
        "params.w2",
    ]


def test_unflatten_checks_leaf_count():
    _, treedef = tu.tree_flatten((1.0, 2.0))
    with pytest.raises(ValueError, match="2 leaves"):
        tu.tree_unflatten(treedef, [1.0])


@pytest.mark.parametrize("tree", TREES[:-1] + [Registered(1.0, 2.0, "t")], ids=str)
def test_grad_of_every_pytree_kind_in_and_out(tree):
    def f(t):
        return sum(snp.sin(v) * v for v in tu.tree_leaves(t))

    leaves = [np.float64(v) for v in tu.tree_leaves(tree)]
    t64 = tu.tree_unflatten(tu.tree_structure(tree), leaves)
    g = sx.grad(f)(t64)
    assert tu.tree_structure(g) == tu.tree_structure(tree)
    for gv, v in zip(tu.tree_leaves(g), leaves, strict=True):
        close(gv, np.cos(v) * v + np.sin(v))


def test_pytree_outputs_of_jvp_and_vjp():
    def f(p):
        return {"s": p.w * p.b, "pair": (snp.sin(p.w), p.b)}

    p = Pair(np.float64(0.4), np.float64(-1.5))
    out, tangent = sx.jvp(f, (p,), (Pair(1.0, 0.0),))
    assert set(out) == {"s", "pair"} and isinstance(out["pair"], tuple)
    close(tangent["s"], p.b)
    close(tangent["pair"][0], np.cos(p.w))
    close(tangent["pair"][1], 0.0)
    out, vjp_fn = sx.vjp(f, p)
    (ct,) = vjp_fn({"s": 1.0, "pair": (0.0, 1.0)})
    assert isinstance(ct, Pair)
    close(ct.w, p.b)
    close(ct.b, p.w + 1.0)


# ---------------------------------------------------------------------------------------------
# higher order


def test_grad_to_third_order_against_closed_form_and_fd():
    def f(x):
        return snp.sin(x) * x

    x = np.float64(0.7)
    d1, d2, d3 = sx.grad(f), sx.grad(sx.grad(f)), sx.grad(sx.grad(sx.grad(f)))
    close(d1(x), np.cos(x) * x + np.sin(x))
    close(d2(x), 2 * np.cos(x) - x * np.sin(x))
    close(d3(x), -3 * np.sin(x) - x * np.cos(x))
    close(d3(x), fd_grad(lambda v: d2(v[()]), np.array(x)), rtol=1e-6)


def test_third_order_of_a_vector_function_through_jvp_of_grad_of_grad():
    f = lambda x: cubic(snp, x)  # noqa: E731
    x = X3.copy()
    hess = sx.hessian(f)
    v = np.array([1.0, 0.5, -2.0])
    # d/dt H(x + t v) at t = 0, by forward mode over the Hessian
    _, dh = sx.jvp(hess, (x,), (v,))
    want = fd_jacobian(lambda y: hess(y), x) @ v
    close(dh, want, rtol=1e-6, atol=1e-7)


def test_hessian_of_a_small_loss_matches_finite_differences():
    params, x, y = rng_arrays()

    def loss_w1(w1):
        return mlp_loss(snp, {**params, "w1": w1}, x, y)

    h = sx.hessian(loss_w1)(params["w1"])
    assert h.shape == (3, 4, 3, 4)
    g = sx.grad(loss_w1)
    close(h, fd_jacobian(g, params["w1"]), rtol=1e-5, atol=1e-7)
    flat = h.reshape(12, 12)
    close(flat, flat.T, rtol=1e-10, atol=1e-12)


def test_hessian_over_a_dict_of_params():
    params, x, y = rng_arrays()
    small = {"w1": params["w1"], "b1": params["b1"]}
    h = sx.hessian(lambda p: mlp_loss(snp, {**p, "w2": params["w2"]}, x, y))(small)
    assert set(h) == {"w1", "b1"} and set(h["w1"]) == {"w1", "b1"}
    assert h["w1"]["b1"].shape == (3, 4, 4)
    # mixed partials agree: d2/db_k dw_ij == d2/dw_ij db_k
    close(h["w1"]["b1"], np.moveaxis(h["b1"]["w1"], 0, -1), rtol=1e-10)
    g_b1 = sx.grad(lambda b1: mlp_loss(snp, {**params, "b1": b1}, x, y))
    close(h["b1"]["b1"], fd_jacobian(g_b1, params["b1"]), rtol=1e-5, atol=1e-7)


def test_jacobians_in_both_modes_agree_with_fd():
    f = lambda x: vector_fn(snp, x)  # noqa: E731
    jf, jr = sx.jacfwd(f)(X3), sx.jacrev(f)(X3)
    want = fd_jacobian(lambda x: vector_fn(np, x), X3)
    close(jf, want, rtol=1e-6)
    close(jr, want, rtol=1e-6)
    close(sx.jacfwd(sx.jacrev(f))(X3), sx.jacrev(sx.jacfwd(f))(X3), rtol=1e-10)


def test_jacobian_of_a_matrix_function_has_out_then_in_shape():
    a = np.arange(6.0).reshape(2, 3) / 5

    def f(m):
        return snp.sin(m) @ a.T  # [2,3] -> [2,2]

    m = np.ones((2, 3)) * 0.3
    jr, jf = sx.jacrev(f)(m), sx.jacfwd(f)(m)
    assert jr.shape == jf.shape == (2, 2, 2, 3)
    close(jr, fd_jacobian(lambda v: np.sin(v) @ a.T, m), rtol=1e-6)
    close(jf, jr, rtol=1e-10)


def test_perturbation_confusion_examples_from_jax():
    # d/dx [x * d/dy (x + y)] = 1, not 2
    close(sx.grad(lambda x: x * sx.grad(lambda y: x + y)(1.0))(3.0), 1.0)
    # the same through forward mode inside and outside
    inner = lambda x: sx.jvp(lambda y: x + y, (1.0,), (1.0,))[1]  # noqa: E731
    close(sx.jvp(lambda x: x * inner(x), (3.0,), (1.0,))[1], 1.0)
    # d/dx [x * d/dy (x * y)] at y = 2 is d/dx [x * x] = 2x
    close(sx.grad(lambda x: x * sx.grad(lambda y: x * y)(2.0))(3.0), 6.0)


def test_jvp_of_grad_is_a_hessian_vector_product():
    params, x, y = rng_arrays()
    loss = lambda w1: mlp_loss(snp, {**params, "w1": w1}, x, y)  # noqa: E731
    v = np.ones((3, 4)) / 3
    _, hv = sx.jvp(sx.grad(loss), (params["w1"],), (v,))
    want = np.tensordot(sx.hessian(loss)(params["w1"]), v, axes=2)
    close(hv, want, rtol=1e-8)


# ---------------------------------------------------------------------------------------------
# argnums, has_aux, stop_gradient


def test_argnums_int_tuple_negative():
    def f(a, b, c):
        return snp.sum(a * b * b + c)

    a, b, c = X3, X3 * 2, X3 * 3
    close(sx.grad(f)(a, b, c), b * b)
    gb, gc = sx.grad(f, argnums=(1, -1))(a, b, c)
    close(gb, 2 * a * b)
    close(gc, np.ones(3))
    close(sx.grad(f, argnums=-2)(a, b, c), 2 * a * b)
    with pytest.raises(sx.ShaxError, match="out of range"):
        sx.grad(f, argnums=3)(a, b, c)


def test_has_aux_everywhere():
    def f(x):
        return snp.sum(x * x), {"mean": snp.sum(x) / 3.0, "x": x}

    (value, aux), g = sx.value_and_grad(f, has_aux=True)(X3)
    close(value, np.sum(X3 * X3))
    close(aux["mean"], X3.mean())
    close(aux["x"], X3)
    g2, aux2 = sx.grad(f, has_aux=True)(X3)
    close(g2, 2 * X3)
    close(aux2["mean"], X3.mean())
    out, vjp_fn, aux3 = sx.vjp(f, X3, has_aux=True)
    close(vjp_fn(1.0)[0], 2 * X3)
    close(aux3["x"], X3)
    out, t, aux4 = sx.jvp(f, (X3,), (np.ones(3),), has_aux=True)
    close(t, 2 * X3.sum())
    jac, aux5 = sx.jacrev(lambda x: (snp.sin(x), x[0]), has_aux=True)(X3)
    close(jac, np.diag(np.cos(X3)))
    close(aux5, X3[0])


def test_grad_needs_a_scalar_and_has_aux_needs_a_pair():
    with pytest.raises(sx.ShaxError, match="one float scalar output"):
        sx.grad(lambda x: x * 2)(X3)
    with pytest.raises(sx.ShaxError, match="pair"):
        sx.grad(lambda x: snp.sum(x), has_aux=True)(X3)


def test_stop_gradient():
    g = sx.grad(lambda x: snp.sum(sx.stop_gradient(x) * x))(X3)
    close(g, X3)
    g = sx.grad(lambda p: p["a"] * sx.stop_gradient(p)["b"])({"a": 2.0, "b": 3.0})
    close(g["a"], 3.0)
    close(g["b"], 0.0)


def test_linearize_runs_the_linear_part_on_saved_residuals():
    out, f_jvp = sx.linearize(lambda x: snp.sin(x) * x, X3)
    close(out, np.sin(X3) * X3)
    close(f_jvp(np.ones(3)), np.cos(X3) * X3 + np.sin(X3))


# ---------------------------------------------------------------------------------------------
# custom rules


@sx.custom_jvp
def safe_log(x):
    return snp.log(x)


@safe_log.defjvp
def _safe_log_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return safe_log(x), t / snp.maximum(x, 1e-3)


@sx.custom_vjp
def clip_gradient(x):
    return x


def _clip_fwd(x):
    return x, None


def _clip_bwd(_, g):
    return (snp.minimum(snp.maximum(g, -1.0), 1.0),)


clip_gradient.defvjp(_clip_fwd, _clip_bwd)


def test_custom_jvp_safe_log():
    x = np.array([0.0, 0.5, 2.0])
    g = sx.grad(lambda x: snp.sum(safe_log(x)))(x)
    close(g, [1e3, 2.0, 0.5])
    assert np.isfinite(g).all()
    # the rule in forward mode, and differentiated again (second order)
    close(sx.jvp(safe_log, (2.0,), (1.0,))[1], 0.5)
    close(sx.grad(sx.grad(safe_log))(2.0), -0.25)
    close(sx.hessian(lambda x: snp.sum(safe_log(x)))(x[1:]), np.diag([-4.0, -0.25]), rtol=1e-6)
    # called on arrays, the function itself runs
    close(safe_log(np.array(2.0)), np.log(2.0))
    # away from the clamp the rule is log's derivative: finite differences agree
    inside = np.array([0.5, 2.0, 3.0])
    fd = fd_grad(lambda v: np.sum(np.log(v)), inside)
    close(sx.grad(lambda x: snp.sum(safe_log(x) * x))(inside), fd * inside + np.log(inside))


def test_custom_vjp_residuals_are_any_pytree():
    @sx.custom_vjp
    def square(x):
        return x * x

    def fwd(x):
        return x * x, {"x": x, "k": np.array([1, 3], np.int32), "none": None}

    def bwd(res, g):
        k = res["k"]
        return (2.0 * res["x"] * g * (k[1] - k[0]) / 2,)  # (3 - 1) / 2 = 1

    square.defvjp(fwd, bwd)
    close(sx.grad(lambda x: snp.sum(square(x)))(X3), 2 * X3)
    close(sx.grad(sx.grad(lambda x: square(x)))(0.7), 2.0)


def test_custom_vjp_clips_the_gradient():
    x = np.array([0.3, -2.0, 1.0])
    g = sx.grad(lambda x: snp.sum(clip_gradient(x) * 5.0))(x)
    close(g, [1.0, 1.0, 1.0])
    g = sx.grad(lambda x: snp.sum(clip_gradient(x) * -0.5))(x)
    close(g, [-0.5, -0.5, -0.5])
    # a cotangent inside [-1, 1] passes unchanged: the gradient is the finite difference's
    f = lambda x: snp.sum(snp.sin(clip_gradient(x)) * 0.5)  # noqa: E731
    close(sx.grad(f)(x), fd_grad(lambda v: np.sum(np.sin(v) * 0.5), x), rtol=1e-6)
    # through a chain: d/dx clip(x^2) * 5 = clip(5) * 2x; second derivative 2 (bwd is traced)
    close(sx.grad(lambda x: clip_gradient(x * x) * 5.0)(0.3), 0.6, rtol=1e-6)
    close(sx.grad(sx.grad(lambda x: clip_gradient(x * x) * 5.0))(0.3), 2.0, rtol=1e-6)
    with pytest.raises(sx.ShaxError, match="forward-mode"):
        sx.jvp(lambda x: clip_gradient(x) * 2.0, (1.0,), (1.0,))


# ---------------------------------------------------------------------------------------------
# names, closures, logging


def test_traced_program_names_parameters_from_signature_and_tree_paths():
    params, x, y = rng_arrays()

    def loss(params, x, y):
        return mlp_loss(snp, params, x, y)

    program = trace_pytree(loss, (params, x, y)).program
    assert [p.name for p in program.params] == ["params.b1", "params.w1", "params.w2", "x", "y"]
    assert sx.parse(str(program)) == program
    program = trace_pytree(loss, (params, x, y), names=["p", "a", "b"]).program
    assert [p.name for p in program.params][-2:] == ["a", "b"]


def test_names_never_collide_with_the_pipelines_own():
    def f(x0, arg1, d2):
        return snp.sum(snp.sin(x0) * arg1 + d2)

    program = trace_pytree(f, (X3, X3, X3)).program
    assert [p.name for p in program.params] == ["x0_", "arg1_", "d2_"]
    close(sx.grad(f, argnums=(0, 1, 2))(X3, X3, X3)[0], np.cos(X3) * X3)


def test_big_closed_over_constant_is_lifted_to_a_parameter():
    big = np.random.default_rng(0).normal(size=(LIFT_ELEMENTS, 2))

    def loss(w):
        return snp.sum((big @ w) * (big @ w))

    w = np.array([0.5, -0.25])
    traced = trace_pytree(loss, (w,))
    assert [p.name for p in traced.program.params] == ["w", "const0"]
    assert len(str(traced.program)) < 2000
    close(sx.grad(loss)(w), 2 * big.T @ (big @ w), rtol=1e-10)


def test_large_traces_say_so(caplog):
    def chain(x):
        for _ in range(2100):
            x = x * 0.999
        return snp.sum(x)

    with caplog.at_level(logging.INFO, logger="shax"):
        sx.grad(chain)(X3)
    assert any("traced chain" in r.message and "equations" in r.message for r in caplog.records)
    assert any(r.message.startswith("VJP of chain") for r in caplog.records)


def test_python_ints_are_f32_and_integer_arrays_are_data():
    g = sx.grad(lambda x: x * x)(3)
    assert np.asarray(g).dtype == np.float32
    close(g, 6.0)
    # int32/int64 arrays stay integers (labels, indices): no tangent, as in JAX
    w, labels = np.array([1.0, 2.0, 3.0], np.float32), np.array([0, 2, 1])
    close(sx.grad(lambda w, n: snp.sum(w * w * n))(w, labels), [0.0, 8.0, 6.0])
    with pytest.raises(sx.ShaxError, match="float inputs"):
        sx.grad(lambda n: snp.sum(n * n))(labels)


# ---------------------------------------------------------------------------------------------
# against JAX, when installed


@pytest.fixture(scope="module")
def jax_x64():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", False)


def test_against_jax(jax_x64):
    jax, jnp = jax_x64, jax_x64.numpy
    params, x, y = rng_arrays()
    ours = sx.grad(lambda p: mlp_loss(snp, p, x, y))(params)
    theirs = jax.grad(lambda p: mlp_loss(jnp, p, x, y))(params)
    for k in params:
        close(ours[k], theirs[k], rtol=1e-10)
    h_ours = sx.hessian(lambda w: mlp_loss(snp, {**params, "w2": w}, x, y))(params["w2"])
    h_jax = jax.hessian(lambda w: mlp_loss(jnp, {**params, "w2": w}, x, y))(params["w2"])
    close(h_ours, h_jax, rtol=1e-9)
    for mode in ("jacfwd", "jacrev"):
        close(
            getattr(sx, mode)(lambda v: vector_fn(snp, v))(X3),
            getattr(jax, mode)(lambda v: vector_fn(jnp, v))(X3),
            rtol=1e-10,
        )
    ours3 = sx.grad(sx.grad(sx.grad(lambda v: snp.sin(v) * v)))
    theirs3 = jax.grad(jax.grad(jax.grad(lambda v: jnp.sin(v) * v)))
    close(ours3(0.7), theirs3(0.7), rtol=1e-6)
    close(
        sx.grad(lambda x: x * sx.grad(lambda y: x + y)(1.0))(3.0),
        jax.grad(lambda x: x * jax.grad(lambda y: x + y)(1.0))(3.0),
    )
    (v_ours, a_ours), g_ours = sx.value_and_grad(
        lambda p: (mlp_loss(snp, p, x, y), p["b1"] * 2), has_aux=True
    )(params)
    (v_jax, a_jax), g_jax = jax.value_and_grad(
        lambda p: (mlp_loss(jnp, p, x, y), p["b1"] * 2), has_aux=True
    )(params)
    close(v_ours, v_jax, rtol=1e-12)
    close(a_ours, a_jax)
    close(g_ours["w1"], g_jax["w1"], rtol=1e-10)


def test_custom_rules_against_jax(jax_x64):
    jax, jnp = jax_x64, jax_x64.numpy

    @jax.custom_jvp
    def jsafe_log(x):
        return jnp.log(x)

    @jsafe_log.defjvp
    def _(primals, tangents):
        (x,), (t,) = primals, tangents
        return jsafe_log(x), t / jnp.maximum(x, 1e-3)

    @jax.custom_vjp
    def jclip(x):
        return x

    jclip.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1.0, 1.0),))
    x = np.array([0.0, 0.5, 2.0])
    close(sx.grad(lambda x: snp.sum(safe_log(x)))(x), jax.grad(lambda x: jnp.sum(jsafe_log(x)))(x))
    close(sx.grad(sx.grad(safe_log))(2.0), jax.grad(jax.grad(jsafe_log))(2.0))
    close(
        sx.grad(lambda x: snp.sum(clip_gradient(x * x) * 5.0))(x),
        jax.grad(lambda x: jnp.sum(jclip(x * x) * 5.0))(x),
    )
    close(
        sx.grad(sx.grad(lambda x: clip_gradient(x * x) * 5.0))(0.3),
        jax.grad(jax.grad(lambda x: jclip(x * x) * 5.0))(0.3),
        rtol=1e-6,
    )


# ---------------------------------------------------------------------------------------------
# optimizers shaped like optax's, and minimize


@pytest.mark.parametrize("name", ["gd", "momentum", "adam"])
def test_optimizers_update_pytrees_of_params(name):
    from shax_core.optimize import apply_updates, make_optimizer

    params = {"w": np.ones(3, np.float32), "b": (np.float32(2.0),)}
    opt = make_optimizer(name, lr=0.1)
    state = opt.init(params)
    loss = lambda p: snp.sum(p["w"] * p["w"]) + p["b"][0] * p["b"][0]  # noqa: E731
    first = float(loss(params))
    for _ in range(30):
        grads = sx.grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        params = apply_updates(params, updates)
    assert tu.tree_structure(params) == tu.tree_structure({"w": 0, "b": (0,)})
    assert params["w"].dtype == np.float32
    assert float(loss(params)) < first / 4


def test_minimize_moves_only_argnums():
    from shax_core.optimize import minimize

    X, y = regression(32, seed=1)
    X0, y0 = X.copy(), y.copy()

    def loss(w, b, X, y):
        r = X @ w + b - y
        return snp.sum(r * r) / 32.0

    w0, b0 = np.zeros(3, np.float32), np.float32(0.0)
    r = minimize(loss, (w0, b0, X, y), steps=300, lr=0.1, argnums=(0, 1))
    check_regression_fit(r.params, r.value, (X, y), (X0, y0))


# ---------------------------------------------------------------------------------------------
# random pytrees: flatten/unflatten round trips and grads keep structure


def _trees():
    from hypothesis import strategies as st

    leaf = st.floats(-2, 2, allow_nan=False).map(np.float64)
    return st.recursive(
        leaf | st.none(),
        lambda kids: (
            st.tuples(kids, kids)
            | st.lists(kids, max_size=3)
            | st.dictionaries(st.sampled_from(["a", "b", "w1", "k"]), kids, max_size=3)
            | st.builds(Pair, kids, kids)
            | st.builds(Layer, kids, kids)
        ),
        max_leaves=6,
    )


def test_random_pytrees_round_trip_and_differentiate():
    from hypothesis import given, settings

    @settings(max_examples=40, deadline=None)
    @given(_trees())
    def check(tree):
        leaves, treedef = tu.tree_flatten(tree)
        assert tu.tree_structure(tu.tree_unflatten(treedef, leaves)) == treedef
        names = tu.leaf_names(tree, "p")
        assert len(names) == len(leaves) == len(set(names))
        if not leaves:
            return
        g = sx.grad(lambda t: sum(snp.sin(v) for v in tu.tree_leaves(t)))(tree)
        assert tu.tree_structure(g) == treedef
        close(tu.tree_leaves(g), np.cos(np.array(leaves, dtype=np.float64)))

    check()
