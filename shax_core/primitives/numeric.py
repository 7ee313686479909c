"""More elementwise primitives: ``erf``, ``atan2``, ``floor``, ``round`` and ``stop_gradient``.

    erf x          d erf = 2/√π · exp(-x²) · ẋ          (exact GELU is x·(1 + erf(x/√2))/2)
    atan2 y x      d atan2 = (x·ẏ - y·ẋ) / (x² + y²)
    floor x, round x                                     piecewise constant: no tangent
    stop_gradient x                                      the identity with no tangent

``round`` rounds half to even, as NumPy and JAX do. ``stop_gradient`` is what stable
``logsumexp``/``softmax`` subtract: the shift changes no value, so it carries no derivative.
"""

from __future__ import annotations

import math

import numpy as np

from shax_core import core
from shax_core.primitives.base import define, defjvp, defzero
from shax_core.primitives.elementwise import _float_binary, _float_unary

_erf_f64 = np.frompyfunc(math.erf, 1, 1)


def _erf_impl(x):
    x = np.asarray(x)
    return np.asarray(_erf_f64(x), dtype=np.float64).astype(x.dtype, copy=False)


TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

erf = define("erf", arity=1, shape=_float_unary, impl=_erf_impl, traits=["elementwise"])
defjvp(erf, lambda t, x, ans: t * (TWO_OVER_SQRT_PI * core.bind("exp", -(x * x))))

atan2 = define("atan2", arity=2, shape=_float_binary, impl=np.arctan2, traits=["elementwise"])
defjvp(
    atan2,
    lambda t, y, x, ans: t * (x / (x * x + y * y)),  # ∂/∂y
    lambda t, y, x, ans: t * (-y / (x * x + y * y)),  # ∂/∂x
)

defzero(define("floor", arity=1, shape=_float_unary, impl=np.floor, traits=["elementwise"]))
defzero(define("round", arity=1, shape=_float_unary, impl=np.round, traits=["elementwise"]))
defzero(
    define(
        "stop_gradient",
        arity=1,
        shape=lambda x: x,
        impl=lambda x: np.array(x, copy=True),
        traits=["elementwise"],
    )
)
