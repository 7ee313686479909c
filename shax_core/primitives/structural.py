"""Structural primitives: constants, shape changes, slicing, padding, reductions.

All but ``fromList`` and ``reduce_max`` are linear; their transposes are where the dimension
bookkeeping lives:

>>> from shax_core import parse, transpose_program
>>> print(transpose_program(parse("def f(x :: f32[6]) = let y = broadcast [1] [2,6] x in [y]"), 1))
def ft(arg0 :: f32[2, 6]) =
  let t0 :: f32[6] = reduce_sum [0] arg0
  in [t0]
>>> print(transpose_program(parse("def f(x :: f32[2, 2]) = let y = slice [0,0] [1,2] x in [y]"), 1))
def ft(arg0 :: f32[1, 2]) =
  let t0 :: f32[2, 2] = pad [(0,1),(0,0)] 0.0 arg0
  in [t0]
"""

from __future__ import annotations

import math

import numpy as np

from shax_core import core
from shax_core.ir import DTYPES, Eqn, ShaxTypeError, Type
from shax_core.primitives.base import Zero, define, defjvp, deflinear, defzero, is_linear


def _check_axes(axes, rank, what="axes") -> None:
    if len(set(axes)) != len(axes) or any(not 0 <= a < rank for a in axes):
        raise ShaxTypeError(f"{what} {list(axes)} are not distinct axes of a rank-{rank} operand")


def _check_shape(shape) -> None:
    if any(d < 0 for d in shape):
        raise ShaxTypeError(f"negative dimension in shape {list(shape)}")


def _rearranging(name: str, params, shape, impl):
    """A primitive that only moves or copies its one operand's elements: ``layout`` and
    ``preserves_splat`` (see the trait table), with integer-list parameters."""
    return define(
        name,
        arity=1,
        params=[(p, "ints") for p in params],
        shape=shape,
        impl=impl,
        traits=["layout", "preserves_splat"],
    )


# ---------------------------------------------------------------------------------------------
# fromList shape data: a constant (its dtype is the binding's annotation; f32 by default)


def _from_list_shape(shape, data, dtype):
    _check_shape(shape)
    n = math.prod(shape)
    if len(data) != n:
        raise ShaxTypeError(f"fromList of shape {list(shape)} needs {n} values, got {len(data)}")
    return Type(dtype, shape)


def _from_list_impl(shape, data, dtype):
    return np.array(data, dtype=DTYPES[dtype]).reshape(shape)


defzero(
    define(
        "fromList",
        arity=0,
        params=[("shape", "ints"), ("data", "literals"), ("dtype", "hidden_dtype")],
        shape=_from_list_shape,
        impl=_from_list_impl,
        traits=["constant"],
    )
)

# ---------------------------------------------------------------------------------------------
# broadcast dims shape x: operand axis i becomes output axis dims[i]; size-1 axes may stretch


def _broadcast_shape(x: Type, dims, shape):
    _check_shape(shape)
    if len(dims) != x.rank:
        raise ShaxTypeError(
            f"broadcast needs one target axis per operand axis, got dims {list(dims)} for {x}"
        )
    _check_axes(dims, len(shape), "broadcast dims")
    for i, d in enumerate(dims):
        if x.shape[i] not in (1, shape[d]):
            raise ShaxTypeError(f"operand axis {i} of {x} cannot broadcast to size {shape[d]}")
    return x.with_shape(shape)


def _broadcast_layout(x_shape, dims, shape):
    """(perm, expanded): permute operand axes into output order, then view them at rank R."""
    perm = tuple(int(i) for i in np.argsort(dims))
    expanded = [1] * len(shape)
    for i, d in enumerate(dims):
        expanded[d] = x_shape[i]
    return perm, tuple(expanded)


def _broadcast_impl(x, dims, shape):
    perm, expanded = _broadcast_layout(x.shape, dims, shape)
    return np.broadcast_to(np.transpose(x, perm).reshape(expanded), shape)


SMALL = 4096  # below this many elements a broadcast is materialized (cheaper than a view)


def _broadcast_kernel(in_types, out_type, dims, shape):
    (x,) = in_types
    perm, expanded = _broadcast_layout(x.shape, dims, shape)
    ordered = perm == tuple(range(len(perm)))
    if x.size == out_type.size:
        return (
            (lambda a: a.reshape(shape))
            if ordered
            else (lambda a: a.transpose(perm).reshape(shape))
        )
    dtype = out_type.np_dtype
    if out_type.size <= SMALL:

        def materialize(a):
            out = np.empty(shape, dtype)
            out[...] = (a if ordered else a.transpose(perm)).reshape(expanded)
            return out

        return materialize
    return lambda a: np.broadcast_to((a if ordered else a.transpose(perm)).reshape(expanded), shape)


def _broadcast_transpose(ct, x, dims, shape):
    # Sum over the new axes and the stretched size-1 axes; the remaining axes come out in
    # output order, so permute them back to operand order, then restore the size-1 axes.
    stretched = {d for i, d in enumerate(dims) if x.type.shape[i] == 1 and shape[d] != 1}
    summed = sorted(set(range(len(shape))) - set(dims) | stretched)
    ct_x = core.reduce_sum(ct, summed) if summed else ct
    remaining = [d for d in range(len(shape)) if d not in summed]
    kept = [remaining.index(d) for d in dims if d not in stretched]
    if kept != sorted(kept):
        ct_x = core.transpose(ct_x, kept)
    return [core.reshape(ct_x, x.type.shape)]


broadcast = _rearranging("broadcast", ["dims", "shape"], _broadcast_shape, _broadcast_impl)
deflinear(broadcast, _broadcast_transpose)
broadcast.kernel = _broadcast_kernel
# the plan counts a layout change of an argument as a view of it (no new bytes)
broadcast.extra["view"] = True


def _same_type_is_noop(eqn, known):
    """A layout change to the same type with the identity mapping is the operand itself."""
    x = eqn.ins[0]
    return x if x.type == eqn.out.type else None


def _broadcast_simplify(eqn, known):
    dims = eqn.params[0]
    return _same_type_is_noop(eqn, known) if tuple(dims) == tuple(range(len(dims))) else None


broadcast.simplify = _broadcast_simplify

# ---------------------------------------------------------------------------------------------
# reshape shape x (row-major)


def _reshape_shape(x: Type, shape):
    _check_shape(shape)
    if math.prod(shape) != x.size:
        raise ShaxTypeError(f"cannot reshape {x} ({x.size} elements) to {list(shape)}")
    return x.with_shape(shape)


reshape = _rearranging("reshape", ["shape"], _reshape_shape, lambda x, shape: np.reshape(x, shape))
deflinear(reshape, lambda ct, x, shape: [core.reshape(ct, x.type.shape)])


def _reshape_simplify(eqn, known):
    # reshape s (reshape s' x) = reshape s x
    inner = known.eqn(eqn.ins[0])
    if inner is not None and inner.prim == "reshape":
        return Eqn(eqn.out, "reshape", eqn.params, inner.ins)
    return _same_type_is_noop(eqn, known)


reshape.simplify = _reshape_simplify
reshape.kernel = lambda in_types, out_type, shape: lambda a: a.reshape(shape)
reshape.extra["view"] = True

# ---------------------------------------------------------------------------------------------
# transpose perm x: output axis i is operand axis perm[i]


def _transpose_shape(x: Type, perm):
    if sorted(perm) != list(range(x.rank)):
        raise ShaxTypeError(f"{list(perm)} is not a permutation of the axes of {x}")
    return x.with_shape(tuple(x.shape[p] for p in perm))


transpose = _rearranging(
    "transpose", ["perm"], _transpose_shape, lambda x, perm: np.transpose(x, perm)
)
deflinear(
    transpose, lambda ct, x, perm: [core.transpose(ct, tuple(int(i) for i in np.argsort(perm)))]
)


def _transpose_simplify(eqn, known):
    (perm,) = eqn.params
    if tuple(perm) == tuple(range(len(perm))):
        return eqn.ins[0]
    inner = known.eqn(eqn.ins[0])
    if inner is not None and inner.prim == "transpose":
        # transpose p (transpose q x): output axis i is x's axis q[p[i]]
        composed = tuple(inner.params[0][p] for p in perm)
        return Eqn(eqn.out, "transpose", (composed,), inner.ins)
    return None


transpose.simplify = _transpose_simplify
transpose.kernel = lambda in_types, out_type, perm: lambda a: a.transpose(perm)
transpose.extra["view"] = True

# ---------------------------------------------------------------------------------------------
# slice start limit x (unit strides) and pad [(lo,hi),...] value x: each other's transpose


def _slice_shape(x: Type, start, limit):
    if not len(start) == len(limit) == x.rank:
        raise ShaxTypeError(f"slice of {x} needs {x.rank} starts and limits")
    for s, lim, n in zip(start, limit, x.shape, strict=True):
        if not 0 <= s <= lim <= n:
            raise ShaxTypeError(f"slice [{s}, {lim}) is out of range for a dimension of size {n}")
    return x.with_shape(tuple(lim - s for s, lim in zip(start, limit, strict=True)))


slice_p = _rearranging(
    "slice",
    ["start", "limit"],
    _slice_shape,
    lambda x, start, limit: x[tuple(map(slice, start, limit))],
)


def _slice_kernel(in_types, out_type, start, limit):
    index = tuple(map(slice, start, limit))
    return lambda a: a[index]


slice_p.kernel = _slice_kernel
slice_p.extra["view"] = True
deflinear(
    slice_p,
    lambda ct, x, start, limit: [
        core.pad(ct, [(s, n - lim) for s, lim, n in zip(start, limit, x.type.shape, strict=True)])
    ],
)


def _pad_shape(x: Type, config, value):
    if len(config) != x.rank:
        raise ShaxTypeError(f"pad of {x} needs {x.rank} (lo, hi) pairs, got {len(config)}")
    if any(lo < 0 or hi < 0 for lo, hi in config):
        raise ShaxTypeError(f"pad amounts must be non-negative, got {list(config)}")
    return x.with_shape(tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, config, strict=True)))


def _pad_transpose(ct, x, config, value):
    start = [lo for lo, _ in config]
    limit = [lo + n for (lo, _), n in zip(config, x.type.shape, strict=True)]
    return [core.slice_(ct, start, limit)]


pad = define(
    "pad",
    arity=1,
    params=[("config", "pairs"), ("value", "scalar")],
    shape=_pad_shape,
    impl=lambda x, config, value: np.pad(x, config, constant_values=value),
    traits=["layout"],
)
deflinear(pad, _pad_transpose)


def _pad_linearize(primals, tangents, config, value):
    # pad is affine when value != 0: the tangent is padded with zeros
    (x,), (t,) = primals, tangents
    ans = core.pad(x, config, value)
    if isinstance(t, Zero):
        return ans, Zero(core.type_of(ans))
    return ans, core.pad(t, config, 0.0)


pad.linearize = _pad_linearize


def _pad_kernel(in_types, out_type, config, value):
    index = tuple(slice(lo, lo + n) for (lo, _), n in zip(config, in_types[0].shape))
    shape, dtype = out_type.shape, out_type.np_dtype

    def pad_into_full(a):
        out = np.full(shape, value, dtype)
        out[index] = a
        return out

    return pad_into_full


pad.kernel = _pad_kernel


# ---------------------------------------------------------------------------------------------
# concatenate axis x0 x1 ...


def _concatenate_shape(*xs: Type, axis):
    if not xs:
        raise ShaxTypeError("concatenate needs at least one operand")
    first = xs[0]
    if not 0 <= axis < first.rank:
        raise ShaxTypeError(f"axis {axis} is out of range for {first}")
    for x in xs[1:]:
        same = x.dtype == first.dtype and x.rank == first.rank
        if not same or any(
            a != b for i, (a, b) in enumerate(zip(x.shape, first.shape, strict=True)) if i != axis
        ):
            raise ShaxTypeError(f"cannot concatenate {x} with {first} along axis {axis}")
    size = sum(x.shape[axis] for x in xs)
    return first.with_shape(first.shape[:axis] + (size,) + first.shape[axis + 1 :])


def _concatenate_transpose(ct, *xs, axis):
    cts, offset = [], 0
    shape = core.shape_of(ct)
    for x in xs:
        n = x.type.shape[axis]
        if is_linear(x):
            start = [0] * len(shape)
            limit = list(shape)
            start[axis], limit[axis] = offset, offset + n
            cts.append(core.slice_(ct, start, limit))
        else:
            cts.append(None)
        offset += n
    return cts


deflinear(
    define(
        "concatenate",
        arity=None,
        params=[("axis", "int")],
        shape=_concatenate_shape,
        impl=lambda *xs, axis: np.concatenate(xs, axis=axis),
        traits=["layout"],
    ),
    _concatenate_transpose,
)

# ---------------------------------------------------------------------------------------------
# reduce_sum axes x and reduce_max axes x


def _reduce_shape(x: Type, axes):
    _check_axes(axes, x.rank)
    return x.with_shape(tuple(n for i, n in enumerate(x.shape) if i not in axes))


def _kept(rank, axes):
    return tuple(i for i in range(rank) if i not in axes)


reduce_sum = define(
    "reduce_sum",
    arity=1,
    params=[("axes", "ints")],
    shape=_reduce_shape,
    impl=lambda x, axes: np.sum(x, axis=tuple(axes), dtype=x.dtype),
    traits=["fresh"],
)
deflinear(
    reduce_sum, lambda ct, x, axes: [core.broadcast(ct, _kept(x.type.rank, axes), x.type.shape)]
)
ROWS_ADDED = 4  # a sum over a leading axis this short is added row by row


def _reduce_sum_kernel(in_types, out_type, axes):
    """No axes: the sum is the operand itself, returned as a copy so that the result is fresh.
    Over a short leading axis: ``a[0] + a[1] + ...``, the rows added in order as NumPy's
    reduction of that axis adds them, without its call overhead (a third of the time)."""
    (x,) = in_types
    if not axes:
        return np.copy
    if tuple(axes) == (0,) and 2 <= x.shape[0] <= ROWS_ADDED and (x.is_float or x.is_int):
        rows = x.shape[0]
        if rows == 2:
            return lambda a: a[0] + a[1]
        if rows == 3:
            return lambda a: a[0] + a[1] + a[2]
        return lambda a: a[0] + a[1] + a[2] + a[3]
    return lambda a: np.add.reduce(a, axis=axes)


reduce_sum.kernel = _reduce_sum_kernel


def _sum_of_slices(x, axes):
    """reduce_sum as pointwise adds of unit slices (the seed's lowering), then a reshape."""
    shape = list(core.shape_of(x))
    out_shape = [n for i, n in enumerate(shape) if i not in axes]
    for axis in axes:
        if shape[axis] == 0:
            return core.full_like(x, 0.0, out_shape)
        parts = []
        for i in range(shape[axis]):
            start, limit = [0] * len(shape), list(shape)
            start[axis], limit[axis] = i, i + 1
            parts.append(core.slice_(x, start, limit))
        x = parts[0]
        for part in parts[1:]:
            x = core.add(x, part)
        shape[axis] = 1
    return core.reshape(x, out_shape)


reduce_sum.extra["sums_of_slices"] = _sum_of_slices


def _reduce_max_shape(x: Type, axes):
    if not x.is_float:
        raise ShaxTypeError(f"reduce_max expects a float operand, got {x}")
    return _reduce_shape(x, axes)


def _reduce_max_impl(x, axes):
    return (
        np.max(x, axis=tuple(axes))
        if x.size
        else np.full(tuple(n for i, n in enumerate(x.shape) if i not in axes), -np.inf, x.dtype)
    )


def _reduce_max_jvp(t, x, ans, axes):
    # The gradient is split equally among the positions that attain the maximum.
    kept = _kept(core.type_of(x).rank, axes)
    shape = core.shape_of(x)
    is_max = core.convert(x == core.broadcast(ans, kept, shape), core.type_of(x).dtype)
    weight = is_max / core.broadcast(core.reduce_sum(is_max, axes), kept, shape)
    return core.reduce_sum(t * weight, axes)


defjvp(
    define(
        "reduce_max",
        arity=1,
        params=[("axes", "ints")],
        shape=_reduce_max_shape,
        impl=_reduce_max_impl,
        traits=["fresh"],
    ),
    _reduce_max_jvp,
)
