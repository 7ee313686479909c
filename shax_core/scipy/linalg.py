"""``shax_core.scipy.linalg``: triangular and Cholesky solves over the decomposition primitives.

solve_triangular(L, b, lower=True)       x = L⁻¹ b       (trans=1: Lᵀ x = b)
cho_solve((L, True), b)                  x = (L Lᵀ)⁻¹ b  two triangular solves
"""

from __future__ import annotations

from shax_core.numpy import _functions as _snp
from shax_core.numpy import linalg as _nla
from shax_core.primitives import decompositions as _dec

inv, det, solve = _nla.inv, _nla.det, _nla.solve


def _rhs(a, b):
    a, b = _snp._promote_all(a, b)
    vector = _snp._ndim(b) == _snp._ndim(a) - 1
    return a, (_snp.expand_dims(b, -1) if vector else b), vector


def solve_triangular(
    a,
    b,
    trans=0,
    lower=False,
    unit_diagonal=False,
    overwrite_b=False,
    debug=None,
    check_finite=True,
):
    """``x`` with ``op(a) x = b`` reading only a's lower (or upper) triangle; ``trans`` 0/'N',
    1/'T' (2/'C' is the same for real matrices)."""
    if unit_diagonal:
        raise _snp.UnsupportedError("scipy.linalg.solve_triangular", "unit_diagonal=True")
    t = {0: 0, 1: 1, 2: 1, "N": 0, "T": 1, "C": 1}.get(trans)
    if t is None:
        raise _snp.ShaxValueError(f"trans must be 0, 1, 2, 'N', 'T' or 'C', got {trans!r}")
    a, bm, vector = _rhs(a, b)
    x = _dec.triangular_solve(a, bm, int(bool(lower)), t)
    return _snp.squeeze(x, -1) if vector else x


def cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
    L = _nla.cholesky(a)
    return (L if lower else _snp.matrix_transpose(L)), lower


def cholesky(a, lower=False, overwrite_a=False, check_finite=True):
    """scipy's convention: the upper factor unless ``lower``."""
    return cho_factor(a, lower)[0]


def cho_solve(c_and_lower, b, overwrite_b=False, check_finite=True):
    """``x`` with ``A x = b`` given A's Cholesky factor ``(c, lower)``."""
    c, lower = c_and_lower
    c, bm, vector = _rhs(c, b)
    if lower:  # A = L Lᵀ
        y = _dec.triangular_solve(c, bm, 1, 0)
        x = _dec.triangular_solve(c, y, 1, 1)
    else:  # A = Uᵀ U
        y = _dec.triangular_solve(c, bm, 0, 1)
        x = _dec.triangular_solve(c, y, 0, 0)
    return _snp.squeeze(x, -1) if vector else x


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise _snp.UnsupportedError(f"scipy.linalg.{name}", "not implemented")


def supported_names() -> list[str]:
    return sorted(
        n
        for n, v in globals().items()
        if not n.startswith("_") and callable(v) and n not in ("annotations", "supported_names")
    )
