"""The implementation of ``shax_core.numpy`` (the package re-exports its public names)."""

from __future__ import annotations

import builtins
import math
import numbers
import string

import numpy as _np

from shax_core import core as _core
from shax_core.core import Tracer
from shax_core.ir import ShaxError, ShaxTypeError, dtype_name
from shax_core.primitives import indexing as _ix

DOCS = "docs/numpy.md"


class UnsupportedError(ShaxError, AttributeError):
    """A jax.numpy name or option shax does not support (see docs/numpy.md)."""

    def __init__(self, name: str, why: str = ""):
        why = f": {why}" if why else ""
        super().__init__(
            f"shax_core.numpy.{name} is not supported{why}. The supported names and options "
            f"are listed in {DOCS}."
        )
        self.name = name


class ShaxIndexError(ShaxError, IndexError):
    """An index out of range or of a kind shax cannot trace."""


class ShaxValueError(ShaxError, ValueError):
    """An argument with the right type but a bad value (an axis, a shape, a split)."""


# ---------------------------------------------------------------------------------------------
# dtypes and constants

float32, float64, int32, int64, bool_ = _np.float32, _np.float64, _np.int32, _np.int64, _np.bool_
float_, int_ = _np.float64, _np.int64
dtype = _np.dtype
pi, e, inf, nan, euler_gamma = _np.pi, _np.e, _np.inf, _np.nan, _np.euler_gamma
newaxis = None
ndarray = _np.ndarray


def _dtype(d) -> str | None:
    """The IR dtype of a dtype argument; Python's float and int are f32 and i32 (as in JAX)."""
    if d is None:
        return None
    if d is float:
        return "f32"
    if d is int:
        return "i32"
    if d is bool:
        return "bool"
    if isinstance(d, str) and d in ("f32", "f64", "i32", "i64", "bool"):
        return d
    return dtype_name(d)


def _np_dtype(d):
    from shax_core.ir import DTYPES

    return DTYPES[d]


class _Array(_np.ndarray):
    """What creation functions return: a NumPy array that also has JAX's ``.at``, and whose
    NumPy arithmetic keeps JAX's default dtypes (``arange(4) / 4`` is f32, not f64: a result
    is f64 only if an operand was)."""

    @property
    def at(self):
        return _At(self)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain = [_np.asarray(x) if isinstance(x, _Array) else x for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(_np.asarray(o) for o in kwargs["out"])
        result = getattr(ufunc, method)(*plain, **kwargs)
        f64_in = builtins.any(
            isinstance(x, _np.ndarray | _np.generic) and x.dtype == _np.float64 for x in plain
        )

        def jax_dtype(r):
            if isinstance(r, _np.ndarray | _np.generic):
                if r.dtype == _np.float64 and not f64_in:
                    r = r.astype(_np.float32)
                if isinstance(r, _np.ndarray):
                    return r.view(_Array)
            return r

        return tuple(map(jax_dtype, result)) if isinstance(result, tuple) else jax_dtype(result)


def _const(a, dt: str | None = None):
    a = _np.asarray(a) if dt is None else _np.asarray(a, dtype=_np_dtype(dt))
    return a.view(_Array)


def _is_tracer(x) -> bool:
    return isinstance(x, Tracer)


def _type(x):
    return _core.type_of(x if _is_tracer(x) else _np.asarray(x))


def _shape(x) -> tuple[int, ...]:
    return _type(x).shape


def _ndim(x) -> int:
    return len(_shape(x))


def _kind(x) -> str:
    return _type(x).dtype


def _arr(x):
    """A tracer stays; anything else becomes a NumPy array (Python floats f32, ints i32)."""
    if _is_tracer(x):
        return x
    if isinstance(x, bool):
        return _np.asarray(x)
    if isinstance(x, numbers.Integral):
        return _np.asarray(x, dtype=_np.int32)
    if isinstance(x, numbers.Real) and not isinstance(x, _np.generic):
        return _np.asarray(x, dtype=_np.float32)
    if isinstance(x, list | tuple) and builtins.any(_is_tracer(v) for v in _flat(x)):
        return stack([_arr(v) for v in x])
    a = _np.asarray(x)
    if a.dtype == _np.float16:
        a = a.astype(_np.float32)
    if a.dtype.kind == "u" or (
        a.dtype.kind == "i" and a.dtype != _np.int32 and a.dtype != _np.int64
    ):
        a = a.astype(_np.int32)
    if a.dtype.kind == "f" and a.dtype not in (_np.float32, _np.float64):
        a = a.astype(_np.float64)
    if a.dtype.kind not in "fiub":
        raise UnsupportedError("asarray", f"dtype {a.dtype}")
    return a


def _flat(xs):
    for v in xs:
        if isinstance(v, list | tuple):
            yield from _flat(v)
        else:
            yield v


def _float(x):
    """``x`` as a float array (integers and bools become f32)."""
    x = _arr(x)
    return x if _type(x).is_float else _core.convert(x, "f32")


def _num(x):
    """``x`` as a number array (bools become i32)."""
    x = _arr(x)
    return _core.convert(x, "i32") if _kind(x) == "bool" else x


def _cast(x, dt: str | None):
    return _arr(x) if dt is None else _core.convert(_arr(x), dt)


def _axis(axis: int, ndim: int, name: str = "axis") -> int:
    if not isinstance(axis, numbers.Integral) or not -ndim <= axis < builtins.max(ndim, 1):
        raise ShaxValueError(f"{name} {axis!r} is out of range for an array of rank {ndim}")
    return int(axis) % builtins.max(ndim, 1)


def _axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, numbers.Integral):
        axis = (axis,)
    out = tuple(sorted(_axis(a, ndim) for a in axis))
    if len(set(out)) != len(out):
        raise ShaxValueError(f"repeated axis in {axis!r}")
    return out


def _keepdims(y, shape, axes, keepdims: bool):
    if not keepdims:
        return y
    return _core.reshape(y, tuple(1 if i in axes else n for i, n in enumerate(shape)))


def _refuse(name: str, **options):
    for option, value in options.items():
        if value is not None and value is not False:
            raise UnsupportedError(name, f"the {option}= option")


# ---------------------------------------------------------------------------------------------
# elementwise


def _unary(name: str, prim: str, doc: str = ""):
    def fn(x, /):
        if type(x) is Tracer and x.type.is_float:
            return _core.bind(prim, x)  # the common case: nothing to convert
        return _core.bind(prim, _float(x))

    fn.__name__ = name
    fn.__qualname__ = name
    fn.__doc__ = doc or f"Elementwise ``{prim}``."
    return fn


sin, cos, tan = _unary("sin", "sin"), _unary("cos", "cos"), _unary("tan", "tan")
arcsin, arccos, arctan = (
    _unary("arcsin", "asin"),
    _unary("arccos", "acos"),
    _unary("arctan", "atan"),
)
sinh, cosh, tanh = _unary("sinh", "sinh"), _unary("cosh", "cosh"), _unary("tanh", "tanh")
arcsinh, arccosh = _unary("arcsinh", "asinh"), _unary("arccosh", "acosh")
arctanh = _unary("arctanh", "atanh")
asin, acos, atan, asinh, acosh, atanh = arcsin, arccos, arctan, arcsinh, arccosh, arctanh
exp, log, sqrt = _unary("exp", "exp"), _unary("log", "log"), _unary("sqrt", "sqrt")
log1p, expm1 = _unary("log1p", "log1p"), _unary("expm1", "expm1")
floor = _unary("floor", "floor", "Round down; the derivative is zero (piecewise constant).")
rint = _unary("rint", "round", "Round half to even; the derivative is zero.")


def abs(x, /):  # noqa: A001
    """``|x|``; the derivative at 0 is +1 (as JAX). Integers stay integers."""
    x = _num(x)
    if _type(x).is_int:
        return _core.select(_core.compare("lt", x, 0), _core.neg(x), x)
    return _core.bind("abs", x)


absolute = abs


def sign(x, /):
    """-1, 0 or 1; no derivative."""
    return _core.bind("sign", _float(x))


def ceil(x, /):
    """Round up; the derivative is zero."""
    return _core.neg(floor(_core.neg(_float(x))))


def trunc(x, /):
    """Round toward zero; the derivative is zero."""
    x = _float(x)
    return where(_core.compare("ge", x, 0.0), floor(x), ceil(x))


fix = trunc


def round(a, decimals=0):  # noqa: A001
    """Round half to even (``decimals`` places); the derivative is zero."""
    a = _float(a)
    if decimals == 0:
        return rint(a)
    scale = 10.0**decimals
    return _core.div(rint(_core.mul(a, scale)), scale)


around = round


def negative(x, /):
    return _core.neg(_num(x))


def positive(x, /):
    return _arr(x)


def add(x, y, /):
    return _core.add(_num(x), _num(y))


def subtract(x, y, /):
    return _core.sub(_num(x), _num(y))


def multiply(x, y, /):
    if _kind(_arr(x)) == "bool" and _kind(_arr(y)) == "bool":
        return logical_and(x, y)
    return _core.mul(_num(x), _num(y))


def divide(x, y, /):
    """True division (integers are divided as f32)."""
    return _core.div(_num(x), _num(y))


true_divide = divide


def floor_divide(x, y, /):
    """``floor(x / y)``; integers stay integers. No derivative."""
    x, y = _num(x), _num(y)
    if _type(x).is_int and _type(y).is_int:
        x, y = _core._promote(x, y)
        q = floor(_core.div(_core.convert(x, "f64"), _core.convert(y, "f64")))
        return _core.convert(q, _kind(x))
    return floor(_core.div(x, y))


def remainder(x, y, /):
    """``x - floor(x / y) * y`` (the sign of y, as NumPy); d/dx = 1, d/dy = -floor(x / y)."""
    x, y = _num(x), _num(y)
    if _type(x).is_int and _type(y).is_int:
        return _core.sub(x, _core.mul(floor_divide(x, y), y))
    x, y = _core._promote(_float(x), _float(y))
    q = floor(_core.div(x, y))
    return _core.sub(x, _core.mul(q, y))


mod = remainder


def fmod(x, y, /):
    """``x - trunc(x / y) * y`` (the sign of x, as C)."""
    x, y = _core._promote(_float(x), _float(y))
    return _core.sub(x, _core.mul(trunc(_core.div(x, y)), y))


def power(x, y, /):
    """``x ** y`` with JAX's conventions: an integer exponent is repeated multiplication
    (``d/dx x**0 = 0`` everywhere, ``d/dx x**2 = 0`` at 0); any other is the ``pow`` primitive."""
    if isinstance(y, numbers.Integral) and not isinstance(y, bool):
        if _is_tracer(x) or isinstance(x, _np.ndarray):
            return _core.integer_power(_num(x), int(y))
    x = x if _python_number(x) else _float(x)
    y = y if _python_number(y) else _float(y)
    return _core.power(x, y)


def _python_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, _np.generic | bool)


pow = power  # noqa: A001


def float_power(x, y, /):
    return power(_core.convert(_float(x), "f64"), y)


def square(x, /):
    x = _num(x)
    return _core.mul(x, x)


def reciprocal(x, /):
    return _core.div(1.0, _float(x))


def cbrt(x, /):
    x = _float(x)
    return _core.mul(sign(x), _core.power(abs(x), 1.0 / 3.0))


def exp2(x, /):
    return exp(_core.mul(_float(x), math.log(2.0)))


def log2(x, /):
    return _core.div(log(x), math.log(2.0))


def log10(x, /):
    return _core.div(log(x), math.log(10.0))


def logaddexp(x, y, /):
    """``log(exp(x) + exp(y))`` computed stably; each side gets its softmax weight (1/2 at ties)."""
    x, y = _core._promote(_float(x), _float(y))
    m = _core.bind("stop_gradient", _finite_or_zero(maximum(x, y)))
    return _core.add(m, log(_core.add(exp(_core.sub(x, m)), exp(_core.sub(y, m)))))


def logaddexp2(x, y, /):
    ln2 = math.log(2.0)
    return _core.div(logaddexp(_core.mul(_float(x), ln2), _core.mul(_float(y), ln2)), ln2)


def _finite_or_zero(m):
    return where(isfinite(m), m, _core.full_like(m, 0.0))


def hypot(x, y, /):
    x, y = _core._promote(_float(x), _float(y))
    return sqrt(_core.add(_core.mul(x, x), _core.mul(y, y)))


def arctan2(y, x, /):
    """The angle of (x, y); d = (x dy - y dx) / (x² + y²)."""
    y, x = _core._promote(_float(y), _float(x))
    shape = _np.broadcast_shapes(_shape(y), _shape(x))
    return _core.bind("atan2", _core.broadcast_to(y, shape), _core.broadcast_to(x, shape))


atan2 = arctan2


def maximum(x, y, /):
    """Elementwise max; ties split the derivative 1/2 each (as JAX)."""
    return _core.maximum(_num(x), _num(y))


def minimum(x, y, /):
    """Elementwise min; ties split the derivative 1/2 each (as JAX)."""
    return _core.minimum(_num(x), _num(y))


def fmax(x, y, /):
    """``maximum`` that ignores NaN operands."""
    x, y = _core._promote(_float(x), _float(y))
    return where(isnan(y), x, where(isnan(x), y, maximum(x, y)))


def fmin(x, y, /):
    """``minimum`` that ignores NaN operands."""
    x, y = _core._promote(_float(x), _float(y))
    return where(isnan(y), x, where(isnan(x), y, minimum(x, y)))


def clip(a, a_min=None, a_max=None, *, min=None, max=None):  # noqa: A002
    """``minimum(maximum(a, a_min), a_max)`` (ties at the bounds split 1/2, as JAX)."""
    lo = a_min if a_min is not None else min
    hi = a_max if a_max is not None else max
    out = _num(a)
    if lo is not None:
        out = maximum(out, lo)
    if hi is not None:
        out = minimum(out, hi)
    return out


def sinc(x, /):
    """``sin(πx)/(πx)``, 1 at 0 (the 0/0 branch never reaches the derivative)."""
    x = _float(x)
    zero = _core.compare("eq", x, 0.0)
    safe = where(zero, _core.full_like(x, 1.0), x)
    px = _core.mul(safe, math.pi)
    return where(zero, _core.full_like(x, 1.0), _core.div(sin(px), px))


def deg2rad(x, /):
    return _core.mul(_float(x), math.pi / 180.0)


def rad2deg(x, /):
    return _core.mul(_float(x), 180.0 / math.pi)


radians, degrees = deg2rad, rad2deg


def copysign(x, y, /):
    x, y = _core._promote(_float(x), _float(y))
    return where(signbit(y), _core.neg(abs(x)), abs(x))


def signbit(x, /):
    x = _float(x)
    return _core.compare("lt", x, 0.0)


def heaviside(x, h0, /):
    x = _float(x)
    return where(_core.compare("lt", x, 0.0), 0.0, where(_core.compare("gt", x, 0.0), 1.0, h0))


# comparisons and logic


def _compare(name):
    def fn(x, y, /):
        return _core.compare(name, _arr(x), _arr(y))

    return fn


equal, not_equal = _compare("eq"), _compare("ne")
less, less_equal = _compare("lt"), _compare("le")
greater, greater_equal = _compare("gt"), _compare("ge")


def _bool(x):
    x = _arr(x)
    if _kind(x) != "bool":
        raise ShaxTypeError(f"logical and bitwise operators take bool operands, got {_type(x)}")
    return x


def logical_and(x, y, /):
    x, y = _arr(x), _arr(y)
    x = x if _kind(x) == "bool" else _core.compare("ne", x, 0)
    y = y if _kind(y) == "bool" else _core.compare("ne", y, 0)
    return _core.select(x, y, _core.full_like(y, False, _broadcast(x, y)))


def logical_or(x, y, /):
    x, y = _arr(x), _arr(y)
    x = x if _kind(x) == "bool" else _core.compare("ne", x, 0)
    y = y if _kind(y) == "bool" else _core.compare("ne", y, 0)
    return _core.select(x, _core.full_like(y, True, _broadcast(x, y)), y)


def logical_not(x, /):
    x = _arr(x)
    return _core.compare("eq", x, False if _kind(x) == "bool" else 0)


def logical_xor(x, y, /):
    return _core.compare("ne", logical_not(x), logical_not(y))


def _broadcast(*xs):
    return tuple(_np.broadcast_shapes(*(_shape(x) for x in xs)))


def bitwise_and(x, y, /):
    """``&`` on bools (integer bit operations are not supported)."""
    return logical_and(_bool(x), _bool(y))


def bitwise_or(x, y, /):
    """``|`` on bools."""
    return logical_or(_bool(x), _bool(y))


def bitwise_xor(x, y, /):
    """``^`` on bools."""
    return _core.compare("ne", _bool(x), _bool(y))


def invert(x, /):
    """``~`` on bools."""
    return logical_not(_bool(x))


bitwise_not = invert


def isnan(x, /):
    x = _arr(x)
    if not _type(x).is_float:
        return _core.full_like(x, False, dtype="bool")
    return _core.compare("ne", x, x)


def isinf(x, /):
    x = _arr(x)
    if not _type(x).is_float:
        return _core.full_like(x, False, dtype="bool")
    return _core.compare("eq", _core.bind("abs", x), _np.inf)


def isfinite(x, /):
    x = _arr(x)
    if not _type(x).is_float:
        return _core.full_like(x, True, dtype="bool")
    return _core.compare("lt", _core.bind("abs", x), _np.inf)


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    a, b = _core._promote(_float(a), _float(b))
    close = less_equal(abs(subtract(a, b)), add(atol, multiply(rtol, abs(b))))
    return logical_or(close, logical_and(isnan(a), isnan(b))) if equal_nan else close


def where(condition, x=None, y=None, /):
    """``select``: x where condition holds, else y (use this instead of Python ``if``)."""
    if x is None and y is None:
        return nonzero(condition)
    condition = _arr(condition)
    if _kind(condition) != "bool":
        condition = _core.compare("ne", condition, 0)
    x = x if isinstance(x, numbers.Number) and not isinstance(x, _np.generic) else _arr(x)
    y = y if isinstance(y, numbers.Number) and not isinstance(y, _np.generic) else _arr(y)
    return _core.select(condition, x, y)


def select(condlist, choicelist, default=0):
    """The first choice whose condition holds (NumPy's ``select``)."""
    out = default
    for cond, choice in reversed(list(zip(condlist, choicelist, strict=True))):
        out = where(cond, choice, out)
    return _arr(out)


def stop_gradient(x):
    """The identity with a zero derivative (``jax.lax.stop_gradient``)."""
    return _core.bind("stop_gradient", _arr(x))


# ---------------------------------------------------------------------------------------------
# the seed's spellings (kept: the seed's examples use them)


def broadcast(x, dims, shape):
    """The seed's ``broadcast dims shape x``: operand axis i goes to output axis dims[i]."""
    return _core.broadcast(x, dims, shape)


def reduce_sum(x, axes):
    """The seed's ``reduceSum axes x``."""
    return _core.reduce_sum(x, tuple(axes))


def dot_general(x, y, lhs_contract, rhs_contract, lhs_batch=(), rhs_batch=()):
    """The ``dot_general`` primitive: contract and batch over the given axes."""
    return _core.dot_general(x, y, lhs_contract, rhs_contract, lhs_batch, rhs_batch)


# ---------------------------------------------------------------------------------------------
# reductions


def sum(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):  # noqa: A001
    """Sum over ``axis`` (int, tuple, negative or None); bools count as i32."""
    _refuse("sum", out=out)
    a = _num(a)
    if where is not None:
        a = _core.select(_arr(where), a, _core.full_like(a, 0))
    axes = _axes(axis, _ndim(a))
    y = _keepdims(_core.reduce_sum(a, axes), _shape(a), axes, keepdims)
    if initial is not None:
        y = _core.add(y, initial)
    return _cast(y, _dtype(dtype))


def mean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=None):
    """The average over ``axis``; integers and bools are averaged as f32."""
    _refuse("mean", out=out)
    a = _float(a)
    axes = _axes(axis, _ndim(a))
    if where is not None:
        mask = _core.broadcast_to(_arr(where), _shape(a))
        total = sum(a, axis, keepdims=keepdims, where=mask)
        count = sum(mask, axis, keepdims=keepdims)
        return _cast(_core.div(total, _core.convert(count, _kind(a))), _dtype(dtype))
    n = math.prod(_shape(a)[i] for i in axes)
    y = _keepdims(_core.reduce_sum(a, axes), _shape(a), axes, keepdims)
    return _cast(_core.div(y, float(n)), _dtype(dtype))


def average(a, axis=None, weights=None, returned=False, keepdims=False):
    """Weighted average; 1-d weights apply along ``axis``."""
    if weights is None:
        avg = mean(a, axis, keepdims=keepdims)
        return avg
    a, w = _float(a), _float(weights)
    if _ndim(w) == 1 and _ndim(a) > 1:
        ax = _axis(axis, _ndim(a))
        w = _core.reshape(w, tuple(-1 if i == ax else 1 for i in range(_ndim(a))))
    w = _core.broadcast_to(w, _shape(a)) if _shape(w) != _shape(a) else w
    num = sum(_core.mul(a, w), axis, keepdims=keepdims)
    den = sum(w, axis, keepdims=keepdims)
    avg = _core.div(num, den)
    return (avg, den) if returned else avg


def _reduce_max(a, axes):
    kind = _kind(a)
    if kind == "bool":
        return _core.compare("gt", _core.reduce_max(_core.convert(a, "f32"), axes), 0.0)
    if _type(a).is_int:
        return _core.convert(_core.reduce_max(_core.convert(a, "f64"), axes), kind)
    return _core.reduce_max(a, axes)


def max(a, axis=None, out=None, keepdims=False, initial=None, where=None):  # noqa: A001
    """The maximum over ``axis``; tied maxima share the derivative equally."""
    _refuse("max", out=out, where=where)
    a = _arr(a)
    axes = _axes(axis, _ndim(a))
    y = _keepdims(_reduce_max(a, axes), _shape(a), axes, keepdims)
    return y if initial is None else maximum(y, initial)


def min(a, axis=None, out=None, keepdims=False, initial=None, where=None):  # noqa: A001
    """The minimum over ``axis``; tied minima share the derivative equally."""
    _refuse("min", out=out, where=where)
    a = _arr(a)
    if _kind(a) == "bool":
        return logical_not(max(logical_not(a), axis, keepdims=keepdims))
    y = negative(max(negative(a), axis, keepdims=keepdims))
    return y if initial is None else minimum(y, initial)


amax, amin = max, min


def ptp(a, axis=None, keepdims=False):
    return subtract(max(a, axis, keepdims=keepdims), min(a, axis, keepdims=keepdims))


def all(a, axis=None, keepdims=False):  # noqa: A001
    """True where every element along ``axis`` is true (no derivative)."""
    a = _arr(a)
    a = a if _kind(a) == "bool" else _core.compare("ne", a, 0)
    return min(a, axis, keepdims=keepdims)


def any(a, axis=None, keepdims=False):  # noqa: A001
    """True where some element along ``axis`` is true (no derivative)."""
    a = _arr(a)
    a = a if _kind(a) == "bool" else _core.compare("ne", a, 0)
    return max(a, axis, keepdims=keepdims)


def count_nonzero(a, axis=None, keepdims=False):
    return sum(_core.compare("ne", _arr(a), 0), axis, keepdims=keepdims)


def _move_to_end(a, axes):
    """Transpose ``axes`` to the end and merge them into one: ``(a', kept shape)``."""
    shape = _shape(a)
    kept = [i for i in range(len(shape)) if i not in axes]
    perm = tuple(kept) + tuple(axes)
    if perm != tuple(range(len(shape))):
        a = _core.transpose(a, perm)
    kept_shape = tuple(shape[i] for i in kept)
    return _core.reshape(a, kept_shape + (math.prod(shape[i] for i in axes),)), kept_shape


def prod(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    """The product over ``axis``, as a tree of multiplications: exact derivatives even where
    elements are zero (no division by x)."""
    _refuse("prod", out=out, where=where)
    a = _num(a)
    axes = _axes(axis, _ndim(a))
    flat, kept = _move_to_end(a, axes)
    n = _shape(flat)[-1]
    while n > 1:
        if n % 2:
            flat = _core.pad(flat, [(0, 0)] * (_ndim(flat) - 1) + [(0, 1)], 1.0)
            n += 1
        pairs = _core.reshape(flat, kept + (n // 2, 2))
        first = _slice_axis(pairs, -1, 0, 1)
        second = _slice_axis(pairs, -1, 1, 2)
        flat = _core.reshape(_core.mul(first, second), kept + (n // 2,))
        n //= 2
    y = _core.reshape(flat, kept) if n == 1 else _core.full_like(a, 1, kept)
    y = _keepdims(y, _shape(a), axes, keepdims)
    if initial is not None:
        y = _core.mul(y, initial)
    return _cast(y, _dtype(dtype))


def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None):
    """Variance ``mean(|x - mean(x)|²)`` with ``n - ddof`` in the denominator."""
    _refuse("var", out=out, where=where)
    a = _float(a)
    axes = _axes(axis, _ndim(a))
    n = math.prod(_shape(a)[i] for i in axes)
    centered = _core.sub(a, mean(a, axis, keepdims=True))
    ss = sum(_core.mul(centered, centered), axis, keepdims=keepdims)
    return _cast(_core.div(ss, float(builtins.max(n - ddof, 0))), _dtype(dtype))


def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None):
    """``sqrt(var(...))`` (its derivative is infinite where the variance is 0, as in JAX)."""
    return sqrt(var(a, axis, dtype, out, ddof, keepdims, where=where))


def median(a, axis=None, keepdims=False):
    """The middle of the sorted values (mean of the two middle ones for even counts)."""
    a = _float(a)
    if axis is None:
        a, axis = ravel(a), 0
    ax = _axis(axis, _ndim(a))
    s = sort(a, axis=ax)
    n = _shape(a)[ax]
    lo = _slice_axis(s, ax, (n - 1) // 2, (n - 1) // 2 + 1)
    hi = _slice_axis(s, ax, n // 2, n // 2 + 1)
    y = _core.mul(_core.add(lo, hi), 0.5)
    return y if keepdims else squeeze(y, ax)


def argmax(a, axis=None, out=None, keepdims=False):
    """The first position of the maximum (i32; no derivative)."""
    _refuse("argmax", out=out)
    a = _num(a)
    if axis is None:
        y = _core.bind("argmax", ravel(a), axis=0)
        return _core.reshape(y, (1,) * _ndim(a)) if keepdims else y
    ax = _axis(axis, _ndim(a))
    return _keepdims(_core.bind("argmax", a, axis=ax), _shape(a), (ax,), keepdims)


def argmin(a, axis=None, out=None, keepdims=False):
    """The first position of the minimum (i32; no derivative)."""
    return argmax(negative(_num(a)), axis, out, keepdims)


def cumsum(a, axis=None, dtype=None, out=None):
    """Running sums along ``axis`` (flattened when None); transposes to the reversed sum."""
    _refuse("cumsum", out=out)
    a = _num(a)
    if axis is None:
        a, axis = ravel(a), 0
    return _cast(_core.bind("cumsum", a, axis=_axis(axis, _ndim(a)), reverse=0), _dtype(dtype))


def cumprod(a, axis=None, dtype=None, out=None):
    """Running products along ``axis``, by a log-depth scan of multiplications (exact
    derivatives with zeros in ``a``)."""
    _refuse("cumprod", out=out)
    a = _num(a)
    if axis is None:
        a, axis = ravel(a), 0
    ax = _axis(axis, _ndim(a))
    n, shift, y = _shape(a)[ax], 1, a
    while shift < n:
        head = _slice_axis(y, ax, 0, n - shift)
        cfg = [(0, 0)] * _ndim(a)
        cfg[ax] = (shift, 0)
        y = _core.mul(y, _core.pad(head, cfg, 1.0))
        shift *= 2
    return _cast(y, _dtype(dtype))


def nansum(a, axis=None, keepdims=False):
    a = _float(a)
    return sum(where(isnan(a), 0.0, a), axis, keepdims=keepdims)


def nanmean(a, axis=None, keepdims=False):
    a = _float(a)
    return mean(a, axis, keepdims=keepdims, where=logical_not(isnan(a)))


# ---------------------------------------------------------------------------------------------
# creation


def _shape_arg(shape) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral):
        return (int(shape),)
    return tuple(int(d) for d in shape)


def zeros(shape, dtype=None):
    """An array of zeros (f32 unless ``dtype`` says otherwise)."""
    return _const(_np.zeros(_shape_arg(shape)), _dtype(dtype) or "f32")


def ones(shape, dtype=None):
    return _const(_np.ones(_shape_arg(shape)), _dtype(dtype) or "f32")


def empty(shape, dtype=None):
    """Zeros (there is no uninitialized memory in a traced program)."""
    return zeros(shape, dtype)


def full(shape, fill_value, dtype=None):
    if _is_tracer(fill_value):
        return _core.broadcast_to(_cast(fill_value, _dtype(dtype)), _shape_arg(shape))
    value = _arr(fill_value)
    return _const(_np.full(_shape_arg(shape), value), _dtype(dtype) or _kind(value))


def _like_dtype(a, dtype):
    return _dtype(dtype) or _kind(_arr(a))


def zeros_like(a, dtype=None, shape=None):
    return full_like(a, 0, dtype, shape)


def ones_like(a, dtype=None, shape=None):
    return full_like(a, 1, dtype, shape)


def empty_like(a, dtype=None, shape=None):
    return full_like(a, 0, dtype, shape)


def full_like(a, fill_value, dtype=None, shape=None):
    a = _arr(a)
    dt = _like_dtype(a, dtype)
    shp = _shape(a) if shape is None else _shape_arg(shape)
    if _is_tracer(fill_value):
        return _core.broadcast_to(_cast(fill_value, dt), shp)
    if _is_tracer(a):
        return _core.full_like(a, fill_value, shp, dt)
    return _const(_np.full(shp, fill_value), dt)


def eye(N, M=None, k=0, dtype=None):  # noqa: N803
    return _const(_np.eye(N, M, k), _dtype(dtype) or "f32")


def identity(n, dtype=None):
    return eye(n, dtype=dtype)


def tri(N, M=None, k=0, dtype=None):  # noqa: N803
    return _const(_np.tri(N, M, k), _dtype(dtype) or "f32")


def arange(start, stop=None, step=None, dtype=None):
    """Evenly spaced values (i32 for integer arguments, f32 otherwise)."""
    for v in (start, stop, step):
        if _is_tracer(v):
            raise UnsupportedError("arange", "a traced bound (the length must be static)")
    a = _np.arange(start, stop, step) if step is not None else _np.arange(start, stop)
    dt = _dtype(dtype) or ("i32" if a.dtype.kind in "iu" else "f32")
    return _const(a, dt)


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    if _is_tracer(start) or _is_tracer(stop):
        t = _const(_np.linspace(0.0, 1.0, num, endpoint=endpoint), "f32")
        start, stop = _float(start), _float(stop)
        out = add(start, multiply(t, subtract(stop, start)))
    else:
        out = _const(_np.linspace(start, stop, num, endpoint=endpoint), _dtype(dtype) or "f32")
    if retstep:
        return out, (stop - start) / builtins.max(num - 1 if endpoint else num, 1)
    return out


def logspace(start, stop, num=50, endpoint=True, base=10.0, dtype=None):
    return _const(_np.logspace(start, stop, num, endpoint, base), _dtype(dtype) or "f32")


def array(object, dtype=None, copy=True, ndmin=0):  # noqa: A002
    """An array from data; a list holding tracers is stacked. Python floats are f32 and
    Python ints i32 (JAX's defaults); NumPy arrays keep their dtype."""
    a = _arr(object)
    if isinstance(object, list | tuple) and not _is_tracer(a) and dtype is None:
        if a.dtype == _np.float64:
            a = a.astype(_np.float32)
        elif a.dtype == _np.int64:
            a = a.astype(_np.int32)
    if ndmin and _ndim(a) < ndmin:
        a = _core.reshape(a, (1,) * (ndmin - _ndim(a)) + _shape(a))
    a = _cast(a, _dtype(dtype))
    return a if _is_tracer(a) else _const(a)


def asarray(a, dtype=None):
    return array(a, dtype)


def triu_indices(n, k=0, m=None):
    return tuple(_const(i, "i32") for i in _np.triu_indices(n, k, m))


def tril_indices(n, k=0, m=None):
    return tuple(_const(i, "i32") for i in _np.tril_indices(n, k, m))


def diag_indices(n, ndim=2):
    return tuple(_const(i, "i32") for i in _np.diag_indices(n, ndim))


def indices(dimensions, dtype=None):
    return _const(_np.indices(dimensions), _dtype(dtype) or "i32")


# ---------------------------------------------------------------------------------------------
# shape ops


def shape(a):
    return _shape(_arr(a))


def ndim(a):
    return _ndim(_arr(a))


def size(a, axis=None):
    s = _shape(_arr(a))
    return math.prod(s) if axis is None else s[axis]


def reshape(a, newshape=None, order="C", *, shape=None):
    """Row-major reshape; one dimension may be -1."""
    if order != "C":
        raise UnsupportedError("reshape", f"order={order!r} (row-major only)")
    target = shape if shape is not None else newshape
    target = (target,) if isinstance(target, numbers.Integral) else tuple(target)
    a = _arr(a)
    size_ = math.prod(_shape(a))
    if target.count(-1) > 1:
        raise ShaxValueError("reshape: only one dimension can be -1")
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if known == 0 or size_ % known:
            raise ShaxValueError(f"cannot reshape {list(_shape(a))} to {list(target)}")
    elif known != size_:
        raise ShaxValueError(f"cannot reshape {list(_shape(a))} to {list(target)}")
    return _core.reshape(a, target)


def ravel(a, order="C"):
    return reshape(a, (-1,), order)


def transpose(a, axes=None):
    """Reverse the axes, or permute them by ``axes``."""
    a = _arr(a)
    n = _ndim(a)
    perm = tuple(reversed(range(n))) if axes is None else tuple(_axis(i, n) for i in axes)
    if sorted(perm) != list(range(n)):
        raise ShaxValueError(f"axes {axes!r} are not a permutation of {n} axes")
    return a if perm == tuple(range(n)) else _core.transpose(a, perm)


def permute_dims(a, axes):
    return transpose(a, axes)


def matrix_transpose(x, /):
    n = _ndim(x)
    return swapaxes(x, n - 1, n - 2)


def swapaxes(a, axis1, axis2):
    a = _arr(a)
    n = _ndim(a)
    perm = list(range(n))
    i, j = _axis(axis1, n), _axis(axis2, n)
    perm[i], perm[j] = perm[j], perm[i]
    return transpose(a, perm)


def moveaxis(a, source, destination):
    a = _arr(a)
    n = _ndim(a)
    src = [source] if isinstance(source, numbers.Integral) else list(source)
    dst = [destination] if isinstance(destination, numbers.Integral) else list(destination)
    src = [_axis(s, n) for s in src]
    dst = [_axis(d, n) for d in dst]
    order = [i for i in range(n) if i not in src]
    for d, s in sorted(zip(dst, src, strict=True)):
        order.insert(d, s)
    return transpose(a, order)


def expand_dims(a, axis):
    a = _arr(a)
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    n = _ndim(a) + len(axes)
    where_ = sorted(_axis(ax, n) for ax in axes)
    shape_ = list(_shape(a))
    for ax in where_:
        shape_.insert(ax, 1)
    return _core.reshape(a, tuple(shape_))


def squeeze(a, axis=None):
    a = _arr(a)
    s = _shape(a)
    if axis is None:
        axes = tuple(i for i, n in enumerate(s) if n == 1)
    else:
        axes = _axes(axis, len(s))
        for i in axes:
            if s[i] != 1:
                raise ShaxValueError(f"cannot squeeze axis {i} of size {s[i]}")
    return _core.reshape(a, tuple(n for i, n in enumerate(s) if i not in axes))


def broadcast_to(array, shape):
    return _core.broadcast_to(_arr(array), _shape_arg(shape))


def broadcast_arrays(*args):
    shp = _broadcast(*[_arr(a) for a in args])
    return [broadcast_to(a, shp) for a in args]


def broadcast_shapes(*shapes):
    return tuple(_np.broadcast_shapes(*shapes))


def atleast_1d(*arys):
    out = [a if _ndim(a) >= 1 else reshape(a, (1,)) for a in map(_arr, arys)]
    return out[0] if len(out) == 1 else out


def atleast_2d(*arys):
    out = []
    for a in map(_arr, arys):
        out.append(a if _ndim(a) >= 2 else reshape(a, (1,) * (2 - _ndim(a)) + _shape(a)))
    return out[0] if len(out) == 1 else out


def atleast_3d(*arys):
    out = []
    for a in map(_arr, arys):
        s = _shape(a)
        s = {0: (1, 1, 1), 1: (1,) + s + (1,), 2: s + (1,)}.get(len(s), s)
        out.append(reshape(a, s))
    return out[0] if len(out) == 1 else out


def _common(arrays):
    arrays = [_arr(a) for a in arrays]
    dts = {_kind(a) for a in arrays}
    if len(dts) > 1:
        common = "bool"
        for d in dts:
            common = _core.promote_dtypes(common, d)
        arrays = [_core.convert(a, common) for a in arrays]
    return arrays


def concatenate(arrays, axis=0, dtype=None):
    """Join along ``axis`` (negative too; None flattens first)."""
    arrays = _common(arrays)
    if axis is None:
        arrays, axis = [ravel(a) for a in arrays], 0
    if not arrays:
        raise ShaxValueError("need at least one array to concatenate")
    ax = _axis(axis, _ndim(arrays[0]))
    out = arrays[0] if len(arrays) == 1 else _core.concatenate(arrays, ax)
    return _cast(out, _dtype(dtype))


concat = concatenate


def stack(arrays, axis=0, dtype=None):
    arrays = _common(arrays)
    ax = _axis(axis, _ndim(arrays[0]) + 1)
    return concatenate([expand_dims(a, ax) for a in arrays], ax, dtype)


def hstack(tup, dtype=None):
    arrays = [atleast_1d(a) for a in tup]
    return concatenate(arrays, 0 if _ndim(arrays[0]) == 1 else 1, dtype)


def vstack(tup, dtype=None):
    return concatenate([atleast_2d(a) for a in tup], 0, dtype)


row_stack = vstack


def dstack(tup, dtype=None):
    return concatenate([atleast_3d(a) for a in tup], 2, dtype)


def column_stack(tup):
    arrays = [_arr(a) for a in tup]
    arrays = [reshape(a, (-1, 1)) if _ndim(a) < 2 else a for a in arrays]
    return concatenate(arrays, 1)


def _slice_axis(a, axis, start, stop):
    s = _shape(a)
    ax = axis % len(s)
    lo, hi = [0] * len(s), list(s)
    lo[ax], hi[ax] = start, stop
    if (tuple(lo), tuple(hi)) == ((0,) * len(s), s):
        return a
    return _core.slice_(a, lo, hi)


def split(ary, indices_or_sections, axis=0):
    return _split(ary, indices_or_sections, axis, equal=True)


def array_split(ary, indices_or_sections, axis=0):
    return _split(ary, indices_or_sections, axis, equal=False)


def _split(ary, indices_or_sections, axis, equal: bool):
    """Pieces of ``ary`` along ``axis`` between cuts: given, or for k sections of n, at
    multiples of n/k (``equal``: k must divide n) or with the first n mod k pieces one longer."""
    a = _arr(ary)
    ax = _axis(axis, _ndim(a))
    n = _shape(a)[ax]
    if isinstance(indices_or_sections, numbers.Integral):
        k = int(indices_or_sections)
        if equal:
            if k <= 0 or n % k:
                raise ShaxValueError(
                    f"array split does not result in an equal division ({n} by {k})"
                )
            cuts = [n // k * i for i in range(1, k)]
        else:
            sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
            cuts = [int(c) for c in _np.cumsum(sizes)[:-1]]
    else:
        cuts = [int(c) for c in indices_or_sections]
    # piece i is a[cuts[i-1]:cuts[i]] with Python's slice rules (negative cuts count from the
    # end, cuts past the end clamp), as NumPy's split
    bounds = [0, *cuts, n]
    pieces = [range(n)[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
    return [_slice_axis(a, ax, r.start, builtins.max(r.start, r.stop)) for r in pieces]


def hsplit(ary, sections):
    return split(ary, sections, axis=1 if _ndim(ary) > 1 else 0)


def vsplit(ary, sections):
    return split(ary, sections, axis=0)


def flip(m, axis=None):
    m = _arr(m)
    axes = _axes(axis, _ndim(m))
    return _core.bind("rev", m, axes=axes) if axes else m


def fliplr(m):
    return flip(m, 1)


def flipud(m):
    return flip(m, 0)


def roll(a, shift, axis=None):
    """Cyclic shift (slices and a concatenate; the derivative rolls back)."""
    a = _arr(a)
    if axis is None:
        return reshape(roll(ravel(a), shift, 0), _shape(a))
    shifts = (shift,) if isinstance(shift, numbers.Integral) else tuple(shift)
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    if len(shifts) == 1 and len(axes) > 1:
        shifts = shifts * len(axes)
    for s, ax in zip(shifts, axes, strict=True):
        ax = _axis(ax, _ndim(a))
        n = _shape(a)[ax]
        s = int(s) % n if n else 0
        if s:
            a = _core.concatenate([_slice_axis(a, ax, n - s, n), _slice_axis(a, ax, 0, n - s)], ax)
    return a


def rot90(m, k=1, axes=(0, 1)):
    m = _arr(m)
    k %= 4
    a0, a1 = axes
    for _ in range(k):
        m = swapaxes(flip(m, a1), a0, a1)
    return m


def tile(A, reps):  # noqa: N803
    a = _arr(A)
    reps = (reps,) if isinstance(reps, numbers.Integral) else tuple(reps)
    n = builtins.max(len(reps), _ndim(a))
    reps = (1,) * (n - len(reps)) + reps
    a = reshape(a, (1,) * (n - _ndim(a)) + _shape(a))
    s = _shape(a)
    inter = tuple(v for pair in zip((1,) * n, s) for v in pair)
    target = tuple(v for pair in zip(reps, s) for v in pair)
    b = _core.broadcast_to(_core.reshape(a, inter), target)
    return _core.reshape(b, tuple(r * d for r, d in zip(reps, s)))


def repeat(a, repeats, axis=None, *, total_repeat_length=None):
    """Repeat elements (an int count, or constant counts per element)."""
    a = _arr(a)
    if axis is None:
        a, axis = ravel(a), 0
    ax = _axis(axis, _ndim(a))
    s = _shape(a)
    if isinstance(repeats, numbers.Integral):
        r = int(repeats)
        expanded = _core.reshape(a, s[: ax + 1] + (1,) + s[ax + 1 :])
        b = _core.broadcast_to(expanded, s[: ax + 1] + (r,) + s[ax + 1 :])
        return _core.reshape(b, s[:ax] + (s[ax] * r,) + s[ax + 1 :])
    if _is_tracer(repeats):
        raise UnsupportedError("repeat", "traced repeat counts (the result shape must be static)")
    idx = _np.repeat(_np.arange(s[ax]), _np.asarray(repeats))
    return take(a, _const(idx, "i32"), axis=ax)


def diff(a, n=1, axis=-1, prepend=None, append=None):
    a = _arr(a)
    ax = _axis(axis, _ndim(a))
    if prepend is not None or append is not None:
        parts = []
        for extra in (prepend, None, append):
            if extra is None:
                continue
            e_ = _arr(extra)
            if _ndim(e_) == 0:
                shp = list(_shape(a))
                shp[ax] = 1
                e_ = broadcast_to(e_, shp)
            parts.append(e_)
        pieces = ([parts[0]] if prepend is not None else []) + [a]
        pieces += [parts[-1]] if append is not None else []
        a = concatenate(pieces, ax)
    for _ in range(n):
        m = _shape(a)[ax]
        a = _core.sub(_slice_axis(a, ax, 1, m), _slice_axis(a, ax, 0, m - 1))
    return a


def ediff1d(ary):
    return diff(ravel(ary))


def _pad_width(pad_width, ndim):
    pw = _np.asarray(pad_width, dtype=_np.int64)
    if pw.ndim == 0:
        pw = _np.full((ndim, 2), int(pw))
    elif pw.ndim == 1:
        pw = _np.broadcast_to(pw if pw.size == 2 else _np.repeat(pw, 2), (ndim, 2))
    elif pw.shape == (1, 2):
        pw = _np.broadcast_to(pw, (ndim, 2))
    if pw.shape != (ndim, 2) or (pw < 0).any():
        raise ShaxValueError(f"bad pad_width {pad_width!r} for an array of rank {ndim}")
    return [(int(lo), int(hi)) for lo, hi in pw]


def pad(array, pad_width, mode="constant", constant_values=0, **kwargs):
    """Pad with NumPy's ``pad_width`` forms; modes constant, edge, reflect, symmetric, wrap."""
    a = _arr(array)
    widths = _pad_width(pad_width, _ndim(a))
    if mode == "constant":
        if _is_tracer(constant_values):
            raise UnsupportedError("pad", "a traced constant_values")
        cv = _np.asarray(constant_values)
        if cv.size != 1:
            raise UnsupportedError("pad", "per-axis constant_values")
        return _core.pad(a, widths, float(cv.ravel()[0]))
    if mode not in ("edge", "reflect", "symmetric", "wrap"):
        raise UnsupportedError("pad", f"mode={mode!r}")
    for ax, (lo, hi) in enumerate(widths):
        a = _pad_axis(a, ax, lo, hi, mode)
    return a


def _pad_axis(a, ax, lo, hi, mode):
    n = _shape(a)[ax]
    if not (lo or hi):
        return a
    if mode == "edge":

        def block(i, k):
            edge = _slice_axis(a, ax, i, i + 1)
            shp = list(_shape(a))
            shp[ax] = k
            return _core.broadcast_to(edge, shp)

        parts = ([block(0, lo)] if lo else []) + [a] + ([block(n - 1, hi)] if hi else [])
    elif mode == "wrap":
        if lo > n or hi > n:
            raise UnsupportedError("pad", "mode='wrap' wider than the axis")
        parts = ([_slice_axis(a, ax, n - lo, n)] if lo else []) + [a]
        parts += [_slice_axis(a, ax, 0, hi)] if hi else []
    else:
        off = 1 if mode == "reflect" else 0
        if lo + off > n or hi + off > n:
            raise UnsupportedError("pad", f"mode={mode!r} wider than the axis")
        parts = []
        if lo:
            parts.append(flip(_slice_axis(a, ax, off, off + lo), ax))
        parts.append(a)
        if hi:
            parts.append(flip(_slice_axis(a, ax, n - hi - off, n - off), ax))
    return _core.concatenate(parts, ax)


def tril(m, k=0):
    """The lower triangle (elements above the k-th diagonal zeroed)."""
    m = _arr(m)
    r, c = _shape(m)[-2:]
    return where(_const(_np.tri(r, c, k, dtype=bool)), m, _core.full_like(m, 0))


def triu(m, k=0):
    """The upper triangle (elements below the k-th diagonal zeroed)."""
    m = _arr(m)
    r, c = _shape(m)[-2:]
    return where(_const(~_np.tri(r, c, k - 1, dtype=bool)), m, _core.full_like(m, 0))


def diagonal(a, offset=0, axis1=0, axis2=1):
    """The ``offset`` diagonal of the ``axis1``/``axis2`` planes, as the last axis."""
    a = _arr(a)
    n = _ndim(a)
    a = moveaxis(a, (_axis(axis1, n), _axis(axis2, n)), (n - 2, n - 1))
    r, c = _shape(a)[-2:]
    i0, j0 = builtins.max(-offset, 0), builtins.max(offset, 0)
    length = builtins.max(builtins.min(r - i0, c - j0), 0)
    i = _const(_np.arange(length) + i0, "i32")
    j = _const(_np.arange(length) + j0, "i32")
    return _getitem(a, (Ellipsis, i, j))


def diag(v, k=0):
    """The diagonal of a matrix, or a matrix with ``v`` on its k-th diagonal."""
    v = _arr(v)
    if _ndim(v) == 2:
        return diagonal(v, k)
    if _ndim(v) != 1:
        raise ShaxValueError("diag takes a 1-d or 2-d array")
    n = _shape(v)[0]
    d = _core.mul(_core.broadcast(v, (0,), (n, n)), _const(_np.eye(n), _kind(v)))
    if k > 0:
        return _core.pad(d, [(0, k), (k, 0)], 0.0)
    if k < 0:
        return _core.pad(d, [(-k, 0), (0, -k)], 0.0)
    return d


def diagflat(v, k=0):
    return diag(ravel(v), k)


def trace(a, offset=0, axis1=0, axis2=1, dtype=None):
    return sum(diagonal(a, offset, axis1, axis2), axis=-1, dtype=dtype)


def meshgrid(*xi, indexing="xy", sparse=False, copy=True):
    xs = [ravel(x) for x in xi]
    n = len(xs)
    sizes = [_shape(x)[0] for x in xs]
    if indexing == "xy" and n >= 2:
        sizes[0], sizes[1] = sizes[1], sizes[0]
    out = []
    for i, x in enumerate(xs):
        ax = i
        if indexing == "xy" and n >= 2 and i < 2:
            ax = 1 - i
        shp = [1] * n
        shp[ax] = _shape(x)[0]
        g = reshape(x, shp)
        out.append(g if sparse else broadcast_to(g, sizes))
    return out


# ---------------------------------------------------------------------------------------------
# indexing: x[...] and x.at[...]


def _static_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _index_array(v):
    """An integer or boolean index entry as an array, or None for ints, slices, None, ...."""
    if _is_tracer(v):
        return v
    if isinstance(v, list | tuple) or isinstance(v, _np.ndarray):
        a = _np.asarray(v)
        if a.dtype.kind not in "iub" and a.size:
            raise ShaxIndexError(f"index arrays must be integers or booleans, got {a.dtype}")
        return a.astype(_np.int64) if a.dtype.kind != "b" else a
    return None


def _normalize_index(x, index):
    """``(x', entries)``: Ellipsis expanded, constant masks turned into positions, ``None``
    axes inserted into x', so that entry i applies to axis i of x'."""
    if not isinstance(index, tuple):
        index = (index,)
    entries = []
    for v in index:
        a = _index_array(v)
        if a is None:
            if v is None or v is Ellipsis or isinstance(v, slice) or _static_int(v):
                entries.append(v)
            elif isinstance(v, bool):
                raise UnsupportedError("ndarray.__getitem__", "a Python bool as an index")
            else:
                raise ShaxIndexError(
                    f"unsupported index {v!r}: use ints, slices, None, ..., and integer or "
                    "boolean arrays"
                )
        elif _kind(a) == "bool":
            if _is_tracer(a):
                raise UnsupportedError(
                    "ndarray.__getitem__",
                    "a traced boolean mask (the result shape would depend on the data); "
                    "use where(mask, x, 0) or x.at[mask].set(...) instead",
                )
            entries.extend(_np.nonzero(a)) if a.ndim else entries.append(_np.asarray(int(a)))
        else:
            entries.append(a)
    consumed = builtins.sum(1 for v in entries if v is not None and v is not Ellipsis)
    nd = _ndim(x)
    if builtins.sum(1 for v in entries if v is Ellipsis) > 1:
        raise ShaxIndexError("an index can only have a single ellipsis ('...')")
    if consumed > nd:
        raise ShaxIndexError(f"too many indices for an array of rank {nd}")
    expanded = []
    for v in entries:
        if v is Ellipsis:
            expanded.extend([slice(None)] * (nd - consumed))
        else:
            expanded.append(v)
    if not builtins.any(v is Ellipsis for v in entries):
        expanded.extend([slice(None)] * (nd - consumed))
    if builtins.any(v is None for v in expanded):
        new_shape, it = [], iter(_shape(x))
        for v in expanded:
            new_shape.append(1 if v is None else next(it))
        x = _core.reshape(x, tuple(new_shape))
        expanded = [slice(None) if v is None else v for v in expanded]
    return x, expanded


def _strided(a, ax, start, count, step):
    """Elements ``start, start+step, ...`` (count of them) along ``ax``; any non-zero step."""
    if count == 0:
        return _slice_axis(a, ax, 0, 0)
    last = start + (count - 1) * step
    lo, hi = (start, last + 1) if step > 0 else (last, start + 1)
    a = _slice_axis(a, ax, lo, hi)
    if step < 0:
        a = _core.bind("rev", a, axes=(ax,))
    k = builtins.abs(step)
    if k == 1 or count == 1:
        return a if k == 1 else _slice_axis(a, ax, 0, 1)
    # length (count-1)k+1: pad to count·k, view as [count, k], keep column 0
    s = _shape(a)
    cfg = [(0, 0)] * len(s)
    cfg[ax] = (0, k - 1)
    a = _core.pad(a, cfg, 0.0)
    grouped = _core.reshape(a, s[:ax] + (count, k) + s[ax + 1 :])
    return _core.reshape(_slice_axis(grouped, ax + 1, 0, 1), s[:ax] + (count,) + s[ax + 1 :])


def _basic(x, entries, squeeze_ints: bool):
    """Apply the slices (and ints, when ``squeeze_ints``) of ``entries`` axis by axis."""
    keep = []
    for ax, v in enumerate(entries):
        n = _shape(x)[ax]
        if isinstance(v, slice):
            start, stop, step = v.indices(n)
            count = len(range(start, stop, step))
            x = _strided(x, ax, start, count, step)
            keep.append(count)
        elif _static_int(v) and squeeze_ints:
            i = int(v) + n if v < 0 else int(v)
            if not 0 <= i < n:
                raise ShaxIndexError(f"index {v} is out of bounds for axis {ax} with size {n}")
            x = _slice_axis(x, ax, i, i + 1)
        else:
            keep.append(n)
    if squeeze_ints and len(keep) != _ndim(x):
        x = _core.reshape(x, tuple(keep))
    return x


def _as_position_array(v, n, ax):
    """An integer index entry as i32 positions; constants are checked against the size."""
    if _is_tracer(v):
        if not _type(v).is_int:
            raise ShaxIndexError(f"a traced index must be an integer array, got {_type(v)}")
        return _core.convert(v, "i32")
    a = _np.asarray(v)
    if a.size and (a.max() >= n or a.min() < -n):
        raise ShaxIndexError(
            f"index {a.max() if a.max() >= n else a.min()} is out of bounds "
            f"for axis {ax} with size {n}"
        )
    return _np.where(a < 0, a + n, a).astype(_np.int32)


def _getitem(x, index):
    x = _arr(x)
    x, entries = _normalize_index(x, index)
    advanced = [i for i, v in enumerate(entries) if not isinstance(v, slice) and not _static_int(v)]
    if not advanced:
        return _basic(x, entries, squeeze_ints=True)
    # ints join the advanced indices (NumPy's rule); slices apply first
    advanced = [i for i, v in enumerate(entries) if not isinstance(v, slice)]
    x = _basic(x, [v if isinstance(v, slice) else slice(None) for v in entries], False)
    shape_ = _shape(x)
    arrays = [_as_position_array(entries[i], shape_[i], i) for i in advanced]
    contiguous = advanced == list(range(advanced[0], advanced[-1] + 1))
    if not contiguous:
        rest = [i for i in range(len(shape_)) if i not in advanced]
        x = _core.transpose(x, tuple(advanced) + tuple(rest))
        pos = 0
    else:
        pos = advanced[0]
    bshape = tuple(_np.broadcast_shapes(*(_shape(a) for a in arrays)))
    if builtins.all(not _is_tracer(a) for a in arrays):
        idx = _np.stack([_np.broadcast_to(a, bshape) for a in arrays], axis=-1).astype(_np.int32)
    else:
        cols = [_core.reshape(_core.broadcast_to(_arr(a), bshape), bshape + (1,)) for a in arrays]
        idx = cols[0] if len(cols) == 1 else _core.concatenate(cols, len(bshape))
    return _ix.gather(x, idx, pos)


MAX_UPDATE_ROUNDS = 64  # repeats of one constant position in an x.at[...] update
MAX_DENSE_UPDATE = 1 << 22  # updates x positions for traced indices that may repeat


class _At:
    """``x.at[index]``: JAX's functional updates."""

    __slots__ = ("x",)

    def __init__(self, x):
        self.x = x

    def __getitem__(self, index):
        return _AtRef(self.x, index)


class _AtRef:
    """``x.at[index].set/add/multiply/divide/power/min/max/get``, each a new array.

    Repeated positions: ``add`` sums every update (scatter-add); ``multiply``, ``divide``,
    ``min`` and ``max`` apply every update (``x * v1 * v2``, ``max(x, v1, v2)``), as JAX's
    scatters do. ``set`` with constant indices keeps the last update (NumPy's rule; JAX leaves
    the order unspecified), and ``power`` applies the updates in order; with traced indices
    both use the mean of the updates aimed at a position (deterministic and linear)."""

    __slots__ = ("x", "index")

    def __init__(self, x, index):
        self.x = _arr(x)
        self.index = index

    def get(self, **_):
        return _getitem(self.x, self.index)

    def _mask(self):
        """A boolean mask of x's shape when the index is one, else None."""
        idx = self.index
        if isinstance(idx, tuple) and len(idx) == 1:
            idx = idx[0]
        if _is_tracer(idx) or isinstance(idx, _np.ndarray):
            if _kind(_arr(idx)) == "bool":
                return _core.broadcast_to(_arr(idx), _shape(self.x))
        return None

    def _scattered(self, values):
        """``(flat x, positions, mean update per position, mask of written positions)``."""
        x = self.x
        n = math.prod(_shape(x))
        table = _np.arange(n, dtype=_np.int32).reshape(_shape(x))
        positions = _getitem(table, self.index)
        v = _arr(values)
        if _kind(v) != _kind(x):
            v = _core.convert(v, _kind(x))
        v = _core.broadcast_to(v, _shape(positions))
        flat = _core.reshape(x, (n,))
        pidx = _core.reshape(positions, _shape(positions) + (1,))
        zeros_ = _core.full_like(flat, 0)
        total = _ix.scatter_add(zeros_, pidx, v, 0)
        if not _is_tracer(positions):
            counts = _np.bincount(_np.asarray(positions).ravel(), minlength=n)
            written = _const(counts > 0)
            if counts.max(initial=0) <= 1:
                return flat, written, total
            mean_ = _core.div(total, _const(_np.maximum(counts, 1), _kind(x)))
            return flat, written, mean_
        ones_ = _core.full_like(v, 1)
        counts = _ix.scatter_add(_core.full_like(flat, 0), pidx, ones_, 0)
        written = _core.compare("gt", counts, 0)
        mean_ = _core.div(total, _core.maximum(counts, _core.full_like(counts, 1)))
        return flat, written, mean_

    def _apply(self, values, combine, reduce=None):
        """``x`` with ``combine(x[p], v)`` at every indexed position ``p``.

        Constant positions that repeat are applied in rounds (round ``r`` holds each
        position's ``r``-th update, so every update lands, in order). Traced positions that
        may repeat are reduced densely with ``reduce`` (``"max"``, ``"min"``, ``"prod"``)
        when given, else averaged (``set``, ``power``)."""
        mask = self._mask()
        if mask is not None:
            return where(mask, combine(self.x, _arr(values)), self.x)
        x = self.x
        n = math.prod(_shape(x))
        table = _np.arange(n, dtype=_np.int32).reshape(_shape(x))
        positions = _getitem(table, self.index)
        if not _is_tracer(positions):
            return self._rounds(_np.asarray(positions), values, combine)
        if reduce is not None and math.prod(_shape(positions)) > 1:
            return self._dense(positions, values, combine, reduce)
        flat, written, value = self._scattered(values)
        return _core.reshape(where(written, combine(flat, value), flat), _shape(x))

    def _updates(self, shape_, values):
        v = _arr(values)
        if _kind(v) != _kind(self.x):
            v = _core.convert(v, _kind(self.x))
        return _core.reshape(_core.broadcast_to(v, shape_), (math.prod(shape_),))

    def _rounds(self, positions, values, combine):
        x = self.x
        n = math.prod(_shape(x))
        flat_pos = positions.ravel().astype(_np.int64)
        m = flat_pos.size
        v = self._updates(positions.shape, values)
        # rank[j]: how many earlier updates aim at the same position as update j
        order = _np.argsort(flat_pos, kind="stable")
        sorted_pos = flat_pos[order]
        starts = _np.flatnonzero(_np.r_[True, sorted_pos[1:] != sorted_pos[:-1]])
        run = _np.diff(_np.r_[starts, m])
        rank = _np.empty(m, _np.int64)
        rank[order] = _np.arange(m) - _np.repeat(starts, run)
        rounds = int(rank.max(initial=-1)) + 1
        if rounds > MAX_UPDATE_ROUNDS:
            raise UnsupportedError(
                "x.at[...] update",
                f"a position indexed {rounds} times (at most {MAX_UPDATE_ROUNDS}; use .add "
                "or fewer repeats)",
            )
        flat = _core.reshape(x, (n,))
        for r in range(rounds):
            chosen = _np.flatnonzero(rank == r)
            if rounds == 1:
                update = v
            else:
                update = _ix.gather(v, chosen.reshape(-1, 1).astype(_np.int32), 0)
            where_ = flat_pos[chosen].reshape(-1, 1).astype(_np.int32)
            spread = _ix.scatter_add(_core.full_like(flat, 0), where_, update, 0)
            written = _np.zeros(n, bool)
            written[flat_pos[chosen]] = True
            flat = where(_const(written), combine(flat, spread), flat)
        return _core.reshape(flat, _shape(x))

    def _dense(self, positions, values, combine, reduce):
        # one row per update, one column per position of x: O(updates x size) memory
        x = self.x
        n = math.prod(_shape(x))
        m = math.prod(_shape(positions))
        if m * n > MAX_DENSE_UPDATE:
            raise UnsupportedError(
                "x.at[...] update",
                f"traced indices into {n} positions with {m} updates ({m * n} pairs, at most "
                f"{MAX_DENSE_UPDATE}); use constant indices",
            )
        v = self._updates(_shape(positions), values)
        hits = _core.compare(
            "eq",
            _core.reshape(positions, (m, 1)),
            _const(_np.arange(n, dtype=_np.int32).reshape(1, n)),
        )
        rows = _core.broadcast_to(_core.reshape(v, (m, 1)), (m, n))
        flat = _core.reshape(x, (n,))
        if reduce == "prod":
            update = prod(where(hits, rows, 1), axis=0)
            return _core.reshape(combine(flat, update), _shape(x))
        neutral = -_np.inf if reduce == "max" else _np.inf
        reducer = max if reduce == "max" else min
        update = reducer(where(hits, rows, neutral), axis=0)
        written = any(hits, axis=0)
        return _core.reshape(where(written, combine(flat, update), flat), _shape(x))

    def set(self, values, **_):  # noqa: A003
        return self._apply(values, lambda old, new: new)

    def add(self, values, **_):
        mask = self._mask()
        if mask is not None:
            return _core.add(self.x, where(mask, _arr(values), 0))
        x = self.x
        n = math.prod(_shape(x))
        table = _np.arange(n, dtype=_np.int32).reshape(_shape(x))
        positions = _getitem(table, self.index)
        v = _arr(values)
        v = _core.convert(v, _kind(x)) if _kind(v) != _kind(x) else v
        v = _core.broadcast_to(v, _shape(positions))
        pidx = _core.reshape(positions, _shape(positions) + (1,))
        return _core.reshape(_ix.scatter_add(_core.reshape(x, (n,)), pidx, v, 0), _shape(x))

    def multiply(self, values, **_):
        return self._apply(values, _core.mul, "prod")

    mul = multiply

    def divide(self, values, **_):
        # x / v1 / v2 = x / (v1 * v2)
        return self._apply(values, _core.div, "prod")

    def power(self, values, **_):
        return self._apply(values, power)

    def min(self, values, **_):  # noqa: A003
        return self._apply(values, minimum, "min")

    def max(self, values, **_):  # noqa: A003
        return self._apply(values, maximum, "max")


def take(a, indices, axis=None, mode=None, fill_value=None):
    """Elements at ``indices`` along ``axis`` (flattened when None); out-of-range traced
    indices are clamped."""
    a = _arr(a)
    if axis is None:
        a, axis = ravel(a), 0
    ax = _axis(axis, _ndim(a))
    return _getitem(a, (slice(None),) * ax + (indices,))


def take_along_axis(arr, indices, axis, mode=None, fill_value=None):
    """``arr`` gathered along ``axis`` by ``indices`` (broadcast against the other axes)."""
    a = _arr(arr)
    if axis is None:
        a, axis = ravel(a), 0
    nd = _ndim(a)
    ax = _axis(axis, nd)
    idx = _arr(indices)
    if _ndim(idx) != nd:
        raise ShaxValueError("indices and arr must have the same number of dimensions")
    index = []
    for d in range(nd):
        if d == ax:
            index.append(idx)
        else:
            shp = [1] * nd
            shp[d] = _shape(a)[d]
            index.append(_np.arange(_shape(a)[d]).reshape(shp))
    return _getitem(a, tuple(index))


def nonzero(a, *, size=None, fill_value=None):
    """Positions of non-zero elements of a constant array (a traced one has no static size)."""
    if _is_tracer(a):
        raise UnsupportedError("nonzero", "a traced argument (the result shape depends on data)")
    return tuple(_const(i, "i32") for i in _np.nonzero(_np.asarray(a)))


def argwhere(a):
    if _is_tracer(a):
        raise UnsupportedError("argwhere", "a traced argument (the result shape depends on data)")
    return _const(_np.argwhere(_np.asarray(a)), "i32")


def flatnonzero(a):
    if _is_tracer(a):
        raise UnsupportedError("flatnonzero", "a traced argument")
    return _const(_np.flatnonzero(_np.asarray(a)), "i32")


def compress(condition, a, axis=None):
    if _is_tracer(condition):
        raise UnsupportedError("compress", "a traced condition")
    return take(a, _const(_np.flatnonzero(_np.asarray(condition)), "i32"), axis)


def extract(condition, arr):
    return compress(ravel(_np.asarray(condition)), ravel(arr))


# ---------------------------------------------------------------------------------------------
# sorting


def argsort(a, axis=-1, kind=None, order=None, *, stable=True, descending=False):
    """The stable sorting permutation (i32; no derivative)."""
    a = _num(a)
    if axis is None:
        a, axis = ravel(a), 0
    if descending:  # stable: ties keep their order
        return _core.bind("argsort", negative(a), axis=_axis(axis, _ndim(a)))
    return _core.bind("argsort", a, axis=_axis(axis, _ndim(a)))


def sort(a, axis=-1, kind=None, order=None, *, stable=True, descending=False):
    """Sorted values; the derivative follows the permutation (a gather by argsort)."""
    a = _arr(a)
    if axis is None:
        a, axis = ravel(a), 0
    perm = argsort(a, axis, descending=descending)
    return take_along_axis(a, perm, axis)


def top_k(operand, k):
    """``(values, indices)`` of the k largest along the last axis (ties: lower index first)."""
    a = _arr(operand)
    perm = _core.bind("argsort", negative(_num(a)), axis=_ndim(a) - 1)
    perm = _slice_axis(perm, -1, 0, k)
    return take_along_axis(a, perm, -1), perm


# ---------------------------------------------------------------------------------------------
# products and contractions


def _promote_all(*xs):
    xs = [_float(x) for x in xs]
    if len({_kind(x) for x in xs}) > 1:
        xs = [_core.convert(x, "f64") for x in xs]
    return xs


def matmul(a, b, /):
    """``a @ b`` with NumPy's rules: 1-d operands are promoted then squeezed, leading (batch)
    axes broadcast; lowered to one ``dot_general`` with batch dimensions."""
    a, b = _promote_all(a, b)
    na, nb = _ndim(a), _ndim(b)
    if na == 0 or nb == 0:
        raise ShaxValueError("matmul does not take scalar operands (use *)")
    if na <= 2 and nb <= 2:
        return _core.bind("dot", a, b)
    a2 = reshape(a, (1,) + _shape(a)) if na == 1 else a
    b2 = reshape(b, _shape(b) + (1,)) if nb == 1 else b
    batch = tuple(_np.broadcast_shapes(_shape(a2)[:-2], _shape(b2)[:-2]))
    a2 = broadcast_to(a2, batch + _shape(a2)[-2:])
    b2 = broadcast_to(b2, batch + _shape(b2)[-2:])
    nbatch = len(batch)
    bd = tuple(range(nbatch))
    out = _core.dot_general(a2, b2, (nbatch + 1,), (nbatch,), bd, bd)
    if na == 1:
        out = squeeze(out, -2)
    if nb == 1:
        out = squeeze(out, -1)
    return out


def dot(a, b):
    """NumPy's dot: scalars multiply; otherwise contract a's last axis with b's second-last."""
    a, b = _promote_all(a, b)
    na, nb = _ndim(a), _ndim(b)
    if na == 0 or nb == 0:
        return _core.mul(a, b)
    if na <= 2 and nb <= 2:
        return _core.bind("dot", a, b)
    return _core.dot_general(a, b, (na - 1,), (builtins.max(nb - 2, 0),))


def vdot(a, b):
    return dot(ravel(a), ravel(b))


def vecdot(x1, x2, /, *, axis=-1):
    return sum(multiply(x1, x2), axis=axis)


def inner(a, b):
    a, b = _promote_all(a, b)
    if _ndim(a) == 0 or _ndim(b) == 0:
        return _core.mul(a, b)
    return _core.dot_general(a, b, (_ndim(a) - 1,), (_ndim(b) - 1,))


def outer(a, b):
    a, b = _promote_all(ravel(a), ravel(b))
    return _core.mul(reshape(a, (-1, 1)), reshape(b, (1, -1)))


def tensordot(a, b, axes=2):
    a, b = _promote_all(a, b)
    if isinstance(axes, numbers.Integral):
        ca = tuple(range(_ndim(a) - axes, _ndim(a)))
        cb = tuple(range(axes))
    else:
        ca_, cb_ = axes
        ca_ = [ca_] if isinstance(ca_, numbers.Integral) else list(ca_)
        cb_ = [cb_] if isinstance(cb_, numbers.Integral) else list(cb_)
        ca = tuple(_axis(i, _ndim(a)) for i in ca_)
        cb = tuple(_axis(i, _ndim(b)) for i in cb_)
    return _core.dot_general(a, b, ca, cb)


def kron(a, b):
    a, b = _promote_all(a, b)
    n = builtins.max(_ndim(a), _ndim(b))
    a = reshape(a, (1,) * (n - _ndim(a)) + _shape(a))
    b = reshape(b, (1,) * (n - _ndim(b)) + _shape(b))
    sa, sb = _shape(a), _shape(b)
    ai = reshape(a, tuple(v for d in sa for v in (d, 1)))
    bi = reshape(b, tuple(v for d in sb for v in (1, d)))
    return reshape(multiply(ai, bi), tuple(x * y for x, y in zip(sa, sb)))


def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """The cross product of 3-vectors along the last axis."""
    a, b = _promote_all(a, b)
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = moveaxis(a, axisa, -1), moveaxis(b, axisb, -1)
    if _shape(a)[-1] != 3 or _shape(b)[-1] != 3:
        raise UnsupportedError("cross", "vectors of length other than 3")
    a0, a1, a2 = (_getitem(a, (Ellipsis, i)) for i in range(3))
    b0, b1, b2 = (_getitem(b, (Ellipsis, i)) for i in range(3))
    c = stack(
        [
            subtract(multiply(a1, b2), multiply(a2, b1)),
            subtract(multiply(a2, b0), multiply(a0, b2)),
            subtract(multiply(a0, b1), multiply(a1, b0)),
        ],
        axis=-1,
    )
    return moveaxis(c, -1, axisc)


def convolve(a, v, mode="full"):
    """1-d discrete convolution as shifted, scaled copies (both operands differentiable)."""
    a, v = _promote_all(a, v)
    if _ndim(a) != 1 or _ndim(v) != 1:
        raise ShaxValueError("convolve takes 1-d arrays")
    if _shape(v)[0] > _shape(a)[0]:
        a, v = v, a
    n, m = _shape(a)[0], _shape(v)[0]
    full_ = None
    for j in range(m):
        term = _core.mul(_getitem(v, j), _core.pad(a, [(j, m - 1 - j)], 0.0))
        full_ = term if full_ is None else _core.add(full_, term)
    if mode == "full":
        return full_
    if mode == "same":
        start = (m - 1) // 2
        return _slice_axis(full_, 0, start, start + n)
    if mode == "valid":
        return _slice_axis(full_, 0, m - 1, n)
    raise ShaxValueError(f"unknown convolve mode {mode!r}")


def correlate(a, v, mode="valid"):
    return convolve(a, flip(v), mode)


def polyval(p, x):
    """Horner's rule: ``p[0] x^(n-1) + ... + p[n-1]``."""
    p = _arr(p)
    y = _getitem(p, 0)
    for i in range(1, _shape(p)[0]):
        y = add(multiply(y, x), _getitem(p, i))
    return y


def einsum(subscripts, *operands, optimize=None, precision=None, preferred_element_type=None):
    """Einstein summation, any subscripts (with ``...``): diagonals and lone indices are summed
    first, then operands are contracted pairwise with ``dot_general``, then transposed."""
    if not isinstance(subscripts, str):
        raise UnsupportedError("einsum", "the interleaved (operand, axes) form")
    ops_ = _promote_all(*operands)
    spec = subscripts.replace(" ", "")
    if "->" in spec:
        lhs, out = spec.split("->")
    else:
        lhs, out = spec, None
    terms = lhs.split(",")
    if len(terms) != len(ops_):
        raise ShaxValueError(f"einsum {subscripts!r} names {len(terms)} operands, got {len(ops_)}")
    used = set(spec)
    pool = (
        c for c in string.ascii_letters + "".join(map(chr, range(0x3B1, 0x3C9))) if c not in used
    )
    ell_rank = builtins.max(
        [_ndim(x) - len(t.replace("...", "")) for t, x in zip(terms, ops_) if "..." in t],
        default=0,
    )
    ell = "".join(next(pool) for _ in range(ell_rank))
    letters = []
    for t, x in zip(terms, ops_):
        if "..." in t:
            k = _ndim(x) - len(t.replace("...", ""))
            t = t.replace("...", ell[ell_rank - k :] if k else "")
        if len(t) != _ndim(x):
            raise ShaxValueError(f"einsum term {t!r} does not match an operand of rank {_ndim(x)}")
        letters.append(list(t))
    if out is None:
        counts = {}
        for t in letters:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    sizes: dict[str, int] = {}
    for t, x in zip(letters, ops_):
        for c, n in zip(t, _shape(x)):
            if n != 1 or c not in sizes:
                if c in sizes and sizes[c] != n and sizes[c] != 1:
                    raise ShaxValueError(f"einsum index {c!r} has sizes {sizes[c]} and {n}")
                sizes[c] = n if c not in sizes or sizes[c] == 1 else sizes[c]
    # broadcast size-1 axes (ellipsis broadcasting)
    ops_ = [
        broadcast_to(x, tuple(sizes[c] for c in t))
        if tuple(sizes[c] for c in t) != _shape(x)
        else x
        for t, x in zip(letters, ops_)
    ]
    pairs = [_einsum_prepare(x, t) for x, t in zip(ops_, letters)]
    for i in range(len(pairs)):
        x, t = pairs[i]
        others = set(out) | {c for j, (_, u) in enumerate(pairs) if j != i for c in u}
        lone = [k for k, c in enumerate(t) if c not in others]
        if lone:
            x = _core.reduce_sum(x, tuple(lone))
            t = [c for c in t if c not in set(t[k] for k in lone)]
        pairs[i] = (x, t)
    acc, acc_t = pairs[0]
    for j in range(1, len(pairs)):
        y, y_t = pairs[j]
        after = set(out) | {c for _, u in pairs[j + 1 :] for c in u}
        shared = [c for c in acc_t if c in y_t]
        batch = [c for c in shared if c in after]
        contract = [c for c in shared if c not in after]
        acc = _core.dot_general(
            acc,
            y,
            tuple(acc_t.index(c) for c in contract),
            tuple(y_t.index(c) for c in contract),
            tuple(acc_t.index(c) for c in batch),
            tuple(y_t.index(c) for c in batch),
        )
        acc_t = batch + [c for c in acc_t if c not in shared] + [c for c in y_t if c not in shared]
        lone = [k for k, c in enumerate(acc_t) if c not in after]
        if lone:
            acc = _core.reduce_sum(acc, tuple(lone))
            acc_t = [c for k, c in enumerate(acc_t) if k not in lone]
    extra = [k for k, c in enumerate(acc_t) if c not in out]
    if extra:
        acc = _core.reduce_sum(acc, tuple(extra))
        acc_t = [c for k, c in enumerate(acc_t) if k not in extra]
    if sorted(acc_t) != sorted(out):
        raise ShaxValueError(f"einsum output {out!r} names an index no operand has")
    perm = tuple(acc_t.index(c) for c in out)
    return acc if perm == tuple(range(len(perm))) else _core.transpose(acc, perm)


def _einsum_prepare(x, t):
    """Take the diagonal for an index repeated within one operand (``ii->i``)."""
    t = list(t)
    while True:
        rep = next((c for c in t if t.count(c) > 1), None)
        if rep is None:
            return x, t
        p = t.index(rep)
        q = t.index(rep, p + 1)
        n = _shape(x)[p]
        shp = [1] * len(t)
        shp[p] = shp[q] = n
        mask = _const(_np.eye(n).reshape(shp), _kind(x))
        x = _core.reduce_sum(multiply(x, mask), (q,))
        del t[q]


# ---------------------------------------------------------------------------------------------
# dtype helpers


def astype(x, dtype, copy=False):
    return _core.convert(_arr(x), _dtype(dtype))


def result_type(*args):
    kinds = [_kind(_arr(a)) if not isinstance(a, type | _np.dtype) else _dtype(a) for a in args]
    common = "bool"
    for k in kinds:
        common = _core.promote_dtypes(common, k)
    return _np_dtype(common)


def issubdtype(arg1, arg2):
    return _np.issubdtype(arg1, arg2)


floating, integer, number, inexact = _np.floating, _np.integer, _np.number, _np.inexact


def iscomplexobj(x):
    return False


def isscalar(x):
    return _ndim(x) == 0 if _is_tracer(x) else _np.isscalar(x)


# ---------------------------------------------------------------------------------------------
# tracer methods and operators (jax.Array's), attached here as JAX's array_methods does


def _method_reshape(self, *shape, order="C"):
    if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
        shape = tuple(shape[0])
    return reshape(self, shape, order)


def _method_transpose(self, *axes):
    if len(axes) == 1 and not isinstance(axes[0], numbers.Integral):
        axes = axes[0]
    return transpose(self, axes or None)


def _reflected(fn):
    return lambda self, other: fn(other, self)


_METHODS = {
    "sum": sum,
    "mean": mean,
    "max": max,
    "min": min,
    "prod": prod,
    "std": std,
    "var": var,
    "argmax": argmax,
    "argmin": argmin,
    "argsort": argsort,
    "sort": sort,
    "cumsum": cumsum,
    "cumprod": cumprod,
    "all": all,
    "any": any,
    "ptp": ptp,
    "reshape": _method_reshape,
    "ravel": ravel,
    "flatten": ravel,
    "transpose": _method_transpose,
    "swapaxes": swapaxes,
    "squeeze": squeeze,
    "astype": astype,
    "clip": clip,
    "dot": dot,
    "round": round,
    "take": take,
    "diagonal": diagonal,
    "trace": trace,
    "repeat": repeat,
    "conj": lambda self: self,
    "conjugate": lambda self: self,
    "item": None,
    "__getitem__": _getitem,
    "__add__": add,
    "__radd__": _reflected(add),
    "__sub__": subtract,
    "__rsub__": _reflected(subtract),
    "__mul__": multiply,
    "__rmul__": _reflected(multiply),
    "__truediv__": divide,
    "__rtruediv__": _reflected(divide),
    "__floordiv__": floor_divide,
    "__rfloordiv__": _reflected(floor_divide),
    "__mod__": remainder,
    "__rmod__": _reflected(remainder),
    "__pow__": power,
    "__rpow__": _reflected(power),
    "__matmul__": matmul,
    "__rmatmul__": _reflected(matmul),
    "__neg__": negative,
    "__abs__": abs,
    "__and__": bitwise_and,
    "__rand__": _reflected(bitwise_and),
    "__or__": bitwise_or,
    "__ror__": _reflected(bitwise_or),
    "__xor__": bitwise_xor,
    "__rxor__": _reflected(bitwise_xor),
    "__invert__": invert,
}


# the arithmetic operators the registry's rules use on every equation they emit: a float
# tracer with a tracer of its own type, or with a Python number, goes straight to the bind
# layer (no conversions to check); anything else takes the jax.numpy function
_FAST = {
    "__add__": (_core.add, False),
    "__radd__": (_core.add, True),
    "__sub__": (_core.sub, False),
    "__rsub__": (_core.sub, True),
    "__mul__": (_core.mul, False),
    "__rmul__": (_core.mul, True),
    "__truediv__": (_core.div, False),
    "__rtruediv__": (_core.div, True),
    "__pow__": (_core.power, False),
}
_PY_NUMBER = (int, float)


def _fast_operator(core_fn, reflected: bool, slow):
    def op(self, other):
        t = self.type
        if t.is_float and (
            (type(other) is Tracer and (other.type is t or other.type == t))
            or type(other) in _PY_NUMBER
        ):
            return core_fn(other, self) if reflected else core_fn(self, other)
        return slow(self, other)

    op.__name__ = slow.__name__
    return op


def _neg(self):
    return _core.neg(self) if self.type.is_float else negative(self)


def _attach_methods():
    for name, fn in _METHODS.items():
        if fn is None:
            continue
        if name in _FAST:
            fn = _fast_operator(*_FAST[name], fn)
        setattr(Tracer, name, fn)
    Tracer.__neg__ = _neg
    Tracer.T = property(lambda self: transpose(self))
    Tracer.mT = property(lambda self: matrix_transpose(self))
    Tracer.at = property(lambda self: _At(self))
    Tracer.real = property(lambda self: self)
    Tracer.flat = property(lambda self: ravel(self))


_attach_methods()


# ---------------------------------------------------------------------------------------------
# refusals: jax.numpy names that are not here raise a clear, catchable error

_JAX_ONLY = {
    "unique": "the result shape depends on the data",
    "bincount": "the result shape depends on the data unless length= is static",
    "histogram": "not implemented",
    "interp": "not implemented",
    "searchsorted": "not implemented",
    "piecewise": "not implemented",
    "vectorize": "use explicit array code",
    "frompyfunc": "use explicit array code",
    "gradient": "not implemented",
    "lexsort": "not implemented",
    "partition": "not implemented",
    "argpartition": "not implemented",
    "nanmax": "not implemented",
    "nanmin": "not implemented",
    "nanstd": "not implemented",
    "nanvar": "not implemented",
    "percentile": "not implemented",
    "quantile": "not implemented",
    "corrcoef": "not implemented",
    "cov": "not implemented",
    "angle": "complex numbers are not supported",
    "real": "complex numbers are not supported",
    "imag": "complex numbers are not supported",
    "conj": "complex numbers are not supported",
    "complex64": "complex numbers are not supported",
    "complex128": "complex numbers are not supported",
    "float16": "float16 is not supported (f32, f64)",
    "bfloat16": "bfloat16 is not supported (f32, f64)",
}


def supported_names() -> list[str]:
    """Every public name this module defines (what docs/numpy.md lists)."""
    return sorted(
        n
        for n, v in globals().items()
        if not n.startswith("_")
        and n not in _NOT_API
        and (callable(v) or isinstance(v, float | type(None)))
    )


_NOT_API = {
    "annotations",
    "builtins",
    "math",
    "numbers",
    "string",
    "Tracer",
    "ShaxError",
    "ShaxTypeError",
    "dtype_name",
    "supported_names",
    "DOCS",
}
