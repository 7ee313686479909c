"""``shax_core.scipy.special``: ``logsumexp`` (stable), ``erf`` (a primitive), and friends."""

from __future__ import annotations

import math

import numpy as _np

from shax_core import core as _core
from shax_core.numpy import _functions as _snp


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False, where=None):
    """``log Σ b·eᵃ`` along ``axis``, shifted by the (constant) max: no overflow, exact
    derivative (the softmax weights)."""
    a = _snp._float(a)
    if b is not None:
        b = _snp._float(b)
    m = _snp.max(a, axis=axis, keepdims=True)
    m = _core.bind("stop_gradient", _snp._finite_or_zero(m))
    e = _snp.exp(_core.sub(a, m))
    if b is not None:
        e = _snp.multiply(e, b)
    total = _snp.sum(e, axis=axis, keepdims=True)
    if return_sign:
        sign = _snp.sign(total)
        out = _core.add(_snp.log(_snp.abs(total)), m)
    else:
        out = _core.add(_snp.log(total), m)
    if not keepdims:
        axes = _snp._axes(axis, _snp._ndim(a))
        out = _snp.squeeze(out, axes) if axes else out
        if return_sign:
            sign = _snp.squeeze(sign, axes) if axes else sign
    return (out, sign) if return_sign else out


def erf(x):
    """The error function (the ``erf`` primitive; d erf = 2/√π e^(-x²))."""
    return _core.bind("erf", _snp._float(x))


def erfc(x):
    return 1.0 - erf(x)


def expit(x):
    """``1 / (1 + e⁻ˣ)`` without overflow: from ``e^(-|x|)`` on either side."""
    x = _snp._float(x)
    z = _snp.exp(_core.neg(_snp.abs(x)))
    return _snp.where(_core.compare("ge", x, 0.0), 1.0 / (1.0 + z), z / (1.0 + z))


def logit(x):
    x = _snp._float(x)
    return _snp.log(x / (1.0 - x))


def log_ndtr(x):
    x = _snp._float(x)
    return _snp.log(ndtr(x))


def ndtr(x):
    x = _snp._float(x)
    return 0.5 * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))


def xlogy(x, y):
    x, y = _snp._float(x), _snp._float(y)
    safe_y = _snp.where(x == 0.0, 1.0, y)
    return _snp.where(x == 0.0, 0.0, x * _snp.log(safe_y))


def xlog1py(x, y):
    x, y = _snp._float(x), _snp._float(y)
    safe_y = _snp.where(x == 0.0, 0.0, y)
    return _snp.where(x == 0.0, 0.0, x * _snp.log1p(safe_y))


def entr(x):
    x = _snp._float(x)
    return _snp.where(x > 0.0, -xlogy(x, x), _snp.where(x == 0.0, 0.0, -_np.inf))


def softmax(x, axis=None):
    """``exp(x - logsumexp(x))`` along ``axis``."""
    x = _snp._float(x)
    return _snp.exp(_core.sub(x, logsumexp(x, axis=axis, keepdims=True)))


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise _snp.UnsupportedError(f"scipy.special.{name}", "not implemented")


def supported_names() -> list[str]:
    return sorted(
        n
        for n, v in globals().items()
        if not n.startswith("_") and callable(v) and n not in ("annotations", "supported_names")
    )
