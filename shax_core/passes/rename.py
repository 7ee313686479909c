"""Substitution and renaming helpers shared by the passes (not a pass themselves)."""

from __future__ import annotations

from collections.abc import Mapping

from shax_core.ir import Eqn, Program, Var


def substitute(program: Program, eqns, subst: Mapping[str, Var]) -> Program:
    """``program`` with ``eqns`` as its body and every use of a name in ``subst`` replaced."""
    outs = tuple(subst.get(v.name, v) for v in program.outs)
    return program.replace(eqns=tuple(eqns), outs=outs)


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
