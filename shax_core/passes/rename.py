"""Substitution and renaming helpers shared by the passes (not a pass themselves).

The passes read and build ``Lean`` columns (``shax_core.ir``): ``Rows`` collects the
equations a pass makes; a pass that only drops equations takes the kept ones with
``select``.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress

from shax_core.ir import Eqn, Lean, Program, Var, _map_programs
from shax_core.registry import SUBPROGRAM_KINDS, Primitive, derived


class Rows:
    """Equation columns being built: equation ``i`` binds ``out[i]`` (then ``extra[i]``) to
    ``prim[i][params[i]] ins[i]``, every variable an id into the columns of its ``Lean``."""

    __slots__ = ("prim", "params", "ins", "out", "extra")

    def __init__(self):
        self.prim: list[str] = []
        self.params: list[tuple] = []
        self.ins: list[tuple[int, ...]] = []
        self.out: list[int] = []
        self.extra: dict[int, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.prim)

    def add(self, prim: str, params: tuple, ins: tuple, out: int, extra=None) -> None:
        if extra:
            self.extra[len(self.prim)] = extra
        self.prim.append(prim)
        self.params.append(params)
        self.ins.append(ins)
        self.out.append(out)

    def lean(self, name: str, types: list, names: list, params: tuple, outs: tuple) -> Lean:
        return Lean(
            name, types, names, params, outs, self.prim, self.params, self.ins, self.out,
            self.extra,
        )  # fmt: skip


def select(lean: Lean, keep: bytearray, pruned=None, ins=None) -> Lean:
    """``lean`` with the equations ``i`` where ``keep[i]`` (in order), ``pruned[i]`` the new
    ``(params, ins, out, extra)`` of equation ``i``, ``ins[i]`` its new operands; same
    variable columns (the kept columns are taken in C: ``itertools.compress``)."""
    eqn_ins = lean.eqn_ins
    if ins or pruned:
        eqn_ins = list(eqn_ins)
        for i, new in (ins or {}).items():
            eqn_ins[i] = new
    eqn_params, eqn_out = lean.eqn_params, lean.eqn_out
    extra = {}
    if pruned:
        eqn_params, eqn_out = list(eqn_params), list(eqn_out)
        for i, (params, new_ins, out, new_extra) in pruned.items():
            eqn_params[i], eqn_ins[i], eqn_out[i] = params, new_ins, out
            if new_extra:
                extra[i] = new_extra
    for i, e in lean.eqn_extra.items():
        if keep[i] and not (pruned and i in pruned):
            extra[i] = e
    if extra:  # re-indexed: the number of kept equations before each
        extra = {keep[:i].count(1): e for i, e in sorted(extra.items())}
    return Lean(
        lean.name,
        lean.types,
        lean.names,
        lean.params,
        lean.outs,
        list(compress(lean.eqn_prim, keep)),
        list(compress(eqn_params, keep)),
        list(compress(eqn_ins, keep)),
        list(compress(eqn_out, keep)),
        extra,
    )


@derived
def may_nest(prim: Primitive) -> bool:
    """Whether equations of ``prim`` (by name) may hold sub-programs (a parameter of a program
    kind)."""
    return any(p.kind in SUBPROGRAM_KINDS for p in prim.params)


def map_subprograms(params: tuple, fn) -> tuple:
    """``params`` with every sub-program ``p`` replaced by ``fn(p)``."""
    return tuple([_map_programs(v, fn) for v in params])


def rewrite_ins(eqn: Eqn, subst: Mapping[str, Var]) -> Eqn:
    if not subst:
        return eqn
    for v in eqn.ins:
        if v.name in subst:
            break
    else:
        return eqn
    ins = tuple([subst.get(v.name, v) for v in eqn.ins])
    return Eqn(eqn.out, eqn.prim, eqn.params, ins, eqn.extra_outs)


def canonical_names(
    program: Program,
    param_prefix: str = "arg",
    var_prefix: str = "x",
    body_name: str | None = None,
) -> Program:
    """Rename parameters ``arg0..`` and bindings ``x0..`` in order of definition, and the
    same inside every sub-program (each is its own scope); with ``body_name``, sub-programs
    are renamed to it too (so names never split a content hash)."""
    subst: dict[str, Var] = {}
    params = []
    for i, p in enumerate(program.params):
        subst[p.name] = Var(f"{param_prefix}{i}", p.type)
        params.append(subst[p.name])
    eqns = []
    count = 0
    for e in program.eqns:
        outs = []
        for v in e.outs:
            outs.append(Var(f"{var_prefix}{count}", v.type))
            count += 1
        e = e.with_subprograms(
            lambda b: canonical_names(b, param_prefix, var_prefix, body_name).replace(
                name=body_name or b.name
            )
        )
        ins = tuple(subst[v.name] for v in e.ins)
        eqns.append(Eqn(outs[0], e.prim, e.params, ins, tuple(outs[1:])))
        for old, new in zip(e.outs, outs, strict=True):
            subst[old.name] = new
    return Program(
        program.name, tuple(params), tuple(eqns), tuple(subst[v.name] for v in program.outs)
    )
