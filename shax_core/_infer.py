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

Inference reads the program's lean form (``lean_of``) and returns a view of a new one: the
same columns but a new ``types`` column (and new parameters where a body was inferred).
"""

from __future__ import annotations

import operator

from shax_core.ir import Lean, Program, ShaxTypeError, Var, VerifyError, from_lean, lean_of
from shax_core.registry import lookup
from shax_core.text import format_eqn


class _Binding:
    """Equation ``i`` as a shape rule reads it: its primitive and parameters; its variables
    (operands with their inferred types, results as annotated) are built only when an error
    message names them."""

    __slots__ = ("prim", "params", "_lean", "_i", "_types")

    def __init__(self, lean: Lean, i: int, params: tuple, types: list):
        self.prim, self.params = lean.eqn_prim[i], params
        self._lean, self._i, self._types = lean, i, types

    def _var(self, v: int, types: list) -> Var:
        return Var(self._lean.names[v], types[v])

    @property
    def ins(self) -> tuple[Var, ...]:
        return tuple(self._var(v, self._types) for v in self._lean.eqn_ins[self._i])

    @property
    def out(self) -> Var:
        return self._var(self._lean.eqn_out[self._i], self._lean.types)

    @property
    def extra_outs(self) -> tuple[Var, ...]:
        extra = self._lean.eqn_extra.get(self._i, ())
        return tuple(self._var(v, self._lean.types) for v in extra)

    @property
    def outs(self) -> tuple[Var, ...]:
        return (self.out, *self.extra_outs)


def infer(program: Program) -> Program:
    """The program with every binding typed, sub-programs (loop bodies, branches) first:
    a loop's shape rule then checks its body's signature against its operands. A program
    whose types shax computed itself (``checked``: traced, or inferred before) is returned
    as it is."""
    if program.checked:
        return program
    try:
        lean = lean_of(program)
    except VerifyError:  # a name used but never bound: the first error, in program order
        raise _first_error(program) from None
    names, annotated = lean.names, lean.types
    for v in lean.params:
        if annotated[v] is None:
            raise ShaxTypeError(f"{program.name}: parameter {names[v]} needs a type annotation")
    types = list(annotated)  # the new column: the input's is never changed
    bound = bytearray(len(types))  # 1 once a variable is bound (scoping of a view's ids)
    for v in lean.params:
        bound[v] = 1
    eqn_params = lean.eqn_params
    for i, ins in enumerate(lean.eqn_ins):
        for v in ins:
            if not bound[v]:
                raise ShaxTypeError(f"{program.name}: {names[v]} is used before it is defined")
        prim_name, params = lean.eqn_prim[i], eqn_params[i]
        if params and any(map(_holds_programs, params)):
            where = (program.name, names[lean.eqn_out[i]], prim_name)
            inferred = tuple(_bodies(value, where) for value in params)
            if not all(map(operator.is_, inferred, params)):
                if eqn_params is lean.eqn_params:
                    eqn_params = list(eqn_params)  # the input's column is never changed
                eqn_params[i] = params = inferred
        prim = lookup(prim_name)
        binding = _Binding(lean, i, params, types)
        results = prim.out_types(binding, [types[v] for v in ins])
        outs = lean.eqn_outs(i)
        if len(results) != len(outs):
            raise ShaxTypeError(
                f"{program.name}: the binding of {names[outs[0]]} names {len(outs)} "
                f"variable(s), but {prim_name} gives {len(results)} result(s)"
            )
        for v, t in zip(outs, results, strict=True):
            if annotated[v] is not None and annotated[v] != t:
                operands = ", ".join(str(types[u]) for u in ins) or "no operands"
                claim = annotated[v] if v == outs[0] else f"{names[v]} :: {annotated[v]}"
                raise ShaxTypeError(
                    f"{program.name}: `{format_eqn(binding)}` is annotated {claim}, "
                    f"but {prim_name} of {operands} gives {t}"
                )
            types[v] = t
            bound[v] = 1
    for v in lean.outs:
        if not bound[v]:
            raise ShaxTypeError(f"{program.name}: output {names[v]} is not defined")
    typed = Lean(
        lean.name, types, names, lean.params, lean.outs, lean.eqn_prim, eqn_params,
        lean.eqn_ins, lean.eqn_out, lean.eqn_extra,
    )  # fmt: skip
    return from_lean(typed, checked=True)


def _holds_programs(value) -> bool:
    return isinstance(value, Program) or (
        isinstance(value, tuple) and bool(value) and isinstance(value[0], Program)
    )


def _bodies(value, where: tuple[str, str, str]):
    """A parameter with its sub-programs inferred (the same object when they all were)."""
    if isinstance(value, Program):
        return _infer_body(value, where)
    if isinstance(value, tuple) and value and isinstance(value[0], Program):
        inferred = tuple(_infer_body(p, where) for p in value)
        return value if all(map(operator.is_, inferred, value)) else inferred
    return value


def _infer_body(body: Program, where: tuple[str, str, str]) -> Program:
    if body.checked:
        return body
    try:
        return infer(body)
    except ShaxTypeError as e:
        program, out, prim = where
        raise ShaxTypeError(
            f"{program}: in the sub-program {body.name} of {out} = {prim}: {e}"
        ) from None


def _first_error(program: Program) -> ShaxTypeError:
    """The error inference meets first in a program naming a variable it never binds: the
    equations before the first such use are inferred (their errors come first), then the
    use (or the output) is named."""
    bound = {p.name for p in program.params}
    for k, e in enumerate(program.eqns):
        for v in e.ins:
            if v.name not in bound:
                infer(Program(program.name, program.params, program.eqns[:k], ()))
                return ShaxTypeError(f"{program.name}: {v.name} is used before it is defined")
        bound.update(v.name for v in e.outs)
    infer(Program(program.name, program.params, program.eqns, ()))
    missing = next(v.name for v in program.outs if v.name not in bound)
    return ShaxTypeError(f"{program.name}: output {missing} is not defined")
