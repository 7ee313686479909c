"""Common-subexpression elimination: an equation equal to an earlier one reuses its result.

>>> from shax_core import infer, parse
>>> text = "def f(x1 :: f32[2, 6]) = let x3 = cos x1  x4 = cos x1  x5 = mul x3 x4 in [x5]"
>>> p = infer(parse(text))
>>> print(cse(p))
def f(x1 :: f32[2, 6]) =
  let x3 :: f32[2, 6] = cos x1
      x5 :: f32[2, 6] = mul x3 x3
  in [x5]

Equal means same primitive, same parameters, same (substituted) operands; operands of a
commutative primitive are compared as a set. Every primitive is pure, so this is always sound.
"""

from __future__ import annotations

from operator import attrgetter

from shax_core.ir import Program, Var
from shax_core.passes.rename import rewrite_ins, substitute
from shax_core.registry import lookup

_NAME = attrgetter("name")


def cse(program: Program) -> Program:
    """CSE within the program and, separately, within each sub-program (bodies are closed)."""
    return cse_bodies(program)[0]


def cse_bodies(program: Program) -> tuple[Program, bool]:
    """``(cse(program), whether a sub-program changed)``.

    Without a changed sub-program, CSE of a program free of dead code is free of dead code:
    a dropped equation read the same operands as the one it reuses, so everything that was
    live stays live."""
    seen: dict[tuple, tuple[Var, ...]] = {}
    subst: dict[str, Var] = {}
    eqns = []
    bodies_changed = False
    commutative: dict[str, bool] = {}  # by primitive name
    for eqn in program.eqns:
        if subst:
            eqn = rewrite_ins(eqn, subst)
        if eqn.params and eqn.subprograms:
            new = eqn.with_subprograms(cse)
            bodies_changed |= new.params != eqn.params
            eqn = new
        ins = eqn.ins
        swap = commutative.get(eqn.prim)
        if swap is None:
            swap = commutative[eqn.prim] = "commutative" in lookup(eqn.prim).traits
        # the key: primitive, parameters, operand names (flat: one tuple per equation)
        if swap and len(ins) == 2:  # two operands, compared as a set
            a, b = ins[0].name, ins[1].name
            key = (eqn.prim, eqn.params, a, b) if a <= b else (eqn.prim, eqn.params, b, a)
        elif swap:
            key = (eqn.prim, eqn.params, *sorted([v.name for v in ins]))
        else:
            key = (eqn.prim, eqn.params, *map(_NAME, ins))
        hit = seen.get(key)
        outs = eqn.outs
        if hit is not None:
            if all(h.type == v.type for h, v in zip(hit, outs, strict=True)):
                for h, v in zip(hit, outs, strict=True):
                    subst[v.name] = h
                continue
        seen[key] = outs
        eqns.append(eqn)
    if not subst and not bodies_changed:
        return program, False
    return substitute(program, eqns, subst), bodies_changed
