"""Shape and dtype inference: fill in the type of every binding from the shape rules.

Before (as parsed from the seed's "After tracing" text), and after:

>>> from shax_core.text import parse
>>> print(infer(parse("def f(arg0 :: f32[6]) = let x1 = broadcast [1] [2,6] arg0 in [x1]")))
def f(arg0 :: f32[6]) =
  let x1 :: f32[2, 6] = broadcast [1] [2,6] arg0
  in [x1]

A binding annotated with a type other than the one its rule gives is an error that prints the
equation and both types:

>>> infer(parse("def f(a :: f32[6]) = let x :: f32[6] = broadcast [1] [2,6] a in [x]"))
... # doctest: +ELLIPSIS
Traceback (most recent call last):
...
shax_core.ir.ShaxTypeError: f: `x :: f32[6] = ...` is annotated f32[6], but ... gives f32[2, 6]
"""

from __future__ import annotations

from shax_core.ir import Eqn, Program, ShaxTypeError, Type, Var
from shax_core.registry import lookup
from shax_core.text import format_eqn


def infer(program: Program) -> Program:
    """The program with every binding typed, sub-programs (loop bodies, branches) first:
    a loop's shape rule then checks its body's signature against its operands. A program
    whose types shax computed itself (``checked``: traced, or inferred before) is returned
    as it is."""
    if program.checked:
        return program
    env: dict[str, Var] = {}
    for p in program.params:
        if p.type is None:
            raise ShaxTypeError(f"{program.name}: parameter {p.name} needs a type annotation")
        env[p.name] = p
    eqns = []
    for eqn in program.eqns:
        try:
            ins = tuple(env[v.name] for v in eqn.ins)
        except KeyError as e:
            raise ShaxTypeError(
                f"{program.name}: {e.args[0]} is used before it is defined"
            ) from None
        typed = Eqn(eqn.out, eqn.prim, eqn.params, ins, eqn.extra_outs)
        if eqn.subprograms:
            typed = typed.with_subprograms(lambda body, e=eqn: _infer_body(program, e, body))
        prim = lookup(eqn.prim)
        types: tuple[Type, ...] = prim.out_types(typed, [v.type for v in ins])
        if len(types) != len(eqn.outs):
            raise ShaxTypeError(
                f"{program.name}: the binding of {eqn.out.name} names {len(eqn.outs)} "
                f"variable(s), but {eqn.prim} gives {len(types)} result(s)"
            )
        outs = []
        for v, t in zip(eqn.outs, types, strict=True):
            if v.type is not None and v.type != t:
                operands = ", ".join(str(v.type) for v in ins) or "no operands"
                raise ShaxTypeError(
                    f"{program.name}: `{format_eqn(typed)}` is annotated "
                    f"{v.type if v is eqn.out else f'{v.name} :: {v.type}'}, "
                    f"but {eqn.prim} of {operands} gives {t}"
                )
            out = Var(v.name, t)
            env[out.name] = out
            outs.append(out)
        eqns.append(Eqn(outs[0], eqn.prim, typed.params, ins, tuple(outs[1:])))
    try:
        outs = tuple(env[v.name] for v in program.outs)
    except KeyError as e:
        raise ShaxTypeError(f"{program.name}: output {e.args[0]} is not defined") from None
    return Program(program.name, program.params, tuple(eqns), outs, checked=True)


def _infer_body(program: Program, eqn: Eqn, body: Program) -> Program:
    if body.checked:
        return body
    try:
        return infer(body)
    except ShaxTypeError as e:
        raise ShaxTypeError(
            f"{program.name}: in the sub-program {body.name} of {eqn.out.name} = {eqn.prim}: {e}"
        ) from None
