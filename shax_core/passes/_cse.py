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
The walk reads the program's ``Lean`` columns: an equation's key holds its operands' variable
ids, and the result shares the program's variable columns.
"""

from __future__ import annotations

from shax_core.ir import Lean, Program, from_lean, lean_of
from shax_core.passes._dce import _may_nest, select
from shax_core.passes.rename import has_subprograms, map_subprograms
from shax_core.registry import lookup


def cse(program: Program) -> Program:
    """CSE within the program and, separately, within each sub-program (bodies are closed)."""
    return cse_bodies(program)[0]


def cse_bodies(program: Program) -> tuple[Program, bool]:
    """``(cse(program), whether a sub-program changed)``.

    Without a changed sub-program, CSE of a program free of dead code is free of dead code:
    a dropped equation read the same operands as the one it reuses, so everything that was
    live stays live."""
    lean = lean_of(program)
    merged, bodies_changed = cse_lean(lean)
    return (program if merged is lean else from_lean(merged)), bodies_changed


def cse_lean(lean: Lean, live: bytearray | None = None) -> tuple[Lean, bool]:
    """``cse_bodies`` on the columns: ``lean`` itself if nothing merged. With ``live``, the
    CSE of the equations ``i`` where ``live[i]`` (of ``dce_lean(lean)``, without building it)."""
    seen: dict[tuple, int] = {}  # by key: the index (in lean) of the first equation with it
    subst: dict[int, int] = {}  # variable id -> the id it equals
    keep = bytearray(b"\x01") * len(lean) if live is None else bytearray(live)
    new_ins: dict[int, tuple] = {}  # equation index -> its operands after substitution
    new_params: dict[int, tuple] = {}  # equation index -> its parameters after CSE of bodies
    bodies_changed = False
    commutative: dict[str, bool] = {}  # by primitive name
    nests: dict[str, bool] = {}  # by primitive name: whether it may have sub-programs
    types, eqn_extra = lean.types, lean.eqn_extra
    rows = zip(lean.eqn_prim, lean.eqn_params, lean.eqn_ins, lean.eqn_out)
    for i, (prim, params, ins, out) in enumerate(rows):
        if live is not None and not live[i]:
            continue
        if subst and not subst.keys().isdisjoint(ins):  # operands replaced by their equals
            ins = new_ins[i] = tuple([subst.get(v, v) for v in ins])
        if params:
            nested = nests.get(prim)
            if nested is None:
                nested = nests[prim] = _may_nest(prim)
            if nested and has_subprograms(params):
                new = map_subprograms(params, cse)
                if new != params:
                    bodies_changed = True
                    params = new_params[i] = new
        swap = commutative.get(prim)
        if swap is None:
            swap = commutative[prim] = "commutative" in lookup(prim).traits
        # the key: primitive, parameters, operand ids (flat: one tuple per equation)
        n_ins = len(ins)
        if swap and n_ins == 2:  # two operands, compared as a set
            a, b = ins
            key = (prim, params, a, b) if a <= b else (prim, params, b, a)
        elif swap:
            key = (prim, params, *sorted(ins))
        elif n_ins == 1:
            key = (prim, params, ins[0])
        elif n_ins == 2:
            key = (prim, params, ins[0], ins[1])
        else:
            key = (prim, params, *ins)
        hit = seen.get(key)
        if hit is not None:
            extra = eqn_extra.get(i) if eqn_extra else None
            outs = (out, *extra) if extra else (out,)
            hit_outs = lean.eqn_outs(hit)
            if all(types[h] == types[v] for h, v in zip(hit_outs, outs, strict=True)):
                for h, v in zip(hit_outs, outs, strict=True):
                    subst[v] = h
                keep[i] = 0
                continue
        seen[key] = i
    if not subst and not bodies_changed:
        if live is None:
            return lean, False
        return select(lean, live), False
    pruned = {i: (p, new_ins.get(i, lean.eqn_ins[i]), lean.eqn_out[i], eqn_extra.get(i))
              for i, p in new_params.items()}  # fmt: skip
    merged = select(lean, keep, pruned, new_ins)
    if subst:
        merged.outs = tuple([subst.get(v, v) for v in merged.outs])
    return merged, bodies_changed
