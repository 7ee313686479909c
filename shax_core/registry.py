"""The registry's data: what a primitive is, its parameter kinds, its traits, and the table.

This module sits just above ``ir`` and imports nothing else from shax_core, so every layer
(bind, the rules, the passes, the front ends) can read it. The primitives themselves are
declared in ``shax_core.primitives`` (one block per primitive, grouped by family), with the
rule constructors of ``shax_core.primitives.base``.

Declaring a primitive::

    sin = define("sin", arity=1, shape=float_unary, impl=np.sin,
                 traits=["elementwise", "out_buffer"])
    defjvp(sin, lambda t, x, ans: t * cos(x))

``params`` is an ordered list of ``(name, kind)`` with a kind from ``PARAM_KINDS`` (it says how
the parameter is printed, parsed and put in a JSON graph); ``traits`` names entries of
``TRAITS``: claim a trait only if its law holds for every input (``tests/test_traits.py``
checks every claimed law on random inputs), and ``define`` refuses a trait not in the table.

>>> sorted(TRAITS)
['commutative', 'constant', 'elementwise', 'fresh', 'layout', 'out_buffer', 'preserves_splat']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shax_core.ir import (
    DTYPES,
    INT_DTYPES,
    ShaxError,
    ShaxTypeError,
    Type,
    canonical_float,
    decode_float,
    encode_float,
)
from shax_core.ir import format_float as _format_float

# ---------------------------------------------------------------------------------------------
# traits: what a generic pass may assume about a primitive, each with its law


@dataclass(frozen=True, slots=True)
class Trait:
    name: str
    law: str  # what every primitive claiming the trait promises, for all inputs
    relied_on_by: tuple[str, ...]  # the passes that read the trait


TRAITS: dict[str, Trait] = {
    t.name: t
    for t in [
        Trait(
            "elementwise",
            "operands and result have one shape and out[i] = f(x[i], y[i], ...) at every "
            "position i; so f(splat a, splat b) = splat f(a, b), and f over a slice of the "
            "leading axis is the slice of f",
            ("passes.simplify (splat folding)", "remat (cheap to recompute)", "evaluate"),
        ),
        Trait(
            "preserves_splat",
            "one operand, and every output element is a copy of an operand element: "
            "f(splat c) = splat c (pad does not: it adds its value around the operand)",
            ("passes.simplify (Known.scalar)",),
        ),
        Trait(
            "layout",
            "no arithmetic: every output element is a copy of an operand element or a "
            "parameter constant, so computing it costs O(output size)",
            ("remat (cheap to recompute)",),
        ),
        Trait(
            "constant",
            "no operands; impl(**params) is the same array every time",
            ("passes.simplify (folding)", "remat", "evaluate (computed at compile time)"),
        ),
        Trait(
            "commutative",
            "two operands and f(x, y) = f(y, x)",
            ("passes.cse (operands compared as a set)",),
        ),
        Trait(
            "out_buffer",
            "impl(*xs, out=b) writes f(*xs) into b (an array of the result's type) and "
            "returns b, also when b is one of xs of the result's type; without out= the "
            "result is a fresh array, never a view of an operand",
            ("evaluate (in-place steps, chunks on several cores, buffer aliasing)",),
        ),
        Trait(
            "fresh",
            "impl(*xs) and the compiled kernel's call each return a new array every time: it "
            "shares memory with no operand and with no earlier result, and it is writeable",
            ("evaluate (outputs handed over without a copy, in-place steps into it)",),
        ),
    ]
}

# ---------------------------------------------------------------------------------------------
# parameter kinds: one table for the printer, the parser and the JSON graph


class ParamError(ShaxError):
    """A parameter value read from JSON is malformed; ``where`` names the field."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def json_int(where: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or abs(v) > 2**62:
        raise ParamError(where, f"expected an integer, got {v!r}")
    return v


def json_list(where: str, v: Any) -> list:
    if not isinstance(v, list):
        raise ParamError(where, f"expected a list, got {type(v).__name__}")
    return v


def _json_float(where: str, v: Any) -> float:
    try:
        return decode_float(v)
    except ValueError as e:
        raise ParamError(where, str(e)) from None


def _json_pair(where: str, p: Any) -> tuple[int, int]:
    if not isinstance(p, list) or len(p) != 2:
        raise ParamError(where, f"expected a [low, high] pair, got {p!r}")
    return (json_int(f"{where}[0]", p[0]), json_int(f"{where}[1]", p[1]))


def _json_dtype(where: str, v: Any) -> str:
    if not isinstance(v, str) or v not in DTYPES:
        raise ParamError(where, f"expected one of {', '.join(DTYPES)}, got {v!r}")
    return v


def _json_literal(where: str, v: Any):
    if isinstance(v, bool) or (isinstance(v, int) and abs(v) < 2**63):
        return v  # bools, and the integers of i32/i64 constants (exact, never via float)
    return _json_float(where, v)


def _json_word(where: str, v: Any) -> str:
    if not isinstance(v, str) or not v.isidentifier():
        raise ParamError(where, f"expected a word, got {v!r}")
    return v


# Sub-programs (loop bodies, branches) are Programs: printed with ``str(program)`` (the
# printer ``text`` installs in ``ir``) and converted to and from JSON by the graph module, which
# sits above the registry and fills this table when imported ("to_json": Program -> dict,
# "from_json": (where, value) -> Program, raising ParamError naming the field).
SUBPROGRAM_JSON: dict[str, Callable] = {}


def _block_text(program, _dtype=None) -> str:
    """``{``, the sub-program indented by 4, ``}``; the printer indents the lines after the first
    past the binding they are in."""
    return "{\n    " + str(program).replace("\n", "\n    ") + "\n  }"


def _blocks_text(programs, _dtype=None) -> str:
    return "[" + ", ".join(_block_text(p) for p in programs) + "]"


def _program_to_json(program):
    return SUBPROGRAM_JSON["to_json"](program)


def _program_from_json(where: str, v: Any):
    return SUBPROGRAM_JSON["from_json"](where, v)


def _programs_from_json(where: str, v: Any) -> tuple:
    items = json_list(where, v)
    if not items:
        raise ParamError(where, "expected at least one sub-program")
    return tuple(_program_from_json(f"{where}[{i}]", x) for i, x in enumerate(items))


def _text_literals(value, dtype: str) -> str:
    if dtype == "bool":
        return "[" + ",".join("true" if v else "false" for v in value) + "]"
    if dtype in INT_DTYPES:
        return "[" + ",".join(str(int(v)) for v in value) + "]"
    return "[" + ",".join(_format_float(v, dtype) for v in value) + "]"


@dataclass(frozen=True, slots=True)
class ParamKind:
    """How one kind of parameter is spelled in IR text and in a JSON graph.

    ``text(value, dtype)`` prints it (None: not printed); ``parse(parser)`` reads it with the
    text parser's grammar (``parser.integer()``, ``.number()``, ``.dim_list(item)``,
    ``.pair()``, ``.literal()``, ``.dtype()``); ``to_json``/``from_json(where, value)`` convert
    it for the graph (``from_json`` raises ParamError naming the field). A ``hidden`` kind is
    the dtype of the binding's annotation (JSON: the equation's ``dtype``)."""

    name: str
    example: str
    text: Callable[[Any, str], str | None]
    parse: Callable[[Any], Any] | None
    to_json: Callable[[Any], Any]
    from_json: Callable[[str, Any], Any]
    hidden: bool = False


PARAM_KINDS: dict[str, ParamKind] = {
    k.name: k
    for k in [
        ParamKind("int", "1", lambda v, _: str(v), lambda p: p.integer(), int, json_int),
        ParamKind(
            "ints",
            "[1,2]",
            lambda v, _: "[" + ",".join(map(str, v)) + "]",
            lambda p: p.dim_list(p.integer),
            list,
            lambda w, v: tuple(json_int(f"{w}[{i}]", x) for i, x in enumerate(json_list(w, v))),
        ),
        ParamKind(
            "pairs",
            "[(1,0),(0,0)]",
            lambda v, _: "[" + ",".join(f"({lo},{hi})" for lo, hi in v) + "]",
            lambda p: p.dim_list(p.pair),
            lambda v: [list(x) for x in v],
            lambda w, v: tuple(_json_pair(f"{w}[{i}]", x) for i, x in enumerate(json_list(w, v))),
        ),
        ParamKind(
            "scalar",
            "0.0",
            lambda v, _: _format_float(v),
            lambda p: p.number(),
            lambda v: encode_float(float(v)),
            _json_float,
        ),
        ParamKind("dtype", "f32", lambda v, _: v, lambda p: p.dtype(), str, _json_dtype),
        ParamKind(
            "literals",
            "[1.0, 2.0]",
            _text_literals,
            lambda p: p.dim_list(p.literal),
            lambda v: [x if isinstance(x, bool | int) else encode_float(float(x)) for x in v],
            lambda w, v: tuple(
                _json_literal(f"{w}[{i}]", x) for i, x in enumerate(json_list(w, v))
            ),
        ),
        ParamKind("hidden_dtype", "", lambda v, _: None, None, str, _json_dtype, hidden=True),
        ParamKind(
            "word",
            "save",
            lambda v, _: v,
            lambda p: p.take("name", expected="a word").text,
            str,
            _json_word,
        ),
        # sub-programs (loop bodies, branches): closed Programs, printed inline as
        # ``{def body(...) = let ... in [...]}``; in JSON a nested graph
        ParamKind(
            "program",
            "{def body(...) = ...}",
            _block_text,
            lambda p: p.block(),
            _program_to_json,
            _program_from_json,
        ),
        ParamKind(
            "programs",
            "[{def b0 ...}, {def b1 ...}]",
            _blocks_text,
            lambda p: p.dim_list(p.block),
            lambda v: [_program_to_json(x) for x in v],
            _programs_from_json,
        ),
    ]
}
SUBPROGRAM_KINDS = frozenset({"program", "programs"})


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a primitive, e.g. ``Param("dims", "ints")`` printed ``[1, 0]``."""

    name: str
    kind: str

    @property
    def spec(self) -> ParamKind:
        return PARAM_KINDS[self.kind]


# ---------------------------------------------------------------------------------------------
# symbolic tangents and the primitive record


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
    # (eqn, known) -> an equal existing Var, a cheaper Eqn, or None (see passes/_simplify.py)
    # (a rule with ``needs_splat_operand = True`` is only asked when an operand may be a splat;
    # with ``needs_same_primitive_operand = True``, when an operand is made by this primitive)
    simplify: Callable | None = None
    # (in_types, out_type, **params) -> fn(*arrays): impl specialized once at plan time
    kernel: Callable | None = None
    # printed as its operand alone (``x1 = x0``), and a bare variable parses as it (``id``)
    bare: bool = False
    doc: str = ""
    # lowerings by name (see passes/_lower.py): rules rebuilding the result from other ops;
    # "prune" (eqn, used, dce) -> eqn for primitives with sub-programs (see passes/_dce.py);
    # "trips" (params) -> int, the static bound on how often a loop runs its body (the
    # service's max_trip_count check); "plan": rules (eqn, rewriter) -> equal equations or
    # None over the lean form's variable ids, applied before planning (see
    # _evaluate.rewrite_plan, PlanRewriter); "view": the kernel returns
    # a view of its operand (the plan counts no new bytes for it on an argument)
    extra: dict = field(default_factory=dict)
    # the shape rule returns a tuple of Types and the equation binds one variable per result
    # (a loop: its final carries and stacked outputs)
    multiple_results: bool = False

    def kwargs(self, params: Sequence[Any]) -> dict[str, Any]:
        if not params:
            return {}
        return {p.name: v for p, v in zip(self.params, params, strict=True)}

    def format_params(self, params: Sequence[Any]) -> str:
        """The parameters as IR text, e.g. ``[1] [2,6]`` for ``broadcast``."""
        kw = self.kwargs(params)
        dtype = self.literal_dtype(params)
        parts = [p.spec.text(kw[p.name], dtype) for p in self.params]
        return " ".join(p for p in parts if p is not None)

    def literal_dtype(self, params: Sequence[Any]) -> str:
        """The dtype of ``literals`` parameters: the hidden dtype, or a dtype parameter."""
        for p, v in zip(self.params, params, strict=False):
            if p.kind in ("hidden_dtype", "dtype") and v is not None:
                return v
        return "f32"

    def complete_params(self, values: Sequence[Any], dtype: str | None) -> tuple:
        """Parsed parameter values with the hidden dtype filled in (the binding's dtype; else
        bool for all-bool literals, else f32) and literals rounded to that dtype."""
        hidden = [i for i, p in enumerate(self.params) if p.spec.hidden]
        if not hidden:
            return tuple(values)
        values = list(values)
        literals = [i for i, p in enumerate(self.params) if p.kind == "literals"]
        if dtype is None:
            data = [x for i in literals for x in values[i]]
            dtype = "bool" if data and all(isinstance(x, bool) for x in data) else "f32"
        for i in hidden:
            values[i] = dtype
        for i in literals:
            values[i] = normalize_literals(values[i], dtype)
        return tuple(values)

    def out_types(self, eqn, in_types: Sequence[Type | None]) -> tuple[Type, ...]:
        """The result types of an equation, one per bound variable."""
        t = self.out_type(eqn, in_types)
        return t if self.multiple_results else (t,)

    def out_type(self, eqn, in_types: Sequence[Type | None]) -> Type:
        """The shape rule applied to an equation; errors name the equation and the types."""
        if self.arity is not None and len(in_types) != self.arity:
            where, n = self.describe(eqn, in_types), len(in_types)
            raise ShaxTypeError(f"{where}: {self.name} takes {self.arity} inputs, got {n}")
        if None in in_types:
            raise ShaxTypeError(f"{self.describe(eqn, in_types)}: an input has no type")
        try:
            return self.shape_rule(*in_types, **self.kwargs(eqn.params))
        except ShaxTypeError as e:
            raise ShaxTypeError(f"{self.describe(eqn, in_types)}: {e}") from None
        except (ValueError, TypeError, IndexError) as e:
            raise ShaxTypeError(f"{self.describe(eqn, in_types)}: bad parameters ({e})") from None

    def describe(self, eqn, in_types) -> str:
        args = " ".join(
            f"{v.name}:{t}" if t is not None else v.name
            for v, t in zip(eqn.ins, in_types, strict=False)
        )
        try:
            has_bodies = any(p.kind in SUBPROGRAM_KINDS for p in self.params)
            ps = "" if has_bodies else self.format_params(eqn.params)
        except (TypeError, ValueError, KeyError):
            ps = ""
        lhs = ", ".join(v.name for v in eqn.outs)
        return f"in `{lhs} = {eqn.prim}{' ' + ps if ps else ''} {args}`"

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"


def normalize_literals(data, dtype: str) -> tuple:
    """Literals as stored in a constant: Python floats rounded to the dtype, or bools."""
    if dtype == "bool":
        if not all(isinstance(v, bool) or v in (0.0, 1.0) for v in data):
            raise ShaxTypeError("a bool constant takes true/false literals")
        return tuple(bool(v) for v in data)
    if dtype in INT_DTYPES:
        info = np.iinfo(DTYPES[dtype])
        if not all(
            not isinstance(v, bool) and float(v).is_integer() and info.min <= v <= info.max
            for v in data
        ):
            raise ShaxTypeError(f"an {dtype} constant takes integer literals in its range")
        return tuple(int(v) for v in data)
    from_dtype = DTYPES[dtype].type
    return tuple(canonical_float(from_dtype(float(v))) for v in data)


REGISTRY: dict[str, Primitive] = {}

# The program transformations, for rules of primitives with sub-programs (a loop's linearize
# rule linearizes its body). The modules that define them (linearize, transpose, evaluate)
# sit above the registry and fill this table when imported, so imports stay one-way:
#   "linearize": (program, wrt, policy) -> (primal, linear)   (program typed by shax)
#   "transpose": (linear, num_linear) -> transposed
#   "compile":   (program) -> a plan (``.run(arrays)``, ``.peak_bytes``, ``.work``)
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


def derived(derive: Callable[[Primitive], Any]) -> Callable[[str], Any]:
    """``derive(lookup(name))`` by primitive name, computed once per primitive: the static
    facts passes read for every equation (traits, parameter kinds, the simplify rule).
    Computed again if ``name`` now names another primitive (a test's temporary one) or the
    primitive's simplify rule changed."""
    memo: dict[str, tuple] = {}

    def of(name: str):
        hit = memo.get(name)
        if hit is not None:
            prim = hit[0]
            if REGISTRY.get(name) is prim and hit[1] is prim.simplify:
                return hit[2]
        prim = lookup(name)
        value = derive(prim)
        memo[name] = (prim, prim.simplify, value)
        return value

    return of


def define(
    name: str,
    *,
    arity: int | None,
    shape: Callable[..., Type],
    impl: Callable[..., Any],
    params: Sequence[tuple[str, str]] = (),
    traits: Sequence[str] = (),
    bare: bool = False,
    doc: str = "",
    multiple_results: bool = False,
) -> Primitive:
    """Declare a primitive (once). Unknown parameter kinds and traits are refused."""
    for pname, kind in params:
        if kind not in PARAM_KINDS:
            raise ShaxError(f"{name}: parameter {pname} has unknown kind {kind!r}")
    unknown = set(traits) - set(TRAITS)
    if unknown:
        raise ShaxError(
            f"{name}: unknown trait(s) {sorted(unknown)}; the traits are {sorted(TRAITS)} "
            "(a new trait needs a law and a test in shax_core.registry.TRAITS)"
        )
    if name in REGISTRY:
        raise ShaxError(f"primitive {name} declared twice")
    prim = Primitive(
        name=name,
        params=tuple(Param(n, k) for n, k in params),
        arity=arity,
        shape_rule=shape,
        impl=impl,
        traits=frozenset(traits),
        bare=bare,
        doc=doc,
        multiple_results=multiple_results,
    )
    REGISTRY[name] = prim
    return prim


def bare_primitive() -> Primitive:
    """The primitive a bare variable on a binding's right-hand side stands for (``id``)."""
    return next(p for p in REGISTRY.values() if p.bare)
