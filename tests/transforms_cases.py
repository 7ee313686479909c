"""Functions written as JAX users write them, with pytree arguments, shared by the library
tests (``test_transforms.py``), the SDK tests (``test_transforms_sdk.py``) and the JAX
comparison. ``np`` is the NumPy-like module (``shax_core.numpy`` or ``jax.numpy``)."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import numpy as np

Pair = namedtuple("Pair", ["w", "b"])

X3 = np.array([0.3, -0.7, 1.2])


def close(a, b, rtol=1e-6, atol=1e-8):
    """Equal to f64 rounding (the default) or to the tolerance given."""
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@dataclass
class Layer:
    w: object
    b: object


def mlp_loss(np_, params, x, y):
    """A two-layer network's squared error; params is a dict of arrays."""
    h = np_.tanh(x @ params["w1"] + params["b1"])
    out = h @ params["w2"]
    return np_.sum((out - y) * (out - y)) / 2.0


def cubic(np_, x):
    return np_.sum(np_.sin(x) * x * x)


def vector_fn(np_, x):
    """R^3 -> R^3, non-linear in every input."""
    return np_.sin(x) * x[0] + np_.exp(x) * x[2]


def regression(rows, seed):
    """Float32 data of the linear model ``y = X·[1, -2, 0.5] + 0.3``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 3)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)
    return X, y


def check_regression_fit(params, value, given, original):
    """``minimize`` moved only ``(w, b)``, to the model's truth; the data it returns and the
    data it was given (``given``) still equal the ``original`` copies."""
    w, b, X1, y1 = params
    np.testing.assert_array_equal(X1, original[0])
    np.testing.assert_array_equal(y1, original[1])
    np.testing.assert_array_equal(given[0], original[0])
    np.testing.assert_array_equal(given[1], original[1])
    close(w, [1.0, -2.0, 0.5], rtol=1e-3, atol=1e-3)
    close(b, 0.3, rtol=1e-3, atol=1e-3)
    assert float(value) < 1e-5


def rng_arrays(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.normal(size=(3, 4)) * 0.5,
        "b1": rng.normal(size=(4,)) * 0.1,
        "w2": rng.normal(size=(4, 2)) * 0.5,
    }
    x = rng.normal(size=(5, 3))
    y = rng.normal(size=(5, 2))
    return params, x, y


def fd_grad(f, x, eps=1e-6):
    """Central finite differences of scalar ``f`` at the f64 array ``x``."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (float(f(x + e)) - float(f(x - e))) / (2 * eps)
    return g


def fd_jacobian(f, x, eps=1e-6):
    """``out.shape + x.shape`` Jacobian of array-valued ``f`` by central differences."""
    x = np.asarray(x, np.float64)
    out = np.asarray(f(x))
    jac = np.zeros(out.shape + x.shape)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        jac[(...,) + i] = (np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * eps)
    return jac
