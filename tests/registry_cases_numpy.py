"""Registry cases for the primitives of the NumPy surface (indexing, numeric, decompositions).

``tests/test_registry.py`` runs every registry-wide check on these too: impl against NumPy with
the dtype kept, linearize against finite differences in f64, the dot-product test of the
transposes (and of the linear primitives directly), second order, f32 staying f32.
"""

from __future__ import annotations

import math

import numpy as np
from test_registry import Case, F, U, away_from_zero, distinct, uniform


def indices(n, lo=None):
    """Positions in ``[-n, n)`` (negative ones count from the end), repeats included."""
    return lambda rng, t: rng.integers(-n if lo is None else lo, n, t.shape).astype(t.np_dtype)


def well_conditioned(rng, t):
    n = t.shape[-1]
    return (rng.uniform(-1, 1, t.shape) + 3.0 * np.eye(n)).astype(t.np_dtype)


def spd(rng, t):
    n = t.shape[-1]
    a = rng.uniform(-1, 1, t.shape)
    return (a @ np.swapaxes(a, -1, -2) + n * np.eye(n)).astype(t.np_dtype)


def off_half(rng, t):
    """Values away from the points where floor and round jump."""
    return (rng.integers(-3, 3, t.shape) + rng.uniform(0.1, 0.4, t.shape)).astype(t.np_dtype)


def ref_gather(x, idx, axis):
    k = idx.shape[-1]
    dims = x.shape[axis : axis + k]
    pos = tuple(np.where(idx[..., j] < 0, idx[..., j] + n, idx[..., j]) for j, n in enumerate(dims))
    return x[(slice(None),) * axis + pos]


def ref_scatter_add(x, idx, u, axis):
    out = x.copy()
    k = idx.shape[-1]
    dims = x.shape[axis : axis + k]
    pos = tuple(np.where(idx[..., j] < 0, idx[..., j] + n, idx[..., j]) for j, n in enumerate(dims))
    np.add.at(out, (slice(None),) * axis + pos, u)  # the slow reference, on purpose
    return out


def ref_cumsum(x, axis, reverse):
    return np.flip(np.cumsum(np.flip(x, axis), axis), axis) if reverse else np.cumsum(x, axis)


def ref_tri_solve(a, b, lower, trans):
    m = np.tril(a) if lower else np.triu(a)
    m = np.swapaxes(m, -1, -2) if trans else m
    return np.linalg.solve(m.astype(np.float64), b.astype(np.float64)).astype(a.dtype)


I32 = "i32"

NUMPY_CASES = [
    # gather / scatter_add
    Case(
        "gather-rows",
        "gather",
        (0,),
        [(F, (5, 3)), (I32, (4, 1))],
        [U, indices(5)],
        ref_gather,
        linear_in=(0,),
    ),
    Case(
        "gather-two-axes-middle",
        "gather",
        (1,),
        [(F, (2, 4, 5)), (I32, (3, 2, 2))],
        [U, indices(4)],
        ref_gather,
        linear_in=(0,),
    ),
    Case(
        "scatter_add-rows",
        "scatter_add",
        (0,),
        [(F, (5, 3)), (I32, (6, 1)), (F, (6, 3))],
        [U, indices(5), U],
        ref_scatter_add,
        linear_in=(0, 2),
    ),
    Case(
        "scatter_add-scalars",
        "scatter_add",
        (0,),
        [(F, (4, 5)), (I32, (7, 2)), (F, (7,))],
        [U, indices(4), U],
        ref_scatter_add,
        linear_in=(0, 2),
    ),
    Case(
        "scatter_add-inner-axis",
        "scatter_add",
        (1,),
        [(F, (2, 6)), (I32, (5, 1)), (F, (2, 5))],
        [U, indices(6), U],
        ref_scatter_add,
        linear_in=(0, 2),
    ),
    # rev and cumsum
    Case(
        "rev", "rev", ((0, 2),), [(F, (2, 3, 4))], [U], lambda x, a: np.flip(x, a), linear_in=(0,)
    ),
    Case("cumsum", "cumsum", (1, 0), [(F, (3, 4))], [U], ref_cumsum, linear_in=(0,)),
    Case("cumsum-reverse", "cumsum", (0, 1), [(F, (3, 4))], [U], ref_cumsum, linear_in=(0,)),
    # arg-selections (i32 results)
    Case(
        "argmax",
        "argmax",
        (1,),
        [(F, (3, 5))],
        [distinct],
        lambda x, axis: np.argmax(x, axis).astype(np.int32),
    ),
    Case(
        "argsort",
        "argsort",
        (0,),
        [(F, (5, 3))],
        [distinct],
        lambda x, axis: np.argsort(x, axis).astype(np.int32),
    ),
    # numeric
    Case("erf", "erf", (), [(F, (2, 3))], [U], np.vectorize(math.erf)),
    Case(
        "atan2",
        "atan2",
        (),
        [(F, (2, 3)), (F, (2, 3))],
        [away_from_zero(), away_from_zero()],
        np.arctan2,
    ),
    Case("floor", "floor", (), [(F, (2, 3))], [off_half], np.floor),
    Case("round", "round", (), [(F, (2, 3))], [off_half], np.round),
    Case("stop_gradient", "stop_gradient", (), [(F, (2, 3))], [U], lambda x: x),
    # decompositions
    Case(
        "solve",
        "solve",
        (),
        [(F, (3, 3)), (F, (3, 2))],
        [well_conditioned, U],
        np.linalg.solve,
        fd_rtol=1e-5,
    ),
    Case(
        "solve-batched",
        "solve",
        (),
        [(F, (2, 3, 3)), (F, (2, 3, 1))],
        [well_conditioned, U],
        np.linalg.solve,
        fd_rtol=1e-5,
    ),
    *[
        Case(
            f"triangular_solve-{'lower' if lo else 'upper'}-{'T' if tr else 'N'}",
            "triangular_solve",
            (lo, tr),
            [(F, (3, 3)), (F, (3, 2))],
            [well_conditioned, U],
            ref_tri_solve,
            fd_rtol=1e-5,
        )
        for lo in (0, 1)
        for tr in (0, 1)
    ],
    Case(
        "cholesky",
        "cholesky",
        (),
        [(F, (3, 3))],
        [spd],
        np.linalg.cholesky,
        fd_rtol=1e-5,
    ),
    Case(
        "cholesky-batched",
        "cholesky",
        (),
        [(F, (2, 3, 3))],
        [spd],
        np.linalg.cholesky,
        fd_rtol=1e-5,
    ),
    Case(
        "logabsdet",
        "logabsdet",
        (),
        [(F, (2, 3, 3))],
        [well_conditioned],
        lambda a: np.linalg.slogdet(a)[1],
        fd_rtol=1e-5,
    ),
    Case(
        "det_sign",
        "det_sign",
        (),
        [(F, (3, 3))],
        [uniform(-1, 1)],
        lambda a: np.linalg.slogdet(a)[0],
    ),
]

NUMPY_CASES.append(
    Case(
        "scatter_add-wide-rows-sorted-path",
        "scatter_add",
        (1,),
        [(F, (3, 4, 12)), (I32, (9, 1)), (F, (3, 9, 12))],
        [U, indices(4), U],
        ref_scatter_add,
        linear_in=(0, 2),
    )
)
