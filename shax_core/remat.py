"""Residual policy: which primal values the linear program saves, and which it recomputes.

The YOLO paper's observation: checkpointing is a choice made while unzipping. Linearize saves
every primal value the tangent side reads. Under the ``recompute`` policy a residual made by a
cheap operation (elementwise, or a layout change that does not shrink its operand) within
``depth`` such operations of values that are saved anyway (inputs, constants, residuals kept
earlier) is recomputed in the linear program instead of saved. For a chain
``y = sin(y)·c + exp(-(y·y))`` this saves only ``y`` per step instead of ``cos y``, ``sin y``
and ``exp(-(y·y))`` as well.

>>> from shax_core import linearize_program, parse
>>> p = parse("def f(x :: f32[300000]) = let y = sin x  z = reduce_sum [0] y in [z]")

Saving every residual (``save``), the primal program returns ``cos x`` (1.2 MB):

>>> saved = linearize_program(p, policy="save")
>>> print(saved.primal)
def f(x :: f32[300000]) =
  let x0 :: f32[300000] = sin x
      x1 :: f32[300000] = cos x
      x2 :: f32[] = reduce_sum [0] x0
  in [x2, x1]

Under ``recompute`` it returns the input ``x``, and the linear program computes ``cos`` itself:

>>> recomputed = linearize_program(p, policy="recompute")
>>> print(recomputed.primal)
def f(x :: f32[300000]) =
  let x0 :: f32[300000] = sin x
      x2 :: f32[] = reduce_sum [0] x0
  in [x2, x]
>>> print(recomputed.linear)
def df(arg0 :: f32[300000],
       arg1 :: f32[300000]) =
  let d0 :: f32[300000] = cos arg1
      d1 :: f32[300000] = mul arg0 d0
      d2 :: f32[] = reduce_sum [0] d1
  in [d2]
>>> sorted(recomputed.recomputed)
['x1']

The transposed program runs such recomputations forward, each right before the backward step
that first reads it, so recomputed values are never all live at once.
"""

from __future__ import annotations

from shax_core.core import Builder, Tracer
from shax_core.ir import Program
from shax_core.passes.inline import emit_on_first_use, inline
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
    if all(v.type.nbytes < min_bytes for v in primal.outs[n_outputs:]):
        return primal, linear, frozenset()  # every residual is small: all are saved
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

    def saved_input(name: str) -> Tracer | None:
        """A saved value becomes an input of the new linear program (a residual)."""
        if name not in kept and name not in params:
            return None
        saved.append(leaf_vars[name])
        return b.add_param(leaf_vars[name].type)

    def emit(eqn, xs: list[Tracer]) -> Tracer:
        return b.emit(eqn.prim, eqn.params, [x.id for x in xs], eqn.out.type)

    args = tangents + [
        emit_on_first_use(v.name, value, producer, emit, saved_input) for v in residuals
    ]
    outs = inline(b, linear, args)
    new_linear = b.program(linear.name, [t.id for t in outs], checked=False)
    new_primal = primal.replace(outs=primal.outs[:n_outputs] + tuple(saved))
    return new_primal, new_linear, frozenset(recompute)
