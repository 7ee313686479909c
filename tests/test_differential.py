"""Differential tests of every rewrite, on random well-typed f64 programs (hypothesis).

The generator extends test_properties.py's (unary functions, broadcasting arithmetic,
broadcast, reshape, transpose, reductions, slice, pad, dot_general, select, concatenate) with
what a rewrite can get wrong: constants and splats (``full_like``: a scalar ``fromList`` and a
``broadcast``) with the identity values 0 and 1, pads of splats whose pad value differs from
the splat (the simplifier once took ``x * pad(ones)`` for ``x``), chains of operations on
constants only (folded at compile time) and repeated equations (merged by CSE).

Each pass (simplify with its folding, CSE, DCE, cleanup, the lowerings, the seed's rewrite)
must keep the program's values; both residual policies and the zip must give the same outputs
and cotangents as the separate programs; the VJP must agree with central finite differences.

``SHAX_FUZZ_EXAMPLES=N`` runs N fresh random examples per test (see test_properties.py).
"""

from __future__ import annotations

import numpy as np
from adcheck import assert_all_close as assert_values
from adcheck import vdot
from hypothesis import given
from hypothesis import strategies as st
from test_properties import SETTINGS, directions, drawn
from test_properties import programs as property_programs

import shax_core as sx
import shax_core.core as core
from shax_core import passes
from shax_core.core import Tracer

# small shapes, and shapes past the simplifier's FOLD_LIMIT (64 elements), where constants
# stay splats instead of being folded to literal arrays
SHAPES = [(), (4,), (2, 3), (3, 1), (2, 2, 2), (70,), (8, 9)]
IDENTITIES = [0.0, 1.0, -1.0, 0.5, 2.0]


def _shape(x) -> tuple[int, ...]:
    return tuple(core.shape_of(x))


def _splat(draw, x, pool):
    """``full_like(x, c)``, c often 0 or 1: a scalar constant broadcast to x's shape."""
    return core.full_like(x, draw(st.sampled_from(IDENTITIES)))


def _constant(draw, x, pool):
    """A constant with distinct elements, of x's shape."""
    shape = _shape(x)
    n = int(np.prod(shape, dtype=np.int64))
    data = draw(st.lists(st.sampled_from([-1.5, -0.5, 0.25, 1.0, 2.0]), min_size=n, max_size=n))
    return x.builder.constant(np.array(data, np.float64).reshape(shape), "f64")


def _padded_splat(draw, x, pool):
    """``x op pad(full c, config, v)`` at x's shape: a splat inside, the pad value around."""
    shape = _shape(x)
    if not shape or min(shape) < 2:
        return None
    config = []
    for n in shape:
        lo = draw(st.integers(0, 1))
        config.append((lo, draw(st.integers(0 if lo else 1, n - 1 - lo))))
    inner = [n - lo - hi for n, (lo, hi) in zip(shape, config, strict=True)]
    c, v = draw(st.sampled_from(IDENTITIES)), draw(st.sampled_from(IDENTITIES))
    padded = core.pad(core.full_like(x, c, inner), config, v)
    return core.mul(x, padded) if draw(st.booleans()) else core.add(padded, x)


def _folded_chain(draw, x, pool):
    """Operations on constants only (the simplifier folds them), combined with x."""
    y = _constant(draw, x, pool) if draw(st.booleans()) else _splat(draw, x, pool)
    for _ in range(draw(st.integers(1, 3))):
        step = draw(st.sampled_from(["sin", "add", "mul", "neg", "pad-slice", "transpose"]))
        if step in ("sin", "neg"):
            y = core.bind("sin", y) if step == "sin" else core.neg(y)
        elif step in ("add", "mul"):
            other = _splat(draw, y, pool)
            y = core.add(y, other) if step == "add" else core.mul(other, y)
        elif step == "pad-slice" and _shape(y):
            # pad one step on every side, then slice the middle back out: the shape of y again
            padded = core.pad(y, [(1, 1)] * len(_shape(y)), draw(st.sampled_from(IDENTITIES)))
            y = core.slice_(padded, [1] * len(_shape(y)), [n + 1 for n in _shape(y)])
        elif step == "transpose" and len(_shape(y)) >= 2 and len(set(_shape(y))) == 1:
            y = core.transpose(y, tuple(reversed(range(len(_shape(y))))))
    return core.add(x, y) if draw(st.booleans()) else core.mul(y, x)


def _repeated(draw, x, pool):
    """The newest equation emitted again on the same operands (CSE merges the two)."""
    b = x.builder
    if not b.eqns:
        return None
    e = b.eqns[-1]
    prim = sx.primitives.lookup(e.prim)
    return core.bind_at(b, e.prim, *(Tracer(b, v) for v in e.ins), **prim.kwargs(e.params))


NEW_OPS = [_splat, _constant, _padded_splat, _folded_chain, _repeated]


def programs(max_ops=12):
    """(program, seed): test_properties.py's random programs, half of whose operations are
    constants, splats, padded splats, foldable chains and repeated equations."""
    return property_programs(max_ops=max_ops, shapes=SHAPES, extra_ops=NEW_OPS)


PASSES = {
    "simplify": passes.simplify,
    "cse": passes.cse,
    "dce": passes.dce,
    "cleanup": passes.cleanup,
    "canonicalize_dot": passes.canonicalize_dot,
    "lower_reduce_sum": passes.lower_reduce_sum,
    "rewrite": passes.rewrite,
}


@SETTINGS
@given(programs(), st.sampled_from(sorted(PASSES)))
def test_each_pass_preserves_values(case, name):
    p, args, _ = drawn(case)
    want = sx.evaluate(p, *args)
    q = sx.verify(PASSES[name](p))
    assert q.in_types == p.in_types and q.out_types == p.out_types, name
    assert_values(sx.evaluate(q, *args), want)
    # and again on its own output (a rewrite of rewritten code)
    assert_values(sx.evaluate(sx.verify(PASSES[name](q)), *args), want)


@SETTINGS
@given(programs())
def test_residual_policies_and_zip_preserve_values(case):
    """Under each residual policy, the linearized program's outputs are f's, and the zipped
    VJP gives f's outputs and the transposed program's cotangents; both policies agree."""
    p, args, rng = drawn(case)
    want = sx.evaluate(p, *args)
    n = len(p.outs)
    ct = [rng.uniform(-1, 1, v.type.shape) for v in p.outs]
    grads = {}
    for policy in ("save", "recompute"):
        st_ = sx.stages(p, policy=policy)
        assert_values(sx.evaluate(st_["rewritten"], *args), want)
        values = sx.evaluate(st_["linearized"], *args)
        assert_values(values[:n], want)
        separate = sx.evaluate(st_["transposed"], *ct, *values[n:])
        zipped = sx.evaluate(st_["vjp"], *args, *ct)
        assert_values(zipped[:n], want)
        assert_values(zipped[n:], separate)
        grads[policy] = zipped[n:]
    assert_values(grads["recompute"], grads["save"])


def directional_derivative(program, args, t, ct, eps=1e-6) -> tuple[float, float]:
    """``<ct, (f(x + eps t) - f(x - eps t)) / 2 eps>`` and the largest ``|f|`` seen."""
    plus = sx.evaluate(program, *[a + eps * d for a, d in zip(args, t, strict=True)])
    minus = sx.evaluate(program, *[a - eps * d for a, d in zip(args, t, strict=True)])
    numeric = vdot(ct, [(a - b) / (2 * eps) for a, b in zip(plus, minus, strict=True)])
    return numeric, max(float(np.max(np.abs(v), initial=0.0)) for v in plus)


@SETTINGS
@given(programs())
def test_vjp_matches_central_differences(case):
    """``<vjp(ct), t>`` is the directional derivative along t, by central differences (f64)."""
    p, args, rng = drawn(case)
    t, ct = directions(p, rng)
    numeric, size = directional_derivative(p, args, t, ct)
    grads = sx.evaluate(sx.vjp_program(p), *args, *ct)[len(p.outs) :]
    exact = vdot(grads, t)
    scale = 1.0 + size + vdot([np.abs(g) for g in grads], [np.abs(d) for d in t])
    assert abs(exact - numeric) <= 1e-6 * scale, (exact, numeric)
