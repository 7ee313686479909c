"""``shax_core.lax``: the few jax.lax names NumPy-style code reaches for."""

from __future__ import annotations

from shax_core import core as _core
from shax_core.numpy import _functions as _snp
from shax_core.numpy import top_k  # noqa: F401  ((values, indices) of the k largest)


def stop_gradient(x):
    """The identity with a zero derivative."""
    return _snp.stop_gradient(x)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """``((lhs_contract, rhs_contract), (lhs_batch, rhs_batch))`` as in JAX."""
    (lc, rc), (lb, rb) = dimension_numbers
    return _core.dot_general(lhs, rhs, tuple(lc), tuple(rc), tuple(lb), tuple(rb))


def erf(x):
    return _core.bind("erf", _snp._float(x))


def logistic(x):
    from shax_core.nn import sigmoid

    return sigmoid(x)


def rsqrt(x):
    return 1.0 / _snp.sqrt(x)


def integer_pow(x, y):
    return _snp.power(x, int(y))


def square(x):
    return _snp.square(x)


def select(pred, on_true, on_false):
    return _snp.where(pred, on_true, on_false)


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise _snp.UnsupportedError(f"lax.{name}", "not implemented (control flow is issue 15)")


def supported_names() -> list[str]:
    return sorted(
        n
        for n, v in globals().items()
        if not n.startswith("_") and callable(v) and n not in ("annotations", "supported_names")
    )
