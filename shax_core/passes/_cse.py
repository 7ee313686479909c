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
from shax_core.passes.rename import Rows, has_subprograms, map_subprograms, substitute
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


def cse_lean(lean: Lean) -> tuple[Lean, bool]:
    """``cse_bodies`` on the columns: ``lean`` itself if nothing merged."""
    seen: dict[tuple, int] = {}  # by key: the index (in lean) of the first equation with it
    subst: dict[int, int] = {}  # variable id -> the id it equals
    rows = Rows()
    add = rows.add
    bodies_changed = False
    commutative: dict[str, bool] = {}  # by primitive name
    types = lean.types
    eqn_prim, eqn_params, eqn_ins, eqn_out = (
        lean.eqn_prim,
        lean.eqn_params,
        lean.eqn_ins,
        lean.eqn_out,
    )
    eqn_extra = lean.eqn_extra
    for i, prim in enumerate(eqn_prim):
        ins = eqn_ins[i]
        if subst:  # operands replaced by the variables they equal
            for v in ins:
                if v in subst:
                    ins = tuple([subst.get(v, v) for v in ins])
                    break
        params = eqn_params[i]
        if params and has_subprograms(params):
            new = map_subprograms(params, cse)
            bodies_changed |= new != params
            params = new
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
        extra = eqn_extra.get(i) if eqn_extra else None
        hit = seen.get(key)
        if hit is not None:
            outs = (eqn_out[i], *extra) if extra else (eqn_out[i],)
            hit_outs = lean.eqn_outs(hit)
            if all(types[h] == types[v] for h, v in zip(hit_outs, outs, strict=True)):
                for h, v in zip(hit_outs, outs, strict=True):
                    subst[v] = h
                continue
        seen[key] = i
        add(prim, params, ins, eqn_out[i], extra)
    if not subst and not bodies_changed:
        return lean, False
    return substitute(lean, rows, subst), bodies_changed
