"""Replaying equations into a builder: a whole program (``inline``), or only the equations a
value needs, when it is first needed (``emit_on_first_use``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shax_core.core import inline  # multi-result aware; below the registry, so rules use it too
from shax_core.ir import Eqn

__all__ = ["emit_on_first_use", "inline"]


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
        result = emit(eqn, [value[v.name] for v in eqn.ins])
        if isinstance(result, tuple):  # a multi-result equation (a loop): all of its results
            value.update((v.name, r) for v, r in zip(eqn.outs, result, strict=True))
        else:
            value[n] = result
        stack.pop()
    return value[name]
