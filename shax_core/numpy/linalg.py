"""``shax_core.numpy.linalg``: jax.numpy.linalg's names over the decomposition primitives.

``solve``, ``inv``, ``det``, ``slogdet`` and ``cholesky`` work on stacks of square matrices and
are differentiable (``d inv(A) = -A⁻¹ dA A⁻¹``, ``d log|det A| = tr(A⁻¹ dA)``); ``norm`` covers
vectors (``ord`` None, 1, 2, inf, -inf, 0, p) and matrices (None/'fro', 1, -1, inf, -inf).
The spectral norm, SVD, eigendecompositions and QR are refused with ``UnsupportedError``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as _np

from shax_core import core as _core
from shax_core.numpy import _functions as _snp
from shax_core.primitives import decompositions as _dec


class SlogdetResult(NamedTuple):
    sign: object
    logabsdet: object


def _square(a, name):
    a = _snp._float(a)
    s = _snp._shape(a)
    if len(s) < 2 or s[-1] != s[-2]:
        raise _snp.ShaxValueError(f"{name} needs square matrices [..., n, n], got shape {list(s)}")
    return a


def solve(a, b):
    """``x`` with ``a x = b``; ``b`` is a vector ``[..., n]`` or a stack of matrices."""
    a = _square(a, "solve")
    a, b = _snp._promote_all(a, b)
    n = _snp._shape(a)[-1]
    vector = _snp._ndim(b) == 1 or (_snp._ndim(b) == _snp._ndim(a) - 1 and _snp._shape(b)[-1] == n)
    bm = _snp.expand_dims(b, -1) if vector else b
    batch = tuple(_np.broadcast_shapes(_snp._shape(a)[:-2], _snp._shape(bm)[:-2]))
    a = _snp.broadcast_to(a, batch + (n, n))
    bm = _snp.broadcast_to(bm, batch + _snp._shape(bm)[-2:])
    x = _dec.solve(a, bm)
    return _snp.squeeze(x, -1) if vector else x


def inv(a):
    """``A⁻¹`` as ``solve(A, I)``."""
    a = _square(a, "inv")
    n = _snp._shape(a)[-1]
    eye = _snp.broadcast_to(_snp._const(_np.eye(n), _snp._kind(a)), _snp._shape(a))
    return _dec.solve(a, eye)


def slogdet(a):
    """``(sign, log|det a|)``; the sign has no derivative."""
    a = _square(a, "slogdet")
    return SlogdetResult(_core.bind("det_sign", a), _core.bind("logabsdet", a))


def det(a):
    """``sign · exp(log|det a|)``; its derivative is ``det(a) · tr(a⁻¹ da)``."""
    sign, logabsdet = slogdet(a)
    return _core.mul(sign, _snp.exp(logabsdet))


def cholesky(a, *, upper=False):
    """The lower factor ``L`` with ``a = L Lᵀ`` (of the symmetrized a, as JAX)."""
    a = _square(a, "cholesky")
    L = _core.bind("cholesky", a)
    return _snp.matrix_transpose(L) if upper else L


def matrix_power(a, n):
    a = _square(a, "matrix_power")
    if n < 0:
        a, n = inv(a), -n
    size = _snp._shape(a)[-1]
    out = _snp.broadcast_to(_snp._const(_np.eye(size), _snp._kind(a)), _snp._shape(a))
    base = a
    while n:
        if n & 1:
            out = _snp.matmul(out, base)
        n >>= 1
        if n:
            base = _snp.matmul(base, base)
    return out


def multi_dot(arrays):
    out = arrays[0]
    for a in arrays[1:]:
        out = _snp.matmul(out, a)
    return out


def _vector_norm(x, ord, axis, keepdims):
    a = _snp.abs(x)
    if ord is None or ord == 2:
        return _snp.sqrt(_snp.sum(_core.mul(x, x), axis, keepdims=keepdims))
    if ord == _np.inf:
        return _snp.max(a, axis, keepdims=keepdims)
    if ord == -_np.inf:
        return _snp.min(a, axis, keepdims=keepdims)
    if ord == 0:
        return _snp.sum(
            _core.convert(_core.compare("ne", x, 0.0), _snp._kind(x)), axis, keepdims=keepdims
        )
    if ord == 1:
        return _snp.sum(a, axis, keepdims=keepdims)
    if isinstance(ord, str):
        raise _snp.ShaxValueError(f"invalid norm order {ord!r} for vectors")
    return _snp.power(_snp.sum(_snp.power(a, float(ord)), axis, keepdims=keepdims), 1.0 / ord)


def norm(x, ord=None, axis=None, keepdims=False):
    """Vector and matrix norms (``ord``: None, 'fro', 1, -1, 2 for vectors, inf, -inf, 0, p)."""
    x = _snp._float(x)
    nd = _snp._ndim(x)
    if axis is None:
        if ord is None:
            y = _snp.sqrt(_snp.sum(_core.mul(x, x)))
            return _core.reshape(y, (1,) * nd) if keepdims else y
        axis = tuple(range(nd)) if nd <= 2 else None
        if axis is None:
            raise _snp.ShaxValueError("norm with ord needs a 1-d or 2-d array or an axis")
    if isinstance(axis, int) or len(axis) == 1:
        return _vector_norm(x, ord, axis, keepdims)
    r, c = (_snp._axis(a, nd) for a in axis)
    if ord in (None, "fro"):
        return _snp.sqrt(_snp.sum(_core.mul(x, x), (r, c), keepdims=keepdims))
    a = _snp.abs(x)
    if ord in (1, -1):
        sums = _snp.sum(a, r, keepdims=True)
        reduce = _snp.max if ord == 1 else _snp.min
        y = reduce(sums, c, keepdims=True)
    elif ord in (_np.inf, -_np.inf):
        sums = _snp.sum(a, c, keepdims=True)
        reduce = _snp.max if ord == _np.inf else _snp.min
        y = reduce(sums, r, keepdims=True)
    else:
        raise _snp.UnsupportedError(
            "linalg.norm", f"matrix ord={ord!r} (needs singular values, which shax lacks)"
        )
    if keepdims:
        return y
    return _core.reshape(y, tuple(n for i, n in enumerate(_snp._shape(y)) if i not in (r, c)))


def vector_norm(x, ord=2, axis=None, keepdims=False):
    x = _snp._float(x)
    if axis is None:
        x, axis = _snp.ravel(x), 0
    return _vector_norm(x, ord, axis, keepdims)


def matrix_norm(x, ord="fro", keepdims=False):
    return norm(x, ord, (-2, -1), keepdims)


_REFUSED = {
    "svd": "no singular value decomposition primitive yet",
    "eigh": "no eigendecomposition primitive yet",
    "eig": "no eigendecomposition primitive yet",
    "eigvalsh": "no eigendecomposition primitive yet",
    "qr": "no QR primitive yet",
    "pinv": "needs singular values",
    "lstsq": "needs singular values (solve the normal equations instead)",
    "matrix_rank": "needs singular values",
    "cond": "needs singular values",
}


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    why = _REFUSED.get(name, "not implemented")
    raise _snp.UnsupportedError(f"linalg.{name}", why)


def supported_names() -> list[str]:
    return sorted(
        n
        for n, v in globals().items()
        if not n.startswith("_")
        and callable(v)
        and n not in ("annotations", "supported_names")
        and n not in ("NamedTuple", "SlogdetResult")
    )
