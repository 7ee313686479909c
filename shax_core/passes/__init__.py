"""Rewrite passes, each a pure ``Program -> Program`` that keeps values and types.

``rewrite`` is the default pipeline run before linearizing: canonical dots, then
simplification with constant folding, CSE and DCE. ``lower_reduce_sum`` is opt-in.
"""

from shax_core.ir import Program
from shax_core.passes.cse import cse
from shax_core.passes.dce import dce
from shax_core.passes.lower import canonicalize_dot, lower, lower_reduce_sum
from shax_core.passes.rename import canonical_names
from shax_core.passes.simplify import simplify


def cleanup(program: Program) -> Program:
    """Simplify, fold constants, CSE and DCE (run after every pipeline stage)."""
    return dce(cse(simplify(program)))


def rewrite(program: Program) -> Program:
    """The default rewrites: ``canonicalize_dot``, then ``cleanup``."""
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
