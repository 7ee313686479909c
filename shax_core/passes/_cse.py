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

from shax_core.ir import Program, Var
from shax_core.passes.rename import rewrite_ins, substitute
from shax_core.registry import lookup


def cse(program: Program) -> Program:
    seen: dict[tuple, Var] = {}
    subst: dict[str, Var] = {}
    eqns = []
    for eqn in program.eqns:
        eqn = rewrite_ins(eqn, subst)
        names = tuple(v.name for v in eqn.ins)
        if "commutative" in lookup(eqn.prim).traits:
            names = tuple(sorted(names))
        key = (eqn.prim, eqn.params, names)
        hit = seen.get(key)
        if hit is not None and hit.type == eqn.out.type:
            subst[eqn.out.name] = hit
            continue
        seen[key] = eqn.out
        eqns.append(eqn)
    if not subst:
        return program
    return substitute(program, eqns, subst)
