"""Dense linear algebra on square matrices (batched over leading axes), each with its JVP.

    solve a b                  x = a⁻¹ b          dx = solve(a, ḃ - ȧ x)
    triangular_solve lo tr a b x = op(a)⁻¹ b     dx = op(a)⁻¹ (ḃ - op(tri(ȧ)) x)
    cholesky a                 L with a = L Lᵀ    dL = L Φ(L⁻¹ sym(ȧ) L⁻ᵀ)
    logabsdet a                log |det a|        d = tr(a⁻¹ ȧ)
    det_sign a                 sign(det a)        no tangent

``b`` is a stack of matrices ``[..., n, k]`` with a's batch axes. ``op(a)`` is ``a`` or, with
``tr`` = 1, ``aᵀ``; only the ``lo`` (1: lower, 0: upper) triangle of a is read. Φ keeps the
strict lower triangle and halves the diagonal; ``sym(ȧ) = (ȧ + ȧᵀ)/2``, so non-symmetric
tangents behave as JAX's do. ``solve`` and ``triangular_solve`` are linear in ``b``: their
transposes are solves with the transposed matrix, ``b̄ = solve(aᵀ, x̄)``. Every rule is written
with these same primitives, so second derivatives work.
"""

from __future__ import annotations

import numpy as np

from shax_core import core
from shax_core.ir import ShaxTypeError, Type
from shax_core.primitives.base import define, defjvp, defzero, is_linear


def _square(a: Type, what: str) -> int:
    if not a.is_float or a.rank < 2 or a.shape[-1] != a.shape[-2]:
        raise ShaxTypeError(f"{what} needs float square matrices [..., n, n], got {a}")
    return a.shape[-1]


def _solve_shape(a: Type, b: Type, **_):
    n = _square(a, "solve")
    if b.dtype != a.dtype or b.rank != a.rank or b.shape[:-2] != a.shape[:-2]:
        raise ShaxTypeError(f"solve of {a} needs right-hand sides [..., {n}, k], got {b}")
    if b.shape[-2] != n:
        raise ShaxTypeError(f"solve of {a} needs right-hand sides [..., {n}, k], got {b}")
    return b


def _mT(x):
    r = core.type_of(x).rank
    return core.transpose(x, tuple(range(r - 2)) + (r - 1, r - 2))


def _mm(x, y):
    """Batched matrix product of ``[..., n, m]`` and ``[..., m, k]``."""
    r = core.type_of(x).rank
    batch = tuple(range(r - 2))
    return core.dot_general(x, y, (r - 1,), (r - 2,), batch, batch)


def _eye_like(x):
    n = core.shape_of(x)[-1]
    return core.constant_like(np.eye(n), x)


def solve(a, b):
    return core.bind("solve", a, b)


def triangular_solve(a, b, lower: int, trans: int):
    return core.bind("triangular_solve", a, b, lower=int(lower), trans=int(trans))


# ---------------------------------------------------------------------------------------------
# solve a b

solve_p = define("solve", arity=2, shape=_solve_shape, impl=lambda a, b: np.linalg.solve(a, b))
defjvp(
    solve_p,
    lambda t, a, b, ans: -solve(a, _mm(t, ans)),  # ∂x/∂a · ȧ = -a⁻¹ ȧ x
    lambda t, a, b, ans: solve(a, t),  # ∂x/∂b · ḃ = a⁻¹ ḃ
)


def _solve_transpose(ct, a, b):
    if is_linear(a):
        raise core.ShaxError("solve is linear only in its right-hand side; the matrix is a tangent")
    return [None, solve(_mT(a), ct)]


solve_p.transpose = _solve_transpose

# ---------------------------------------------------------------------------------------------
# triangular_solve lower trans a b


def _triangle(a, lower):
    return np.tril(a) if lower else np.triu(a)


def _tri_solve_impl(a, b, lower, trans):
    m = _triangle(a, lower)
    return np.linalg.solve(np.swapaxes(m, -1, -2) if trans else m, b)


def _tri_solve_shape(a: Type, b: Type, lower, trans):
    if lower not in (0, 1) or trans not in (0, 1):
        raise ShaxTypeError("triangular_solve's lower and trans are 0 or 1")
    return _solve_shape(a, b)


def _tri_mask(x, lower):
    n = core.shape_of(x)[-1]
    return core.constant_like(_triangle(np.ones((n, n)), lower), x)


def _tri_solve_da(t, a, b, ans, lower, trans):
    dm = t * _tri_mask(t, lower)  # only a's triangle is read
    return -triangular_solve(a, _mm(_mT(dm) if trans else dm, ans), lower, trans)


tri_solve_p = define(
    "triangular_solve",
    arity=2,
    params=[("lower", "int"), ("trans", "int")],
    shape=_tri_solve_shape,
    impl=_tri_solve_impl,
)
defjvp(
    tri_solve_p,
    _tri_solve_da,
    lambda t, a, b, ans, lower, trans: triangular_solve(a, t, lower, trans),
)


def _tri_solve_transpose(ct, a, b, lower, trans):
    if is_linear(a):
        raise core.ShaxError("triangular_solve is linear only in its right-hand side")
    return [None, triangular_solve(a, ct, lower, 1 - trans)]


tri_solve_p.transpose = _tri_solve_transpose

# ---------------------------------------------------------------------------------------------
# cholesky a


def _cholesky_shape(a: Type):
    _square(a, "cholesky")
    return a


def _cholesky_impl(a):
    return np.linalg.cholesky((a + np.swapaxes(a, -1, -2)) / a.dtype.type(2))


def _cholesky_jvp(t, a, ans):
    n = core.shape_of(a)[-1]
    sym = (t + _mT(t)) * 0.5
    y = triangular_solve(ans, sym, 1, 0)  # L⁻¹ sym
    z = triangular_solve(ans, _mT(y), 1, 0)  # L⁻¹ sym L⁻ᵀ
    phi = core.constant_like(np.tril(np.ones((n, n)), -1) + 0.5 * np.eye(n), a)
    return _mm(ans, z * phi)


cholesky_p = define(
    "cholesky",
    arity=1,
    shape=_cholesky_shape,
    impl=_cholesky_impl,
)
defjvp(cholesky_p, _cholesky_jvp)

# ---------------------------------------------------------------------------------------------
# logabsdet a and det_sign a (slogdet)


def _det_shape(a: Type):
    _square(a, "a determinant")
    return a.with_shape(a.shape[:-2])


def _logabsdet_jvp(t, a, ans):
    r = core.type_of(a).rank
    return core.reduce_sum(solve(a, t) * _eye_like(a), (r - 2, r - 1))  # tr(a⁻¹ ȧ)


logabsdet_p = define("logabsdet", arity=1, shape=_det_shape, impl=lambda a: np.linalg.slogdet(a)[1])
defjvp(logabsdet_p, _logabsdet_jvp)

defzero(define("det_sign", arity=1, shape=_det_shape, impl=lambda a: np.linalg.slogdet(a)[0]))
