"""Rewrite passes, each a pure ``Program -> Program`` that keeps values and types.

``cleanup`` (simplification with constant folding, CSE, DCE) is what the VJP pipeline runs
before linearizing and after zipping. ``rewrite`` is the seed's rewrites (canonical dots, then
``cleanup``) and ``lower_reduce_sum`` the seed's lowering; both are opt-in.
"""

from shax_core.ir import Lean, Program, from_lean, lean_of
from shax_core.passes._cse import cse, cse_bodies, cse_lean
from shax_core.passes._dce import dce, dce_lean, live_equations
from shax_core.passes._lower import canonicalize_dot, lower, lower_reduce_sum
from shax_core.passes._simplify import simplified_lean, simplify, simplify_appended
from shax_core.passes.rename import canonical_names, select


def cleanup(program: Program) -> Program:
    """Simplify, fold constants, CSE and DCE (run after every pipeline stage)."""
    return from_lean(tidy(simplified_lean(lean_of(program))))


def tidy(walked: Lean) -> Lean:
    """``cse_dce_free(dce(walked))`` on columns (``walked``: the simplifier's walk, whose DCE
    ends ``simplify``): CSE reads the live equations in place, and the kept ones are taken
    once, at the end."""
    keep, pruned = live_equations(walked)
    if pruned:  # a loop changed: CSE reads the pruned equations
        walked, keep = select(walked, keep, pruned), None
    merged, bodies_changed = cse_lean(walked, keep)
    return dce_lean(merged) if bodies_changed else merged


def cse_dce_free(program: Program) -> Program:
    """``dce(cse(program))`` for a ``program`` free of dead code: DCE runs only if CSE
    changed a sub-program (see ``cse_bodies``)."""
    merged, bodies_changed = cse_bodies(program)
    return dce(merged) if bodies_changed else merged


def rewrite(program: Program) -> Program:
    """The seed's rewrites: ``canonicalize_dot``, then ``cleanup``."""
    return cleanup(canonicalize_dot(program))


__all__ = [
    "canonical_names",
    "canonicalize_dot",
    "cleanup",
    "cse",
    "cse_dce_free",
    "dce",
    "lower",
    "lower_reduce_sum",
    "rewrite",
    "simplify",
    "simplify_appended",
    "tidy",
]
