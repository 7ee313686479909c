"""The rule constructors that declare a primitive's derivatives and simplifications.

Each primitive is declared once (in a family module next to this one) with everything the
pipeline needs: ``define`` (``shax_core.registry``) records its text spelling and parameter
spec, its shape rule, its NumPy impl and its traits; the constructors here add its linearize
and/or transpose rule. They
derive rules from structure, the way JAX's ``defjvp``/``deflinear2``/``defbilinear`` do:

- ``defjvp(p, dx, dy)``: one rule per input, ``rule(t, *primals, ans=...) -> contribution``;
  the tangent is the sum of the contributions of the non-zero input tangents.
- ``deflinear(p, transpose)``: the tangent is ``p`` applied to the tangents.
- ``defbilinear(p, lhs_t, rhs_t)``: ``p(ẋ, y) + p(x, ẏ)``; transpose in whichever operand is linear.
- ``defzero(p)``: no tangent (comparisons, ``sign``, bool outputs).

Rules are written with ``shax_core.core``, so they read like the math and build IR when the
linearizer or transposer runs them on tracers.
"""

from __future__ import annotations

from collections.abc import Callable

from shax_core import core
from shax_core.registry import (
    REGISTRY,
    Linear,
    Param,
    Primitive,
    RuleError,
    Zero,
    define,
    is_linear,
    lookup,
)

__all__ = [
    "REGISTRY",
    "Linear",
    "Param",
    "Primitive",
    "RuleError",
    "Zero",
    "defbilinear",
    "define",
    "defjvp",
    "deflinear",
    "defzero",
    "identity_operand",
    "involution",
    "is_linear",
    "lookup",
]


# ---------------------------------------------------------------------------------------------
# Simplification rule constructors


def identity_operand(value: float, side: str = "both") -> Callable:
    """``x op c == x`` when the constant c equals ``value`` (``x + 0``, ``x * 1``, ``x / 1``)."""

    def rule(eqn, known):
        x, y = eqn.ins
        if side in ("both", "right") and known.scalar(y) == value and x.type == eqn.out.type:
            return x
        if side in ("both", "left") and known.scalar(x) == value and y.type == eqn.out.type:
            return y
        return None

    # the rule answers None unless ``known.scalar`` of an operand is known (the simplifier
    # skips it for equations without a possibly constant operand)
    rule.needs_splat_operand = True
    return rule


def involution(eqn, known):
    """``f (f x) == x`` (``negate``)."""
    inner = known.eqn(eqn.ins[0])
    return inner.ins[0] if inner is not None and inner.prim == eqn.prim else None


# the rule answers None unless an operand is made by the same primitive (the simplifier skips
# it otherwise)
involution.needs_same_primitive_operand = True


# ---------------------------------------------------------------------------------------------
# Rule constructors


def defjvp(prim: Primitive, *rules: Callable | None) -> None:
    """Per-input derivative rules: ``rule(t, *primals, ans=ans, **params)``.

    ``None`` marks an input with no tangent (e.g. ``select``'s predicate).
    """

    def linearize(primals, tangents, **params):
        ans = core.bind(prim.name, *primals, **params)
        total = None
        for rule, t in zip(rules, tangents, strict=True):
            if rule is None or isinstance(t, Zero):
                continue
            term = rule(t, *primals, ans=ans, **params)
            total = term if total is None else core.add(total, term)
        return ans, total if total is not None else Zero(core.type_of(ans))

    prim.linearize = linearize


def deflinear(prim: Primitive, transpose: Callable) -> None:
    """A primitive linear in all its (float) inputs: its tangent is itself applied to tangents."""

    def linearize(primals, tangents, **params):
        ans = core.bind(prim.name, *primals, **params)
        if all(isinstance(t, Zero) for t in tangents):
            return ans, Zero(core.type_of(ans))
        ts = [core.instantiate(t, anchor=tangents) for t in tangents]
        return ans, core.bind(prim.name, *ts, **params)

    prim.linearize = linearize
    prim.transpose = transpose


def defbilinear(prim: Primitive, lhs_transpose: Callable, rhs_transpose: Callable) -> None:
    """``p(x, y)`` linear in each operand: tangent ``p(ẋ, y) + p(x, ẏ)``.

    ``lhs_transpose(ct, y, **params)`` is the cotangent of x when x is the linear operand,
    ``rhs_transpose(ct, x, **params)`` that of y. Both operands linear is a non-linear use.
    """

    def linearize(primals, tangents, **params):
        x, y = primals
        tx, ty = tangents
        ans = core.bind(prim.name, x, y, **params)
        terms = []
        if not isinstance(tx, Zero):
            terms.append(core.bind(prim.name, tx, y, **params))
        if not isinstance(ty, Zero):
            terms.append(core.bind(prim.name, x, ty, **params))
        if not terms:
            return ans, Zero(core.type_of(ans))
        return ans, terms[0] if len(terms) == 1 else core.add(terms[0], terms[1])

    def transpose(ct, x, y, **params):
        if is_linear(x) and is_linear(y):
            raise RuleError(f"{prim.name} of two tangents is not linear")
        if is_linear(x):
            return [lhs_transpose(ct, y, x_type=x.type, **params), None]
        if is_linear(y):
            return [None, rhs_transpose(ct, x, y_type=y.type, **params)]
        return [None, None]

    prim.linearize = linearize
    prim.transpose = transpose


def defzero(prim: Primitive) -> None:
    """No tangent flows through this primitive (bool results, piecewise-constant functions)."""

    def linearize(primals, tangents, **params):
        ans = core.bind(prim.name, *primals, **params)
        return ans, Zero(core.type_of(ans))

    prim.linearize = linearize
    prim.no_tangent = True
