"""The AD pipeline: Program -> Program stages, ending in the zipped VJP (or JVP) program.

The stages, for a program ``f``:

    typed       infer(f)
    rewritten   simplify (constant folding), CSE, DCE
    linearized  f   (inputs) -> [outputs..., residuals...]
    linear      df  (tangents..., residuals...) -> [output tangents...]
    transposed  dft (output cotangents..., residuals...) -> [input cotangents...]
    vjp         f_dft (inputs..., output cotangents...) -> [outputs..., input cotangents...]

``vjp_program`` is ``zip ∘ transpose ∘ linearize`` after the rewrites, and ``stages`` returns the
same run's programs by name: one pipeline, so the stages shown are the ones the VJP is built
from. Each stage's result carries what the next needs (``Linearized``: how many inputs are
tangents, which residuals are recomputed), so nothing is looked up on the side.

The zipped program runs ``f`` and feeds its residuals straight into ``dft``, then CSE and DCE,
as the seed's ``medium_dmediumt``:

>>> import shax_core as sx
>>> p = sx.parse("def f(a :: f32[], b :: f32[]) = let x = add a b  y = sin x in [y]")
>>> print(vjp_program(p))
def f_dft(a :: f32[],
          b :: f32[],
          arg2 :: f32[]) =
  let x0 :: f32[] = add a b
      x1 :: f32[] = sin x0
      x2 :: f32[] = cos x0
      t0 :: f32[] = mul arg2 x2
  in [x1, t0, t0]

Every stage reads and builds ``Lean`` columns (``shax_core.ir``). The zip appends the two
halves' columns: the transposed half's variable ids move up past the primal's (or stay, when
one half's columns extend the other's), its parameters are bound to the new cotangent
parameters and the residuals, and the simplifier walks both halves without building either
appended program first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shax_core._evaluate import no_gc
from shax_core._infer import infer
from shax_core._linearize import Linearized, linearize_typed
from shax_core._trace import trace
from shax_core.core import Builder
from shax_core.ir import Lean, Program, from_lean, lean_of
from shax_core.passes import cleanup, cse, dce, tidy
from shax_core.passes._dce import dce_lean
from shax_core.passes._simplify import appended_lean, simplified_lean
from shax_core.passes.inline import inline
from shax_core.transpose import transpose_typed

PIPELINE_VERSION = "1"


def prepare(program: Program) -> Program:
    """Infer (annotations are checked, not trusted), then simplify, fold, CSE and DCE.

    ``canonicalize_dot`` (the seed's rewrite) is not needed: ``dot`` and general
    ``dot_general`` transpose directly, and the plan runs them as one BLAS matmul on views,
    so the canonical form would only add reshape steps."""
    return cleanup(infer(program))


def zip_vjp(lin: Linearized, transposed: Program) -> Program:
    """``f_dft(inputs..., cotangents...) = [outputs..., input cotangents...]``.

    With recomputed residuals, CSE runs within each half, not across: merging a recomputed
    value with the primal value it equals would undo the residual policy (it would be saved
    after all)."""
    primal = lin.primal
    lean = lean_of(primal)
    ct_types = [lean.types[v] for v in lean.outs[: lin.n_outputs]]
    name = f"{primal.name}_d{primal.name}t"
    if not lin.recomputed:  # = cleanup(_append(...))
        return from_lean(tidy(_simplify_append(name, primal, transposed, ct_types, lin.n_outputs)))
    halves = dce(cse(primal)), dce(cse(transposed))
    return from_lean(dce_lean(_simplify_append(name, *halves, ct_types, lin.n_outputs)))


def _simplify_append(name: str, first: Program, second: Program, new_types, n_outputs: int):
    """The simplifier's walk over ``_append(name, first, second, new_types, n_outputs)`` (its
    DCE gives their ``simplify``), without rewriting ``second``'s equations before
    simplifying them when the names allow it."""
    lean1, lean2 = lean_of(first), lean_of(second)
    new_names = [f"arg{len(lean1.params) + i}" for i in range(len(new_types))]
    if _names_clash(lean1, lean2, new_names):
        return simplified_lean(lean_of(_append(name, first, second, new_types, n_outputs)))
    types, names, new_ids, offset = _columns(lean1, lean2, new_names, new_types)
    args = new_ids + lean1.outs[n_outputs:]
    params = lean1.params + new_ids
    first_outs = lean1.outs[:n_outputs]
    return appended_lean(name, types, names, params, lean1, first_outs, lean2, offset, args)


def zip_jvp(lin: Linearized) -> Program:
    """``f_jvp(inputs..., tangents of wrt...) = [outputs..., output tangents...]``."""
    lean = lean_of(lin.primal)
    t_types = [lean.types[lean.params[i]] for i in lin.wrt]
    name = f"{lin.primal.name}_jvp"
    return cleanup(_append(name, lin.primal, lin.linear, t_types, lin.n_outputs))


def _append(name: str, first: Program, second: Program, new_types, n_outputs: int) -> Program:
    """One program running ``first`` then ``second``, where ``second`` takes the new
    parameters then ``first``'s outputs after the first ``n_outputs`` (the residuals).

    Parameters: ``first``'s, then the new ones; outputs: ``first``'s first ``n_outputs``, then
    ``second``'s. Equations are reused as they are (the pipeline's builders name variables
    with distinct prefixes); only if names clash are both inlined under fresh names."""
    lean1, lean2 = lean_of(first), lean_of(second)
    new_names = [f"arg{len(lean1.params) + i}" for i in range(len(new_types))]
    if _names_clash(lean1, lean2, new_names):
        b = Builder()
        args = [b.add_param(p.type) for p in first.params]
        new = [b.add_param(t) for t in new_types]
        first_outs = inline(b, first, args)
        second_outs = inline(b, second, new + first_outs[n_outputs:])
        outs = [t.id for t in first_outs[:n_outputs] + second_outs]
        return b.program(name, outs, checked=False)
    types, names, new_ids, offset = _columns(lean1, lean2, new_names, new_types)
    # second's variable v is first's or new variable rep[v] (its parameters), else v + offset
    rep = list(range(offset, offset + len(lean2.types)))
    for p, a in zip(lean2.params, new_ids + lean1.outs[n_outputs:], strict=True):
        rep[p] = a
    n1 = len(lean1)
    extra = dict(lean1.eqn_extra)
    extra.update((n1 + i, tuple([v + offset for v in e])) for i, e in lean2.eqn_extra.items())
    return from_lean(
        Lean(
            name,
            types,
            names,
            lean1.params + new_ids,
            lean1.outs[:n_outputs] + tuple([rep[v] for v in lean2.outs]),
            lean1.eqn_prim + lean2.eqn_prim,
            lean1.eqn_params + lean2.eqn_params,
            lean1.eqn_ins + [tuple([rep[v] for v in ins]) for ins in lean2.eqn_ins],
            lean1.eqn_out + [v + offset for v in lean2.eqn_out],
            extra,
        )
    )


def _columns(first: Lean, second: Lean, new_names: list, new_types) -> tuple:
    """The variable columns of ``first`` and ``second`` appended, with the new parameters:
    ``(types, names, new parameter ids, offset of second's ids)``. When one's columns extend
    the other's (one builder made both), both keep their ids; else second's are offset."""
    longer, shorter = (first, second) if len(first.types) >= len(second.types) else (second, first)
    if _extends(longer, shorter):
        types, names, offset = list(longer.types), list(longer.names), 0
    else:
        types, names, offset = (
            first.types + second.types,
            first.names + second.names,
            len(first.types),
        )
    new_ids = tuple(range(len(types), len(types) + len(new_names)))
    types.extend(new_types)
    names.extend(new_names)
    return types, names, new_ids, offset


def _extends(longer: Lean, shorter: Lean) -> bool:
    """Whether ``shorter``'s variables are the first ones of ``longer``'s columns."""
    if longer.types is shorter.types and longer.names is shorter.names:
        return True
    n = len(shorter.types)
    return longer.names[:n] == shorter.names and longer.types[:n] == shorter.types


def _names_clash(first: Lean, second: Lean, new_names: list) -> bool:
    """Whether ``second``'s equations bind a name ``first`` or the new parameters bind, or
    the new parameters a name of ``first``: with F, S, N those names, whether
    ``(F | N) & S or F & N``, i.e. ``N & S or F & (S | N)`` (one set built, not three)."""
    taken = _bound_names(second)
    if not taken.isdisjoint(new_names):
        return True
    taken.update(new_names)
    names = first.names
    extra = first.eqn_extra.values()
    if len(first.params) + len(first.eqn_out) + sum(map(len, extra)) == len(names):
        return not taken.isdisjoint(names)  # first binds every variable of its columns
    name = names.__getitem__
    if not taken.isdisjoint(map(name, first.params)):
        return True
    return not taken.isdisjoint(_bound_names(first))


def _bound_names(lean: Lean) -> set[str]:
    """The names the equations of ``lean`` bind (``map`` over the columns: this runs on every
    equation of both halves of a VJP)."""
    name = lean.names.__getitem__
    names = set(map(name, lean.eqn_out))
    for extra in lean.eqn_extra.values():
        names.update(map(name, extra))
    return names


@dataclass(frozen=True)
class Run:
    """One run of the pipeline: every stage, each computed once."""

    typed: Program
    rewritten: Program
    linearized: Linearized
    transposed: Program
    vjp: Program

    def stages(self) -> dict[str, Program]:
        return {
            "typed": self.typed,
            "rewritten": self.rewritten,
            "linearized": self.linearized.primal,
            "linear": self.linearized.linear,
            "transposed": self.transposed,
            "vjp": self.vjp,
        }


def run(program: Program, wrt: Sequence[int] | None = None, policy: str = "recompute") -> Run:
    """The VJP pipeline on ``program``: rewrite, linearize once, transpose, zip."""
    with no_gc():
        typed = infer(program)
        rewritten = cleanup(typed)  # = prepare(program)
        lin = linearize_typed(rewritten, wrt, policy)
        lin = Linearized(
            _checked(lin.primal), _checked(lin.linear), lin.wrt, lin.n_outputs, lin.recomputed
        )
        transposed = _checked(transpose_typed(lin.linear, lin.n_tangents))
        return Run(typed, _checked(rewritten), lin, transposed, _checked(zip_vjp(lin, transposed)))


def vjp_program(
    program: Program, wrt: Sequence[int] | None = None, policy: str = "recompute"
) -> Program:
    """The zipped VJP program of ``program`` with respect to the inputs ``wrt`` (default:
    every float input), under the residual ``policy`` (see ``shax_core.remat``)."""
    return run(program, wrt, policy).vjp


def jvp_program(program: Program, wrt: Sequence[int] | None = None) -> Program:
    """``f_jvp(inputs..., tangents...) = [outputs..., output tangents...]``: forward mode is the
    linear program run on tangents, zipped after the primal."""
    with no_gc():
        return _checked(zip_jvp(linearize_typed(prepare(program), wrt, "recompute")))


def stages(
    program_or_f, *specs, wrt: Sequence[int] | None = None, policy: str = "recompute"
) -> dict[str, Program]:
    """Every stage of the pipeline by name (see the module docstring); for a Python function
    (traced at ``specs``) the traced program too, first."""
    if isinstance(program_or_f, Program):
        return run(program_or_f, wrt, policy).stages()
    traced = trace(program_or_f, *specs)
    return {"traced": traced, **run(traced, wrt, policy).stages()}


def _checked(program: Program) -> Program:
    """Mark a program the pipeline derived from an inferred one: its types are shax's own
    (every pass keeps types; the tests verify it), so compiling it need not re-infer."""
    return program.replace(checked=True)


__all__ = [
    "PIPELINE_VERSION",
    "Run",
    "jvp_program",
    "prepare",
    "run",
    "stages",
    "vjp_program",
    "zip_jvp",
    "zip_vjp",
]
