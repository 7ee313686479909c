"""``shax_core.nn``: jax.nn's activation functions and helpers, numerically stable, with the
derivatives JAX gives (``relu'(0) = 0``, ``softplus'(0) = 1/2``, ``relu6'`` 0 at both kinks).

    softplus(x)    = log(1 + eˣ) = m + log(e^(x-m) + e^(-m)),   m = stop_gradient(max(x, 0))
    log_softmax(x) = x - m - log Σ e^(x-m),                      m = stop_gradient(max x)
"""

from __future__ import annotations

import math

from shax_core import core as _core
from shax_core.numpy import _functions as _snp
from shax_core.scipy.special import expit, logsumexp

__all__ = [
    "celu",
    "elu",
    "gelu",
    "glu",
    "hard_sigmoid",
    "hard_swish",
    "hard_tanh",
    "leaky_relu",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "one_hot",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_sign",
    "softmax",
    "softplus",
    "sparse_plus",
    "standardize",
    "swish",
]


def relu(x):
    """``max(x, 0)`` with derivative 0 at 0 (JAX's choice)."""
    x = _snp._float(x)
    return _snp.where(_core.compare("gt", x, 0.0), x, 0.0)


def relu6(x):
    """``min(max(x, 0), 6)``; the derivative is 0 at both kinks."""
    x = _snp._float(x)
    inside = _snp.logical_and(_core.compare("gt", x, 0.0), _core.compare("lt", x, 6.0))
    return _snp.where(inside, x, _snp.where(_core.compare("ge", x, 6.0), 6.0, 0.0))


def sigmoid(x):
    """``1 / (1 + e⁻ˣ)`` without overflow (``scipy.special.expit``)."""
    return expit(x)


logistic = sigmoid


def softplus(x):
    """``log(1 + eˣ)``, stable for large |x|; softplus'(0) = 1/2."""
    return _snp.logaddexp(_snp._float(x), 0.0)


def sparse_plus(x):
    x = _snp._float(x)
    mid = 0.25 * (x + 1.0) ** 2
    return _snp.where(x <= -1.0, 0.0, _snp.where(x >= 1.0, x, mid))


def log_sigmoid(x):
    """``log(sigmoid(x)) = -softplus(-x)``."""
    return _core.neg(softplus(_core.neg(_snp._float(x))))


def silu(x):
    """``x · sigmoid(x)``."""
    x = _snp._float(x)
    return x * sigmoid(x)


swish = silu


def gelu(x, approximate=True):
    """GELU: the tanh approximation (default, as JAX), or exactly ``x Φ(x)`` with ``erf``."""
    x = _snp._float(x)
    if approximate:
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + _snp.tanh(c * (x + 0.044715 * (x * x * x))))
    return 0.5 * x * (1.0 + _core.bind("erf", x * (1.0 / math.sqrt(2.0))))


def elu(x, alpha=1.0):
    x = _snp._float(x)
    positive = _core.compare("gt", x, 0.0)
    safe = _snp.where(positive, 0.0, x)  # expm1 never sees large positives
    return _snp.where(positive, x, alpha * _snp.expm1(safe))


def celu(x, alpha=1.0):
    x = _snp._float(x)
    return _snp.maximum(x, 0.0) + alpha * _snp.expm1(_snp.minimum(x, 0.0) / alpha)


def selu(x):
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    return scale * elu(x, alpha)


def leaky_relu(x, negative_slope=0.01):
    x = _snp._float(x)
    return _snp.where(_core.compare("ge", x, 0.0), x, negative_slope * x)


def hard_tanh(x):
    x = _snp._float(x)
    return _snp.where(x > 1.0, 1.0, _snp.where(x < -1.0, -1.0, x))


def hard_sigmoid(x):
    return relu6(_snp._float(x) + 3.0) / 6.0


def hard_swish(x):
    x = _snp._float(x)
    return x * hard_sigmoid(x)


hard_silu = hard_swish


def soft_sign(x):
    x = _snp._float(x)
    return x / (_snp.abs(x) + 1.0)


def _shifted(x, axis):
    m = _snp.max(x, axis=axis, keepdims=True)
    m = _core.bind("stop_gradient", _snp._finite_or_zero(m))
    return _core.sub(x, m)


def softmax(x, axis=-1, where=None, initial=None):
    """``exp(x - max) / Σ exp(x - max)`` (the max is a constant for the derivative)."""
    x = _snp._float(x)
    unnormalized = _snp.exp(_shifted(x, axis))
    return unnormalized / _snp.sum(unnormalized, axis=axis, keepdims=True)


def log_softmax(x, axis=-1, where=None, initial=None):
    """``x - logsumexp(x)``, shifted by the (constant) max for stability."""
    x = _snp._float(x)
    shifted = _shifted(x, axis)
    return shifted - _snp.log(_snp.sum(_snp.exp(shifted), axis=axis, keepdims=True))


def standardize(x, axis=-1, mean=None, variance=None, epsilon=1e-5, where=None):
    """``(x - mean) / sqrt(variance + epsilon)``, with JAX's ``E[x²] - E[x]²`` variance."""
    x = _snp._float(x)
    if mean is None:
        mean = _snp.mean(x, axis, keepdims=True)
    if variance is None:
        variance = _snp.mean(x * x, axis, keepdims=True) - mean * mean
    return (x - mean) * (1.0 / _snp.sqrt(variance + epsilon))


def one_hot(x, num_classes, *, dtype=None, axis=-1):
    """``x[..., None] == arange(num_classes)`` as floats (f32 by default)."""
    x = _snp._arr(x)
    classes = _snp.arange(num_classes)
    hot = _core.compare(
        "eq",
        _snp.expand_dims(x, -1),
        _core.convert(classes, _snp._kind(x)) if _snp._type(x).is_int else classes,
    )
    out = _core.convert(hot, _snp._dtype(dtype) or "f32")
    return out if axis in (-1, _snp._ndim(out) - 1) else _snp.moveaxis(out, -1, axis)


def glu(x, axis=-1):
    a, b = _snp.split(x, 2, axis=axis)
    return a * sigmoid(b)


tanh = _snp.tanh


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise _snp.UnsupportedError(f"nn.{name}", "not implemented")


def supported_names() -> list[str]:
    return sorted(__all__)
