"""Substitution and renaming helpers shared by the passes (not a pass themselves)."""

from __future__ import annotations

from collections.abc import Mapping

from shax_core.ir import Eqn, Program, Var


def substitute(program: Program, eqns, subst: Mapping[str, Var]) -> Program:
    """``program`` with ``eqns`` as its body and every use of a name in ``subst`` replaced."""
    outs = tuple(subst.get(v.name, v) for v in program.outs)
    return program.replace(eqns=tuple(eqns), outs=outs)


def rewrite_ins(eqn: Eqn, subst: Mapping[str, Var]) -> Eqn:
    if not subst or not any(v.name in subst for v in eqn.ins):
        return eqn
    return Eqn(eqn.out, eqn.prim, eqn.params, tuple(subst.get(v.name, v) for v in eqn.ins))


def canonical_names(program: Program, param_prefix: str = "arg", var_prefix: str = "x") -> Program:
    """Rename parameters ``arg0..`` and bindings ``x0..`` in order of definition."""
    subst: dict[str, Var] = {}
    params = []
    for i, p in enumerate(program.params):
        subst[p.name] = Var(f"{param_prefix}{i}", p.type)
        params.append(subst[p.name])
    eqns = []
    for i, e in enumerate(program.eqns):
        out = Var(f"{var_prefix}{i}", e.out.type)
        eqns.append(Eqn(out, e.prim, e.params, tuple(subst[v.name] for v in e.ins)))
        subst[e.out.name] = out
    return Program(
        program.name, tuple(params), tuple(eqns), tuple(subst[v.name] for v in program.outs)
    )
