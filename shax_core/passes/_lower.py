"""Lowerings declared in the registry: ``canonicalize_dot`` and ``lower_reduce_sum``.

A primitive may declare, under a lowering's name in ``prim.extra``, a rule that rebuilds its
result from other primitives (written with ``shax_core.core``). ``lower(program, name)``
replays the program, applying that rule wherever one is declared.

``canonicalize_dot`` gives the seed's canonical ``[B,M,K]·[B,K,N]`` form:

>>> from shax_core import infer, parse
>>> p = infer(parse("def f(x5 :: f32[2, 6], x6 :: f32[6, 2]) = let x7 = dot x5 x6 in [x7]"))
>>> print(canonicalize_dot(p))
def f(x5 :: f32[2, 6],
      x6 :: f32[6, 2]) =
  let x0 :: f32[1, 2, 6] = reshape [1,2,6] x5
      x1 :: f32[1, 6, 2] = reshape [1,6,2] x6
      x2 :: f32[1, 2, 2] = dot_general [2] [1] [0] [0] x0 x1
      x3 :: f32[2, 2] = reshape [2,2] x2
  in [x3]

``lower_reduce_sum`` (opt-in: O(n) equations; used to reproduce the seed):

>>> q = infer(parse("def f(x13 :: f32[2, 2]) = let x14 = reduce_sum [0] x13 in [x14]"))
>>> print(lower_reduce_sum(q))
def f(x13 :: f32[2, 2]) =
  let x0 :: f32[1, 2] = slice [0,0] [1,2] x13
      x1 :: f32[1, 2] = slice [1,0] [2,2] x13
      x2 :: f32[1, 2] = add x0 x1
      x3 :: f32[2] = reshape [2] x2
  in [x3]
"""

from __future__ import annotations

from shax_core.core import Builder, bind_at
from shax_core.ir import Program
from shax_core.registry import lookup


def lower(program: Program, lowering: str) -> Program:
    """``program`` with the lowering applied, inside sub-programs too."""
    program = program.replace(
        eqns=tuple(e.with_subprograms(lambda b: lower(b, lowering)) for e in program.eqns)
    )
    if not any(lowering in lookup(e.prim).extra for e in program.eqns):
        return program
    b = Builder()
    env = {p.name: b.add_param(p.type, p.name) for p in program.params}
    for eqn in program.eqns:
        prim = lookup(eqn.prim)
        xs = [env[v.name] for v in eqn.ins]
        rule = prim.extra.get(lowering)
        params = prim.kwargs(eqn.params)
        result = rule(*xs, **params) if rule else bind_at(b, eqn.prim, *xs, **params)
        if prim.multiple_results:
            env.update((v.name, r) for v, r in zip(eqn.outs, result, strict=True))
        else:
            env[eqn.out.name] = result
    return b.program(program.name, [env[v.name].id for v in program.outs], checked=False)


def canonicalize_dot(program: Program) -> Program:
    return lower(program, "canonicalize")


def lower_reduce_sum(program: Program) -> Program:
    return lower(program, "sums_of_slices")
