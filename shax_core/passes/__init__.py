"""Rewrite passes, each a pure ``Program -> Program`` that keeps values and types.

``cleanup`` (simplification with constant folding, CSE, DCE) is what the VJP pipeline runs
before linearizing and after zipping. ``rewrite`` is the seed's rewrites (canonical dots, then
``cleanup``) and ``lower_reduce_sum`` the seed's lowering; both are opt-in.
"""

from shax_core.ir import Program
from shax_core.passes._cse import cse, cse_bodies
from shax_core.passes._dce import dce
from shax_core.passes._lower import canonicalize_dot, lower, lower_reduce_sum
from shax_core.passes._simplify import simplify, simplify_appended
from shax_core.passes.rename import canonical_names


def cleanup(program: Program) -> Program:
    """Simplify, fold constants, CSE and DCE (run after every pipeline stage)."""
    return cse_dce_free(simplify(program))  # simplify ends with DCE


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
]
