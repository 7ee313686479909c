"""Indexing primitives: gather, scatter-add, reversal, cumulative sums, arg-selections.

``gather axis x idx`` reads ``x`` at integer positions: ``idx :: i32[..., k]`` indexes the k
consecutive axes ``axis .. axis+k-1`` of x, so the result has type
``x.shape[:axis] + idx.shape[:-1] + x.shape[axis+k:]``. Negative positions count from the end
and positions out of range are clamped (JAX's gather mode). It is linear in ``x``; its
transpose is ``scatter_add``, which sums repeated positions (a scatter-*set* would lose them)::

    y = gather 0 x idx        (x :: f32[5, 3], idx :: i32[4, 1])   ──ᵀ──▶
    x̄ = scatter_add 0 zeros idx ȳ                                 (x̄ :: f32[5, 3])

``scatter_add axis x idx u`` is ``x`` with ``u`` added at the positions; it is linear in
``(x, u)`` jointly and transposes to ``(ct, gather ct idx)``. Its NumPy kernel never uses
``np.add.at``: one ``np.bincount`` per column of values for narrow rows, sorted positions and
``np.add.reduceat`` for wide ones (bench/w6_gather.py compares them).

``rev axes x`` (``flip``) is its own transpose; ``cumsum axis reverse x`` transposes to the
cumulative sum in the other direction. ``argmax axis x`` and ``argsort axis x`` give i32
positions and have no tangent; ``sort`` is ``gather`` by ``argsort`` (in ``shax_core.numpy``),
so its derivative follows the permutation.
"""

from __future__ import annotations

import math

import numpy as np

from shax_core import core
from shax_core.ir import ShaxTypeError, Type
from shax_core.primitives.base import Zero, define, deflinear, defzero, is_linear

# ---------------------------------------------------------------------------------------------
# gather axis x idx and scatter_add axis x idx u


def _indexed(x: Type, idx: Type, axis: int) -> tuple[int, ...]:
    """The sizes of the axes ``idx`` indexes; checks the types."""
    if not idx.is_int:
        raise ShaxTypeError(f"indices must be i32 or i64, got {idx}")
    if idx.rank < 1:
        raise ShaxTypeError(f"indices need a trailing axis of positions, got {idx}")
    k = idx.shape[-1]
    if not 0 <= axis or k < 1 or axis + k > x.rank:
        raise ShaxTypeError(f"{idx} cannot index axes {axis}..{axis + k - 1} of {x}")
    dims = x.shape[axis : axis + k]
    if 0 in dims and math.prod(idx.shape[:-1]):
        raise ShaxTypeError(f"cannot gather from the empty axes of {x}")
    return dims


def _gather_shape(x: Type, idx: Type, axis):
    dims = _indexed(x, idx, axis)
    return x.with_shape(x.shape[:axis] + idx.shape[:-1] + x.shape[axis + len(dims) :])


def positions(idx: np.ndarray, dims) -> tuple[np.ndarray, ...]:
    """One position array per indexed axis: negative ones from the end, then clamped."""
    cols = []
    for j, n in enumerate(dims):
        i = idx[..., j].astype(np.intp, copy=False)
        i = np.where(i < 0, i + n, i)
        cols.append(np.clip(i, 0, max(n - 1, 0)))
    return tuple(cols)


def _gather_impl(x, idx, axis):
    dims = x.shape[axis : axis + idx.shape[-1]]
    pos = positions(idx, dims)
    if len(pos) == 1:
        return np.take(x, pos[0], axis=axis)
    return x[(slice(None),) * axis + pos]


def gather(x, idx, axis: int):
    return core.bind("gather", x, idx, axis=int(axis))


def scatter_add(x, idx, u, axis: int):
    return core.bind("scatter_add", x, idx, u, axis=int(axis))


def _gather_linearize(primals, tangents, axis):
    (x, idx), (t, _) = primals, tangents
    ans = gather(x, idx, axis)
    if isinstance(t, Zero):
        return ans, Zero(core.type_of(ans))
    return ans, gather(t, idx, axis)


def _gather_transpose(ct, x, idx, axis):
    if is_linear(idx):
        raise core.ShaxError("gather's indices cannot be a tangent")
    return [scatter_add(core.full_like(ct, 0.0, x.type.shape), idx, ct, axis), None]


gather_p = define(
    "gather",
    arity=2,
    params=[("axis", "int")],
    shape=_gather_shape,
    impl=_gather_impl,
    traits=["layout"],
)
gather_p.linearize = _gather_linearize
gather_p.transpose = _gather_transpose


def _scatter_add_shape(x: Type, idx: Type, u: Type, axis):
    dims = _indexed(x, idx, axis)
    want = x.shape[:axis] + idx.shape[:-1] + x.shape[axis + len(dims) :]
    if u.dtype != x.dtype or u.shape != want:
        raise ShaxTypeError(f"updates must be {x.with_shape(want)} to scatter into {x}, got {u}")
    return x


BINCOUNT_COLUMNS = 32  # up to this many values per position: one bincount per column


def _scatter_add_impl(x, idx, u, axis):
    k = idx.shape[-1]
    dims = x.shape[axis : axis + k]
    pos = positions(idx, dims)
    flat = (np.ravel_multi_index(pos, dims) if k > 1 else pos[0]).ravel()
    m = math.prod(dims)
    pre, post = math.prod(x.shape[:axis]), math.prod(x.shape[axis + k :])
    out = np.array(x, dtype=x.dtype, copy=True).reshape(pre, m, post)
    if flat.size == 0 or m == 0:
        return out.reshape(x.shape)
    # u as K rows of c = pre·post columns; each column is one weighted histogram (bincount,
    # accumulated in f64), or, for wide rows, one sort of the positions and a reduceat per run
    # of equal positions. Both beat np.add.at, and neither builds K·c index temporaries
    # (bench/w6_gather.py measures the choices).
    c = pre * post
    rows = np.asarray(u).reshape(pre, flat.size, post).transpose(1, 0, 2).reshape(flat.size, c)
    if c <= BINCOUNT_COLUMNS:
        sums = np.empty((m, c), dtype=x.dtype)
        for j in range(c):
            sums[:, j] = np.bincount(flat, weights=rows[:, j], minlength=m)
        out += sums.reshape(m, pre, post).transpose(1, 0, 2)
    else:
        order = np.argsort(flat, kind="stable")
        sorted_flat = flat[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_flat[1:] != sorted_flat[:-1])))
        run_sums = np.add.reduceat(rows[order], starts, axis=0)  # [distinct positions, c]
        out[:, sorted_flat[starts], :] += run_sums.reshape(-1, pre, post).transpose(1, 0, 2)
    return out.reshape(x.shape)


def _scatter_add_linearize(primals, tangents, axis):
    (x, idx, u), (tx, _, tu) = primals, tangents
    ans = scatter_add(x, idx, u, axis)
    if isinstance(tx, Zero) and isinstance(tu, Zero):
        return ans, Zero(core.type_of(ans))
    tx, tu = core.instantiate(tx, [tu]), core.instantiate(tu, [tx])
    return ans, scatter_add(tx, idx, tu, axis)


def _scatter_add_transpose(ct, x, idx, u, axis):
    if is_linear(idx):
        raise core.ShaxError("scatter_add's indices cannot be a tangent")
    return [
        ct if is_linear(x) else None,
        None,
        gather(ct, idx, axis) if is_linear(u) else None,
    ]


scatter_add_p = define(
    "scatter_add",
    arity=3,
    params=[("axis", "int")],
    shape=_scatter_add_shape,
    impl=_scatter_add_impl,
)
scatter_add_p.linearize = _scatter_add_linearize
scatter_add_p.transpose = _scatter_add_transpose

# ---------------------------------------------------------------------------------------------
# rev axes x: reverse the order along axes (its own transpose)


def _rev_shape(x: Type, axes):
    if len(set(axes)) != len(axes) or any(not 0 <= a < x.rank for a in axes):
        raise ShaxTypeError(f"axes {list(axes)} are not distinct axes of {x}")
    return x


rev_p = define(
    "rev",
    arity=1,
    params=[("axes", "ints")],
    shape=_rev_shape,
    impl=lambda x, axes: np.flip(x, tuple(axes)) if axes else x,
    traits=["layout", "preserves_splat"],
)
deflinear(rev_p, lambda ct, x, axes: [core.bind("rev", ct, axes=tuple(axes))])

# ---------------------------------------------------------------------------------------------
# cumsum axis reverse x: running sums along axis (from the end when reverse is 1)


def _cumsum_shape(x: Type, axis, reverse):
    if not 0 <= axis < x.rank or reverse not in (0, 1):
        raise ShaxTypeError(f"cumsum needs an axis of {x} and reverse 0 or 1")
    if x.dtype == "bool":
        raise ShaxTypeError(f"cumsum of {x}: convert to a number type first")
    return x


def _cumsum_impl(x, axis, reverse):
    if reverse:
        return np.flip(np.cumsum(np.flip(x, axis), axis=axis, dtype=x.dtype), axis)
    return np.cumsum(x, axis=axis, dtype=x.dtype)


cumsum_p = define(
    "cumsum",
    arity=1,
    params=[("axis", "int"), ("reverse", "int")],
    shape=_cumsum_shape,
    impl=_cumsum_impl,
)
# the transpose of a running sum is the running sum from the other end
deflinear(
    cumsum_p,
    lambda ct, x, axis, reverse: [core.bind("cumsum", ct, axis=axis, reverse=1 - reverse)],
)

# ---------------------------------------------------------------------------------------------
# argmax axis x and argsort axis x: i32 positions, no tangent


def _argmax_shape(x: Type, axis):
    if not 0 <= axis < x.rank or x.shape[axis] == 0:
        raise ShaxTypeError(f"argmax needs a non-empty axis of {x}, got axis {axis}")
    if x.dtype == "bool":
        raise ShaxTypeError(f"argmax of {x}: convert to a number type first")
    return Type("i32", x.shape[:axis] + x.shape[axis + 1 :])


defzero(
    define(
        "argmax",
        arity=1,
        params=[("axis", "int")],
        shape=_argmax_shape,
        impl=lambda x, axis: np.argmax(x, axis=axis).astype(np.int32),
    )
)


def _argsort_shape(x: Type, axis):
    if not 0 <= axis < x.rank:
        raise ShaxTypeError(f"argsort needs an axis of {x}, got axis {axis}")
    return Type("i32", x.shape)


defzero(
    define(
        "argsort",
        arity=1,
        params=[("axis", "int")],
        shape=_argsort_shape,
        impl=lambda x, axis: np.argsort(x, axis=axis, kind="stable").astype(np.int32),
    )
)
