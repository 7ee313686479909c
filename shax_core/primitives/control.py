"""Structured control flow: ``scan``, ``cond`` and ``while_loop``, equations with sub-programs.

A loop is one equation whose parameters include its body, a closed Program (everything it
reads is an operand), printed inline:

>>> import numpy as np
>>> from shax_core import evaluate, parse
>>> p = parse('''def f(arg0 :: f32[3], arg1 :: f32[5, 3]) =
...   let x0 :: f32[3], x1 :: f32[5, 3] = scan 5 forward 0 1 save {
...       def body(c :: f32[3], x :: f32[3]) = let y = sin c  z = add y x in [z, y]
...     } arg0 arg1
...   in [x0, x1]''')
>>> print(p)
def f(arg0 :: f32[3],
      arg1 :: f32[5, 3]) =
  let x0 :: f32[3], x1 :: f32[5, 3] = scan 5 forward 0 1 save {
          def body(c :: f32[3],
                   x :: f32[3]) =
            let y = sin c
                z = add y x
            in [z, y]
        } arg0 arg1
  in [x0, x1]
>>> c, ys = evaluate(p, np.zeros(3, np.float32), np.ones((5, 3), np.float32))
>>> ys.shape, bool(np.allclose(ys[1], np.sin(1.0)))
((5, 3), True)

``scan length direction num_consts num_carry policy {body} consts... carry... xs...``: the body
maps ``(consts..., carry..., x slices...)`` to ``(carry..., y...)``; the results are the final
carries and the ``y`` stacked along a new leading axis (in step order, also when ``reverse``).

Differentiation follows "You Only Linearize Once". ``scan`` linearizes into a primal scan that
also stacks each step's residuals and a linear scan over ``(ċ, ẋ_t, residuals_t)``; the
transpose of a linear scan is a scan in the other direction over ``(c̄, ȳ_t, residuals_t)`` that
emits ``x̄_t`` and accumulates the cotangents of loop-invariant inputs in its carry. The residual
``policy`` of a scan is ``save`` (T × one step's residuals), ``recompute`` (the primal scan saves
only the carries, the linear scan recomputes the body: ``jax.checkpoint``), or ``auto`` (save
unless the stacked residuals exceed ``AUTO_SAVE_BYTES``).

``cond {branches} index operands...`` runs branch ``index`` (bool: false → 0, true → 1; float:
floored and clamped to the branches, as JAX clamps). It linearizes into a cond of linearized
branches whose residuals are laid side by side (a branch fills the others' with zeros) and
transposes into a cond of transposed branches.

``while_loop num_consts max_trips {cond} {body} consts... carry...`` has a forward-mode rule (a
while loop over ``(c, ċ)``) and no transpose: its trip count is not known ahead.
"""

from __future__ import annotations

import math
import operator
import sys
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from shax_core import core as ops
from shax_core.core import Builder, Tracer, inline, zeros
from shax_core.ir import Program, ShaxTypeError, Type, type_of
from shax_core.registry import RuleError, Zero, define, is_linear, transform

POLICIES = ("save", "recompute", "auto")
DIRECTIONS = ("forward", "reverse")
AUTO_SAVE_BYTES = 64 << 20  # ``auto``: save stacked residuals up to this size, else recompute
LIST_SLICES = 1 << 16  # scans up to this long index a list of their operands' rows


class LoopLimitError(RuleError):
    """A while_loop ran more iterations than its ``max_trips``."""


def _types_text(types) -> str:
    return "(" + ", ".join(map(str, types)) + ")"


# ---------------------------------------------------------------------------------------------
# helpers over sub-programs


_PLANS: OrderedDict[int, tuple[Program, object]] = OrderedDict()


def _compiled(body: Program):
    """The body's plan, compiled once per body object (bodies are immutable values)."""
    hit = _PLANS.get(id(body))
    if hit is not None and hit[0] is body:
        _PLANS.move_to_end(id(body))
        return hit[1]
    plan = transform("compile")(body)
    _PLANS[id(body)] = (body, plan)
    while len(_PLANS) > 256:
        _PLANS.popitem(last=False)
    return plan


def _depends(program: Program, sources: set[str]) -> list[bool]:
    """For each output of ``program``: does it depend on any variable named in ``sources``?"""
    tainted = set(sources)
    for e in program.eqns:
        if any(v.name in tainted for v in e.ins):
            tainted.update(v.name for v in e.outs)
    return [v.name in tainted for v in program.outs]


def _reads(program: Program) -> set[str]:
    """Names a program reads (operands of its equations and its outputs)."""
    names = {v.name for v in program.outs}
    for e in program.eqns:
        names.update(v.name for v in e.ins)
    return names


def _only_needed(program: Program) -> Program:
    """The equations the outputs need (a backward sweep; passes.dce sits above the registry)."""
    live = {v.name for v in program.outs}
    kept = []
    for e in reversed(program.eqns):
        if any(v.name in live for v in e.outs):
            kept.append(e)
            live.update(v.name for v in e.ins)
    return program.replace(eqns=tuple(reversed(kept)), checked=True)


def _linearize(body: Program, wrt: Sequence[int]) -> tuple[Program, Program]:
    return transform("linearize")(body, tuple(wrt), "save")


def _program(name: str, b: Builder, outs) -> Program:
    return b.program(name, [t.id for t in outs], checked=True)


def _permuted(body: Program, order: Sequence[int]) -> Program:
    """``body`` with its parameters reordered (``order[k]`` is the old index of the k-th)."""
    return body.replace(params=tuple(body.params[i] for i in order)).replace(checked=True)


def _builder_of(values) -> Builder:
    for v in values:
        if isinstance(v, Tracer):
            return v.builder
    raise RuleError("a control-flow rule found no traced value to build in")


def _real(value, builder: Builder, type_: Type):
    """A value for a possibly symbolic zero."""
    return zeros(builder, type_) if isinstance(value, Zero) else value


# ---------------------------------------------------------------------------------------------
# scan


def _scan_split(seq, num_consts: int, num_carry: int):
    return seq[:num_consts], seq[num_consts : num_consts + num_carry], seq[num_consts + num_carry :]


def _scan_shape(*in_types, length, direction, num_consts, num_carry, policy, body):
    if length < 0:
        raise ShaxTypeError(f"scan length {length} is negative")
    if direction not in DIRECTIONS:
        raise ShaxTypeError(f"scan direction {direction!r} is not one of {list(DIRECTIONS)}")
    if policy not in POLICIES:
        raise ShaxTypeError(f"scan policy {policy!r} is not one of {list(POLICIES)}")
    if num_consts < 0 or num_carry < 0 or num_consts + num_carry > len(in_types):
        raise ShaxTypeError(
            f"scan of {len(in_types)} operands cannot have {num_consts} consts and "
            f"{num_carry} carries"
        )
    consts, carry, xs = _scan_split(in_types, num_consts, num_carry)
    slices = []
    for k, t in enumerate(xs):
        if t.rank == 0 or t.shape[0] != length:
            raise ShaxTypeError(
                f"scanned operand {k} is {t}: its leading axis must be the length {length}"
            )
        slices.append(t.with_shape(t.shape[1:]))
    expected = (*consts, *carry, *slices)
    if body.in_types != expected:
        raise ShaxTypeError(
            f"the body {body.name} takes {_types_text(body.in_types)}, but the scan passes "
            f"(consts, carry, x slices) = {_types_text(expected)}"
        )
    outs = body.out_types
    if len(outs) < num_carry or outs[:num_carry] != tuple(carry):
        raise ShaxTypeError(
            f"the body {body.name} returns {_types_text(outs)}: its first {num_carry} "
            f"result(s) must be the carry {_types_text(carry)}"
        )
    ys = tuple(t.with_shape((length, *t.shape)) for t in outs[num_carry:])
    if not carry and not ys:
        raise ShaxTypeError("a scan must have a carry or a stacked output")
    return (*carry, *ys)


def _scan_kernel(in_types, out_types, *, length, direction, num_consts, num_carry, policy, body):
    plan = _compiled(body)
    new_slots, body_steps, n_params, out_slots = plan.body_parts()
    nc, nk = num_consts, num_carry
    y_types = out_types[nk:]
    carry_slots = out_slots[:nk]
    y_slots = out_slots[nk:]
    carry_at = slice(nc, nc + nk)
    xs_at = slice(nc + nk, n_params)
    steps = range(length - 1, -1, -1) if direction == "reverse" else range(length)

    buffers = _BufferPool(y_types)
    scalar_ys = [k for k, t in enumerate(y_types) if t.rank == 1]  # one scalar per step
    array_ys = [k for k, t in enumerate(y_types) if t.rank > 1]
    carry_of = _getter(carry_slots)  # the body's new carry, as a tuple (one C call)
    scalars_of = _getter([y_slots[k] for k in scalar_ys])

    carry_at_out = slice(0, nk)  # in a generated body's output tuple
    scalars_out = _getter([nk + k for k in scalar_ys])
    array_out = [nk + k for k in array_ys]

    def interpreted_trips(args, rows, ys, collect):
        slots = new_slots()
        slots[:nc] = args[:nc]  # loop-invariant: set once
        carry = args[nc : nc + nk]
        xs = args[nc + nk :]
        array_pairs = [(ys[k], y_slots[k]) for k in array_ys]
        for i in steps:
            slots[carry_at] = carry
            if rows is not None:
                slots[xs_at] = rows[i]
            elif xs:
                slots[xs_at] = [x[i] for x in xs]
            for fn, x, y, out, _ in body_steps:
                if y is None:
                    slots[out] = fn(slots[x])
                elif x is None:
                    if type(out) is tuple:
                        for s, a in zip(out, fn(*[slots[k] for k in y])):
                            slots[s] = a
                    else:
                        slots[out] = fn(*[slots[k] for k in y])
                else:
                    slots[out] = fn(slots[x], slots[y])
            carry = carry_of(slots)
            if collect is not None:
                collect(scalars_of(slots))
            for buf, s in array_pairs:
                buf[i] = slots[s]
        return carry

    def generated_trips(body_fn, args, rows, ys, collect):
        """The same trips through the body's generated code (the same kernels in the same
        order, its outputs returned as a tuple instead of read from slots)."""
        consts = args[:nc]
        carry = args[nc : nc + nk]
        xs = args[nc + nk :]
        array_pairs = [(ys[k], at) for k, at in zip(array_ys, array_out, strict=True)]
        for i in steps:
            if rows is not None:
                outs = body_fn(*consts, *carry, *rows[i])
            elif xs:
                outs = body_fn(*consts, *carry, *[x[i] for x in xs])
            else:
                outs = body_fn(*consts, *carry)
            carry = outs[carry_at_out]
            if collect is not None:
                collect(scalars_out(outs))
            for buf, at in array_pairs:
                buf[i] = outs[at]
        return carry

    trips_run = [0]  # trips made by this kernel so far: the body is generated once it is hot

    def run(*args):
        trips_run[0] += length
        body_fn = plan.hot_body(trips_run[0])
        xs = args[nc + nk :]
        # per-step slices: a list of per-step tuples of rows is cheaper to index than the
        # arrays (built once; bounded length)
        rows = list(zip(*xs)) if xs and length <= LIST_SLICES else None
        ys = buffers()
        # scalar results are collected as they are (numpy scalars, never written again) and
        # stacked once at the end; array results are copied into their preallocated buffer
        collected = []
        collect = collected.append if scalar_ys else None
        if body_fn is not None:
            carry = generated_trips(body_fn, args, rows, ys, collect)
        else:
            carry = interpreted_trips(args, rows, ys, collect)
        if collected:
            if direction == "reverse":
                collected.reverse()
            for j, k in enumerate(scalar_ys):
                ys[k][:] = [row[j] for row in collected]
        # results are fresh arrays of the declared types, never views of operands or slots
        carry = [np.array(c, dtype=t.np_dtype, copy=True) for c, t in zip(carry, out_types)]
        return (*carry, *ys)

    # while it runs: every slot of the body (its slots are reused across trips, not freed),
    # minus its consts and x slices, which are the scan's operands (views, counted already)
    operand_bytes = sum(t.nbytes for t in in_types[:nc]) + sum(
        t.nbytes // max(length, 1) for t in in_types[nc + nk :]
    )
    run.transient_bytes = max(plan.all_slot_bytes - operand_bytes, 0)
    run.work = 1 + length * plan.work
    return run


def _getter(slots_to_read):
    """``slots -> tuple of slots_to_read`` (``operator.itemgetter`` returns a bare item for one)."""
    if not slots_to_read:
        return lambda slots: ()
    if len(slots_to_read) == 1:
        (only,) = slots_to_read
        return lambda slots: (slots[only],)
    return operator.itemgetter(*slots_to_read)


POOL_BYTES = 16 << 20  # a scan keeps its stacked-output buffers between calls up to this size


class _BufferPool:
    """The stacked-output buffers of one scan, reused by the next call when nothing refers to
    them any more (a fresh buffer of a few MiB costs a page fault per 4 KiB on every call,
    which for an RNN step is more than its arithmetic). A buffer still referenced anywhere (a
    caller's result, a view, another thread's run) is never reused: a new one is made."""

    def __init__(self, types):
        self.types = types
        self.keep = sum(t.nbytes for t in types) <= POOL_BYTES
        self.kept: list = [None] * len(types)

    def __call__(self) -> list[np.ndarray]:
        out = []
        for k, t in enumerate(self.types):
            buf = self.kept[k]
            # references: kept[k], ``buf``, getrefcount's argument; any other means in use
            if buf is None or sys.getrefcount(buf) > 3:
                buf = np.empty(t.shape, t.np_dtype)
                if self.keep:
                    self.kept[k] = buf
            out.append(buf)
        return out


def _scan_impl(*arrays, **params):
    types = tuple(type_of(a) for a in arrays)
    out_types = _scan_shape(*types, **params)
    return _scan_kernel(types, out_types, **params)(*arrays)


scan_p = define(
    "scan",
    arity=None,
    params=[
        ("length", "int"),
        ("direction", "word"),
        ("num_consts", "int"),
        ("num_carry", "int"),
        ("policy", "word"),
        ("body", "program"),
    ],
    shape=_scan_shape,
    impl=_scan_impl,
    multiple_results=True,
    doc="scan length direction num_consts num_carry policy {body} consts... carry... xs...",
)
scan_p.kernel = _scan_kernel
scan_p.extra["long"] = True
scan_p.extra["trips"] = lambda params: params["length"]  # how often the body runs


def _scan_linearize(primals, tangents, *, length, direction, num_consts, num_carry, policy, body):
    nc, nk = num_consts, num_carry
    n_in = len(body.params)
    ny = len(body.outs) - nk
    floats = [p.type.is_float for p in body.params]
    nonzero = [not isinstance(t, Zero) and f for t, f in zip(tangents, floats)]
    # which carries have a tangent: a fixpoint (a carry's tangent may become non-zero later)
    while True:
        wrt = [i for i in range(n_in) if nonzero[i]]
        primal_body, linear_body = _linearize(body, wrt)
        t_params = {p.name for p in linear_body.params[: len(wrt)]}
        out_nz = _depends(linear_body, t_params)
        changed = False
        for j in range(nk):
            if out_nz[j] and floats[nc + j] and not nonzero[nc + j]:
                nonzero[nc + j] = True
                changed = True
        if not changed:
            break
    carry_nz = [nonzero[nc + j] for j in range(nk)]
    ys_nz = [out_nz[nk + k] and body.outs[nk + k].type.is_float for k in range(ny)]
    residuals = primal_body.outs[nk + ny :]
    param_index = {p.name: i for i, p in enumerate(body.params)}
    step_bytes = sum(r.type.nbytes for r in residuals if param_index.get(r.name, nc) >= nc)
    if policy == "auto":
        policy = "save" if step_bytes * length <= AUTO_SAVE_BYTES else "recompute"

    consts, carry, xs = _scan_split(list(primals), nc, nk)
    common = dict(length=length, direction=direction)
    if policy == "save":
        # residuals: loop-invariant ones (the body's consts) and xs slices are passed as they
        # are; every other one is stacked by the primal scan, one slice per step
        # residuals computed from consts alone are loop-invariant: computed once, outside
        step_names = {p.name for p in body.params[nc:]}
        varying = dict(
            zip(
                (r.name for r in residuals),
                _depends(primal_body.replace(outs=residuals), step_names),
            )
        )
        computed = [r for r in dict.fromkeys(residuals) if r.name not in param_index]
        hoisted = [r for r in computed if not varying[r.name]]
        stacked = [r for r in residuals if not (param_index.get(r.name, nc) < nc)]
        stacked = [r for r in stacked if param_index.get(r.name, -1) < nc + nk]
        stacked = [r for r in stacked if varying[r.name]]
        hoisted_values = (
            inline(
                _builder_of(primals),
                _only_needed(primal_body.replace(outs=tuple(hoisted))),
                list(primals),
            )
            if hoisted
            else []
        )
        primal_scan_body = primal_body.replace(
            outs=primal_body.outs[: nk + ny] + tuple(stacked), checked=True
        )
        results = ops.bind(
            "scan",
            *primals,
            **common,
            num_consts=nc,
            num_carry=nk,
            policy="save",
            body=primal_scan_body,
        )
        res_consts = [r for r in dict.fromkeys(residuals) if param_index.get(r.name, nc) < nc]
        res_consts += hoisted
        res_xs_params = [
            r for r in dict.fromkeys(residuals) if param_index.get(r.name, -1) >= nc + nk
        ]
        res_stacks = results[nk + ny :]
        outer_res_consts = [
            consts[param_index[r.name]] for r in res_consts[: -len(hoisted) or None]
        ]
        outer_res_consts += hoisted_values
        outer_res_xs = [xs[param_index[r.name] - nc - nk] for r in res_xs_params]
    else:
        # recompute: the primal scan stacks the carry entering each step; the linear scan
        # recomputes the body's residuals from (consts, carry_t, x_t)
        primal_scan_body = body.replace(outs=body.outs + body.params[nc : nc + nk], checked=True)
        results = ops.bind(
            "scan",
            *primals,
            **common,
            num_consts=nc,
            num_carry=nk,
            policy="recompute",
            body=primal_scan_body,
        )
        res_stacks = results[nk + ny :]
        outer_res_consts, outer_res_xs = list(consts), list(xs)

    # the linear scan: consts (residual consts, const tangents), carry tangents, then
    # xs (x tangents, residual xs, stacked residuals)
    b = Builder()
    r_consts = [b.add_param(t.type) for t in outer_res_consts]
    t_consts = [b.add_param(body.params[i].type) for i in range(nc) if nonzero[i]]
    t_carry = [b.add_param(body.params[nc + j].type) for j in range(nk) if carry_nz[j]]
    t_xs = [b.add_param(body.params[i].type) for i in range(nc + nk, n_in) if nonzero[i]]
    r_xs = [b.add_param(t.type.with_shape(t.type.shape[1:])) for t in outer_res_xs]
    r_stacked = [b.add_param(t.type.with_shape(t.type.shape[1:])) for t in res_stacks]
    tangent_of = {}
    it_c, it_k, it_x = iter(t_consts), iter(t_carry), iter(t_xs)
    for i in wrt:
        tangent_of[i] = next(it_c) if i < nc else next(it_k) if i < nc + nk else next(it_x)
    if policy == "save":
        value = dict(zip((r.name for r in res_consts), r_consts))
        value.update(zip((r.name for r in res_xs_params), r_xs))
        value.update(zip((r.name for r in stacked), r_stacked))
        residual_args = [value[r.name] for r in residuals]
    else:
        recomputed = inline(b, primal_body, [*r_consts, *r_stacked, *r_xs])
        residual_args = recomputed[nk + ny :]
    t_outs = inline(b, linear_body, [tangent_of[i] for i in wrt] + residual_args)
    kept_outs = [t for t, nz in zip(t_outs[:nk], carry_nz) if nz]
    kept_outs += [t for t, nz in zip(t_outs[nk:], ys_nz) if nz]
    lin_body = _program(f"d{body.name}", b, kept_outs)

    lin_builder = _builder_of(tangents)
    init = [
        _real(tangents[nc + j], lin_builder, body.params[nc + j].type)
        for j in range(nk)
        if carry_nz[j]
    ]
    t_const_in = [tangents[i] for i in range(nc) if nonzero[i]]
    t_xs_in = [tangents[i] for i in range(nc + nk, n_in) if nonzero[i]]
    operands = [*outer_res_consts, *t_const_in, *init, *t_xs_in, *outer_res_xs, *res_stacks]
    lin_results = (
        list(
            ops.bind_at(
                lin_builder,
                "scan",
                *operands,
                **common,
                num_consts=len(r_consts) + len(t_consts),
                num_carry=len(init),
                policy="save",
                body=lin_body,
            )
        )
        if kept_outs
        else []
    )
    out_tangents = []
    it = iter(lin_results)
    for j in range(nk):
        out_tangents.append(next(it) if carry_nz[j] else Zero(body.outs[j].type))
    for k in range(ny):
        t = body.outs[nk + k].type
        out_tangents.append(next(it) if ys_nz[k] else Zero(t.with_shape((length, *t.shape))))
    return tuple(results[: nk + ny]), tuple(out_tangents)


def _scan_transpose(cts, *args, length, direction, num_consts, num_carry, policy, body):
    nc, nk = num_consts, num_carry
    n_in = len(body.params)
    # The carries of a linear scan are linear; an initial carry that is not a tangent is a
    # zero made by the linearizer (a carry whose tangent starts at zero), so it is treated as
    # a linear input whose cotangent is dropped.
    linear = [is_linear(a) or nc <= i < nc + nk for i, a in enumerate(args)]
    ny = len(body.outs) - nk
    lin_consts = [i for i in range(nc) if linear[i]]
    nonlin_consts = [i for i in range(nc) if not linear[i]]
    lin_xs = [i for i in range(nc + nk, n_in) if linear[i]]
    nonlin_xs = [i for i in range(nc + nk, n_in) if not linear[i]]
    order = lin_consts + list(range(nc, nc + nk)) + lin_xs + nonlin_consts + nonlin_xs
    n_lin = len(lin_consts) + nk + len(lin_xs)
    transposed = transform("transpose")(_permuted(body, order), n_lin)
    # transposed: (ct carry_out..., ct y..., nonlin consts..., nonlin x slices...)
    #          -> (ct lin consts..., ct carry_in..., ct lin x slices...)
    builder = _builder_of([c for c in cts if not isinstance(c, Zero)] + list(args))
    ct_carry = [_real(c, builder, body.outs[j].type) for j, c in enumerate(cts[:nk])]
    ys_given = [not isinstance(c, Zero) for c in cts[nk:]]

    b = Builder()
    p_consts = [b.add_param(body.params[i].type) for i in nonlin_consts]
    acc = [b.add_param(body.params[i].type) for i in lin_consts]
    p_carry = [b.add_param(body.outs[j].type) for j in range(nk)]
    p_ys = [b.add_param(body.outs[nk + k].type) for k in range(ny) if ys_given[k]]
    p_xs = [b.add_param(body.params[i].type) for i in nonlin_xs]
    it = iter(p_ys)
    y_cts = [next(it) if ys_given[k] else zeros(b, body.outs[nk + k].type) for k in range(ny)]
    outs = inline(b, transposed, [*p_carry, *y_cts, *p_consts, *p_xs])
    ct_lin_consts = outs[: len(lin_consts)]
    ct_carry_in = outs[len(lin_consts) : len(lin_consts) + nk]
    ct_lin_xs = outs[len(lin_consts) + nk :]
    acc_next = [ops.add(a, c) for a, c in zip(acc, ct_lin_consts)]
    t_body = _program(f"{body.name}t", b, [*acc_next, *ct_carry_in, *ct_lin_xs])

    acc_init = [zeros(builder, body.params[i].type) for i in lin_consts]
    operands = [
        *(args[i] for i in nonlin_consts),
        *acc_init,
        *ct_carry,
        *(c for c, given in zip(cts[nk:], ys_given) if given),
        *(args[i] for i in nonlin_xs),
    ]
    results = ops.bind_at(
        builder,
        "scan",
        *operands,
        length=length,
        direction="forward" if direction == "reverse" else "reverse",
        num_consts=len(nonlin_consts),
        num_carry=len(acc_init) + nk,
        policy=policy,
        body=t_body,
    )
    ct_of: list = [None] * n_in
    for i, c in zip(lin_consts, results[: len(lin_consts)]):
        ct_of[i] = c
    for j in range(nk):
        ct_of[nc + j] = results[len(lin_consts) + j] if is_linear(args[nc + j]) else None
    for i, c in zip(lin_xs, results[len(lin_consts) + nk :]):
        ct_of[i] = c
    return ct_of


def _scan_prune(eqn, used, dce):
    """Drop unused stacked outputs, carries nothing live reads, and operands the body ignores."""
    p = scan_p.kwargs(eqn.params)
    body, nc, nk = p["body"], p["num_consts"], p["num_carry"]
    ny = len(body.outs) - nk
    keep_carry = list(used[:nk])
    keep_y = list(used[nk:])
    while True:  # a carry is needed if its result is used or a needed output reads it
        live_outs = [body.outs[j] for j in range(nk) if keep_carry[j]]
        live_outs += [body.outs[nk + k] for k in range(ny) if keep_y[k]]
        trimmed = dce(body.replace(outs=tuple(live_outs), checked=True))
        read = _reads(trimmed)
        grown = False
        for j in range(nk):
            if not keep_carry[j] and body.params[nc + j].name in read:
                keep_carry[j] = grown = True
        if not grown:
            break
    keep_in = [
        keep_carry[i - nc] if nc <= i < nc + nk else q.name in read
        for i, q in enumerate(body.params)
    ]
    if all(keep_in) and all(keep_carry) and all(keep_y) and trimmed == body:
        return eqn
    new_body = trimmed.replace(
        params=tuple(q for q, k in zip(body.params, keep_in) if k), checked=True
    )
    ins = tuple(v for v, k in zip(eqn.ins, keep_in) if k)
    outs = [v for v, k in zip(eqn.outs, keep_carry + keep_y) if k]
    params = dict(p, body=new_body, num_consts=sum(keep_in[:nc]), num_carry=sum(keep_carry))
    values = tuple(params[q.name] for q in scan_p.params)
    return type(eqn)(outs[0], eqn.prim, values, ins, tuple(outs[1:]))


scan_p.linearize = _scan_linearize
scan_p.transpose = _scan_transpose
scan_p.extra["prune"] = _scan_prune


# ---------------------------------------------------------------------------------------------
# cond


def _branch_index(index: np.ndarray, n: int) -> int:
    if index.dtype == np.bool_:
        return int(bool(index))
    value = float(index)
    if math.isnan(value):
        return 0
    return int(min(max(math.floor(value), 0), n - 1))


def _cond_shape(index, *in_types, branches):
    if index.shape != ():
        raise ShaxTypeError(f"the index of a cond must be a scalar, got {index}")
    if index.dtype == "bool" and len(branches) != 2:
        raise ShaxTypeError(f"a bool index picks one of 2 branches, not {len(branches)}")
    first = branches[0].out_types
    for k, br in enumerate(branches):
        if br.in_types != tuple(in_types):
            raise ShaxTypeError(
                f"branch {k} ({br.name}) takes {_types_text(br.in_types)}, but the cond passes "
                f"{_types_text(in_types)}"
            )
        if br.out_types != first:
            raise ShaxTypeError(
                f"branch {k} ({br.name}) returns {_types_text(br.out_types)}, but branch 0 "
                f"returns {_types_text(first)}: every branch must return the same types"
            )
    if not first:
        raise ShaxTypeError("a cond's branches must return at least one value")
    return first


def _cond_kernel(in_types, out_types, *, branches):
    plans = [_compiled(br) for br in branches]
    n = len(plans)

    def run(index, *args):
        return tuple(plans[_branch_index(np.asarray(index), n)].run(list(args)))

    run.transient_bytes = max(p.peak_bytes for p in plans)
    run.work = 1 + max(p.work for p in plans)
    return run


def _cond_impl(index, *arrays, branches):
    return tuple(_compiled(branches[_branch_index(np.asarray(index), len(branches))])(*arrays))


cond_p = define(
    "cond",
    arity=None,
    params=[("branches", "programs")],
    shape=_cond_shape,
    impl=_cond_impl,
    multiple_results=True,
    doc="cond {branches} index operands...",
)
cond_p.kernel = _cond_kernel
cond_p.extra["long"] = True


def _cond_linearize(primals, tangents, *, branches):
    index, operands = primals[0], primals[1:]
    ts = tangents[1:]
    wrt = [i for i, (t, p) in enumerate(zip(ts, branches[0].params)) if not isinstance(t, Zero)]
    wrt = [i for i in wrt if branches[0].params[i].type.is_float]
    pairs = [_linearize(br, wrt) for br in branches]
    n_out = len(branches[0].outs)
    out_nz = [False] * n_out
    for _, lin in pairs:
        t_names = {p.name for p in lin.params[: len(wrt)]}
        out_nz = [a or b for a, b in zip(out_nz, _depends(lin, t_names))]
    out_nz = [nz and t.is_float for nz, t in zip(out_nz, branches[0].out_types)]
    # residuals side by side: branch k returns its own and zeros in the others' places
    res_types = [[r.type for r in prim.outs[n_out:]] for prim, _ in pairs]
    primal_branches = []
    for k, (prim, _) in enumerate(pairs):
        b = Builder()
        args = [b.add_param(p.type) for p in prim.params]
        outs = inline(b, prim, args)
        slots = []
        for m, types in enumerate(res_types):
            slots += outs[n_out:] if m == k else [zeros(b, t) for t in types]
        primal_branches.append(_program(prim.name, b, outs[:n_out] + slots))
    results = ops.bind("cond", index, *operands, branches=tuple(primal_branches))
    all_res = results[n_out:]
    linear_branches = []
    for k, (_, lin) in enumerate(pairs):
        b = Builder()
        t_args = [b.add_param(branches[0].params[i].type) for i in wrt]
        res_args = [b.add_param(t) for types in res_types for t in types]
        start = sum(len(t) for t in res_types[:k])
        mine = res_args[start : start + len(res_types[k])]
        outs = inline(b, lin, t_args + mine)
        linear_branches.append(_program(lin.name, b, [t for t, nz in zip(outs, out_nz) if nz]))
    lin_builder = _builder_of(tangents)
    lin_results = iter(
        ops.bind_at(
            lin_builder,
            "cond",
            index,
            *(ts[i] for i in wrt),
            *all_res,
            branches=tuple(linear_branches),
        )
        if any(out_nz)
        else ()
    )
    out_tangents = tuple(
        next(lin_results) if nz else Zero(t) for nz, t in zip(out_nz, branches[0].out_types)
    )
    return tuple(results[:n_out]), out_tangents


def _cond_transpose(cts, index, *args, branches):
    if is_linear(index):
        raise RuleError("the index of a cond has no tangent")
    lin = [i for i, a in enumerate(args) if is_linear(a)]
    nonlin = [i for i, a in enumerate(args) if not is_linear(a)]
    builder = _builder_of([c for c in cts if not isinstance(c, Zero)] + list(args))
    given = [not isinstance(c, Zero) for c in cts]
    out_types = branches[0].out_types
    t_branches = []
    for br in branches:
        transposed = transform("transpose")(_permuted(br, lin + nonlin), len(lin))
        b = Builder()
        ct_params = [b.add_param(t) for t, g in zip(out_types, given) if g]
        it = iter(ct_params)
        ct_args = [next(it) if g else zeros(b, t) for t, g in zip(out_types, given)]
        values = [b.add_param(br.params[i].type) for i in nonlin]
        outs = inline(b, transposed, ct_args + values)
        t_branches.append(_program(f"{br.name}t", b, outs))
    results = ops.bind_at(
        builder,
        "cond",
        index,
        *(c for c in cts if not isinstance(c, Zero)),
        *(args[i] for i in nonlin),
        branches=tuple(t_branches),
    )
    ct_of: list = [None] * (1 + len(args))
    for i, c in zip(lin, results):
        ct_of[1 + i] = c
    return ct_of


def _cond_prune(eqn, used, dce):
    branches = eqn.params[0]
    if all(used):
        new = tuple(dce(br) for br in branches)
        if new == branches:
            return eqn
        return type(eqn)(eqn.out, eqn.prim, (new,), eqn.ins, eqn.extra_outs)
    trimmed = [
        dce(br.replace(outs=tuple(v for v, u in zip(br.outs, used) if u), checked=True))
        for br in branches
    ]
    outs = [v for v, u in zip(eqn.outs, used) if u]
    return type(eqn)(outs[0], eqn.prim, (tuple(trimmed),), eqn.ins, tuple(outs[1:]))


cond_p.linearize = _cond_linearize
cond_p.transpose = _cond_transpose
cond_p.extra["prune"] = _cond_prune


# ---------------------------------------------------------------------------------------------
# while_loop


def _while_shape(*in_types, num_consts, max_trips, cond, body):
    if max_trips < 0:
        raise ShaxTypeError(f"while_loop max_trips {max_trips} is negative")
    if not 0 <= num_consts <= len(in_types):
        raise ShaxTypeError(f"while_loop of {len(in_types)} operands has {num_consts} consts")
    carry = in_types[num_consts:]
    if not carry:
        raise ShaxTypeError("a while_loop needs a carry")
    if cond.in_types != tuple(in_types) or cond.out_types != (Type("bool", ()),):
        raise ShaxTypeError(
            f"the condition {cond.name} maps {_types_text(cond.in_types)} to "
            f"{_types_text(cond.out_types)}; it must map (consts, carry) = "
            f"{_types_text(in_types)} to (bool[])"
        )
    if body.in_types != tuple(in_types):
        raise ShaxTypeError(
            f"the body {body.name} takes {_types_text(body.in_types)}, but the while_loop "
            f"passes (consts, carry) = {_types_text(in_types)}"
        )
    if body.out_types != tuple(carry):
        raise ShaxTypeError(
            f"the body {body.name} returns {_types_text(body.out_types)}, but the carry is "
            f"{_types_text(carry)}"
        )
    return tuple(carry)


def _while_kernel(in_types, out_types, *, num_consts, max_trips, cond, body):
    cond_plan, body_plan = _compiled(cond), _compiled(body)
    nc = num_consts

    def run(*args):
        consts, carry = list(args[:nc]), [np.array(a, copy=True) for a in args[nc:]]
        trips = 0
        while cond_plan.run([*consts, *carry])[0]:
            if trips >= max_trips:
                raise LoopLimitError(
                    f"while_loop ran more than its max_trips={max_trips} iterations"
                )
            carry = body_plan.run([*consts, *carry])
            trips += 1
        return tuple(carry)

    run.transient_bytes = max(cond_plan.peak_bytes, body_plan.peak_bytes)
    run.work = 1 + max_trips * (cond_plan.work + body_plan.work)
    return run


def _while_impl(*arrays, **params):
    types = tuple(type_of(a) for a in arrays)
    return _while_kernel(types, _while_shape(*types, **params), **params)(*arrays)


while_p = define(
    "while_loop",
    arity=None,
    params=[
        ("num_consts", "int"),
        ("max_trips", "int"),
        ("cond", "program"),
        ("body", "program"),
    ],
    shape=_while_shape,
    impl=_while_impl,
    multiple_results=True,
    doc="while_loop num_consts max_trips {cond} {body} consts... carry...",
)
while_p.kernel = _while_kernel
while_p.extra["long"] = True
while_p.extra["trips"] = lambda params: params["max_trips"]  # at most


def _while_linearize(primals, tangents, *, num_consts, max_trips, cond, body):
    """Forward mode: a while loop over ``(c, ċ)``, recorded whole on the tangent side (its
    steps cannot be unzipped: the trip count is not known ahead)."""
    nc = num_consts
    n_in = len(body.params)
    primal_out = ops.bind(
        "while_loop", *primals, num_consts=nc, max_trips=max_trips, cond=cond, body=body
    )
    t_consts = [i for i in range(nc) if not isinstance(tangents[i], Zero)]
    t_consts = [i for i in t_consts if body.params[i].type.is_float]
    t_carry = [j for j in range(nc, n_in) if body.params[j].type.is_float]
    wrt = t_consts + t_carry
    prim, lin = _linearize(body, wrt)
    # joint loop: consts (consts, const tangents), carry (carry, carry tangents)
    b = Builder()
    consts = [b.add_param(p.type) for p in body.params[:nc]]
    tc = [b.add_param(body.params[i].type) for i in t_consts]
    carry = [b.add_param(p.type) for p in body.params[nc:]]
    tk = [b.add_param(body.params[j].type) for j in t_carry]
    outs = inline(b, prim, consts + carry)
    n_carry = n_in - nc
    t_outs = inline(b, lin, tc + tk + outs[n_carry:])
    t_out_kept = [t_outs[j - nc] for j in t_carry]
    joint_body = _program(f"{body.name}_jvp", b, outs[:n_carry] + t_out_kept)
    b = Builder()
    args = [b.add_param(t.type) for t in joint_body.params]
    c_args = args[:nc] + args[nc + len(tc) : nc + len(tc) + n_carry]
    joint_cond = _program(f"{cond.name}_jvp", b, inline(b, cond, c_args))
    lin_builder = _builder_of(tangents)
    t_init = [_real(tangents[j], lin_builder, body.params[j].type) for j in t_carry]
    results = ops.bind_at(
        lin_builder,
        "while_loop",
        *primals[:nc],
        *(tangents[i] for i in t_consts),
        *primals[nc:],
        *t_init,
        num_consts=nc + len(tc),
        max_trips=max_trips,
        cond=joint_cond,
        body=joint_body,
    )
    tangent_results = iter(results[n_carry:])
    out_tangents = tuple(
        next(tangent_results) if body.params[j].type.is_float else Zero(body.params[j].type)
        for j in range(nc, n_in)
    )
    return tuple(primal_out), out_tangents


def _while_transpose(cts, *args, **params):
    raise RuleError(
        "reverse-mode differentiation does not work for while_loop: its trip count is not "
        "known ahead, so its steps cannot be replayed backwards. Use fori_loop with static "
        "(Python int) bounds, or scan, which grad can differentiate; jvp works on while_loop"
    )


while_p.linearize = _while_linearize
while_p.transpose = _while_transpose
