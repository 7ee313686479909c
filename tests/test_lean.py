"""The lean representation (``shax_core.ir.Lean``) and its ``Program`` view.

Every pass of the pipeline reads and builds ``Lean`` columns; ``Program`` is the public view,
built on demand. These tests check the two agree: a program converted to its lean form and
viewed back is the same program (same text, same equations, same variables), on the corpus
and on random programs, with multi-result equations and nested bodies, and that a view builds
nothing until read.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given
from test_properties import SETTINGS, drawn
from test_properties import programs as property_programs

import shax_core as sx
import shax_core.numpy as snp
from shax_core import lax
from shax_core.ir import Lean, Program, Type, VerifyError, from_lean, lean_of

F32 = Type("f32", ())


def _round_trip(p: Program) -> Program:
    lean = lean_of(p)
    fresh = Lean(
        lean.name,
        list(lean.types),
        list(lean.names),
        lean.params,
        lean.outs,
        list(lean.eqn_prim),
        list(lean.eqn_params),
        list(lean.eqn_ins),
        list(lean.eqn_out),
        dict(lean.eqn_extra),
    )  # fmt: skip   (no Var cache: every Var is built again from the columns)
    return from_lean(fresh)


@SETTINGS
@given(property_programs(max_ops=10))
def test_random_programs_survive_the_round_trip(case):
    p, args, _ = drawn(case)
    q = _round_trip(p)
    assert q == p and hash(q) == hash(p)
    assert str(q) == str(p)
    np.testing.assert_array_equal(sx.evaluate(q, *args)[0], sx.evaluate(p, *args)[0])


def _loop_program() -> Program:
    def f(x, xs):
        def body(c, x_i):
            return c * snp.sin(x_i) + 1.0, c + x_i

        c, ys = lax.scan(body, x, xs)
        return c + ys.sum()

    return sx.trace(f, np.float32(0.5), np.ones(3, np.float32))


def test_multi_result_equations_and_bodies_survive_the_round_trip():
    p = _loop_program()
    assert any(e.extra_outs for e in p.eqns) and any(e.subprograms for e in p.eqns)
    q = _round_trip(p)
    assert q == p and str(q) == str(p)
    lean = lean_of(q)
    i = next(i for i, e in enumerate(p.eqns) if e.extra_outs)
    assert [lean.names[v] for v in lean.eqn_outs(i)] == [v.name for v in p.eqns[i].outs]


def test_a_view_builds_its_equations_only_when_read():
    lean = Lean("f", [F32, F32], ["a", "x0"], (0,), (1,), ["sin"], [()], [(0,)], [1])
    view = from_lean(lean, checked=True)
    with pytest.raises(AttributeError):
        object.__getattribute__(view, "eqns")  # not built yet
    assert lean_of(view) is lean and view.checked
    assert view.replace(name="g")._lean.name == "g"  # renaming keeps the view lean
    assert [e.prim for e in view.eqns] == ["sin"]
    assert view.eqns[0].ins == view.params  # one Var per id: the same objects


def test_views_pickle_and_compare_by_value():
    p = _loop_program()
    view = from_lean(lean_of(p))
    again = pickle.loads(pickle.dumps(view))
    assert again == p and str(again) == str(p)


def test_an_unbound_name_is_named():
    a, x = sx.Var("a", F32), sx.Var("x", F32)
    p = Program("f", (a,), (sx.Eqn(x, "sin", (), (sx.Var("ghost", F32),)),), (x,))
    with pytest.raises(VerifyError, match="ghost"):
        lean_of(p)


def test_traced_programs_and_their_views_evaluate_alike():
    def f(x, y):
        return snp.sum(snp.tanh(x) * y)

    x, y = np.linspace(-1, 1, 6).reshape(2, 3), np.ones((2, 3))
    p = sx.trace(f, x, y)
    assert sx.evaluate(_round_trip(p), x, y)[0] == sx.evaluate(p, x, y)[0]


@SETTINGS
@given(property_programs(max_ops=10))
def test_recomputing_every_cheap_residual_keeps_the_linear_map(case):
    """``rematerialize`` with no size floor (so it recomputes on these small programs too):
    the new primal still computes f, and the new linear program maps tangents to the same
    output tangents as the one that saves every residual."""
    from shax_core.remat import rematerialize

    p, args, rng = drawn(case)
    lin = sx.linearize_program(p, policy="save")
    n, k = lin.n_outputs, lin.n_tangents
    primal, linear, recomputed = rematerialize(lin.primal, lin.linear, n, k, min_bytes=0)
    sx.verify(primal), sx.verify(linear)
    saved_values = sx.evaluate(lin.primal, *args)
    values = sx.evaluate(primal, *args)
    for a, b in zip(values[:n], saved_values[:n], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    tangents = [rng.uniform(-1, 1, p.params[i].type.shape) for i in lin.wrt]
    want = sx.evaluate(lin.linear, *tangents, *saved_values[n:])
    got = sx.evaluate(linear, *tangents, *values[n:])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    assert recomputed <= {v.name for v in lin.residuals}
