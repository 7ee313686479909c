"""Property tests on random well-typed programs of mixed primitives and shapes (hypothesis).

The strategy builds a straight-line f64 program with ``shax_core.core`` on a Builder: smooth
unary functions of bounded arguments, arithmetic with implicit broadcasting, broadcast with new
and stretched axes, reshape, transpose, reduce_sum, reduce_max, slice, pad, dot_general with
random batch and contracting dimensions, select on comparisons, max/min and concatenate.
Inputs are drawn from a seeded NumPy generator (not by hypothesis, which would shrink them
toward ties and kinks).

Properties: every stage prints and parses back to itself and passes ``verify``; every pass keeps
types and values; the stages evaluate like the original; the JVP matches central finite
differences; VJP and JVP agree by the dot-product test; Hessian-vector products from
``vjp_program(vjp_program(p))`` match finite differences of the gradient.

``SHAX_FUZZ_EXAMPLES=N`` runs N fresh random (not derandomized) examples per test.
"""

from __future__ import annotations

import os

import numpy as np
from adcheck import assert_all_close as assert_values
from adcheck import check_hvp, random_like, vdot
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import shax_core as sx
import shax_core.core as core
from shax_core import passes
from shax_core.core import Builder
from shax_core.ir import Program, Type
from shax_core.primitives import decompositions, indexing

SETTINGS = settings(
    max_examples=int(os.environ.get("SHAX_FUZZ_EXAMPLES", "40")),
    deadline=None,
    derandomize="SHAX_FUZZ_EXAMPLES" not in os.environ,  # CI: fixed examples
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SHAPES = [(), (3,), (2, 3), (3, 2), (1, 3), (2, 1, 3)]
MAX_RANK = 4
MAX_SIZE = 48


# ---------------------------------------------------------------------------------------------
# the program strategy


def _shape(x):
    return tuple(core.shape_of(x))


def _unary(draw, x, pool):
    kind = draw(st.sampled_from(["sin", "cos", "tanh", "atan", "neg", "exp_tanh", "square"]))
    if kind == "neg":
        return -x
    if kind == "square":
        return x * x
    if kind == "exp_tanh":
        return core.bind("exp", core.bind("tanh", x))
    return core.bind(kind, x)


def _broadcastable(a, b):
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def _binary(draw, x, pool):
    xs = _shape(x)
    partners = [y for y in pool if _broadcastable(xs, _shape(y))]
    y = draw(st.sampled_from(partners))
    if draw(st.booleans()) and len(np.broadcast_shapes(xs, _shape(y))) > 0:
        y = draw(st.sampled_from([0.5, -1.25, 2.0]))  # a Python scalar, promoted
    kind = draw(st.sampled_from(["add", "sub", "mul", "max", "min", "div"]))
    if kind == "div":  # a denominator bounded away from zero
        return core.div(x, core.add(2.0, core.bind("cos", y) if not isinstance(y, float) else y))
    fn = {
        "add": core.add,
        "sub": core.sub,
        "mul": core.mul,
        "max": core.maximum,
        "min": core.minimum,
    }
    return fn[kind](x, y) if draw(st.booleans()) else fn[kind](y, x)


def _broadcast(draw, x, pool):
    xs = _shape(x)
    if len(xs) >= MAX_RANK or 2 * max(1, int(np.prod(xs))) > MAX_SIZE:
        return None
    # stretch the size-1 axes, then insert one new axis
    stretched = [3 if n == 1 and draw(st.booleans()) else n for n in xs]
    where = draw(st.integers(0, len(xs)))
    size = draw(st.sampled_from([1, 2]))
    shape = stretched[:where] + [size] + stretched[where:]
    dims = [i if i < where else i + 1 for i in range(len(xs))]
    if int(np.prod(shape)) > MAX_SIZE:
        return None
    return core.broadcast(x, dims, shape)


def _reshape(draw, x, pool):
    xs = _shape(x)
    n = int(np.prod(xs, dtype=np.int64))
    options = [(n,), (1, n), (n, 1), tuple(reversed(xs))]
    if n % 2 == 0:
        options += [(2, n // 2), (n // 2, 1, 2)]
    if n == 1:
        options.append(())
    return core.reshape(x, draw(st.sampled_from(options)))


def _transpose(draw, x, pool):
    rank = len(_shape(x))
    if rank < 2:
        return None
    return core.transpose(x, draw(st.permutations(list(range(rank)))))


def _axes(draw, rank):
    return sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1, max_size=rank)))


def _reduce(draw, x, pool):
    rank = len(_shape(x))
    if rank == 0:
        return None
    axes = _axes(draw, rank)
    if draw(st.booleans()):
        return core.reduce_sum(x, axes)
    return core.reduce_max(x, axes)


def _slice(draw, x, pool):
    xs = _shape(x)
    if not xs:
        return None
    start, limit = [], []
    for n in xs:
        s = draw(st.integers(0, n - 1))
        start.append(s)
        limit.append(draw(st.integers(s + 1, n)))
    return core.slice_(x, start, limit)


def _pad(draw, x, pool):
    xs = _shape(x)
    if not xs:
        return None
    config = [(draw(st.integers(0, 2)), draw(st.integers(0, 1))) for _ in xs]
    if int(np.prod([n + lo + hi for n, (lo, hi) in zip(xs, config)])) > MAX_SIZE:
        return None
    return core.pad(x, config, draw(st.sampled_from([0.0, 0.5, -1.0])))


def _dot_general(draw, x, pool):
    y = draw(st.sampled_from(pool))
    xs, ys = _shape(x), _shape(y)
    pairs = [(i, j) for i in range(len(xs)) for j in range(len(ys)) if xs[i] == ys[j]]
    chosen = draw(st.lists(st.sampled_from(pairs), max_size=3)) if pairs else []
    used_x, used_y, picked = set(), set(), []
    for i, j in chosen:
        if i not in used_x and j not in used_y:
            used_x.add(i)
            used_y.add(j)
            picked.append((i, j))
    n_batch = draw(st.integers(0, min(1, len(picked))))
    batch, contract = picked[:n_batch], picked[n_batch:]
    out_rank = len(xs) + len(ys) - 2 * len(contract) - len(batch)
    out_size = int(np.prod(xs)) * int(np.prod(ys))
    for i, _ in contract + batch:
        out_size //= xs[i]
    for i, _ in contract:
        out_size //= xs[i]
    if out_rank > MAX_RANK or out_size > MAX_SIZE:
        return None
    return core.dot_general(
        x,
        y,
        [i for i, _ in contract],
        [j for _, j in contract],
        [i for i, _ in batch],
        [j for _, j in batch],
    )


def _select(draw, x, pool):
    xs = _shape(x)
    same = [y for y in pool if _shape(y) == xs]
    a, b, c = (draw(st.sampled_from(same)) for _ in range(3))
    cmp = draw(st.sampled_from(["lt", "le", "gt", "ge", "eq", "ne"]))
    return core.select(core.compare(cmp, a, core.bind("sin", b)), x, c)


def _concatenate(draw, x, pool):
    xs = _shape(x)
    if not xs:
        return None
    axis = draw(st.integers(0, len(xs) - 1))
    fits = [
        y
        for y in pool
        if len(_shape(y)) == len(xs)
        and all(a == b for k, (a, b) in enumerate(zip(_shape(y), xs)) if k != axis)
    ]
    others = draw(st.lists(st.sampled_from(fits), min_size=1, max_size=2))
    operands = [x, *others]
    if sum(_shape(o)[axis] for o in operands) * int(np.prod(xs)) // xs[axis] > MAX_SIZE:
        return None
    return core.concatenate(operands, axis)


def _positions(draw, x):
    """(axis, constant i32 positions [k, 1]) into a random axis of x (negatives too)."""
    xs = _shape(x)
    axis = draw(st.integers(0, len(xs) - 1))
    n = xs[axis]
    k = draw(st.integers(1, 3))
    idx = draw(st.lists(st.integers(-n, n - 1), min_size=k, max_size=k))
    return axis, x.builder.constant(np.array(idx, np.int32).reshape(k, 1), "i32")


def _gather(draw, x, pool):
    if not _shape(x):
        return None
    axis, idx = _positions(draw, x)
    return indexing.gather(x, idx, axis)


def _scatter_add(draw, x, pool):
    if not _shape(x):
        return None
    axis, idx = _positions(draw, x)
    updates = core.bind("sin", indexing.gather(x, idx, axis))
    return indexing.scatter_add(x, idx, updates, axis)


def _rev_or_cumsum(draw, x, pool):
    rank = len(_shape(x))
    if not rank:
        return core.bind("erf", x)
    if draw(st.booleans()):
        return core.bind("rev", x, axes=tuple(_axes(draw, rank)))
    axis = draw(st.integers(0, rank - 1))
    return core.bind("cumsum", x, axis=axis, reverse=int(draw(st.booleans())))


def _solve(draw, x, pool):
    """solve or triangular_solve with a well-conditioned matrix made from x."""
    xs = _shape(x)
    if len(xs) != 1:
        return None
    n = xs[0]
    eye = x.builder.constant(2.0 * np.eye(n), "f64")
    a = core.add(core.mul(core.bind("tanh", core.broadcast(x, (0,), (n, n))), 0.3), eye)
    rhs = core.reshape(x, (n, 1))
    kind = draw(st.sampled_from(["solve", "triangular_solve", "cholesky", "logabsdet"]))
    if kind == "solve":
        return core.reshape(decompositions.solve(a, rhs), (n,))
    if kind == "triangular_solve":
        lower, trans = int(draw(st.booleans())), int(draw(st.booleans()))
        return core.reshape(decompositions.triangular_solve(a, rhs, lower, trans), (n,))
    if kind == "cholesky":  # of a symmetric positive-definite a·aᵀ
        spd = core.dot_general(a, a, (1,), (1,))
        return core.bind("cholesky", spd)
    return core.bind("logabsdet", a)


OPS = [
    _gather,
    _scatter_add,
    _rev_or_cumsum,
    _solve,
    _unary,
    _binary,
    _broadcast,
    _reshape,
    _transpose,
    _reduce,
    _slice,
    _pad,
    _dot_general,
    _select,
    _concatenate,
]


@st.composite
def programs(draw, scalar_output=False, max_ops=10, shapes=SHAPES, extra_ops=()):
    """(program, seed): a random f64 program and a seed for its random inputs; with
    ``extra_ops``, half of the operations are drawn from them (test_differential.py)."""
    b = Builder()
    pool = [
        b.add_param(Type("f64", draw(st.sampled_from(shapes))))
        for _ in range(draw(st.integers(1, 3)))
    ]
    made = []
    for _ in range(draw(st.integers(2, max_ops))):
        use_extra = bool(extra_ops) and draw(st.booleans())
        op = draw(st.sampled_from(extra_ops if use_extra else OPS))
        # half the time, build on the newest value: deeper compositions (transpose of transpose,
        # reshape of reshape, ...) for the simplifier and the linearizer
        x = pool[-1] if draw(st.booleans()) else draw(st.sampled_from(pool))
        y = op(draw, x, pool)
        if y is not None and y is not x:
            pool.append(y)
            made.append(y)
    last = made[-1] if made else pool[0]
    if scalar_output:
        outs = [core.reduce_sum(last, range(len(_shape(last)))) if _shape(last) else last]
        if not made and not _shape(last):
            outs = [core.bind("sin", last)]
    else:
        # the last value and up to two other values nothing else reads (less dead code)
        read = {v.name for e in b.eqns for v in e.ins}
        leaves = [y for y in made[:-1] if y.variable.name not in read]
        outs = [last, *leaves[-2:]]
        if draw(st.booleans()):
            outs.append(draw(st.sampled_from(pool)))
    program = Program("g", tuple(b.params), tuple(b.eqns), tuple(o.variable for o in outs))
    note(f"program:\n{program}")  # printed with a failing example
    sx.verify(program)
    return program, draw(st.integers(0, 2**32 - 1))


def inputs(program, seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.0, 1.0, p.type.shape) for p in program.params], rng


def drawn(case):
    """``(program, inputs, rng)`` of a drawn ``(program, seed)``."""
    program, seed = case
    args, rng = inputs(program, seed)
    return program, args, rng


def directions(program, rng):
    """Random tangents of the inputs and cotangents of the outputs."""
    tangents = [rng.uniform(-1, 1, q.type.shape) for q in program.params]
    return tangents, [rng.uniform(-1, 1, v.type.shape) for v in program.outs]


# ---------------------------------------------------------------------------------------------
# properties


@SETTINGS
@given(programs())
def test_every_stage_prints_parses_and_verifies(case):
    p, _ = case
    assert sx.parse(str(p)) == p
    for name, stage in sx.stages(p).items():
        sx.verify(stage)
        text = str(stage)
        back = sx.parse(text)
        assert back == stage, name
        assert str(back) == text, name


PASSES = {
    "simplify": passes.simplify,
    "cse": passes.cse,
    "dce": passes.dce,
    "canonicalize_dot": passes.canonicalize_dot,
    "lower_reduce_sum": passes.lower_reduce_sum,
    "rewrite": passes.rewrite,
    "cleanup": passes.cleanup,
}


@SETTINGS
@given(programs(), st.lists(st.sampled_from(sorted(PASSES)), min_size=1, max_size=4))
def test_passes_keep_types_and_values(case, pass_names):
    p, args, _ = drawn(case)
    want = sx.evaluate(p, *args)
    q = p
    for name in pass_names:
        q = sx.verify(PASSES[name](q))
        assert q.in_types == p.in_types, name
        assert q.out_types == p.out_types, name
        assert_values(sx.evaluate(q, *args), want)


@SETTINGS
@given(programs())
def test_stages_evaluate_like_the_original(case):
    p, args, rng = drawn(case)
    want = sx.evaluate(p, *args)
    n = len(p.outs)
    st_ = sx.stages(p)
    for name in ("typed", "rewritten"):
        assert_values(sx.evaluate(st_[name], *args), want)
    values = sx.evaluate(st_["linearized"], *args)
    assert_values(values[:n], want)
    residuals = values[n:]
    ct = [rng.uniform(-1, 1, v.type.shape) for v in p.outs]
    zipped = sx.evaluate(st_["vjp"], *args, *ct)
    assert_values(zipped[:n], want)
    assert_values(zipped[n:], sx.evaluate(st_["transposed"], *ct, *residuals))
    t = [rng.uniform(-1, 1, q.type.shape) for q in p.params]
    jvp = sx.evaluate(sx.verify(sx.jvp_program(p)), *args, *t)
    assert_values(jvp[:n], want)
    assert_values(jvp[n:], sx.evaluate(st_["linear"], *t, *residuals))


@SETTINGS
@given(programs())
def test_vjp_and_jvp_agree_by_dot_product(case):
    p, args, rng = drawn(case)
    n = len(p.outs)
    t, ct = directions(p, rng)
    jt = sx.evaluate(sx.jvp_program(p), *args, *t)[n:]
    jtct = sx.evaluate(sx.vjp_program(p), *args, *ct)[n:]
    lhs, rhs = vdot(ct, jt), vdot(jtct, t)
    scale = max(
        1.0,
        vdot([np.abs(c) for c in ct], [np.abs(j) for j in jt]),
        vdot([np.abs(g) for g in jtct], [np.abs(x) for x in t]),
    )
    assert abs(lhs - rhs) <= 1e-9 * scale, (lhs, rhs)
    # with respect to a subset of the inputs, through linearize/transpose directly
    wrt = tuple(range(0, len(p.params), 2))
    primal, linear = sx.linearize_program(p, wrt)
    transposed = sx.verify(sx.transpose_program(linear, len(wrt)))
    residuals = sx.evaluate(sx.verify(primal), *args)[n:]
    jt = sx.evaluate(sx.verify(linear), *[t[i] for i in wrt], *residuals)
    jtct = sx.evaluate(transposed, *ct, *residuals)
    assert abs(vdot(ct, jt) - vdot(jtct, [t[i] for i in wrt])) <= 1e-9 * scale


def fd(program, args, direction, eps):
    plus = [a + eps * d for a, d in zip(args, direction, strict=True)]
    minus = [a - eps * d for a, d in zip(args, direction, strict=True)]
    return [
        (a - b) / (2 * eps)
        for a, b in zip(sx.evaluate(program, *plus), sx.evaluate(program, *minus), strict=True)
    ]


def assert_fd_close(got, numeric, values, rtol=1e-5):
    for g, w, v in zip(got, numeric, values, strict=True):
        # central differences lose about 1e-16 * |f| / eps to round-off
        atol = 1e-7 * (1.0 + float(np.max(np.abs(v), initial=0.0)))
        atol += 1e-6 * float(np.max(np.abs(w), initial=0.0))
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@SETTINGS
@given(programs())
def test_jvp_matches_finite_differences(case):
    p, args, rng = drawn(case)
    n = len(p.outs)
    t = [random_like(rng, q.type) for q in p.params]
    out = sx.evaluate(sx.jvp_program(p), *args, *t)
    assert_fd_close(out[n:], fd(p, args, t, 1e-6), out[:n])


@SETTINGS
@given(programs(scalar_output=True, max_ops=6))
def test_hessian_vector_products_of_scalar_programs(case):
    p, args, rng = drawn(case)
    check_hvp(p, args, rng)


@SETTINGS
@given(programs(max_ops=6))
def test_hessian_vector_products(case):
    p, args, rng = drawn(case)
    check_hvp(p, args, rng)


@SETTINGS
@given(programs())
def test_compiled_stages_are_reusable_and_leave_inputs_alone(case):
    """A compiled plan (which may update dying buffers in place) gives the same values on a
    second call, never writes into the caller's arrays, and hands out arrays it won't reuse."""
    p, args, rng = drawn(case)
    ct = [rng.uniform(-1, 1, v.type.shape) for v in p.outs]
    for prog, xs in [(p, args), (sx.vjp_program(p), args + ct)]:
        exe = sx.compile(prog)
        before = [np.copy(a) for a in xs]
        first = exe(*xs)
        kept = [np.copy(a) for a in first]
        second = exe(*xs)
        for a, b in zip(xs, before, strict=True):
            np.testing.assert_array_equal(a, b)
        for a, b, c in zip(first, second, kept, strict=True):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, c)


@SETTINGS
@given(programs())
def test_residual_policies_agree(case):
    """Saving every residual and recomputing the cheap ones give the same VJP, and each
    policy's linear/transposed pair passes the dot-product test."""
    p, args, rng = drawn(case)
    n = len(p.outs)
    t, ct = directions(p, rng)
    results = {}
    for policy in ("save", "recompute"):
        st_ = sx.stages(p, policy=policy)
        values = sx.evaluate(st_["linearized"], *args)
        residuals = values[n:]
        jt = sx.evaluate(st_["linear"], *t, *residuals)
        jtct = sx.evaluate(st_["transposed"], *ct, *residuals)
        lhs, rhs = vdot(ct, jt), vdot(jtct, t)
        scale = max(
            1.0,
            vdot([np.abs(c) for c in ct], [np.abs(j) for j in jt]),
            vdot([np.abs(g) for g in jtct], [np.abs(x) for x in t]),
        )
        assert abs(lhs - rhs) <= 1e-9 * scale, (policy, lhs, rhs)
        results[policy] = sx.evaluate(sx.verify(sx.vjp_program(p, policy=policy)), *args, *ct)
        assert_values(results[policy][n:], jtct)
    assert_values(results["recompute"], results["save"])
