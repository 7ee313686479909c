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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

from shax_core._evaluate import no_gc
from shax_core._infer import infer
from shax_core._linearize import Linearized, linearize_typed
from shax_core._trace import trace
from shax_core.core import Builder
from shax_core.ir import Program, Var
from shax_core.passes import cleanup, cse, cse_dce_free, dce, simplify, simplify_appended
from shax_core.passes.inline import inline
from shax_core.passes.rename import rewrite_ins
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
    ct_types = [v.type for v in primal.outs[: lin.n_outputs]]
    name = f"{primal.name}_d{primal.name}t"
    if not lin.recomputed:  # = cleanup(_append(...)); simplify ends with DCE
        return cse_dce_free(_simplify_append(name, primal, transposed, ct_types, lin.n_outputs))
    halves = dce(cse(primal)), dce(cse(transposed))
    return dce(_simplify_append(name, *halves, ct_types, lin.n_outputs))


def _simplify_append(name: str, first: Program, second: Program, new_types, n_outputs: int):
    """``simplify(_append(name, first, second, new_types, n_outputs))``, without rewriting
    ``second``'s equations before simplifying them when the names allow it."""
    new_params = tuple(Var(f"arg{len(first.params) + i}", t) for i, t in enumerate(new_types))
    if _names_clash(first, second, new_params):
        return simplify(_append(name, first, second, new_types, n_outputs))
    args = new_params + first.outs[n_outputs:]
    params = first.params + new_params
    return simplify_appended(name, params, first, first.outs[:n_outputs], second, args)


def zip_jvp(lin: Linearized) -> Program:
    """``f_jvp(inputs..., tangents of wrt...) = [outputs..., output tangents...]``."""
    t_types = [lin.primal.params[i].type for i in lin.wrt]
    name = f"{lin.primal.name}_jvp"
    return cleanup(_append(name, lin.primal, lin.linear, t_types, lin.n_outputs))


def _append(name: str, first: Program, second: Program, new_types, n_outputs: int) -> Program:
    """One program running ``first`` then ``second``, where ``second`` takes the new
    parameters then ``first``'s outputs after the first ``n_outputs`` (the residuals).

    Parameters: ``first``'s, then the new ones; outputs: ``first``'s first ``n_outputs``, then
    ``second``'s. Equations are reused as they are (the pipeline's builders name variables
    with distinct prefixes); only if names clash are both inlined under fresh names."""
    new_params = tuple(Var(f"arg{len(first.params) + i}", t) for i, t in enumerate(new_types))
    if _names_clash(first, second, new_params):
        b = Builder()
        args = [b.add_param(p.type) for p in first.params]
        new = [b.add_param(t) for t in new_types]
        first_outs = inline(b, first, args)
        second_outs = inline(b, second, new + first_outs[n_outputs:])
        outs = [t.id for t in first_outs[:n_outputs] + second_outs]
        return b.program(name, outs, checked=False)
    args = new_params + first.outs[n_outputs:]
    subst = {p.name: a for p, a in zip(second.params, args, strict=True)}
    eqns = first.eqns + tuple([rewrite_ins(e, subst) for e in second.eqns])
    outs = first.outs[:n_outputs] + tuple(subst.get(v.name, v) for v in second.outs)
    return Program(name, first.params + new_params, eqns, outs)


def _names_clash(first: Program, second: Program, new_params) -> bool:
    """Whether ``second``'s equations bind a name ``first`` or the new parameters bind, or
    the new parameters a name of ``first``: with F, S, N those names, whether
    ``(F | N) & S or F & N``, i.e. ``N & S or F & (S | N)`` (one set built, not three)."""
    new_names = {p.name for p in new_params}
    taken = _bound_names(second.eqns)
    if not new_names.isdisjoint(taken):
        return True
    taken.update(new_names)
    if not taken.isdisjoint(map(_NAME, first.params)):
        return True
    if not taken.isdisjoint(map(_OUT_NAME, first.eqns)):
        return True
    return any(not taken.isdisjoint(map(_NAME, extra)) for extra in _extra_outs(first.eqns))


_NAME, _OUT_NAME, _EXTRA_OUTS = attrgetter("name"), attrgetter("out.name"), attrgetter("extra_outs")


def _extra_outs(eqns):
    """The ``extra_outs`` of the equations that have some (loops)."""
    return filter(None, map(_EXTRA_OUTS, eqns))


def _bound_names(eqns) -> set[str]:
    """The names the equations bind (``map`` with attrgetter: this runs on every equation of
    both halves of a VJP)."""
    names = set(map(_OUT_NAME, eqns))
    for extra in _extra_outs(eqns):
        names.update(v.name for v in extra)
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
