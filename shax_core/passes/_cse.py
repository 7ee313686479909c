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

from itertools import compress, islice

from shax_core.ir import Lean, Program, exact_key, from_lean, has_subprograms, lean_of
from shax_core.passes.rename import map_subprograms, may_nest, select
from shax_core.registry import Primitive, derived


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


WIDTH = 1 << 32  # the key of operands (a, b) is a * WIDTH + b; of one operand a, -1 - a


class Keys:
    """The CSE keys of a program's first ``count`` equations, no two of them equal, made
    while the program was built (``tables``: by primitive, as ``cse_lean`` keeps them)."""

    __slots__ = ("tables", "count")

    def __init__(self):
        self.tables: dict[str, tuple] = {}
        self.count = 0


def cse_lean(
    lean: Lean, live: bytearray | None = None, keys: Keys | None = None
) -> tuple[Lean, bool]:
    """``cse_bodies`` on the columns: ``lean`` itself if nothing merged. With ``live``, the
    CSE of the equations ``i`` where ``live[i]`` (of ``dce_lean(lean)``, without building it).
    With ``keys``, the walk starts after the equations they hold (a dead one among them is
    no match).

    The key of an equation is its primitive, parameters and operand ids; it is looked up in
    a table per primitive, and without parameters an equation's one or two operand ids make
    an integer key (no tuple is built for most equations)."""
    subst: dict[int, int] = {}  # variable id -> the id it equals
    n = len(lean)
    keep = bytearray(b"\x01") * n if live is None else bytearray(live)
    new_ins: dict[int, tuple] = {}  # equation index -> its operands after substitution
    new_params: dict[int, tuple] = {}  # equation index -> its parameters after CSE of bodies
    bodies_changed = False
    # by primitive name: (commutative, may have sub-programs, {integer key: index of the
    # first equation with it}, {tuple key: index})
    tables: dict[str, tuple] = {} if keys is None else keys.tables
    start = 0 if keys is None else keys.count
    types, eqn_extra = lean.types, lean.eqn_extra
    eqn_prim, eqn_params, eqn_ins, eqn_out = (
        lean.eqn_prim,
        lean.eqn_params,
        lean.eqn_ins,
        lean.eqn_out,
    )
    width = WIDTH
    rows = zip(range(n), eqn_prim, eqn_params, eqn_ins)
    if start:
        rows = islice(rows, start, None)
        live_rows = None if live is None else islice(live, start, None)
    else:
        live_rows = live
    for i, prim, params, ins in rows if live is None else compress(rows, live_rows):
        table = tables.get(prim)
        if table is None:
            table = tables[prim] = key_table(prim)
        swap, nests, by_ins, by_key = table
        n_ins = len(ins)
        if n_ins == 2 and not params:  # most equations: the key is an integer
            a, b = ins
            if subst and (a in subst or b in subst):  # operands replaced by their equals
                a, b = ins = new_ins[i] = (subst.get(a, a), subst.get(b, b))
            key, seen = (b * width + a if swap and b < a else a * width + b), by_ins
        elif n_ins == 1 and not params:
            a = ins[0]
            if subst and a in subst:
                a = subst[a]
                ins = new_ins[i] = (a,)
            key, seen = -1 - a, by_ins
        else:
            if subst and not subst.keys().isdisjoint(ins):
                ins = new_ins[i] = tuple([subst.get(v, v) for v in ins])
            if params and nests and has_subprograms(params):
                new = map_subprograms(params, cse)
                if new != params:
                    bodies_changed = True
                    params = new_params[i] = new
            # commutative operands compared as a set; parameters exactly (-0.0 is not 0.0)
            key, seen = (exact_key(params), *(sorted(ins) if swap else ins)), by_key
        hit = seen.setdefault(key, i)
        if hit != i:
            if hit < start and live is not None and not live[hit]:  # dead: no match
                seen[key] = i
                continue
            if not eqn_extra or (i not in eqn_extra and hit not in eqn_extra):  # one result
                h, v = eqn_out[hit], eqn_out[i]
                if types[h] == types[v]:
                    subst[v] = h
                    keep[i] = 0
                    continue
            else:
                extra = eqn_extra.get(i)
                outs = (eqn_out[i], *extra) if extra else (eqn_out[i],)
                hit_outs = lean.eqn_outs(hit)
                if all(types[h] == types[v] for h, v in zip(hit_outs, outs, strict=True)):
                    for h, v in zip(hit_outs, outs, strict=True):
                        subst[v] = h
                    keep[i] = 0
                    continue
            seen[key] = i  # a later equal equation reuses this one
    if not subst and not bodies_changed:
        if live is None:
            return lean, False
        return select(lean, live), False
    pruned = {i: (p, new_ins.get(i, eqn_ins[i]), eqn_out[i], eqn_extra.get(i))
              for i, p in new_params.items()}  # fmt: skip
    merged = select(lean, keep, pruned, new_ins)
    if subst:
        merged.outs = tuple([subst.get(v, v) for v in merged.outs])
    return merged, bodies_changed


def key_table(prim: str) -> tuple:
    """The key tables of ``prim``: (commutative, may have sub-programs, {integer key: first
    equation}, {tuple key: first equation})."""
    return (*_kind(prim), {}, {})


@derived
def _kind(prim: Primitive) -> tuple[bool, bool]:
    """(commutative, may have sub-programs)."""
    return "commutative" in prim.traits, may_nest(prim.name)
