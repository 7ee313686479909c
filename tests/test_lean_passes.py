"""The rewrite passes and the zip on the lean representation (``shax_core.ir.Lean``).

The passes read a program's columns and return views. A view of a program and the program
itself must come out of every pass as the same program (same text: names and order); no
pass may change the columns of its input (pipelines running in several server threads share
them); and the zip of two halves whose variable columns are shared (one builder made both,
so one's columns extend the other's) must be the zip of the same halves numbered apart.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from test_properties import SETTINGS, programs
from test_properties_loops import looped_programs

import shax_core as sx
from shax_core import pipeline
from shax_core._infer import infer
from shax_core._linearize import Linearized, linearize_typed
from shax_core.ir import Lean, Program, from_lean, lean_of
from shax_core.passes import cleanup, cse, dce, simplify
from shax_core.transpose import transpose_typed


def _plain(p: Program) -> Program:
    """The same program as an ordinary Program (no lean form cached on it)."""
    return Program(p.name, p.params, p.eqns, p.outs)


def _snapshot(lean: Lean) -> tuple:
    return (
        list(lean.types), list(lean.names), lean.params, lean.outs, list(lean.eqn_prim),
        list(lean.eqn_params), list(lean.eqn_ins), list(lean.eqn_out), dict(lean.eqn_extra),
    )  # fmt: skip


@SETTINGS
@given(st.one_of(programs(), looped_programs()), st.sampled_from(["recompute", "save"]))
def test_passes_on_views_are_the_passes_on_programs_and_leave_their_input_alone(case, policy):
    p, _ = case
    typed = infer(p)
    view = from_lean(lean_of(_plain(typed)))
    before = _snapshot(lean_of(view))
    for rewrite in (simplify, cse, dce, cleanup):
        assert str(rewrite(view)) == str(rewrite(_plain(typed))), rewrite.__name__
    assert _snapshot(lean_of(view)) == before
    lin = linearize_typed(cleanup(typed), None, policy)
    transposed = transpose_typed(lin.linear, lin.n_tangents)
    halves = lean_of(lin.primal), lean_of(transposed)
    kept = [_snapshot(h) for h in halves]
    zipped = pipeline.zip_vjp(lin, transposed)
    assert [_snapshot(h) for h in halves] == kept
    plain_lin = Linearized(
        _plain(lin.primal), _plain(lin.linear), lin.wrt, lin.n_outputs, lin.recomputed
    )
    assert str(zipped) == str(pipeline.zip_vjp(plain_lin, _plain(transposed)))
    sx.verify(zipped)


def _shifted(lean: Lean, offset: int, types: list, names: list) -> Lean:
    """``lean`` with its ids moved up by ``offset`` into the columns ``types``/``names``."""
    return Lean(
        lean.name,
        types,
        names,
        tuple(v + offset for v in lean.params),
        tuple(v + offset for v in lean.outs),
        list(lean.eqn_prim),
        list(lean.eqn_params),
        [tuple(v + offset for v in ins) for ins in lean.eqn_ins],
        [v + offset for v in lean.eqn_out],
        {i: tuple(v + offset for v in e) for i, e in lean.eqn_extra.items()},
    )


@SETTINGS
@given(
    st.one_of(programs(), looped_programs()),
    st.sampled_from(["recompute", "save"]),
    st.booleans(),
)
def test_zip_of_halves_sharing_columns_is_the_zip_of_halves_numbered_apart(case, policy, same):
    p, _ = case
    lin = linearize_typed(cleanup(infer(p)), None, policy)
    transposed = transpose_typed(lin.linear, lin.n_tangents)
    first, second = lean_of(lin.primal), lean_of(transposed)
    # one set of columns: the primal's variables, then the transposed program's
    types, names = first.types + second.types, first.names + second.names
    shared_first = _shifted(
        first, 0, types if same else first.types, names if same else first.names
    )
    shared_second = _shifted(second, len(first.types), types, names)
    shared = Linearized(from_lean(shared_first), lin.linear, lin.wrt, lin.n_outputs, lin.recomputed)
    want = pipeline.zip_vjp(lin, transposed)
    got = pipeline.zip_vjp(shared, from_lean(shared_second))
    assert str(got) == str(want)
    assert got == want


def test_halves_numbered_alike_by_chance_still_read_their_own_parameters():
    # the rewritten program is empty, so the primal's columns ([a]) are a prefix of the
    # transposed program's ([a, arg1, t0]) by name and type: the halves share ids, and the
    # transposed half's parameters must still be bound to the cotangents (d/da of [a, a]
    # is ct0 + ct1), not read as the primal's variables of the same ids
    text = (
        "def g(a :: f64[]) = let x0 = sin a  x1 = lt a x0  x2 = select x1 a a  "
        "x3 = sin a  x4 = lt a x3  x5 = select x4 a a in [x5, x2]"
    )
    program = sx.parse(text.replace("(a ::", "(arg0 ::").replace(" a", " arg0"))
    zipped = pipeline.vjp_program(program)
    assert [float(v) for v in sx.evaluate(zipped, 0.3, 1.5, 2.0)] == [0.3, 0.3, 3.5]
