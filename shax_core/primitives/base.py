"""The primitive registry: what a primitive is, and the rule constructors that declare one.

Each primitive is declared once (in a family module next to this one) with everything the
pipeline needs: its text spelling and parameter spec, its shape rule, its NumPy impl, its
linearize rule and/or transpose rule, and traits that generic passes read. The constructors
derive rules from structure, the way JAX's ``defjvp``/``deflinear2``/``defbilinear`` do:

- ``defjvp(p, dx, dy)``: one rule per input, ``rule(t, *primals, ans=...) -> contribution``;
  the tangent is the sum of the contributions of the non-zero input tangents.
- ``deflinear(p, transpose)``: the tangent is ``p`` applied to the tangents.
- ``defbilinear(p, lhs_t, rhs_t)``: ``p(ẋ, y) + p(x, ẏ)``; transpose in whichever operand is linear.
- ``defzero(p)``: no tangent (comparisons, ``sign``, bool outputs).

Rules are written with ``shax_core.ops``, so they read like the math and build IR when the
linearizer or transposer runs them on tracers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shax_core.ir import ShaxError, ShaxTypeError, Type

PARAM_KINDS = frozenset(
    {
        "int",
        "ints",
        "pairs",
        "scalar",
        "dtype",
        "literals",
        "hidden_dtype",
        "word",
        "program",
        "programs",
    }
)


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a primitive, e.g. ``Param("dims", "ints")`` printed ``[1, 0]``.

    kinds: ``int`` ``1``; ``ints`` ``[1,2]``; ``pairs`` ``[(1,0),(0,0)]``; ``scalar`` ``0.0``;
    ``dtype`` ``f32``; ``literals`` ``[1.0, 2.0]`` (the data of a constant); ``hidden_dtype`` is not
    printed among the parameters: it is the dtype of the binding's annotation; ``word`` a bare
    identifier (``save``); ``program`` a closed sub-program, printed inline as
    ``{def body(...) = let ... in [...]}``; ``programs`` a list of them ``[{def ...}, {def ...}]``.
    """

    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class Zero:
    """A symbolic zero tangent or cotangent: only its type, no array and no equation."""

    type: Type


@dataclass(frozen=True, slots=True)
class Linear:
    """Marks an input of a linear equation being transposed (JAX's UndefinedPrimal)."""

    type: Type


def is_linear(x) -> bool:
    return isinstance(x, Linear)


class RuleError(ShaxError):
    """A rule cannot apply (non-linear use of a tangent, missing rule, ...)."""


@dataclass(eq=False)
class Primitive:
    name: str
    params: tuple[Param, ...]
    arity: int | None  # None: variadic (concatenate)
    shape_rule: Callable[..., Type]
    impl: Callable[..., Any]
    traits: frozenset[str] = frozenset()
    # (primals, tangents, **params) -> (primal_out, tangent_out | Zero)
    linearize: Callable | None = None
    # (cotangent, *inputs (values or Linear), **params) -> [cotangent | None per input]
    transpose: Callable | None = None
    no_tangent: bool = False
    # the shape rule returns a tuple of Types and the equation binds one variable per result
    multiple_results: bool = False
    # (eqn, known) -> an equal existing Var, a cheaper Eqn, or None (see passes/simplify.py)
    simplify: Callable | None = None
    # (in_types, out_type, **params) -> fn(*arrays): impl specialized once at plan time
    kernel: Callable | None = None
    doc: str = ""
    extra: dict = field(default_factory=dict)

    def kwargs(self, params: Sequence[Any]) -> dict[str, Any]:
        if not params:
            return {}
        return {p.name: v for p, v in zip(self.params, params, strict=True)}

    def out_types(self, eqn, in_types: Sequence[Type | None]) -> tuple[Type, ...]:
        """The result types of an equation, one per bound variable."""
        t = self.out_type(eqn, in_types)
        return t if self.multiple_results else (t,)

    def out_type(self, eqn, in_types: Sequence[Type | None]) -> Type:
        """The shape rule applied to an equation; errors name the equation and the types."""
        if self.arity is not None and len(in_types) != self.arity:
            where, n = _describe(eqn, in_types), len(in_types)
            raise ShaxTypeError(f"{where}: {self.name} takes {self.arity} inputs, got {n}")
        if None in in_types:
            raise ShaxTypeError(f"{_describe(eqn, in_types)}: an input has no type")
        try:
            return self.shape_rule(*in_types, **self.kwargs(eqn.params))
        except ShaxTypeError as e:
            raise ShaxTypeError(f"{_describe(eqn, in_types)}: {e}") from None
        except (ValueError, TypeError, IndexError) as e:
            raise ShaxTypeError(f"{_describe(eqn, in_types)}: bad parameters ({e})") from None

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"


def _describe(eqn, in_types) -> str:
    from shax_core.text import format_params

    args = " ".join(
        f"{v.name}:{t}" if t is not None else v.name
        for v, t in zip(eqn.ins, in_types, strict=False)
    )
    prim = REGISTRY.get(eqn.prim)
    ps = format_params(eqn.prim, eqn.params) if prim and not prim.extra.get("long") else ""
    lhs = ", ".join(v.name for v in eqn.outs)
    return f"in `{lhs} = {eqn.prim}{' ' + ps if ps else ''} {args}`"


REGISTRY: dict[str, Primitive] = {}

# The program transformations, for rules of primitives with sub-programs (a loop's linearize
# rule linearizes its body). The modules that define them (linearize, transpose, evaluate)
# sit above the registry and fill this table when imported, so imports stay one-way:
#   "linearize": (program, wrt, policy) -> (primal, linear)   (program typed by shax)
#   "transpose": (linear, num_linear) -> transposed
#   "compile":   (program) -> callable on arrays returning a list of arrays
TRANSFORMS: dict[str, Callable] = {}


def transform(name: str) -> Callable:
    try:
        return TRANSFORMS[name]
    except KeyError:
        raise ShaxError(f"the {name} transformation is not loaded (import shax_core)") from None


def lookup(name: str) -> Primitive:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ShaxError(f"unknown primitive {name!r}") from None


def define(
    name: str,
    *,
    arity: int | None,
    shape: Callable[..., Type],
    impl: Callable[..., Any],
    params: Sequence[tuple[str, str]] = (),
    traits: Sequence[str] = (),
    doc: str = "",
    multiple_results: bool = False,
) -> Primitive:
    for _, kind in params:
        assert kind in PARAM_KINDS, kind
    prim = Primitive(
        name=name,
        params=tuple(Param(n, k) for n, k in params),
        arity=arity,
        shape_rule=shape,
        impl=impl,
        traits=frozenset(traits),
        doc=doc,
        multiple_results=multiple_results,
    )
    assert name not in REGISTRY, f"primitive {name} declared twice"
    REGISTRY[name] = prim
    return prim


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

    return rule


def involution(eqn, known):
    """``f (f x) == x`` (``negate``)."""
    inner = known.eqn(eqn.ins[0])
    return inner.ins[0] if inner is not None and inner.prim == eqn.prim else None


# ---------------------------------------------------------------------------------------------
# Rule constructors


def defjvp(prim: Primitive, *rules: Callable | None) -> None:
    """Per-input derivative rules: ``rule(t, *primals, ans=ans, **params)``.

    ``None`` marks an input with no tangent (e.g. ``select``'s predicate).
    """
    from shax_core import ops

    def linearize(primals, tangents, **params):
        ans = ops.bind(prim.name, *primals, **params)
        total = None
        for rule, t in zip(rules, tangents, strict=True):
            if rule is None or isinstance(t, Zero):
                continue
            term = rule(t, *primals, ans=ans, **params)
            total = term if total is None else ops.add(total, term)
        return ans, total if total is not None else Zero(ops.type_of(ans))

    prim.linearize = linearize


def deflinear(prim: Primitive, transpose: Callable) -> None:
    """A primitive linear in all its (float) inputs: its tangent is itself applied to tangents."""
    from shax_core import ops

    def linearize(primals, tangents, **params):
        ans = ops.bind(prim.name, *primals, **params)
        if all(isinstance(t, Zero) for t in tangents):
            return ans, Zero(ops.type_of(ans))
        ts = [ops.instantiate(t, anchor=tangents) for t in tangents]
        return ans, ops.bind(prim.name, *ts, **params)

    prim.linearize = linearize
    prim.transpose = transpose
    prim.traits = prim.traits | {"linear"}


def defbilinear(prim: Primitive, lhs_transpose: Callable, rhs_transpose: Callable) -> None:
    """``p(x, y)`` linear in each operand: tangent ``p(ẋ, y) + p(x, ẏ)``.

    ``lhs_transpose(ct, y, **params)`` is the cotangent of x when x is the linear operand,
    ``rhs_transpose(ct, x, **params)`` that of y. Both operands linear is a non-linear use.
    """
    from shax_core import ops

    def linearize(primals, tangents, **params):
        x, y = primals
        tx, ty = tangents
        ans = ops.bind(prim.name, x, y, **params)
        terms = []
        if not isinstance(tx, Zero):
            terms.append(ops.bind(prim.name, tx, y, **params))
        if not isinstance(ty, Zero):
            terms.append(ops.bind(prim.name, x, ty, **params))
        if not terms:
            return ans, Zero(ops.type_of(ans))
        return ans, terms[0] if len(terms) == 1 else ops.add(terms[0], terms[1])

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
    prim.traits = prim.traits | {"bilinear"}


def defzero(prim: Primitive) -> None:
    """No tangent flows through this primitive (bool results, piecewise-constant functions)."""
    from shax_core import ops

    def linearize(primals, tangents, **params):
        ans = ops.bind(prim.name, *primals, **params)
        return ans, Zero(ops.type_of(ans))

    prim.linearize = linearize
    prim.no_tangent = True
