"""Compiling a lean view (``from_lean``): the plan reads the lean columns, so ``sx.compile``
and ``sx.evaluate`` of a view never build its ``Var``/``Eqn`` objects, and the plan and the
results are the ordinary Program's, bit for bit.

Written as a user holds programs: traced functions, their VJPs, loops, random programs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from test_properties import SETTINGS, drawn
from test_properties import programs as property_programs

import shax_core as sx
import shax_core.numpy as snp
from shax_core import lax
from shax_core.ir import Lean, Program, from_lean, lean_of

X0, Y0, CT = np.float32(0.5), np.float32(0.3), np.float32(1.0)


def _ordinary(p: Program) -> Program:
    """``p`` as an ordinary Program (its equations built), whatever it was."""
    return Program(p.name, p.params, p.eqns, p.outs, checked=p.checked)


def _view(p: Program, checked: bool | None = None) -> Program:
    """A fresh view of ``p``'s lean form: nothing of it built yet."""
    return from_lean(lean_of(_ordinary(p)), checked=p.checked if checked is None else checked)


def _built(view: Program) -> set[str]:
    """Which of params/eqns/outs the view has built so far."""
    built = set()
    for attr in ("params", "eqns", "outs"):
        try:
            object.__getattribute__(view, attr)
        except AttributeError:
            continue
        built.add(attr)
    return built


def _plan_shape(exe) -> tuple:
    """Everything about a plan but the kernel objects (made anew by each compile)."""
    return (
        [(ins, out, free) for _, ins, out, free in exe.steps],
        [type(fn).__name__ for fn, *_ in exe.steps],
        exe.n_slots,
        exe.out_slots,
        exe.out_copy,
        exe.peak_bytes,
        exe.work,
        exe.in_place_steps,
        str(exe.planned),
    )


def _same_bits(xs, ys) -> None:
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def _deep(n: int):
    def deep(x, y):
        for _ in range(n):
            x, y = snp.sin(x) * y + snp.cos(y), x * y - y
        return x + y

    return deep


@pytest.mark.parametrize("n", [3, 2000])  # 2000 steps: past the plan rewrites' size limit
def test_a_vjp_view_compiles_and_runs_without_building_its_equations(n):
    vjp = sx.vjp_program(sx.trace(_deep(n), X0, Y0))
    view = _view(vjp)
    exe = sx.compile(view)
    got = exe(X0, Y0, CT)
    assert _built(view) == set()
    assert sx.evaluate(view, X0, Y0, CT) and _built(view) == set()
    ordinary = sx.compile(_ordinary(vjp))
    _same_bits(got, ordinary(X0, Y0, CT))
    assert _plan_shape(exe) == _plan_shape(ordinary)


def test_plan_rules_rewrite_a_view_as_they_rewrite_the_program():
    # negations folded into the sums reading them; a transposed operand read by the matmul
    def f(a, b, w):
        return snp.sum(-(a @ b.T) * w + (-w))

    a = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    b = np.linspace(0, 2, 20, dtype=np.float32).reshape(5, 4)
    w = np.linspace(1, -1, 15, dtype=np.float32).reshape(3, 5)
    p = sx.trace(f, a, b, w)
    for program in (p, sx.vjp_program(p)):
        view = _view(program)
        exe, ordinary = sx.compile(view), sx.compile(_ordinary(program))
        assert str(exe.planned) != str(program)  # the rules did apply
        args = [a, b, w] + ([np.float32(0.7)] if len(program.params) == 4 else [])
        _same_bits(exe(*args), ordinary(*args))
        assert _built(view) == set()  # (printing the plan below may build it)
        assert _plan_shape(exe) == _plan_shape(ordinary)


def test_an_unplanned_reference_plan_of_a_view_matches_too():
    vjp = sx.vjp_program(sx.trace(_deep(5), X0, Y0))
    view = _view(vjp)
    exe = sx.Executable(view, rewrite=False)
    _same_bits(exe(X0, Y0, CT), sx.Executable(_ordinary(vjp), rewrite=False)(X0, Y0, CT))
    assert exe.planned is view and _built(view) == set()


def _with_view_bodies(p: Program) -> Program:
    """A view of ``p`` whose loop bodies are views too."""
    lean = lean_of(_ordinary(p))

    def viewed(value):
        if isinstance(value, Program):
            return _view(value)
        return value

    params = [tuple(viewed(v) for v in ps) for ps in lean.eqn_params]
    fresh = Lean(
        lean.name, lean.types, lean.names, lean.params, lean.outs, lean.eqn_prim, params,
        lean.eqn_ins, lean.eqn_out, lean.eqn_extra,
    )  # fmt: skip
    return from_lean(fresh, checked=p.checked)


def test_loops_with_view_bodies_compile_without_building_them():
    def f(x, xs):
        def body(c, x_i):
            return c * snp.sin(x_i) + 1.0, c - x_i

        c, ys = lax.scan(body, x, xs)
        return c + lax.fori_loop(0, 4, lambda i, v: v * 0.5 + snp.cos(v), ys.sum())

    xs = np.linspace(-1, 1, 6, dtype=np.float32)
    p = sx.trace(f, X0, xs)
    for program in (p, sx.vjp_program(p)):  # the VJP's bodies are not checked: inferred
        view = _with_view_bodies(program)
        bodies = [b for ps in lean_of(view).eqn_params for b in ps if isinstance(b, Program)]
        assert bodies
        args = [X0, xs] + ([CT] if len(program.params) == 3 else [])
        exe = sx.compile(view)
        got = exe(*args)
        assert _built(view) == set()
        assert all(_built(b) == set() for b in bodies)
        ordinary = sx.compile(_ordinary(program))
        _same_bits(got, ordinary(*args))
        shuffled = sx.compile(_renumbered(program, 5))  # several results, ids numbered apart
        _same_bits(shuffled(*args), got)
        assert _plan_shape(shuffled) == _plan_shape(ordinary) == _plan_shape(exe)


def test_generated_code_of_a_view_is_the_programs(monkeypatch):
    monkeypatch.setenv("SHAX_CODEGEN", "1")  # the second tier from the first call
    from shax_core import _codegen

    vjp = sx.vjp_program(sx.trace(_deep(4), X0, Y0))
    view = _view(vjp)
    exe, ordinary = sx.compile(view), sx.compile(_ordinary(vjp))
    _same_bits(exe(X0, Y0, CT), ordinary(X0, Y0, CT))
    assert _codegen.tier(exe) == "generated"
    assert _codegen.source(_codegen.read_plan(exe)) == _codegen.source(_codegen.read_plan(ordinary))
    assert _built(view) == set()


def test_a_bad_argument_to_a_compiled_view_is_named():
    p = sx.trace(lambda x, y: snp.sin(x) * y, np.ones(3, np.float32), np.ones(3, np.float32))
    view = _view(p)
    exe = sx.compile(view)
    name = lean_of(view).names[lean_of(view).params[1]]
    with pytest.raises(sx.EvaluationError, match=f"argument {name} .* must be f32\\[3\\]"):
        exe(np.ones(3, np.float32), np.ones(4, np.float32))
    assert _built(view) == set()


@SETTINGS
@given(property_programs(max_ops=10))
def test_random_programs_and_their_vjps_compile_alike_as_views(case):
    p, args, rng = drawn(case)
    programs = [p]
    if p.outs[0].type.is_float:
        programs.append(sx.vjp_program(p))
    for program in programs:
        inputs = list(args)
        if len(program.params) > len(args):  # the VJP's cotangents
            inputs += [rng.uniform(-1, 1, v.type.shape) for v in p.outs]
        view = _view(program)
        exe, ordinary = sx.compile(view), sx.compile(_ordinary(program))
        _same_bits(exe(*inputs), ordinary(*inputs))
        assert _built(view) == set()  # (printing the plan below may build it)
        assert _plan_shape(exe) == _plan_shape(ordinary)


# ---------------------------------------------------------------------------------------------
# inference reads the lean columns: an unchecked view is typed without being built, and errors
# name what they named before

F32 = sx.Type("f32", ())
V3 = sx.Type("f32", (3,))


def test_an_unchecked_view_is_inferred_without_being_built():
    lean = Lean("f", [F32, None, None], ["a", "x", "y"], (0,), (2,), ["sin", "cos"],
                [(), ()], [(0,), (1,)], [1, 2])  # fmt: skip
    view = from_lean(lean, checked=False)
    typed = sx.infer(view)
    assert _built(view) == set() and typed.checked
    assert lean.types == [F32, None, None]  # the input's column is never changed
    assert str(typed) == str(
        sx.infer(sx.parse("def f(a :: f32[]) = let x = sin a  y = cos x in [y]"))
    )
    np.testing.assert_array_equal(
        sx.compile(view)(np.float32(0.5))[0], np.cos(np.sin(np.float32(0.5)))
    )


def test_inference_errors_name_the_variable_and_come_in_program_order():
    a, x, y = sx.Var("a", V3), sx.Var("x"), sx.Var("y")
    ghost = sx.Var("ghost", V3)
    unbound = Program("f", (a,), (sx.Eqn(x, "sin", (), (ghost,)),), (x,))
    with pytest.raises(sx.ShaxTypeError, match="f: ghost is used before it is defined"):
        sx.infer(unbound)
    # an ill-typed equation before the unbound use is the first error
    bad = sx.Eqn(y, "reshape", ((7,),), (a,))
    with pytest.raises(sx.ShaxTypeError, match="reshape"):
        sx.infer(Program("f", (a,), (bad, sx.Eqn(x, "sin", (), (ghost,))), (x,)))
    with pytest.raises(sx.ShaxTypeError, match="f: output ghost is not defined"):
        sx.infer(Program("f", (a,), (sx.Eqn(x, "sin", (), (a,)),), (ghost,)))
    # a view whose operand id is bound only later
    lean = Lean("g", [F32, None, None], ["a", "x", "y"], (0,), (2,), ["sin", "cos"],
                [(), ()], [(2,), (1,)], [1, 2])  # fmt: skip
    with pytest.raises(sx.ShaxTypeError, match="g: y is used before it is defined"):
        sx.infer(from_lean(lean))


def test_a_wrong_annotation_on_a_view_is_named_with_both_types():
    lean = Lean("f", [V3, F32], ["a", "x"], (0,), (1,), ["sin"], [()], [(0,)], [1])
    with pytest.raises(
        sx.ShaxTypeError,
        match=r"`x :: f32\[\] = sin a` is annotated f32\[\], but sin of f32\[3\] gives f32\[3\]",
    ):
        sx.infer(from_lean(lean, checked=False))


def _renumbered(p: Program, seed: int) -> Program:
    """A view of ``p`` whose variable ids are shuffled among unused ones (as a pass that
    adds variables to a copy of its input's columns leaves them)."""
    lean = lean_of(_ordinary(p))
    n = len(lean.types)
    rng = np.random.default_rng(seed)
    new_id = [int(k) for k in rng.permutation(2 * n)[:n]]  # ids up to 2n: half unused
    types, names = [None] * (2 * n), [f"unused{k}" for k in range(2 * n)]
    for v in range(n):
        types[new_id[v]], names[new_id[v]] = lean.types[v], lean.names[v]
    ids = lambda vs: tuple(new_id[v] for v in vs)  # noqa: E731
    fresh = Lean(
        lean.name, types, names, ids(lean.params), ids(lean.outs), lean.eqn_prim,
        lean.eqn_params, [ids(ins) for ins in lean.eqn_ins], [new_id[v] for v in lean.eqn_out],
        {i: ids(extra) for i, extra in lean.eqn_extra.items()},
    )  # fmt: skip
    return from_lean(fresh, checked=p.checked)


@SETTINGS
@given(property_programs(max_ops=10))
def test_views_numbered_any_way_plan_as_the_program(case):
    p, args, rng = drawn(case)
    programs = [p] + ([sx.vjp_program(p)] if p.outs[0].type.is_float else [])
    for k, program in enumerate(programs):
        inputs = list(args)
        if len(program.params) > len(args):
            inputs += [rng.uniform(-1, 1, v.type.shape) for v in p.outs]
        view = _renumbered(program, k)
        exe, ordinary = sx.compile(view), sx.compile(_ordinary(program))
        _same_bits(exe(*inputs), ordinary(*inputs))
        assert _built(view) == set()
        assert _plan_shape(exe) == _plan_shape(ordinary)
        assert exe.all_slot_bytes == ordinary.all_slot_bytes
