"""The NumPy-like API (the seed's HNP): the same function runs on arrays and on tracers.

    import shax_core.numpy as snp

    def medium(x0, x8):
        x1 = snp.broadcast(x0, [1], [2, 6])
        x2 = snp.sin(x1)
        ...

On NumPy arrays each call evaluates at once; on tracers it records an equation. Python
scalars and NumPy-style broadcasting become explicit ``fromList``/``broadcast`` equations.
"""

from __future__ import annotations

import numpy as _np

from shax_core import core as _core
from shax_core.ir import dtype_name as _dtype_name

float32, float64, bool_ = _np.float32, _np.float64, _np.bool_
pi, e, inf, nan = _np.pi, _np.e, _np.inf, _np.nan


def _unary(name):
    def fn(x):
        return _core.bind(name, _as_float(x))

    fn.__name__ = name
    fn.__doc__ = f"Elementwise {name} (the `{name}` primitive)."
    return fn


def _as_float(x):
    if isinstance(x, _core.Tracer):
        return x
    a = _np.asarray(x)
    return a if a.dtype.kind == "f" else a.astype(_np.float32)


sin, cos, tan = _unary("sin"), _unary("cos"), _unary("tan")
arcsin, arccos, arctan = _unary("asin"), _unary("acos"), _unary("atan")
sinh, cosh, tanh = _unary("sinh"), _unary("cosh"), _unary("tanh")
arcsinh, arccosh, arctanh = _unary("asinh"), _unary("acosh"), _unary("atanh")
asin, acos, atan, asinh, acosh, atanh = arcsin, arccos, arctan, arcsinh, arccosh, arctanh
exp, log, sqrt = _unary("exp"), _unary("log"), _unary("sqrt")
log1p, expm1 = _unary("log1p"), _unary("expm1")
abs, absolute, sign = _unary("abs"), _unary("abs"), _unary("sign")  # noqa: A001


def negative(x):
    return _core.neg(_as_float(x))


add, subtract, multiply, divide = _core.add, _core.sub, _core.mul, _core.div
true_divide = divide
power, maximum, minimum = _core.power, _core.maximum, _core.minimum
matmul = dot = _core.matmul


def square(x):
    return _core.mul(x, x)


def equal(x, y):
    return _core.compare("eq", x, y)


def not_equal(x, y):
    return _core.compare("ne", x, y)


def less(x, y):
    return _core.compare("lt", x, y)


def less_equal(x, y):
    return _core.compare("le", x, y)


def greater(x, y):
    return _core.compare("gt", x, y)


def greater_equal(x, y):
    return _core.compare("ge", x, y)


def where(condition, x, y):
    """``select``: pick x where condition holds, else y (use this instead of Python ``if``)."""
    return _core.select(condition, x, y)


select = where


def broadcast(x, dims, shape):
    """The seed's ``broadcast dims shape x``: operand axis i goes to output axis dims[i]."""
    return _core.broadcast(x, dims, shape)


def broadcast_to(x, shape):
    return _core.broadcast_to(x, shape)


def transpose(x, axes=None):
    rank = len(_core.shape_of(x))
    return _core.transpose(x, tuple(reversed(range(rank))) if axes is None else tuple(axes))


def reshape(x, shape):
    return _core.reshape(x, (shape,) if isinstance(shape, int) else shape)


def _axes(axis, x):
    rank = len(_core.shape_of(x))
    if axis is None:
        return tuple(range(rank))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % rank for a in axes))


def sum(x, axis=None):  # noqa: A001
    return _core.reduce_sum(x, _axes(axis, x))


def reduce_sum(x, axes):
    """The seed's ``reduceSum axes x``."""
    return _core.reduce_sum(x, tuple(axes))


def max(x, axis=None):  # noqa: A001
    return _core.reduce_max(x, _axes(axis, x))


amax = max


def min(x, axis=None):  # noqa: A001
    return _core.neg(_core.reduce_max(_core.neg(x), _axes(axis, x)))


def mean(x, axis=None):
    axes = _axes(axis, x)
    shape = _core.shape_of(x)
    n = 1
    for a in axes:
        n *= shape[a]
    return _core.div(_core.reduce_sum(x, axes), float(n))


def dot_general(x, y, lhs_contract, rhs_contract, lhs_batch=(), rhs_batch=()):
    return _core.dot_general(x, y, lhs_contract, rhs_contract, lhs_batch, rhs_batch)


def concatenate(xs, axis=0):
    xs = list(xs)
    rank = len(_core.shape_of(xs[0]))
    return _core.concatenate(xs, axis % rank)


def pad(x, pad_width, constant_values=0.0):
    return _core.pad(x, pad_width, constant_values)


def astype(x, dtype):
    return _core.convert(x, dtype if isinstance(dtype, str) else _dtype_name(dtype))


def zeros_like(x):
    return _core.full_like(x, 0.0)


def ones_like(x):
    return _core.full_like(x, 1.0)


def full_like(x, value):
    return _core.full_like(x, value)
