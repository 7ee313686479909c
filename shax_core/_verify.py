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

from shax_core.ir import Program, Type, VerifyError
from shax_core.registry import lookup


def verify(program: Program) -> Program:
    """Check SSA (each name bound once), scoping (use after definition), arities and types.

    Returns the program so it can be used inline; raises VerifyError naming the equation.
    """
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
        if eqn.out.name in seen:
            raise VerifyError(f"{where}: {eqn.out.name} is bound twice")
        prim = lookup(eqn.prim)
        expected = prim.out_type(eqn, [seen[v.name] for v in eqn.ins])
        if eqn.out.type is not None and eqn.out.type != expected:
            raise VerifyError(f"{where}: annotated {eqn.out.type}, but the rule gives {expected}")
        seen[eqn.out.name] = eqn.out.type or expected
    for v in program.outs:
        if v.name not in seen:
            raise VerifyError(f"{program.name}: output {v.name} is not defined")
    return program
