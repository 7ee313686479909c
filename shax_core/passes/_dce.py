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

The sweep reads the program's ``Lean`` columns (a live flag per variable id) and keeps its
variable columns: the result is a view of the kept equations.
"""

from __future__ import annotations

from itertools import chain

from shax_core.ir import Lean, Program, from_lean, has_subprograms, lean_of
from shax_core.passes.rename import map_subprograms, may_nest, select
from shax_core.registry import lookup


def dce(program: Program) -> Program:
    lean = lean_of(program)
    kept = dce_lean(lean)
    return program if kept is lean else from_lean(kept)


def dce_lean(lean: Lean) -> Lean:
    """The DCE of ``lean`` (``lean`` itself if nothing is dead)."""
    keep, pruned = live_equations(lean)
    return lean if keep is None else select(lean, keep, pruned)


def live_equations(lean: Lean) -> tuple[bytearray | None, dict[int, tuple]]:
    """``(keep, pruned)``: ``keep[i]`` says whether equation ``i`` is live (None: all are,
    and none was pruned); ``pruned[i]`` is the new ``(params, ins, out, extra)`` of a live
    equation whose ``prune`` rule (or DCE inside its sub-programs) changed it."""
    n = len(lean.eqn_out)
    nesting = any(map(may_nest, set(lean.eqn_prim)))  # whether any equation may hold bodies
    if not lean.eqn_extra and not nesting:
        # every result read by an equation or an output: nothing is dead (of dead equations,
        # the last one's result is read by none), and that is a check in C
        read = set(chain.from_iterable(lean.eqn_ins))
        read.update(lean.outs)
        if read.issuperset(lean.eqn_out):
            return None, {}
    live = bytearray(len(lean.types))
    for v in lean.outs:
        live[v] = 1
    keep = bytearray(n)
    pruned: dict[int, tuple] = {}
    eqn_params, eqn_extra, eqn_prim = lean.eqn_params, lean.eqn_extra, lean.eqn_prim
    nests: dict[str, bool] = {}  # by primitive name: whether it may have sub-programs
    for i, out, ins in zip(range(n - 1, -1, -1), reversed(lean.eqn_out), reversed(lean.eqn_ins)):
        used = None
        if eqn_extra and i in eqn_extra:
            used = [bool(live[out]), *(bool(live[v]) for v in eqn_extra[i])]
            if not any(used):
                continue
        elif not live[out]:
            continue
        if nesting and eqn_params[i]:
            prim = eqn_prim[i]
            nested = nests.get(prim)
            if nested is None:
                nested = nests[prim] = may_nest(prim)
            if nested and has_subprograms(eqn_params[i]):
                new = _prune(lean, i, used or [True])
                if new is not None:
                    pruned[i] = new
                    ins = new[1]
        keep[i] = 1
        for v in ins:
            live[v] = 1
    if not pruned and keep.count(1) == n:
        return None, pruned
    return keep, pruned


def _prune(lean: Lean, i: int, used: list[bool]) -> tuple | None:
    """Equation ``i`` (with sub-programs) after its primitive's ``prune`` rule, or DCE inside
    its sub-programs: ``(params, ins, out, extra)``, or None if it is unchanged."""
    prune = lookup(lean.eqn_prim[i]).extra.get("prune")
    if prune is None:
        params = map_subprograms(lean.eqn_params[i], dce)
        if params == lean.eqn_params[i]:
            return None
        return params, lean.eqn_ins[i], lean.eqn_out[i], lean.eqn_extra.get(i)
    eqn = lean.eqn(i)  # the rule reads the public Eqn (loops only: a few per program)
    new = prune(eqn, used, dce)
    if new == eqn:
        return None
    ids = {lean.names[v]: v for v in (*lean.eqn_ins[i], *lean.eqn_outs(i))}
    outs = [ids[v.name] for v in new.outs]
    return new.params, tuple([ids[v.name] for v in new.ins]), outs[0], tuple(outs[1:]) or None
