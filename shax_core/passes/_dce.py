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

from shax_core.ir import Lean, Program, from_lean, lean_of
from shax_core.passes.rename import has_subprograms, map_subprograms
from shax_core.primitives import lookup


def dce(program: Program) -> Program:
    lean = lean_of(program)
    kept = dce_lean(lean)
    return program if kept is lean else from_lean(kept)


def dce_lean(lean: Lean) -> Lean:
    """The DCE of ``lean`` (``lean`` itself if nothing is dead)."""
    live = bytearray(len(lean.types))
    for v in lean.outs:
        live[v] = 1
    eqn_ins, eqn_out, eqn_params, eqn_extra = (
        lean.eqn_ins,
        lean.eqn_out,
        lean.eqn_params,
        lean.eqn_extra,
    )
    kept: list[int] = []  # equation indices, last first
    pruned: dict[int, tuple] = {}  # index -> the equation's new (params, ins, out, extra)
    keep = kept.append
    for i in range(len(eqn_out) - 1, -1, -1):
        extra = eqn_extra.get(i) if eqn_extra else None
        if extra:
            used = [bool(live[eqn_out[i]]), *(bool(live[v]) for v in extra)]
            if not any(used):
                continue
        elif not live[eqn_out[i]]:
            continue
        else:
            used = None
        params = eqn_params[i]
        if params and has_subprograms(params):
            new = _prune(lean, i, used or [True])
            if new is not None:
                pruned[i] = new
                keep(i)
                for v in new[1]:
                    live[v] = 1
                continue
        keep(i)
        for v in eqn_ins[i]:
            live[v] = 1
    if len(kept) == len(eqn_out) and not pruned:
        return lean
    kept.reverse()
    prim, out_params, out_ins, out_out, out_extra = [], [], [], [], {}
    for i in kept:
        row = pruned.get(i) if pruned else None
        if row is None:
            params, ins, out, extra = (
                eqn_params[i],
                eqn_ins[i],
                eqn_out[i],
                (eqn_extra.get(i) if eqn_extra else None),
            )
        else:
            params, ins, out, extra = row
        if extra:
            out_extra[len(prim)] = extra
        prim.append(lean.eqn_prim[i])
        out_params.append(params)
        out_ins.append(ins)
        out_out.append(out)
    return Lean(
        lean.name, lean.types, lean.names, lean.params, lean.outs, prim, out_params, out_ins,
        out_out, out_extra,
    )  # fmt: skip


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
