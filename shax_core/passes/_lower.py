"""Lowerings declared in the registry: ``canonicalize_dot`` and ``lower_reduce_sum``.

A primitive may declare, under a lowering's name in ``prim.extra``, a rule that rebuilds its
result from other primitives (written with ``shax_core.core``). ``lower(program, name)``
replays the program, applying that rule wherever one is declared.

canonicalize_dot, before::

    x7 :: f32[2, 2] = dot x5 x6

after (the seed's canonical ``[B,M,K]·[B,K,N]`` form)::

    x7 :: f32[1, 2, 6] = reshape [1,2,6] x5
    x8 :: f32[1, 6, 2] = reshape [1,6,2] x6
    x9 :: f32[1, 2, 2] = dot_general [2] [1] [0] [0] x7 x8
    x10 :: f32[2, 2] = reshape [2,2] x9

lower_reduce_sum (opt-in: O(n) equations; used to reproduce the seed), before::

    x14 :: f32[2] = reduce_sum [0] x13

after::

    x17 :: f32[1, 2] = slice [0,0] [1,2] x16
    x18 :: f32[1, 2] = slice [1,0] [2,2] x16
    x19 :: f32[1, 2] = add x17 x18
    x20 :: f32[2] = reshape [2] x19
"""

from __future__ import annotations

from shax_core.core import Builder, bind_at
from shax_core.ir import Program
from shax_core.registry import lookup


def lower(program: Program, lowering: str) -> Program:
    if not any(lowering in lookup(e.prim).extra for e in program.eqns):
        return program
    b = Builder()
    env = {p.name: b.add_param(p.type, p.name) for p in program.params}
    for eqn in program.eqns:
        prim = lookup(eqn.prim)
        xs = [env[v.name] for v in eqn.ins]
        rule = prim.extra.get(lowering)
        params = prim.kwargs(eqn.params)
        env[eqn.out.name] = rule(*xs, **params) if rule else bind_at(b, eqn.prim, *xs, **params)
    outs = tuple(env[v.name].var for v in program.outs)
    return Program(program.name, tuple(b.params), tuple(b.eqns), outs)


def canonicalize_dot(program: Program) -> Program:
    return lower(program, "canonicalize")


def lower_reduce_sum(program: Program) -> Program:
    return lower(program, "sums_of_slices")
