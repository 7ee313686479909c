"""Regression tests for three wrong answers, written as a JAX user writes code.

1. ``x * pad(ones)`` was simplified to ``x`` (the simplifier took every layout primitive to
   keep a constant splat; pad adds its value around the operand).
2. ``x ** 0`` had a NaN gradient at 0. Integer exponents are JAX's ``integer_pow``; float
   exponents are ``lax.pow``, with its conventions at 0 and for negative bases.
3. ``np.float64`` scalars turned f32 programs into f64 ones. Python scalars and NumPy scalars
   are weakly typed, as in JAX: f32 in, f32 out, values and gradients.

The expected values are JAX's (measured with JAX 0.10.2 on CPU, see docs/conventions.md);
``test_pow_corners_match_jax`` compares against JAX itself when it is installed.
"""

from __future__ import annotations

import numpy as np
import pytest

import shax_core as sx
import shax_core.numpy as snp

# ---------------------------------------------------------------------------------------------
# 1. pad is not splat-preserving


def test_product_with_padded_ones_keeps_the_pad():
    def f(x):
        return snp.sum(x * snp.pad(snp.ones_like(x[1:]), [(1, 0)]))

    x = np.arange(1, 101, dtype=np.float32)
    value, g = sx.value_and_grad(f)(x)
    assert value == np.float32(5049.0)  # NumPy: sum(x[1:])
    assert value == np.sum(x * np.pad(np.ones_like(x[1:]), [(1, 0)]))
    np.testing.assert_array_equal(g, np.r_[0.0, np.ones(99)].astype(np.float32))


@pytest.mark.parametrize("pad_value", [0.0, 1.0, 2.5])
def test_padded_splats_in_arithmetic(pad_value):
    """A pad of a splat is a splat only when the pad value equals it; every other case must
    keep the border."""

    def f(x):
        inner = snp.full_like(x[1:-1], 1.0)
        return snp.sum(
            x * snp.pad(inner, [(1, 1)], constant_values=pad_value) + snp.pad(inner * 0.0, [(1, 1)])
        )

    x = np.linspace(-1.0, 2.0, 9)
    want_mask = np.r_[pad_value, np.ones(7), pad_value]
    value, g = sx.value_and_grad(f)(x)
    np.testing.assert_allclose(value, np.sum(x * want_mask), rtol=1e-12)
    np.testing.assert_allclose(g, want_mask, rtol=1e-12)


def test_slice_and_broadcast_of_splats_still_fold():
    """The splat laws that do hold still simplify: x * broadcast(1) and x * slice(ones)."""

    def f(x):
        return x * snp.ones_like(x) * snp.ones_like(snp.concatenate([x, x]))[: x.shape[0]]

    p = sx.stages(f, np.zeros(4))["rewritten"]
    assert [e.prim for e in p.eqns] == []  # both products simplify to x


# ---------------------------------------------------------------------------------------------
# 2. pow corners (JAX's conventions)


def _grad(f, x):
    return sx.grad(lambda x: snp.sum(f(x)))(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_x_to_the_integer_zero_has_zero_gradient(dtype):
    x = np.array([0.0, 1.0, -2.0], dtype)
    value, g = sx.value_and_grad(lambda x: snp.sum(x**0))(x)
    assert value == 3.0 and value.dtype == dtype
    np.testing.assert_array_equal(g, np.zeros(3, dtype))
    assert g.dtype == dtype


INTEGER_POWERS = [
    # (n, x, x ** n, d/dx x ** n) as JAX's integer_pow gives them
    (0, 0.0, 1.0, 0.0),
    (1, 0.0, 0.0, 1.0),
    (2, 0.0, 0.0, 0.0),
    (3, -2.0, -8.0, 12.0),
    (4, -1.5, 5.0625, -13.5),
    (7, 1.1, 1.1**7, 7 * 1.1**6),
    (-1, 2.0, 0.5, -0.25),
    (-2, -2.0, 0.25, 0.25),
    (-1, 0.0, np.inf, -np.inf),
]


@pytest.mark.parametrize(("n", "x0", "value", "slope"), INTEGER_POWERS)
def test_integer_exponents_are_integer_pow(n, x0, value, slope):
    x = np.array([x0])
    v, g = sx.value_and_grad(lambda x: snp.sum(x**n))(x)
    np.testing.assert_allclose(v, value, rtol=1e-12)
    np.testing.assert_allclose(g, [slope], rtol=1e-12)
    # a NumPy integer exponent is an integer exponent too
    v2, g2 = sx.value_and_grad(lambda x: snp.sum(snp.power(x, np.int64(n))))(x)
    np.testing.assert_array_equal([v2, *g2], [v, *g])


FLOAT_POWERS = [
    # (x, y, x ** y, d/dx, d/dy) as JAX's lax.pow gives them
    (0.0, 0.0, 1.0, np.nan, 0.0),  # 0.0 ** 0.0 = 1; y x^(y-1) = 0 * inf
    (0.0, 1.5, 0.0, 0.0, 0.0),  # d/dy log(x) x^y is taken as 0 at x = 0
    (0.0, 2.0, 0.0, 0.0, 0.0),
    (0.0, 0.5, 0.0, np.inf, 0.0),
    (-2.0, 3.0, -8.0, 12.0, np.nan),  # negative base, integral float exponent: log(-2) is NaN
    (-2.0, 0.5, np.nan, np.nan, np.nan),
    (2.0, -1.0, 0.5, -0.25, 0.5 * np.log(2.0)),
    (4.0, 0.5, 2.0, 0.25, 2.0 * np.log(4.0)),
]


@pytest.mark.parametrize(("x0", "y0", "value", "dx", "dy"), FLOAT_POWERS)
def test_float_exponents_follow_lax_pow(x0, y0, value, dx, dy):
    x, y = np.array([x0]), np.array([y0])
    with np.errstate(all="ignore"):
        v, (gx, gy) = sx.value_and_grad(lambda x, y: snp.sum(x**y), argnums=(0, 1))(x, y)
        np.testing.assert_allclose(v, value, rtol=1e-12)
        np.testing.assert_allclose(gx, [dx], rtol=1e-12)
        np.testing.assert_allclose(gy, [dy], rtol=1e-12)
        # a Python float exponent is the same function of x as the array exponent
        v1, g1 = sx.value_and_grad(lambda x: snp.sum(x**y0))(x)
    np.testing.assert_allclose([v1, *g1], [v, *gx], rtol=1e-12)


def test_base_scalar_to_a_traced_power():
    """``0.0 ** y`` is differentiable in y (0 everywhere), ``2 ** y`` has slope log 2 · 2^y."""
    y = np.array([0.0, 1.0, 2.5])
    np.testing.assert_array_equal(_grad(lambda y: 0.0**y, y), np.zeros(3))
    np.testing.assert_allclose(_grad(lambda y: 2**y, y), np.log(2.0) * 2.0**y, rtol=1e-12)


def test_pow_corners_match_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    for n, x0, _, _ in INTEGER_POWERS:
        want = jax.value_and_grad(lambda x, n=n: jnp.sum(x**n))(jnp.array([x0]))
        got = sx.value_and_grad(lambda x, n=n: snp.sum(x**n))(np.array([x0]))
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
    for x0, y0, *_ in FLOAT_POWERS:
        args = (jnp.array([x0]), jnp.array([y0]))
        want = jax.value_and_grad(lambda x, y: jnp.sum(x**y), argnums=(0, 1))(*args)
        with np.errstate(all="ignore"):
            got = sx.value_and_grad(lambda x, y: snp.sum(x**y), argnums=(0, 1))(
                np.array([x0]), np.array([y0])
            )
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        for g, w in zip(got[1], want[1], strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# 3. weak typing of Python and NumPy scalars


def gelu(x):
    return 0.5 * x * (1 + snp.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def test_numpy_f64_scalars_keep_f32_programs_f32():
    x = np.linspace(-2, 2, 7, dtype=np.float32)
    out, vjp_fn = sx.vjp(gelu, x)
    assert out.dtype == np.float32
    (g,) = vjp_fn(np.ones_like(out))
    assert g.dtype == np.float32
    value, grad = sx.value_and_grad(lambda x: snp.sum(gelu(x)))(x)
    assert value.dtype == grad.dtype == np.float32
    primal, tangent = sx.jvp(gelu, (x,), (np.ones_like(x),))
    assert primal.dtype == tangent.dtype == np.float32
    # every equation of every stage is f32 (no convert to f64 and back)
    for name, program in sx.stages(gelu, x).items():
        for e in program.eqns:
            assert e.out.type.dtype in ("f32", "bool"), (name, e)
    # and the values are gelu's, to f32 precision
    x64 = x.astype(np.float64)
    want_out, want_vjp = sx.vjp(gelu, x64)
    np.testing.assert_allclose(out, want_out, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g, want_vjp(np.ones_like(want_out))[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "scalar",
    [2.0, 2, np.float64(2.0), np.float32(2.0), np.int64(2), np.array(2.0)],
    ids=["py-float", "py-int", "np-f64", "np-f32", "np-int", "0d-array"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scalars_take_the_array_dtype(scalar, dtype):
    x = np.array([1.0, -3.0], dtype)
    fns = [
        lambda x: x * scalar,
        lambda x: scalar * x,
        lambda x: x - scalar,
        lambda x: scalar / (x + 5.0),
        lambda x: snp.maximum(x, scalar),
        lambda x: snp.where(x > scalar, x, scalar),
    ]
    for f in fns:
        out, vjp_fn = sx.vjp(f, x)
        assert out.dtype == dtype
        assert vjp_fn(np.ones_like(out))[0].dtype == dtype
        np.testing.assert_allclose(out, f(x.astype(np.float64)), rtol=1e-6)


def test_strong_f64_arrays_still_promote():
    """A non-scalar f64 array is strongly typed: f32 · f64 array is f64 (as JAX with x64)."""
    x = np.ones(3, np.float32)
    c = np.array([1.0, 2.0, 3.0])
    out, _ = sx.vjp(lambda x: x * c, x)
    assert out.dtype == np.float64
