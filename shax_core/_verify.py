"""``verify``: a program keeps the IR's invariants (SSA, scoping, arities, types).

Tests run it after every pass. It reads only the registry's shape rules.

>>> from shax_core.ir import Eqn, Program, Type, Var
>>> a, y = Var("a", Type("f32", ())), Var("y")
>>> verify(Program("f", (a,), (Eqn(y, "sin", (), (Var("z"),)),), (y,)))
Traceback (most recent call last):
...
shax_core.ir.VerifyError: f: equation 0 (y = sin ...): z is used before it is defined
"""

from __future__ import annotations

from shax_core.ir import MAX_NESTING, Program, Type, VerifyError
from shax_core.registry import lookup


def verify(program: Program, _depth: int = 0) -> Program:
    """Check SSA (each name bound once), scoping (use after definition), arities and types,
    in the program and in every sub-program (each body is closed: its own scope).

    Returns the program so it can be used inline; raises VerifyError naming the equation.
    """
    if _depth > MAX_NESTING:
        raise VerifyError(f"{program.name}: sub-programs nested more than {MAX_NESTING} deep")
    seen: dict[str, Type | None] = {}
    for p in program.params:
        if p.name in seen:
            raise VerifyError(f"{program.name}: parameter {p.name} bound twice")
        if p.type is None:
            raise VerifyError(f"{program.name}: parameter {p.name} has no type")
        seen[p.name] = p.type
    for i, eqn in enumerate(program.eqns):
        where = f"{program.name}: equation {i} ({eqn.out.name} = {eqn.prim} ...)"
        for v in eqn.ins:
            if v.name not in seen:
                raise VerifyError(f"{where}: {v.name} is used before it is defined")
            if v.type is not None and seen[v.name] is not None and v.type != seen[v.name]:
                raise VerifyError(f"{where}: {v.name} used as {v.type}, defined as {seen[v.name]}")
        for body in eqn.subprograms:
            try:
                verify(body, _depth + 1)
            except VerifyError as e:
                raise VerifyError(f"{where}: in its sub-program {e}") from None
        prim = lookup(eqn.prim)
        expected = prim.out_types(eqn, [seen[v.name] for v in eqn.ins])
        if len(expected) != len(eqn.outs):
            n = len(eqn.outs)
            raise VerifyError(f"{where}: binds {n} results, the rule gives {len(expected)}")
        for out, t in zip(eqn.outs, expected, strict=True):
            if out.name in seen:
                raise VerifyError(f"{where}: {out.name} is bound twice")
            if out.type is not None and out.type != t:
                raise VerifyError(
                    f"{where}: {out.name} annotated {out.type}, but the rule gives {t}"
                )
            seen[out.name] = out.type or t
    for v in program.outs:
        if v.name not in seen:
            raise VerifyError(f"{program.name}: output {v.name} is not defined")
    return program
