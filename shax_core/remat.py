"""Residual policy: which primal values the linear program saves, and which it recomputes.

The YOLO paper's observation: checkpointing is a choice made while unzipping. Linearize saves
every primal value the tangent side reads. Under the ``recompute`` policy a residual made by a
cheap operation (elementwise, or a layout change that does not shrink its operand) within
``depth`` such operations of values that are saved anyway (inputs, constants, residuals kept
earlier) is recomputed in the linear program instead of saved. For a chain
``y = sin(y)·c + exp(-(y·y))`` this saves only ``y`` per step instead of ``cos y``, ``sin y``
and ``exp(-(y·y))`` as well.

Before (``save``)::

    def f(arg0 :: f32[N]) = let x0 = sin arg0  x1 = cos arg0 ... in [out, x1]
    def df(arg0 :: f32[N], arg1 :: f32[N]) = let x0 = mul arg0 arg1 in [x0]

After (``recompute``)::

    def f(arg0 :: f32[N]) = let x0 = sin arg0 ... in [out, arg0]
    def df(arg0 :: f32[N], arg1 :: f32[N]) = let x0 = cos arg1  x1 = mul arg0 x0 in [x1]

The transposed program runs such recomputations forward, each right before the backward step
that first reads it, so recomputed values are never all live at once.
"""

from __future__ import annotations

from shax_core.core import Builder, Tracer
from shax_core.ir import Program
from shax_core.passes.inline import inline
from shax_core.registry import lookup

POLICIES = ("recompute", "save")
DEFAULT_DEPTH = 3
# residuals smaller than this are saved: recomputing them frees little memory and costs time
MIN_BYTES = 1 << 20


def _cheap(eqn) -> bool:
    traits = lookup(eqn.prim).traits
    if not ({"elementwise", "layout", "constant"} & traits):
        return False
    return all(v.type.size <= eqn.out.type.size for v in eqn.ins)


def rematerialize(
    primal: Program,
    linear: Program,
    n_outputs: int,
    n_tangents: int,
    depth: int = DEFAULT_DEPTH,
    min_bytes: int = MIN_BYTES,
) -> tuple[Program, Program, frozenset[str]]:
    """Rewrite the (primal, linear) pair so cheap residuals of at least ``min_bytes`` are
    recomputed, not saved: ``(primal, linear, names of the recomputed residuals)``, the pair
    unchanged (the same objects) if none is."""
    producer = {e.out.name: e for e in primal.eqns}
    params = {p.name for p in primal.params}
    residuals = primal.outs[n_outputs:]
    kept: set[str] = set()
    memo: dict[tuple[str, int], bool] = {}

    def reachable(name: str, budget: int) -> bool:
        """Can ``name`` be rebuilt with at most ``budget`` cheap equations from saved values?"""
        if name in kept or name in params:
            return True
        key = (name, budget)
        if key not in memo:
            eqn = producer.get(name)
            ok = eqn is not None and _cheap(eqn) and (not eqn.ins or budget > 0)
            memo[key] = ok and all(reachable(v.name, budget - 1) for v in eqn.ins)
        return memo[key]

    order = {e.out.name: i for i, e in enumerate(primal.eqns)}
    types = {v.name: v.type for v in residuals}
    recompute: set[str] = set()
    for r in sorted({v.name for v in residuals}, key=lambda n: order.get(n, -1)):
        if r in params or types[r].nbytes < min_bytes or not reachable(r, depth):
            kept.add(r)
            memo.clear()  # a newly kept value can make others reachable
        else:
            recompute.add(r)
    if not recompute:
        return primal, linear, frozenset()

    leaf_vars = {v.name: v for v in residuals} | {p.name: p for p in primal.params}
    b = Builder(level=0, prefix="d")
    tangents = [b.add_param(p.type) for p in linear.params[:n_tangents]]
    saved: list = []  # primal vars that the new linear program takes as residuals
    value: dict[str, Tracer] = {}

    def get(name: str) -> Tracer:
        # iterative post-order over the (depth-bounded) recomputation tree
        stack = [name]
        while stack:
            n = stack[-1]
            if n in value:
                stack.pop()
                continue
            if n in kept or n in params:
                var = leaf_vars[n]
                value[n] = b.add_param(var.type)
                saved.append(var)
                stack.pop()
                continue
            eqn = producer[n]
            missing = [v.name for v in eqn.ins if v.name not in value]
            if missing:
                stack.extend(missing)
                continue
            value[n] = b.emit(
                eqn.prim, eqn.params, [value[v.name].var for v in eqn.ins], eqn.out.type
            )
            stack.pop()
        return value[name]

    args = tangents + [get(v.name) for v in residuals]
    outs = inline(b, linear, args)
    new_linear = Program(linear.name, tuple(b.params), tuple(b.eqns), tuple(t.var for t in outs))
    new_primal = primal.replace(outs=primal.outs[:n_outputs] + tuple(saved))
    return new_primal, new_linear, frozenset(recompute)
