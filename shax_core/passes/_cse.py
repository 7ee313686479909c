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

from shax_core.ir import Eqn, Program, Var
from shax_core.passes.rename import substitute
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
    seen: dict[tuple, Eqn] = {}  # by key: the first equation with it
    subst: dict[str, Var] = {}
    eqns = []
    bodies_changed = False
    commutative: dict[str, bool] = {}  # by primitive name
    for eqn in program.eqns:
        if subst:  # = rewrite_ins(eqn, subst), inlined: it runs for nearly every equation
            for v in eqn.ins:
                if v.name in subst:
                    eqn = Eqn(
                        eqn.out,
                        eqn.prim,
                        eqn.params,
                        tuple([subst.get(v.name, v) for v in eqn.ins]),
                        eqn.extra_outs,
                    )
                    break
        prim, params, ins = eqn.prim, eqn.params, eqn.ins
        if params and eqn.subprograms:
            new = eqn.with_subprograms(cse)
            bodies_changed |= new.params != params
            eqn = new
            params = eqn.params
        swap = commutative.get(prim)
        if swap is None:
            swap = commutative[prim] = "commutative" in lookup(prim).traits
        # the key: primitive, parameters, operand names (flat: one tuple per equation)
        n_ins = len(ins)
        if swap and n_ins == 2:  # two operands, compared as a set
            a, b = ins[0].name, ins[1].name
            key = (prim, params, a, b) if a <= b else (prim, params, b, a)
        elif swap:
            key = (prim, params, *sorted([v.name for v in ins]))
        elif n_ins == 1:
            key = (prim, params, ins[0].name)
        elif n_ins == 2:
            key = (prim, params, ins[0].name, ins[1].name)
        else:
            key = (prim, params, *map(_NAME, ins))
        hit = seen.get(key)
        if hit is not None:
            outs, hit_outs = eqn.outs, hit.outs
            if all(h.type == v.type for h, v in zip(hit_outs, outs, strict=True)):
                for h, v in zip(hit_outs, outs, strict=True):
                    subst[v.name] = h
                continue
        seen[key] = eqn
        eqns.append(eqn)
    if not subst and not bodies_changed:
        return program, False
    return substitute(program, eqns, subst), bodies_changed
