"""Inlining: replay a program's equations into a builder, on the given argument values."""

from __future__ import annotations

from collections.abc import Sequence

from shax_core.core import Builder, Tracer
from shax_core.ir import Program


def inline(builder: Builder, program: Program, args: Sequence[Tracer]) -> list[Tracer]:
    """Emit ``program``'s equations into ``builder`` with its parameters bound to ``args``;
    return its outputs. Types are already known, so no rule runs."""
    env = {p.name: a.var for p, a in zip(program.params, args, strict=True)}
    for eqn in program.eqns:
        out = builder.emit(eqn.prim, eqn.params, [env[v.name] for v in eqn.ins], eqn.out.type)
        env[eqn.out.name] = out.var
    return [Tracer(builder, env[v.name]) for v in program.outs]
