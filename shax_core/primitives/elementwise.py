"""Elementwise primitives: arithmetic, the Floating functions, comparisons, select, convert.

Operands of a binary primitive have exactly the same type: implicit broadcasting is made
explicit by ``shax_core.core`` before an equation is recorded. Each block declares the forward
(impl) next to its derivative.
"""

from __future__ import annotations

import numpy as np

from shax_core import core
from shax_core.ir import DTYPES, ShaxTypeError, Type
from shax_core.primitives.base import (
    Zero,
    defbilinear,
    define,
    defjvp,
    deflinear,
    defzero,
    identity_operand,
    involution,
    is_linear,
)


def select(pred, on_true, on_false):
    return core.select(pred, on_true, on_false)


# ---------------------------------------------------------------------------------------------
# shape rules


def _float_unary(x: Type) -> Type:
    if not x.is_float:
        raise ShaxTypeError(f"expects a float operand, got {x}")
    return x


def _same(*types: Type) -> Type:
    first = types[0]
    for t in types[1:]:
        if t != first:
            raise ShaxTypeError(
                "operand types differ: "
                + " vs ".join(map(str, types))
                + " (broadcast explicitly first)"
            )
    return first


def _float_binary(x: Type, y: Type) -> Type:
    return _float_unary(_same(x, y))


def _numeric_unary(x: Type) -> Type:
    if not (x.is_float or x.is_int):
        raise ShaxTypeError(f"expects a float or integer operand, got {x}")
    return x


def _numeric_binary(x: Type, y: Type) -> Type:
    return _numeric_unary(_same(x, y))


def _compare(x: Type, y: Type) -> Type:
    return _same(x, y).with_dtype("bool")


# a NumPy ufunc impl writes into ``out=`` (the plan's in-place and multi-core steps)
UFUNC = ["elementwise", "out_buffer"]


def _unary(name, fn, doc=""):
    return define(name, arity=1, shape=_float_unary, impl=fn, traits=UFUNC, doc=doc)


def _binary(name, fn, traits=(), shape=_float_binary):
    return define(name, arity=2, shape=shape, impl=fn, traits=[*UFUNC, *traits])


# ---------------------------------------------------------------------------------------------
# linear arithmetic

# add, sub, mul, negate, max and min also take integers (index arithmetic; no tangents)
add = _binary("add", np.add, traits=["commutative"], shape=_numeric_binary)
defjvp(add, lambda t, x, y, **_: t, lambda t, x, y, **_: t)
add.transpose = lambda ct, x, y: [ct if is_linear(x) else None, ct if is_linear(y) else None]
add.simplify = identity_operand(0.0)  # x + 0 = x


def _negated(v, eqn, rw):
    """x when ``v = negate x`` and every reader of v is ``eqn`` (so v dies with it), else None."""
    e = rw.producer(v)
    if e is None or e.prim != "negate" or rw.uses(v) != eqn.ins.count(v):
        return None
    return e.ins[0]


def _add_negated(eqn, rw):
    """Plan rule: ``a + (-b) = a - b``, ``(-a) + (-b) = -(a + b)`` when the negations die
    here (exact: IEEE rounding is symmetric in sign; integers wrap the same)."""
    a, b = eqn.ins
    na, nb = _negated(a, eqn, rw), _negated(b, eqn, rw)
    if na is not None and nb is not None:
        total = rw.fresh(rw.type(eqn.out))
        return (rw.eqn(total, "add", (), (na, nb)), rw.eqn(eqn.out, "negate", (), (total,)))
    if nb is not None:
        return (rw.eqn(eqn.out, "sub", (), (a, nb)),)
    if na is not None:
        return (rw.eqn(eqn.out, "sub", (), (b, na)),)
    return None


# Only rewrites that are exact in IEEE arithmetic are plan rules: they run on every program a
# user sends. Distributing ``c*w1 - c*w2 = c*(w1 - w2)`` or cancelling ``(a - c) - (b - c) =
# a - b`` changes rounding, overflow (c = 1e308) and NaNs (c = inf), so neither is one.
add.extra["plan"] = (_add_negated,)

sub = _binary("sub", np.subtract, shape=_numeric_binary)
defjvp(sub, lambda t, x, y, **_: t, lambda t, x, y, **_: -t)
sub.transpose = lambda ct, x, y: [ct if is_linear(x) else None, -ct if is_linear(y) else None]
sub.simplify = identity_operand(0.0, "right")  # x - 0 = x


def _sub_negated(eqn, rw):
    """Plan rule: ``a - (-b) = a + b``, ``(-a) - (-b) = b - a`` when the negations die here
    (exact)."""
    a, b = eqn.ins
    na, nb = _negated(a, eqn, rw), _negated(b, eqn, rw)
    if na is not None and nb is not None:
        return (rw.eqn(eqn.out, "sub", (), (nb, na)),)
    if nb is not None:
        return (rw.eqn(eqn.out, "add", (), (a, nb)),)
    return None


sub.extra["plan"] = (_sub_negated,)

negate = define("negate", arity=1, shape=_numeric_unary, impl=np.negative, traits=UFUNC)
deflinear(negate, lambda ct, x: [-ct])
negate.simplify = involution  # -(-x) = x

identity = define(
    "id",
    arity=1,
    shape=lambda x: x,
    impl=lambda x: x,
    traits=["layout", "preserves_splat"],
    bare=True,  # printed `x1 = x0`, and a bare variable parses as id
)
deflinear(identity, lambda ct, x: [ct])
identity.simplify = lambda eqn, known: eqn.ins[0]

# ---------------------------------------------------------------------------------------------
# bilinear and division

mul = _binary("mul", np.multiply, traits=["commutative"], shape=_numeric_binary)
defbilinear(
    mul,
    lambda ct, y, **_: ct * y,  # x̄ = ct·y
    lambda ct, x, **_: x * ct,  # ȳ = x·ct
)
mul.simplify = identity_operand(1.0)  # x * 1 = x


def _mul_negated(eqn, rw):
    """Plan rule: ``a * (-b) = -(a * b)`` (the negation moves on toward an add, which takes it
    as a sub) and ``(-a) * (-b) = a * b``, when the negations die here (exact)."""
    a, b = eqn.ins
    na, nb = _negated(a, eqn, rw), _negated(b, eqn, rw)
    if na is not None and nb is not None:
        return (rw.eqn(eqn.out, "mul", (), (na, nb)),)
    if na is None and nb is None:
        return None
    product = rw.fresh(rw.type(eqn.out))
    ins = (a, nb) if nb is not None else (na, b)
    return (rw.eqn(product, "mul", (), ins), rw.eqn(eqn.out, "negate", (), (product,)))


mul.extra["plan"] = (_mul_negated,)

div = _binary("div", np.divide)
defjvp(
    div,
    lambda t, x, y, ans: t / y,  # d(x/y)/dx = 1/y
    lambda t, x, y, ans: t * -(ans / y),  # d(x/y)/dy = -x/y²
)


def _div_transpose(ct, x, y):
    if is_linear(y):
        raise core.ShaxError("div is linear only in its numerator; its denominator is a tangent")
    return [ct / y, None]


div.transpose = _div_transpose
div.simplify = identity_operand(1.0, "right")  # x / 1 = x


def _pow_dy(t, x, y, ans):
    # d(x^y)/dy = log(x)·x^y, taken as 0 where x == 0 (so 0^y stays differentiable in y)
    safe_x = select(x == 0.0, 1.0, x)
    return t * (core.bind("log", safe_x) * ans)


pow_ = _binary("pow", np.power)
defjvp(pow_, lambda t, x, y, ans: t * (y * x ** (y - 1.0)), _pow_dy)
pow_.simplify = identity_operand(1.0, "right")  # x ** 1 = x

# ---------------------------------------------------------------------------------------------
# the Floating functions: forward, derivative


def _sqrt_(x):
    return core.bind("sqrt", x)


def _unary_jvp(name, fn, derivative):
    prim = _unary(name, fn)
    defjvp(prim, lambda t, x, ans: t * derivative(x, ans))
    return prim


def _op(name):
    return lambda x: core.bind(name, x)


sin, cos, sinh, cosh = _op("sin"), _op("cos"), _op("sinh"), _op("cosh")

_unary_jvp("sin", np.sin, lambda x, ans: cos(x))
_unary_jvp("cos", np.cos, lambda x, ans: -sin(x))
_unary_jvp("exp", np.exp, lambda x, ans: ans)
_unary_jvp("log", np.log, lambda x, ans: 1.0 / x)
_unary_jvp("sqrt", np.sqrt, lambda x, ans: 0.5 / ans)
_unary_jvp("tan", np.tan, lambda x, ans: 1.0 + ans * ans)
_unary_jvp("asin", np.arcsin, lambda x, ans: 1.0 / _sqrt_(1.0 - x * x))
_unary_jvp("acos", np.arccos, lambda x, ans: -1.0 / _sqrt_(1.0 - x * x))
_unary_jvp("atan", np.arctan, lambda x, ans: 1.0 / (1.0 + x * x))
_unary_jvp("sinh", np.sinh, lambda x, ans: cosh(x))
_unary_jvp("cosh", np.cosh, lambda x, ans: sinh(x))
_unary_jvp("tanh", np.tanh, lambda x, ans: 1.0 - ans * ans)
_unary_jvp("asinh", np.arcsinh, lambda x, ans: 1.0 / _sqrt_(x * x + 1.0))
_unary_jvp("acosh", np.arccosh, lambda x, ans: 1.0 / _sqrt_(x * x - 1.0))
_unary_jvp("atanh", np.arctanh, lambda x, ans: 1.0 / (1.0 - x * x))
_unary_jvp("log1p", np.log1p, lambda x, ans: 1.0 / (1.0 + x))
_unary_jvp("expm1", np.expm1, lambda x, ans: ans + 1.0)
# |x|' = +1 at 0, as JAX does (a subgradient; sign(0) = 0 would lose the gradient there)
_unary_jvp("abs", np.abs, lambda x, ans: select(x >= 0.0, 1.0, -1.0))
defzero(_unary("sign", np.sign))

# ---------------------------------------------------------------------------------------------
# max / min: each side gets half the gradient at ties (as the seed, JAX and autograd do)


def _tie_weights(x, y):
    """``(w_ge, w_le)``: the weights of the operand that is the larger (``x >= y``) and the
    smaller (``x <= y``), ``[x >= y] - [x == y]/2`` and ``[x <= y] - [x == y]/2``: 1 alone,
    1/2 at a tie, 0 otherwise, and 0 for both when either is NaN (no comparison holds), as
    JAX's ``select(x == ans, select(y == ans, 1/2, 1), 0)``. Both rules build them from
    ``(x, y)`` in this order, so max and min of the same operands share every equation."""
    dtype = core.type_of(x).dtype
    half_tie = 0.5 * core.convert(x == y, dtype)
    return core.convert(x >= y, dtype) - half_tie, core.convert(x <= y, dtype) - half_tie


defjvp(
    _binary("max", np.maximum, traits=["commutative"], shape=_numeric_binary),
    lambda t, x, y, ans: t * _tie_weights(x, y)[0],
    lambda t, x, y, ans: t * _tie_weights(x, y)[1],
)
defjvp(
    _binary("min", np.minimum, traits=["commutative"], shape=_numeric_binary),
    lambda t, x, y, ans: t * _tie_weights(x, y)[1],
    lambda t, x, y, ans: t * _tie_weights(x, y)[0],
)

# ---------------------------------------------------------------------------------------------
# comparisons: bool results, no tangents

for _name, _fn in (
    ("eq", np.equal),
    ("ne", np.not_equal),
    ("lt", np.less),
    ("le", np.less_equal),
    ("gt", np.greater),
    ("ge", np.greater_equal),
):
    defzero(define(_name, arity=2, shape=_compare, impl=_fn, traits=UFUNC))

# ---------------------------------------------------------------------------------------------
# select pred on_true on_false: linear in both branches, the predicate is a residual


def _select_shape(pred: Type, a: Type, b: Type) -> Type:
    if pred.dtype != "bool":
        raise ShaxTypeError(f"select's predicate must be bool, got {pred}")
    if pred.shape != a.shape:
        raise ShaxTypeError(f"select's predicate {pred} does not match the branches {a}")
    return _same(a, b)


select_p = define("select", arity=3, shape=_select_shape, impl=np.where, traits=["elementwise"])


def _select_linearize(primals, tangents):
    pred, a, b = primals
    _, ta, tb = tangents
    ans = core.bind("select", pred, a, b)
    if isinstance(ta, Zero) and isinstance(tb, Zero):
        return ans, Zero(core.type_of(ans))
    ta, tb = core.instantiate(ta, [tb]), core.instantiate(tb, [ta])
    return ans, core.bind("select", pred, ta, tb)


def _select_transpose(ct, pred, a, b):
    if is_linear(pred):
        raise core.ShaxError("select's predicate cannot be a tangent")
    zero = core.full_like(ct, 0.0)
    return [
        None,
        core.bind("select", pred, ct, zero) if is_linear(a) else None,
        core.bind("select", pred, zero, ct) if is_linear(b) else None,
    ]


select_p.linearize = _select_linearize
select_p.transpose = _select_transpose
select_p.simplify = lambda eqn, known: eqn.ins[1] if eqn.ins[1] == eqn.ins[2] else None

# ---------------------------------------------------------------------------------------------
# convert dtype x: linear between float types; to or from bool carries no tangent


def _convert_impl(x, dtype):
    return x.astype(DTYPES[dtype], copy=False)


convert = define(
    "convert",
    arity=1,
    params=[("dtype", "dtype")],
    shape=lambda x, dtype: x.with_dtype(dtype),
    impl=_convert_impl,
    traits=["elementwise"],
)


def _convert_linearize(primals, tangents, dtype):
    (x,), (t,) = primals, tangents
    ans = core.bind("convert", x, dtype=dtype)
    if isinstance(t, Zero) or dtype not in ("f32", "f64") or not core.type_of(x).is_float:
        return ans, Zero(core.type_of(ans))
    return ans, core.bind("convert", t, dtype=dtype)


convert.linearize = _convert_linearize
convert.kernel = lambda in_types, out_type, dtype: lambda a: a.astype(out_type.np_dtype)
convert.transpose = lambda ct, x, dtype: [core.bind("convert", ct, dtype=x.type.dtype)]
convert.simplify = lambda eqn, known: eqn.ins[0] if eqn.ins[0].type == eqn.out.type else None
