"""Rewrite passes, each a pure ``Program -> Program`` that keeps values and types.

``cleanup`` (simplification with constant folding, CSE, DCE) is what the VJP pipeline runs
before linearizing and after zipping. ``rewrite`` is the seed's rewrites (canonical dots, then
``cleanup``) and ``lower_reduce_sum`` the seed's lowering; both are opt-in.
"""

from shax_core.ir import Program
from shax_core.passes._cse import cse
from shax_core.passes._dce import dce
from shax_core.passes._lower import canonicalize_dot, lower, lower_reduce_sum
from shax_core.passes._simplify import simplify
from shax_core.passes.rename import canonical_names


def cleanup(program: Program) -> Program:
    """Simplify, fold constants, CSE and DCE (run after every pipeline stage)."""
    simplified = simplify(program)  # ends with DCE
    merged = cse(simplified)
    return simplified if merged is simplified else dce(merged)  # DCE is idempotent


def rewrite(program: Program) -> Program:
    """The seed's rewrites: ``canonicalize_dot``, then ``cleanup``."""
    return cleanup(canonicalize_dot(program))


__all__ = [
    "canonical_names",
    "canonicalize_dot",
    "cleanup",
    "cse",
    "dce",
    "lower",
    "lower_reduce_sum",
    "rewrite",
    "simplify",
]
