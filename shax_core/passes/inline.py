"""Replaying equations into a builder: a whole program (``inline``), or only the equations a
value needs, when it is first needed (``emit_on_first_use``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from shax_core.core import Builder, Tracer
from shax_core.ir import Eqn, Program


def inline(builder: Builder, program: Program, args: Sequence[Tracer]) -> list[Tracer]:
    """Emit ``program``'s equations into ``builder`` with its parameters bound to ``args``;
    return its outputs. Types are already known, so no rule runs."""
    env = {p.name: a.variable for p, a in zip(program.params, args, strict=True)}
    for eqn in program.eqns:
        out = builder.emit(eqn.prim, eqn.params, [env[v.name] for v in eqn.ins], eqn.out.type)
        env[eqn.out.name] = out.variable
    return [Tracer(builder, env[v.name]) for v in program.outs]


def emit_on_first_use(
    name: str,
    value: dict,
    producer: Mapping[str, Eqn],
    emit: Callable[[Eqn, list], object],
    leaf: Callable[[str], object | None] | None = None,
):
    """``value[name]``, first emitting (``emit(eqn, operand values)``) each equation of
    ``producer`` that it needs and that has no value yet, operands before their users.
    ``leaf(n)`` gives the value of a name that is read, not recomputed (or None). An explicit
    stack, not recursion: a chain of any length works."""
    stack = [name]
    while stack:
        n = stack[-1]
        if n in value:
            stack.pop()
            continue
        known = leaf(n) if leaf is not None else None
        if known is not None:
            value[n] = known
            stack.pop()
            continue
        eqn = producer[n]
        missing = [v.name for v in eqn.ins if v.name not in value]
        if missing:
            stack.extend(missing)
            continue
        value[n] = emit(eqn, [value[v.name] for v in eqn.ins])
        stack.pop()
    return value[name]
