"""Dead-code elimination: drop equations no output depends on (one backward sweep).

>>> from shax_core import infer, parse
>>> print(dce(infer(parse("def f(arg0 :: f32[]) = let x0 = sin arg0  x1 = cos arg0 in [x1]"))))
def f(arg0 :: f32[]) =
  let x1 :: f32[] = cos arg0
  in [x1]

Parameters are kept: they are the program's calling convention.
"""

from __future__ import annotations

from shax_core.ir import Program


def dce(program: Program) -> Program:
    live = {v.name for v in program.outs}
    kept = []
    for eqn in reversed(program.eqns):
        if eqn.out.name in live:
            kept.append(eqn)
            for v in eqn.ins:
                live.add(v.name)
    if len(kept) == len(program.eqns):
        return program
    kept.reverse()
    return program.replace(eqns=tuple(kept))
