"""Substitution and renaming helpers shared by the passes (not a pass themselves).

The passes read and build ``Lean`` columns (``shax_core.ir``): ``Rows`` collects the
equations a pass keeps or makes, ``substitute`` turns them into the pass's result.
"""

from __future__ import annotations

from collections.abc import Mapping

from shax_core.ir import Eqn, Lean, Program, Var, _map_programs
from shax_core.registry import SUBPROGRAM_KINDS, lookup


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


def substitute(lean: Lean, rows: Rows, subst: Mapping[int, int], types=None, names=None):
    """``lean`` with ``rows`` as its body and every output in ``subst`` replaced (the rows
    read the replacements already); ``types``/``names``: new columns, if the pass added
    variables (else ``lean``'s are shared)."""
    outs = tuple([subst.get(v, v) for v in lean.outs]) if subst else lean.outs
    if types is None:
        types, names = lean.types, lean.names
    return rows.lean(lean.name, types, names, lean.params, outs)


def may_nest(prim: str) -> bool:
    """Whether equations of ``prim`` may hold sub-programs (a parameter of a program kind)."""
    return any(p.kind in SUBPROGRAM_KINDS for p in lookup(prim).params)


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
