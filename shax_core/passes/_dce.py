"""Dead-code elimination: drop equations no output depends on (one backward sweep).

>>> from shax_core import infer, parse
>>> print(dce(infer(parse("def f(arg0 :: f32[]) = let x0 = sin arg0  x1 = cos arg0 in [x1]"))))
def f(arg0 :: f32[]) =
  let x1 :: f32[] = cos arg0
  in [x1]

Parameters are kept: they are the program's calling convention. An equation with several
results (a loop) is kept if any result is live; its primitive's ``prune`` rule (in
``prim.extra``) may then drop the dead results and what only they needed (a loop's unused
carries and stacked outputs), and DCE runs inside its sub-programs.
"""

from __future__ import annotations

from shax_core.ir import Program
from shax_core.primitives import lookup


def dce(program: Program) -> Program:
    live = {v.name for v in program.outs}
    kept = []
    add_live = live.add
    changed = False
    for eqn in reversed(program.eqns):
        if eqn.extra_outs:
            used = [v.name in live for v in eqn.outs]
            if not any(used):
                changed = True
                continue
        elif eqn.out.name not in live:
            changed = True
            continue
        else:
            used = None
        if eqn.params and eqn.subprograms:
            prune = lookup(eqn.prim).extra.get("prune")
            new = prune(eqn, used or [True], dce) if prune else eqn.with_subprograms(dce)
            changed |= new != eqn
            eqn = new
        kept.append(eqn)
        for v in eqn.ins:  # (faster than set.update for one or two operands)
            add_live(v.name)
    if not changed:
        return program
    kept.reverse()
    return program.replace(eqns=tuple(kept))
