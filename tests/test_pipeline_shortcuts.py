"""The pipeline's shortcuts build exactly the programs of their plain definitions.

The zip simplifies the appended halves without first rewriting the second half's equations,
``cleanup`` skips the DCE after CSE when CSE cannot have left dead code, and ``transpose``
walks a linear program without removing its dead code first. Each is checked against the
composition it replaces (the programs must be equal, not merely evaluate alike), on random
programs (straight-line and with loops) and on hand-built cases where the shortcut's
condition matters.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_properties import SETTINGS, programs
from test_properties_loops import looped_programs

import shax_core as sx
from shax_core import passes, pipeline
from shax_core._infer import infer
from shax_core._linearize import linearize_typed
from shax_core.ir import Eqn, Program, Type, Var
from shax_core.passes import cleanup, cse, dce, simplify
from shax_core.transpose import _transpose, transpose_typed

F = Type("f64", ())


def zip_by_definition(lin, transposed):
    """The zipped VJP as ``cleanup`` of the appended halves (CSE and DCE within each half
    first when residuals are recomputed)."""
    primal = lin.primal
    ct_types = [v.type for v in primal.outs[: lin.n_outputs]]
    name = f"{primal.name}_d{primal.name}t"
    if not lin.recomputed:
        appended = pipeline._append(name, primal, transposed, ct_types, lin.n_outputs)
        return dce(cse(simplify(appended)))
    halves = dce(cse(primal)), dce(cse(transposed))
    return dce(simplify(pipeline._append(name, *halves, ct_types, lin.n_outputs)))


@SETTINGS
@given(st.one_of(programs(), looped_programs()), st.sampled_from(["recompute", "save"]))
def test_zip_builds_the_program_of_its_definition(case, policy):
    p, _ = case
    lin = linearize_typed(cleanup(infer(p)), None, policy)
    transposed = transpose_typed(lin.linear, lin.n_tangents)
    assert pipeline.zip_vjp(lin, transposed) == zip_by_definition(lin, transposed)


@SETTINGS
@given(st.one_of(programs(), looped_programs()))
def test_cleanup_is_simplify_cse_dce(case):
    p, _ = case
    typed = infer(p)
    assert cleanup(typed) == dce(cse(simplify(typed)))


@SETTINGS
@given(st.one_of(programs(), looped_programs()))
def test_transpose_without_dce_first_is_the_transpose_of_the_dce(case):
    p, _ = case
    lin = linearize_typed(cleanup(infer(p)), None, "save")
    cleaned = _transpose(dce(lin.linear), lin.n_tangents, dead_code_removed=True)
    assert transpose_typed(lin.linear, lin.n_tangents) == cleaned


def test_cse_of_a_program_without_dead_code_leaves_none():
    # x2 and x3 merge; x4 = mul x2 x3 then reads x2 twice: everything stays live
    x, y = Var("x", F), Var("y", F)
    v = [Var(f"x{i}", F) for i in range(5)]
    p = Program(
        "f",
        (x, y),
        (
            Eqn(v[2], "add", (), (x, y)),
            Eqn(v[3], "add", (), (y, x)),  # commutative: the same as x2
            Eqn(v[4], "mul", (), (v[2], v[3])),
        ),
        (v[4],),
    )
    merged, bodies_changed = passes.cse_bodies(p)
    assert not bodies_changed and len(merged.eqns) == 2
    assert dce(merged) is merged  # nothing for DCE to drop
    assert passes.cleanup(p) == dce(cse(simplify(p)))


def test_appending_binds_each_parameter_before_any_name_is_reused():
    # the second half's parameters are named like the first half's (arg0, arg1, arg2): its
    # arg0 is bound to the new parameter arg2 and its arg2 to the first half's arg0, which
    # must be read before arg0 is rebound; its arg1 is bound to x1 = mul arg1 1, which the
    # first half simplifies to arg1
    a0, a1, new = Var("arg0", F), Var("arg1", F), Var("arg2", F)
    one, x1, x2 = Var("c", F), Var("x1", F), Var("x2", F)
    first = Program(
        "f",
        (a0, a1),
        (
            Eqn(one, "fromList", ((), (1.0,), "f64"), ()),
            Eqn(x1, "mul", (), (a1, one)),
            Eqn(x2, "sin", (), (a0,)),
        ),
        (x2, x1, a0),
    )
    p0, p1, p2, t0, t1 = (Var(n, F) for n in ("arg0", "arg1", "arg2", "t0", "t1"))
    second = Program(
        "g",
        (p0, p1, p2),
        (Eqn(t0, "mul", (), (p0, p1)), Eqn(t1, "mul", (), (t0, p2))),
        (t1, p0),
    )
    args = (new, x1, a0)
    got = passes.simplify_appended("h", (a0, a1, new), first, first.outs[:1], second, args)
    # by definition: second's equations rewritten to read the arguments, then simplified
    read = (Eqn(t0, "mul", (), (new, x1)), Eqn(t1, "mul", (), (t0, a0)))
    want = simplify(Program("h", (a0, a1, new), (*first.eqns, *read), (x2, t1, new)))
    assert got == want
    assert [[str(v) for v in e.ins] for e in got.eqns[-2:]] == [["arg2", "arg1"], ["t0", "arg0"]]
    sx.verify(infer(got))


def test_dead_tangent_code_without_a_transpose_rule_is_dropped_not_an_error():
    # d1 = sin d0 is not linear, but nothing reads it: the transpose is that of the DCE
    text = (
        "def df(arg0 :: f64[], arg1 :: f64[]) = "
        "let d0 = mul arg0 arg1  d1 = sin d0  d2 = mul d0 arg1 in [d2]"
    )
    linear = infer(sx.parse(text))
    got = transpose_typed(linear, 1)
    assert got == transpose_typed(dce(linear), 1)
    assert [e.prim for e in got.eqns] == ["mul", "mul"]
    live = infer(sx.parse(text.replace("in [d2]", "in [d1]")))
    with pytest.raises(sx.TransposeError, match="sin"):
        transpose_typed(live, 1)


@pytest.mark.parametrize(
    "text",
    [
        # the input t0 is named like the transpose's first result
        "def f(t0 :: f64[], b :: f64[]) = let x = sin t0  y = mul x b in [y]",
        # an input named like the new cotangent parameter (arg2)
        "def f(a :: f64[], arg2 :: f64[]) = let x = sin a  y = mul x arg2 in [y]",
        # no clash
        "def f(a :: f64[], b :: f64[]) = let x = sin a  y = mul x b in [y]",
    ],
)
@pytest.mark.parametrize("policy", ["recompute", "save"])
def test_zip_with_and_without_name_clashes_is_its_definition(text, policy):
    lin = linearize_typed(cleanup(infer(sx.parse(text))), None, policy)
    transposed = transpose_typed(lin.linear, lin.n_tangents)
    zipped = pipeline.zip_vjp(lin, transposed)
    assert zipped == zip_by_definition(lin, transposed)
    sx.verify(zipped)
    # d(sin a * b) = (cos a * b * ct, sin a * ct) at a = 0.3, b = 2, ct = 1.5
    out, da, db = (float(v) for v in sx.evaluate(zipped, 0.3, 2.0, 1.5))
    assert (out, da, db) == pytest.approx((np.sin(0.3) * 2, np.cos(0.3) * 3, np.sin(0.3) * 1.5))


def test_zip_with_recomputed_residuals_is_its_definition():
    # cos x (1.2 MB) is recomputed in the linear program, not saved: the zip's other branch
    text = "def f(x :: f32[300000]) = let y = sin x  z = reduce_sum [0] y in [z]"
    lin = linearize_typed(cleanup(infer(sx.parse(text))), None, "recompute")
    assert lin.recomputed
    transposed = transpose_typed(lin.linear, lin.n_tangents)
    zipped = pipeline.zip_vjp(lin, transposed)
    assert zipped == zip_by_definition(lin, transposed)
    x = np.linspace(-1, 1, 300000, dtype=np.float32)
    z, dx = sx.evaluate(zipped, x, np.float32(2.0))
    np.testing.assert_allclose(dx, 2 * np.cos(x), rtol=1e-6)
    np.testing.assert_allclose(z, np.sin(x.astype(np.float64)).sum(), rtol=1e-4)
