"""The plan's cheaper forms keep values and gradients.

- max/min tie weights ``[x >= y] - [x == y]/2`` (and ``<=``): JAX's convention, NaN included
  (JAX: ``select(x == ans, select(y == ans, 1/2, 1), 0)``, so a NaN operand gets weight 0 on
  both sides), and max and min of the same operands share their weight equations.
- a sum over a short leading axis added row by row equals NumPy's sum bit for bit.
- plan construction: kernels shared between steps of one signature give each step its own
  result; plans built for the same program twice agree on every figure.
"""

from __future__ import annotations

import numpy as np
import pytest
from adcheck import check_jvp, check_transpose, one_eqn_program

import shax_core as sx
import shax_core.numpy as snp
from shax_core.ir import Type

NAN, INF = np.nan, np.inf


def _jax_balanced(x, y, ans):
    """JAX's tie weight of x in max/min (its ``_balanced_eq``), written with NumPy."""
    return np.where(x == ans, np.where(y == ans, 0.5, 1.0), 0.0)


@pytest.mark.parametrize("name,fn", [("max", np.maximum), ("min", np.minimum)])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_max_min_gradients_follow_jax_at_ties_infinities_and_nans(name, fn, dtype):
    np_dtype = Type(dtype, ()).np_dtype
    x = np.array([1.0, 2.0, -3.0, NAN, 1.0, NAN, INF, -INF, 0.0, -0.0, INF], np_dtype)
    y = np.array([1.0, 1.0, 5.0, 1.0, NAN, NAN, INF, -INF, -0.0, 0.0, 1.0], np_dtype)
    p = one_eqn_program(name, (), [Type(dtype, x.shape)] * 2)
    ct = np.arange(1.0, 1.0 + x.size).astype(np_dtype)
    with np.errstate(invalid="ignore"):
        ans = fn(x, y)
        out, gx, gy = sx.evaluate(sx.vjp_program(p), x, y, ct)
    np.testing.assert_array_equal(out, ans)
    np.testing.assert_array_equal(gx, ct * _jax_balanced(x, y, ans))
    np.testing.assert_array_equal(gy, ct * _jax_balanced(y, x, ans))


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_fd_and_dot_product_in_f64(name):
    rng = np.random.default_rng(3)
    p = one_eqn_program(name, (), [Type("f64", (3, 4))] * 2)
    x = rng.normal(size=(3, 4))
    y = rng.normal(size=(3, 4))
    check_jvp(p, [x, y], rng)
    check_transpose(p, [x, y], rng)


def test_max_and_min_of_the_same_operands_share_their_tie_weights():
    def f(a, b):
        return snp.sum(snp.maximum(a, b) - snp.minimum(a, b))

    a = np.array([1.0, 2.0, 3.0], np.float32)
    b = np.array([1.0, 3.0, 2.0], np.float32)
    v = sx.vjp_program(sx.trace(f, a, b))
    comparisons = [e.prim for e in v.eqns if e.prim in ("eq", "ge", "le", "select")]
    assert sorted(comparisons) == ["eq", "ge", "le"]  # one of each for max and min together
    _, ga, gb = sx.evaluate(v, a, b, np.float32(1.0))
    # d|a - b| = sign(a - b), 0 at the tie (each side gets half from max and half from min)
    np.testing.assert_array_equal(ga, np.sign(a - b))
    np.testing.assert_array_equal(gb, -np.sign(a - b))


@pytest.mark.parametrize("dtype", ["f32", "f64", "i32", "i64"])
@pytest.mark.parametrize("shape", [(2,), (2, 6), (3, 5), (4, 2, 3), (5, 3), (1, 4)])
def test_short_leading_axis_sums_equal_numpys(dtype, shape):
    rng = np.random.default_rng(7)
    p = one_eqn_program("reduce_sum", ((0,),), [Type(dtype, shape)])
    a = (rng.normal(size=shape) * 1e3).astype(Type(dtype, shape).np_dtype)
    for arg in (a, np.asfortranarray(a)):
        (got,) = sx.evaluate(p, arg)
        want = np.sum(arg, axis=0, dtype=arg.dtype)
        assert got.dtype == want.dtype and np.shape(got) == np.shape(want)
        np.testing.assert_array_equal(got, want)


def test_steps_sharing_a_kernel_each_compute_their_own_result():
    def f(x, y):
        for _ in range(20):
            x, y = snp.sin(x) * y + snp.cos(y), x * y - y
        return x + y

    x0, y0 = np.float64(0.5), np.float64(0.3)
    v = sx.vjp_program(sx.trace(f, x0, y0))
    exe = sx.compile(v)
    kernels = {id(s[0]) for s in exe.steps}
    assert len(kernels) < len(exe.steps) / 10  # a handful of signatures, many steps
    x, y = x0, y0
    for _ in range(20):
        x, y = np.sin(x) * y + np.cos(y), x * y - y
    out, gx, gy = exe(x0, y0, np.float64(1.0))
    assert out == x + y
    eps = 1e-6
    fx = (sx.evaluate(v, x0 + eps, y0, 1.0)[0] - sx.evaluate(v, x0 - eps, y0, 1.0)[0]) / (2 * eps)
    fy = (sx.evaluate(v, x0, y0 + eps, 1.0)[0] - sx.evaluate(v, x0, y0 - eps, 1.0)[0]) / (2 * eps)
    np.testing.assert_allclose([gx, gy], [fx, fy], rtol=1e-6)


def test_a_plan_built_twice_is_the_same_plan():
    rng = np.random.default_rng(0)
    w, b, x = (rng.normal(size=s).astype(np.float32) for s in [(6, 4), (4,), (5, 6)])

    def loss(w, b, x):
        return snp.sum(snp.tanh(x @ w + b) ** 2)

    v = sx.vjp_program(sx.trace(loss, w, b, x))
    one, two = sx.compile(v), sx.compile(v)
    assert [(s[1], s[2], s[3]) for s in one.steps] == [(s[1], s[2], s[3]) for s in two.steps]
    assert (one.peak_bytes, one.work, one.out_copy) == (two.peak_bytes, two.work, two.out_copy)
    for g, h in zip(one(w, b, x, np.float32(1.0)), two(w, b, x, np.float32(1.0)), strict=True):
        np.testing.assert_array_equal(g, h)
