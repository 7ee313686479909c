"""The plan's cheaper forms keep values and gradients.

- max/min tie weights ``[x >= y] - [x == y]/2`` (and ``<=``): JAX's convention, NaN included
  (JAX: ``select(x == ans, select(y == ans, 1/2, 1), 0)``, so a NaN operand gets weight 0 on
  both sides), and max and min of the same operands share their weight equations.
- a sum over a short leading axis added row by row equals NumPy's sum bit for bit.
- the plan rules give a user's program its IEEE answer bit for bit (overflow, infinities,
  NaN, signed zeros), so only exact rewrites are rules.
- plan construction: kernels shared between steps of one signature give each step its own
  result; plans built for the same program twice agree on every figure.
"""

from __future__ import annotations

import numpy as np
import pytest
from adcheck import check_jvp, check_transpose, one_eqn_program
from hypothesis import given, settings
from hypothesis import strategies as st
from test_differential import programs as differential_programs
from test_properties import SETTINGS, drawn

import shax_core as sx
import shax_core.numpy as snp
from shax_core import _evaluate as ev
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


# ---------------------------------------------------------------------------------------------
# plan rules (rewrite_plan): equal values on random programs and on the patterns they target


def _plain(program, args):
    """The program run step by step as written (no plan rules): the reference."""
    return ev.Executable(program, rewrite=False)(*args)


def _assert_rules_keep_values(program, args, rtol=1e-12):
    rewritten = sx.verify(ev.rewrite_plan(program))
    assert rewritten.in_types == program.in_types
    assert rewritten.out_types == program.out_types
    want = _plain(program, args)
    for got in (sx.evaluate(rewritten, *args), sx.compile(program)(*args)):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol)
    return rewritten


def _patterns(a, b, c, w, v):
    """Cotangents with opposite signs meeting two weights, contractions of transposed
    operands, transposed contractions; each also where the intermediate has other readers."""
    nc = -c
    ab = a @ b
    return [
        c * w + nc * v,  # c (w - v)
        v * nc + w * c,  # the mirror image: c (w - v)
        (c * w + nc * v) * w,
        nc,  # the negation read elsewhere too
        a @ b.T.T,  # a transpose of a transpose
        (b.T @ a.T).T,
        (a @ b).T,  # a transposed contraction read once
        ab.T,  # ... and one read twice (left as it is)
        ab,
        b.T @ a.T,
        snp.dot(a, b.T.T),
        (w - c) - (v - c),  # w - v
        (w - c) - (v - w),  # no common subtrahend: left as it is
        w + (-v),  # negations that die where they are read: w - v
        (-w) + (-v),
        w - (-v),
        (-w) - (-v),
        (-w) * (-v),
        c * (-(w * v)) + c,  # a negation moved through a product into a sum
        -c + nc,  # nc is read elsewhere: stays
        c * w - c * v,
    ]


@settings(SETTINGS, max_examples=min(SETTINGS.max_examples, 20))
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**16))
def test_plan_rules_keep_values_and_gradients_on_their_patterns(m, k, n, seed):
    rng = np.random.default_rng(seed)
    args = [rng.normal(size=s) for s in [(m, k), (k, n), (3, 2), (3, 2), (3, 2)]]
    program = sx.trace(_patterns, *args)
    rewritten = _assert_rules_keep_values(program, args)
    assert len(rewritten.eqns) < len(program.eqns)

    def loss(*xs):
        return sum(snp.sum(o * o) for o in _patterns(*xs))

    vjp = sx.vjp_program(sx.trace(loss, *args))
    _assert_rules_keep_values(vjp, [*args, np.float64(1.0)])
    # the gradient through the rewritten plan against central differences (f64)
    grads = sx.compile(vjp)(*args, np.float64(1.0))[1:]
    eps = 1e-6
    for i, g in enumerate(grads):
        d = rng.normal(size=args[i].shape)
        plus = [x + eps * d if j == i else x for j, x in enumerate(args)]
        minus = [x - eps * d if j == i else x for j, x in enumerate(args)]
        fd = (float(loss_value(plus)) - float(loss_value(minus))) / (2 * eps)
        np.testing.assert_allclose(np.vdot(g, d), fd, rtol=1e-5, atol=1e-6)


def loss_value(xs):
    return sum(np.sum(np.asarray(o) ** 2) for o in _numpy_patterns(*xs))


def _numpy_patterns(a, b, c, w, v):
    nc = -c
    ab = a @ b
    return [
        c * w + nc * v,
        v * nc + w * c,
        (c * w + nc * v) * w,
        nc,
        a @ b,
        (b.T @ a.T).T,
        (a @ b).T,
        ab.T,
        ab,
        b.T @ a.T,
        a @ b,
        (w - c) - (v - c),
        (w - c) - (v - w),
        w + (-v),
        (-w) + (-v),
        w - (-v),
        (-w) - (-v),
        (-w) * (-v),
        c * (-(w * v)) + c,
        -c + nc,
        c * w - c * v,
    ]


@settings(SETTINGS, max_examples=min(SETTINGS.max_examples, 25))
@given(differential_programs())
def test_plan_rules_keep_values_on_random_programs(case):
    p, args, rng = drawn(case)
    _assert_rules_keep_values(p, args, rtol=1e-10)
    if all(v.type.rank == 0 for v in p.outs) and p.outs:
        return
    ct = [rng.uniform(-1, 1, v.type.shape) for v in p.outs]
    _assert_rules_keep_values(sx.vjp_program(p), [*args, *ct], rtol=1e-10)


def test_a_loop_counts_its_body_per_trip_in_work_and_its_working_set_in_peak():
    from shax_core import lax

    def f(x):
        def step(c, _):
            return snp.sin(c) * 2.0, None

        c, _ = lax.scan(step, x, None, length=5)
        return snp.cos(c)

    x = np.ones(1000, np.float64)
    program = sx.trace(f, x)
    exe = sx.compile(program)
    (loop,) = [e for e in exe.planned.eqns if e.subprograms]
    body = sx.compile(loop.subprograms[0])
    others = len(exe.steps) - 1
    assert exe.work == others + 1 + 5 * body.work
    (run_loop,) = [fn for fn, _, out, _ in exe.steps if type(out) is tuple]
    assert run_loop.transient_bytes > 0
    # while the loop runs: the argument, the loop's result and the body's working set
    assert exe.peak_bytes >= 2 * x.nbytes + run_loop.transient_bytes
    np.testing.assert_allclose(exe(x)[0], np.cos(_five_steps(x)))


def _five_steps(x):
    for _ in range(5):
        x = np.sin(x) * 2.0
    return x


def test_rules_on_a_long_chain_of_negations_go_as_deep_as_allowed_and_keep_values():
    # y + (-(-(-...x0))): the sum takes the last negation as a difference, the difference the
    # one before as a sum, and so on, RULE_DEPTH times (each result offered to the rules again)
    n = 3000
    body = " ".join(f"x{i + 1} = negate x{i}" for i in range(n))
    p = sx.infer(sx.parse(f"def f(x0 :: f64[3], y :: f64[3]) = let {body} s = add y x{n} in [s]"))
    x0, y = np.array([1.0, -2.0, 3.0]), np.array([0.5, 0.25, 4.0])
    rewritten = sx.verify(ev.rewrite_plan(p))
    assert len(rewritten.eqns) == n + 1 - ev.RULE_DEPTH
    want = y + (-1) ** n * x0
    np.testing.assert_array_equal(sx.evaluate(rewritten, x0, y)[0], want)
    np.testing.assert_array_equal(ev.Executable(p, rewrite=False)(x0, y)[0], want)


@pytest.mark.parametrize(
    "text",
    [
        # what an algebraic (non-IEEE) rule would change: cancelling a common subtrahend
        "let x = sub a c\n      y = sub b c\n      z = sub x y\n  in [z]",
        # ... and distributing a product over a difference or a sum of a negation
        "let x = mul c a\n      y = mul c b\n      z = sub x y\n  in [z]",
        "let n = negate c\n      x = mul c a\n      y = mul n b\n      z = add x y\n  in [z]",
        # what the exact rules do rewrite
        "let n = negate b\n      z = add a n\n  in [z]",
        "let n = negate a\n      m = negate b\n      z = sub n m\n  in [z]",
        "let n = negate b\n      x = mul a n\n      z = add x c\n  in [z]",
    ],
)
def test_plan_rules_give_a_users_program_its_ieee_answer_bit_for_bit(text):
    """A user's program means its operations in IEEE arithmetic: the plan may only rewrite
    what keeps every bit, at overflow, infinities, NaN, rounding and signed zeros too."""
    program = sx.parse("def f(a :: f64[8], b :: f64[8], c :: f64[8]) =\n  " + text)
    a = np.array([0.1, 2.0, 1e16, 1.0, 0.0, -0.0, INF, 5e-324])
    b = np.array([0.2, 1.5, 0.0, NAN, -0.0, 0.0, 1.0, 2.5e-324])
    c = np.array([0.3, 1e308, 1.0, 1.0, INF, -INF, INF, 0.5])
    with np.errstate(all="ignore"):
        (want,) = ev.Executable(program, rewrite=False)(a, b, c)
        (got,) = sx.compile(program)(a, b, c)
    np.testing.assert_array_equal(got, want)  # NaN where NaN
    numbers = ~np.isnan(want)  # (a NaN's sign bit carries no meaning in IEEE 754)
    assert np.array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))  # signed zeros
