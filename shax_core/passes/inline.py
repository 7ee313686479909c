"""Replaying equations into a builder: a whole program (``inline``), or only the equations a
value needs, when it is first needed (``emit_on_first_use``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shax_core.core import inline  # multi-result aware; below the registry, so rules use it too
from shax_core.ir import Lean

__all__ = ["emit_on_first_use", "inline"]


def emit_on_first_use(
    v: int,
    value: list,
    lean: Lean,
    producer: Mapping[int, int],
    emit: Callable[[int, list], object],
    leaf: Callable[[int], object | None] | None = None,
):
    """``value[v]`` (None where a variable of ``lean`` has no value yet), first emitting
    (``emit(i, operand values)``) each equation ``i = producer[u]`` that it needs and that
    has no value yet, operands before their users. ``leaf(u)`` gives the value of a
    variable that is read, not recomputed (or None). An explicit stack, not recursion: a
    chain of any length works."""
    eqn_ins = lean.eqn_ins
    stack = [v]
    while stack:
        u = stack[-1]
        if value[u] is not None:
            stack.pop()
            continue
        known = leaf(u) if leaf is not None else None
        if known is not None:
            value[u] = known
            stack.pop()
            continue
        i = producer[u]
        missing = [w for w in eqn_ins[i] if value[w] is None]
        if missing:
            stack.extend(missing)
            continue
        result = emit(i, [value[w] for w in eqn_ins[i]])
        if isinstance(result, tuple):  # a multi-result equation (a loop): all of its results
            for w, r in zip(lean.eqn_outs(i), result, strict=True):
                value[w] = r
        else:
            value[u] = result
        stack.pop()
    return value[v]
