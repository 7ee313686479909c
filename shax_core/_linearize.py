"""Linearize once: JVP and partial evaluation in a single walk over the program.

Each equation's linearize rule runs on primal tracers (recorded in the primal builder, level 0)
and tangent tracers (recorded in the linear builder, level 1). An operation with a tangent
operand goes to the linear program; one with only primal operands goes to the primal program.
A primal value that the linear program reads becomes a residual: an extra output of the primal
program and an extra input of the linear one. Symbolic zeros emit nothing.

>>> from shax_core.text import parse
>>> lin = linearize_program(
...     parse("def f(arg0 :: f32[], arg1 :: f32[]) = let x0 = add arg0 arg1  x1 = sin x0 in [x1]")
... )

The primal program returns the output and the residual ``cos x0``:

>>> print(lin.primal)
def f(arg0 :: f32[],
      arg1 :: f32[]) =
  let x0 :: f32[] = add arg0 arg1
      x1 :: f32[] = sin x0
      x2 :: f32[] = cos x0
  in [x1, x2]

and the linear program takes the tangents, then the residuals:

>>> print(lin.linear)
def df(arg0 :: f32[],
       arg1 :: f32[],
       arg2 :: f32[]) =
  let d0 :: f32[] = add arg0 arg1
      d1 :: f32[] = mul d0 arg2
  in [d1]
>>> lin.n_tangents, lin.n_outputs, sorted(lin.recomputed)
(2, 1, [])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shax_core._infer import infer
from shax_core._memo import RuleMemo
from shax_core.core import Builder, Tracer, bind_at, zeros
from shax_core.ir import Program, ShaxError, Var, has_subprograms, lean_of
from shax_core.passes import dce
from shax_core.registry import TRANSFORMS, Zero, lookup
from shax_core.remat import POLICIES, rematerialize


class _LinearBuilder(Builder):
    """The tangent side: a primal value it reads becomes a residual input (once per value)."""

    def __init__(self):
        super().__init__(level=1, prefix="d")  # tangent-side names: d0, d1, ...
        self.residuals: dict[int, int] = {}  # primal id -> its residual parameter's id
        self.n_tangents = 0

    def lift_foreign(self, x: Tracer) -> int:
        return self.lift_variable(x.builder, x.id)

    def lift_variable(self, source: Builder, v: int) -> int:
        param = self.residuals.get(v)
        if param is None:
            param = self.residuals[v] = self.add_param(source.types[v]).id
        return param


def float_inputs(program: Program) -> tuple[int, ...]:
    return tuple(i for i, p in enumerate(program.params) if p.type.is_float)


def check_wrt(program: Program, wrt: Sequence[int] | None) -> tuple[int, ...]:
    if wrt is None:
        return float_inputs(program)
    wrt = tuple(int(i) for i in wrt)
    n = len(program.params)
    for i in wrt:
        if not 0 <= i < n:
            raise ShaxError(f"wrt index {i} is out of range for {program.name}'s {n} inputs")
        if not program.params[i].type.is_float:
            raise ShaxError(
                f"cannot differentiate with respect to {program.params[i].name} :: "
                f"{program.params[i].type}: only float inputs have tangents"
            )
    if len(set(wrt)) != len(wrt):
        raise ShaxError(f"wrt {list(wrt)} repeats an input")
    return wrt


@dataclass(frozen=True)
class Linearized:
    """A program linearized once: what transposing and zipping need, carried with it.

    ``primal`` maps the inputs to ``[outputs..., residuals...]``; ``linear`` maps ``(tangents
    of the wrt inputs..., residuals...)`` to the output tangents. ``recomputed`` names the
    primal values the linear program recomputes from other residuals instead of reading them
    (the residual policy's choice; empty under ``"save"``). Unpacks as ``(primal, linear)``.
    """

    primal: Program
    linear: Program
    wrt: tuple[int, ...]
    n_outputs: int
    recomputed: frozenset[str] = frozenset()

    @property
    def n_tangents(self) -> int:
        """How many leading inputs of ``linear`` are tangents (the rest are residuals)."""
        return len(self.wrt)

    @property
    def residuals(self) -> tuple[Var, ...]:
        return self.primal.outs[self.n_outputs :]

    def __iter__(self):
        return iter((self.primal, self.linear))


def linearize_program(
    program: Program, wrt: Sequence[int] | None = None, policy: str = "recompute"
) -> Linearized:
    """Linearize ``program`` once with respect to the inputs ``wrt`` (default: every float
    input). ``policy`` is the residual policy (see ``shax_core.remat``): ``"recompute"``
    (default) recomputes cheap residuals in the linear program; ``"save"`` saves every one."""
    return linearize_typed(infer(program), wrt, policy)  # annotations are checked, not trusted


def linearize_typed(program: Program, wrt: Sequence[int] | None, policy: str) -> Linearized:
    """``linearize_program`` on a program whose types were inferred by shax itself."""
    if policy not in POLICIES:
        raise ShaxError(f"unknown residual policy {policy!r}; choose one of {list(POLICIES)}")
    wrt = check_wrt(program, wrt)
    primal, linear = _jvp_and_partial_eval(program, wrt)
    n = len(program.outs)
    recomputed: frozenset[str] = frozenset()
    if policy == "recompute":
        primal, linear, recomputed = rematerialize(primal, linear, n, len(wrt))
    # the rules emit primal equations that only a recomputed residual (or nothing) reads
    return Linearized(dce(primal), linear, wrt, n, recomputed)


def _jvp_and_partial_eval(program: Program, wrt: tuple[int, ...]) -> tuple[Program, Program]:
    """One walk: each equation's linearize rule on primal and tangent tracers."""
    source = lean_of(program)
    types = source.types
    primal_b = Builder(level=0)
    linear_b = _LinearBuilder()
    primal: list = [None] * len(types)  # by source id: primal tracers
    tangent: list = [None] * len(types)  # by source id: tangent tracers or Zero
    for p in source.params:
        primal[p] = primal_b.add_param(types[p], source.names[p])
        tangent[p] = Zero(types[p])
    for i in wrt:
        p = source.params[i]
        tangent[p] = linear_b.add_param(types[p])
    linear_b.n_tangents = len(wrt)

    memo = RuleMemo((primal_b, linear_b))
    prims: dict = {}  # by name
    columns = zip(source.eqn_prim, source.eqn_params, source.eqn_ins, source.eqn_out)
    for i, (name, params, ins, out) in enumerate(columns):
        prim = prims.get(name)
        if prim is None:
            prim = prims[name] = lookup(name)
        xs = [primal[v] for v in ins]
        ts = [tangent[v] for v in ins]
        zero_tangents = True
        for t in ts:
            if t.__class__ is not Zero:
                zero_tangents = False
                break
        if prim.no_tangent or zero_tangents:
            if prim.multiple_results:
                ans = bind_at(primal_b, name, *xs, **prim.kwargs(params))
                t_out = tuple(Zero(types[v]) for v in source.eqn_outs(i))
            else:  # the equation as it is: its type is known (the program is typed)
                ans = primal_b.emit(name, params, [x.id for x in xs], types[out])
                t_out = Zero(types[out])
        else:
            if prim.linearize is None:
                raise ShaxError(
                    f"{name} has no linearize rule (in the binding of {source.names[out]})"
                )
            if prim.multiple_results or (params and has_subprograms(params)):
                ans, t_out = prim.linearize(xs, ts, **prim.kwargs(params))
            else:  # the same rule on operands of the same types: its tape replayed
                operands = xs + ts
                key = memo.key((name, params), operands)
                tape = memo.recorded(key)
                if tape is not None:
                    ans, t_out = memo.replay(tape, operands)
                else:
                    kwargs = prim.kwargs(params)
                    ans, t_out = memo.apply(key, operands, prim.linearize, xs, ts, **kwargs)
        if prim.multiple_results:  # one primal and one tangent per result
            for v, a, t in zip(source.eqn_outs(i), ans, t_out, strict=True):
                primal[v] = a
                tangent[v] = t if types[v].is_float else Zero(types[v])
            continue
        if not types[out].is_float:
            t_out = Zero(types[out])
        primal[out] = ans
        tangent[out] = t_out

    linear_outs = [
        (zeros(linear_b, t.type) if t.__class__ is Zero else t).id
        for t in (tangent[v] for v in source.outs)
    ]
    residual_ids = list(linear_b.residuals)  # primal ids, in the order they were lifted
    primal_prog = primal_b.program(
        program.name, [primal[v].id for v in source.outs] + residual_ids, checked=False
    )
    linear_prog = linear_b.program("d" + program.name, linear_outs, checked=False)
    return primal_prog, linear_prog


TRANSFORMS["linearize"] = linearize_typed
