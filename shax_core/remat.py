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
from shax_core.ir import Lean, Program, from_lean, lean_of
from shax_core.passes.inline import emit_on_first_use, inline
from shax_core.registry import lookup

POLICIES = ("recompute", "save")
DEFAULT_DEPTH = 3
# residuals smaller than this are saved: recomputing them frees little memory and costs time
MIN_BYTES = 1 << 20


def _cheap(lean: Lean, i: int) -> bool:
    """Whether equation ``i`` is cheap to recompute: elementwise, layout or a constant, and
    no operand larger than its result."""
    if not ({"elementwise", "layout", "constant"} & lookup(lean.eqn_prim[i]).traits):
        return False
    types = lean.types
    size = types[lean.eqn_out[i]].size
    return all(types[v].size <= size for v in lean.eqn_ins[i])


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
    lean = lean_of(primal)
    types, eqn_ins = lean.types, lean.eqn_ins
    residuals = lean.outs[n_outputs:]
    if all(types[v].nbytes < min_bytes for v in residuals):
        return primal, linear, frozenset()  # every residual is small: all are saved
    producer = {out: i for i, out in enumerate(lean.eqn_out)}  # id -> its equation
    params = set(lean.params)
    kept: set[int] = set()
    memo: dict[tuple[int, int], bool] = {}

    def reachable(v: int, budget: int) -> bool:
        """Can ``v`` be rebuilt with at most ``budget`` cheap equations from saved values?"""
        if v in kept or v in params:
            return True
        key = (v, budget)
        if key not in memo:
            i = producer.get(v)
            ok = i is not None and _cheap(lean, i) and (not eqn_ins[i] or budget > 0)
            memo[key] = ok and all(reachable(w, budget - 1) for w in eqn_ins[i])
        return memo[key]

    recompute: set[int] = set()
    for r in sorted(set(residuals), key=lambda v: producer.get(v, -1)):
        if r in params or types[r].nbytes < min_bytes or not reachable(r, depth):
            kept.add(r)
            memo.clear()  # a newly kept value can make others reachable
        else:
            recompute.add(r)
    if not recompute:
        return primal, linear, frozenset()

    b = Builder(level=0, prefix="d")
    tangents = [b.add_param(types[p]) for p in lean_of(linear).params[:n_tangents]]
    saved: list[int] = []  # primal ids that the new linear program takes as residuals
    value: list = [None] * len(types)  # by primal id: its tracer in b

    def saved_input(u: int) -> Tracer | None:
        """A saved value becomes an input of the new linear program (a residual)."""
        if u not in kept and u not in params:
            return None
        saved.append(u)
        return b.add_param(types[u])

    def emit(i: int, xs: list[Tracer]) -> Tracer:
        out = lean.eqn_out[i]
        return b.emit(lean.eqn_prim[i], lean.eqn_params[i], [x.id for x in xs], types[out])

    def residual(v: int) -> Tracer:
        """The value of primal ``v`` in ``b``: saved values are read, recomputed ones emitted
        (operands first) when first needed."""
        return emit_on_first_use(v, value, lean, producer, emit, saved_input)

    args = tangents + [residual(v) for v in residuals]
    outs = inline(b, linear, args)
    new_linear = b.program(lean_of(linear).name, [t.id for t in outs], checked=False)
    new_primal = from_lean(lean.with_outs(lean.outs[:n_outputs] + tuple(saved)))
    return new_primal, new_linear, frozenset(lean.names[v] for v in recompute)
