"""Contractions: ``dot`` (NumPy's matmul for rank <= 2) and ``dot_general``.

``dot_general lc rc lb rb x y`` contracts x's axes lc with y's axes rc, pairs batch axes lb
with rb, and lays the result out as ``[batch..., x kept..., y kept...]`` (kept = neither
contracted nor batch, in increasing order). ``dot x y`` is ``dot_general [rank x - 1] [0] [] []``;
the ``canonicalize_dot`` pass rewrites it to the seed's ``[B,M,K]·[B,K,N]`` form.

Transpose (both bilinear halves), with ct :: [batch, x_kept, y_kept]:

    x̄ = transpose(dot_general(ct, y, contract=(ct's y_kept axes, y_kept), batch=(ct's batch, rb)),
                  argsort(lb + x_kept + lc ordered by rc))
and symmetrically for ȳ.
"""

from __future__ import annotations

import math

import numpy as np

from shax_core import core
from shax_core.ir import ShaxTypeError, Type
from shax_core.primitives.base import defbilinear, define
from shax_core.primitives.structural import transpose as transpose_p


def _kept(rank, contract, batch):
    return tuple(i for i in range(rank) if i not in contract and i not in batch)


def _dot_general_shape(x: Type, y: Type, lhs_contract, rhs_contract, lhs_batch, rhs_batch):
    if x.dtype != y.dtype or not x.is_float:
        raise ShaxTypeError(f"dot_general needs float operands of one dtype, got {x} and {y}")
    if len(lhs_contract) != len(rhs_contract) or len(lhs_batch) != len(rhs_batch):
        raise ShaxTypeError("contracting and batch dimension lists must pair up")
    for axes, t, what in (
        (lhs_contract + lhs_batch, x, "lhs"),
        (rhs_contract + rhs_batch, y, "rhs"),
    ):
        if len(set(axes)) != len(axes) or any(not 0 <= a < t.rank for a in axes):
            raise ShaxTypeError(f"{what} dimensions {list(axes)} are not distinct axes of {t}")
    for a, b in zip(lhs_contract + lhs_batch, rhs_contract + rhs_batch, strict=True):
        if x.shape[a] != y.shape[b]:
            raise ShaxTypeError(
                f"lhs axis {a} (size {x.shape[a]}) does not match rhs axis {b} (size {y.shape[b]})"
            )
    batch = tuple(x.shape[a] for a in lhs_batch)
    x_kept = tuple(x.shape[a] for a in _kept(x.rank, lhs_contract, lhs_batch))
    y_kept = tuple(y.shape[a] for a in _kept(y.rank, rhs_contract, rhs_batch))
    return x.with_shape(batch + x_kept + y_kept)


def _dot_general_impl(x, y, lhs_contract, rhs_contract, lhs_batch, rhs_batch):
    # Lay both operands out as [batch, M, K] and [batch, K, N] (views where possible), then
    # one matmul: NumPy hands 2-d and stacked blocks to BLAS, transposed views included.
    xk = _kept(x.ndim, lhs_contract, lhs_batch)
    yk = _kept(y.ndim, rhs_contract, rhs_batch)
    batch = tuple(x.shape[a] for a in lhs_batch)
    x_kept = tuple(x.shape[a] for a in xk)
    y_kept = tuple(y.shape[a] for a in yk)
    k = math.prod([x.shape[a] for a in lhs_contract])
    xt = np.transpose(x, lhs_batch + xk + lhs_contract).reshape(batch + (-1 if x_kept else 1, k))
    yt = np.transpose(y, rhs_batch + rhs_contract + yk).reshape(batch + (k, -1 if y_kept else 1))
    out = np.matmul(xt, yt)
    return out.reshape(batch + x_kept + y_kept)


def _dot_general_kernel(in_types, out_type, lhs_contract, rhs_contract, lhs_batch, rhs_batch):
    """One matmul on views: permutations and reshapes are decided here, once.

    When x is already laid out [batch, kept, contract] and y [batch, contract, kept] (or their
    transposes, which BLAS reads directly) no copy is made.
    """
    x, y = in_types
    xk = _kept(x.rank, lhs_contract, lhs_batch)
    yk = _kept(y.rank, rhs_contract, rhs_batch)
    x_perm = lhs_batch + xk + lhs_contract
    y_perm = rhs_batch + rhs_contract + yk
    batch = tuple(x.shape[a] for a in lhs_batch)
    m = math.prod([x.shape[a] for a in xk])
    k = math.prod([x.shape[a] for a in lhs_contract])
    n = math.prod([y.shape[a] for a in yk])
    x_view = batch + (m, k)
    y_view = batch + (k, n)
    out_shape = out_type.shape
    x_as = _operand_view(x, x_perm, x_view)
    y_as = _operand_view(y, y_perm, y_view)
    same_shape = batch + (m, n) == out_shape
    if same_shape and x_as == "as is" and y_as == "as is":
        return np.matmul
    if same_shape and x_as == ".T" and y_as == "as is":
        return lambda a, b: np.matmul(a.T, b)
    if same_shape and x_as == "as is" and y_as == ".T":
        return lambda a, b: np.matmul(a, b.T)

    def matmul(a, b):
        a = a if x_as == "as is" else a.T if x_as == ".T" else a.transpose(x_perm).reshape(x_view)
        b = b if y_as == "as is" else b.T if y_as == ".T" else b.transpose(y_perm).reshape(y_view)
        return np.matmul(a, b).reshape(out_shape)

    return matmul


def _operand_view(t: Type, perm: tuple, view: tuple) -> str:
    """How an operand becomes its ``[batch, rows, columns]`` view: ``as is``, ``.T`` (a 2-d
    operand whose axes swap: BLAS reads the transposed view directly), or ``general`` (a
    transpose then a reshape)."""
    if perm == tuple(range(t.rank)) and t.shape == view:
        return "as is"
    if perm == (1, 0) and t.shape[::-1] == view:
        return ".T"
    return "general"


dot_general = define(
    "dot_general",
    arity=2,
    params=[
        ("lhs_contract", "ints"),
        ("rhs_contract", "ints"),
        ("lhs_batch", "ints"),
        ("rhs_batch", "ints"),
    ],
    shape=_dot_general_shape,
    impl=_dot_general_impl,
    traits=["fresh"],
)
dot_general.kernel = _dot_general_kernel


def _transpose_lhs(ct, y, x_type, lhs_contract, rhs_contract, lhs_batch, rhs_batch, swap=False):
    """x̄ for ct = dot_general(x, y); with swap, ct's kept axes are ordered (y_kept, x_kept)."""
    y_rank = core.type_of(y).rank
    nb = len(lhs_batch)
    x_kept = _kept(x_type.rank, lhs_contract, lhs_batch)
    y_kept = _kept(y_rank, rhs_contract, rhs_batch)
    if swap:
        ct_y_kept = tuple(range(nb, nb + len(y_kept)))
    else:
        ct_y_kept = tuple(range(nb + len(x_kept), nb + len(x_kept) + len(y_kept)))
    result = core.dot_general(ct, y, ct_y_kept, y_kept, tuple(range(nb)), rhs_batch)
    # result axes: [batch, x_kept, y's contracted axes in increasing order]
    contract_by_y = tuple(np.array(lhs_contract, dtype=int)[np.argsort(rhs_contract)])
    layout = tuple(lhs_batch) + x_kept + contract_by_y
    perm = tuple(int(i) for i in np.argsort(layout))
    return result if perm == tuple(range(len(perm))) else core.transpose(result, perm)


def _transpose_rhs(ct, x, y_type, lhs_contract, rhs_contract, lhs_batch, rhs_batch):
    """ȳ for ct = dot_general(x, y), computed as ``xᵀ·ct`` so that it comes out in y's own
    layout ``[batch, contract, kept]`` (no transpose of the result for the canonical form)."""
    nb = len(lhs_batch)
    x_kept = _kept(core.type_of(x).rank, lhs_contract, lhs_batch)
    y_kept = _kept(y_type.rank, rhs_contract, rhs_batch)
    ct_x_kept = tuple(range(nb, nb + len(x_kept)))
    result = core.dot_general(x, ct, x_kept, ct_x_kept, lhs_batch, tuple(range(nb)))
    # result axes: [batch, x's contracted axes in increasing order, y_kept]
    paired = dict(zip(lhs_contract, rhs_contract, strict=True))
    layout = tuple(rhs_batch) + tuple(paired[a] for a in sorted(lhs_contract)) + y_kept
    perm = tuple(int(i) for i in np.argsort(layout))
    return result if perm == tuple(range(len(perm))) else core.transpose(result, perm)


defbilinear(
    dot_general,
    lambda ct, y, x_type, **dims: _transpose_lhs(ct, y, x_type, **dims),
    lambda ct, x, y_type, **dims: _transpose_rhs(ct, x, y_type, **dims),
)


# ---------------------------------------------------------------------------------------------
# dot x y: NumPy's matmul on rank-1 and rank-2 operands


def _dot_dims(x_rank: int) -> dict:
    return dict(lhs_contract=(x_rank - 1,), rhs_contract=(0,), lhs_batch=(), rhs_batch=())


def _dot_shape(x: Type, y: Type):
    if not (1 <= x.rank <= 2 and 1 <= y.rank <= 2):
        raise ShaxTypeError(
            f"dot takes rank-1 or rank-2 operands, got {x} and {y}; use dot_general"
        )
    return _dot_general_shape(x, y, **_dot_dims(x.rank))


dot = define("dot", arity=2, shape=_dot_shape, impl=np.matmul, traits=["fresh"])
defbilinear(
    dot,
    lambda ct, y, x_type: _transpose_lhs(ct, y, x_type, **_dot_dims(x_type.rank)),
    lambda ct, x, y_type: _transpose_rhs(ct, x, y_type, **_dot_dims(core.type_of(x).rank)),
)


def _canonical_dot(x, y):
    """dot as the seed's canonical ``dot_general [2] [1] [0] [0]`` on ``[1,M,K]·[1,K,N]``."""
    (xs, ys) = core.shape_of(x), core.shape_of(y)
    m, k = (1, xs[0]) if len(xs) == 1 else xs
    n = 1 if len(ys) == 1 else ys[1]
    out_shape = xs[:-1] + ys[1:]
    x3 = core.reshape(x, (1, m, k))
    y3 = core.reshape(y, (1, k, n))
    return core.reshape(core.dot_general(x3, y3, (2,), (1,), (0,), (0,)), out_shape)


dot.extra["canonicalize"] = _canonical_dot


# ---------------------------------------------------------------------------------------------
# plan rules (see ``shax_core._evaluate.rewrite_plan``): contractions read transposed operands
# directly, and a transposed contraction is the contraction with its operands swapped (a rule
# of transpose declared here, beside the contraction's parameters)


def _contraction_dims(eqn, rw) -> tuple | None:
    """``(lhs_contract, rhs_contract)`` of a dot or a batch-free dot_general, else None."""
    if eqn.prim == "dot":
        d = _dot_dims(rw.type(eqn.ins[0]).rank)
        return d["lhs_contract"], d["rhs_contract"]
    if eqn.prim == "dot_general" and not eqn.params[2] and not eqn.params[3]:
        return eqn.params[0], eqn.params[1]
    return None


def _through_transpose(v, contract, rw):
    """``(z, contract on z)`` when v = transpose perm z and v's kept axes keep their order
    in z (so the contraction's result is laid out the same), else None."""
    t = rw.producer(v)
    if t is None or t.prim != "transpose":
        return None
    (perm,) = t.params
    kept = [perm[a] for a in range(len(perm)) if a not in contract]
    if kept != sorted(kept):
        return None
    return t.ins[0], tuple(perm[a] for a in contract)


def _read_transposed_operands(eqn, rw):
    """Plan rule: ``dot_general x (transpose p z) = dot_general x z`` contracting the axes p
    maps to (a transpose is a view: BLAS reads z's memory with swapped strides)."""
    dims = _contraction_dims(eqn, rw)
    if dims is None:
        return None
    (x, y), (lc, rc) = eqn.ins, dims
    new_x, new_y = _through_transpose(x, lc, rw), _through_transpose(y, rc, rw)
    if new_x is None and new_y is None:
        return None
    x, lc = new_x or (x, lc)
    y, rc = new_y or (y, rc)
    return (rw.eqn(eqn.out, "dot_general", (tuple(lc), tuple(rc), (), ()), (x, y)),)


def swapped_contraction(eqn, rw):
    """Plan rule: ``transpose (dot_general x y)``, swapping x's kept axes with y's, is
    ``dot_general y x``: the result comes out in its own layout (row-major), not as a
    transposed view (which makes the elementwise steps reading it slower)."""
    (perm,) = eqn.params
    c = rw.producer(eqn.ins[0])
    dims = _contraction_dims(c, rw) if c is not None else None
    if dims is None or rw.uses(eqn.ins[0]) != 1:
        return None
    (x, y), (lc, rc) = c.ins, dims
    nx = rw.type(x).rank - len(lc)
    ny = rw.type(y).rank - len(rc)
    if tuple(perm) != tuple(range(nx, nx + ny)) + tuple(range(nx)):
        return None
    return (rw.eqn(eqn.out, "dot_general", (tuple(rc), tuple(lc), (), ()), (y, x)),)


dot_general.extra["plan"] = (_read_transposed_operands,)
dot.extra["plan"] = (_read_transposed_operands,)
transpose_p.extra["plan"] = (swapped_contraction,)  # the contraction's rule for transpose
