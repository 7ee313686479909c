"""Transpose a linear program: walk it backwards, turning tangents into cotangents.

The linear program takes ``(tangents..., residuals...)``. Its transpose takes
``(output cotangents..., residuals...)`` and returns the cotangent of each tangent input.
Equations that read no tangent (residual-only work, constants) run forward, each emitted just
before the first backward step that reads it; the others run backwards through their
primitive's transpose rule, cotangents of a value used several times are summed, and a
cotangent that never arrives is a zero of the right type.

A transpose rule is a pure function of its primitive's parameters, which operands are
tangents and the operands' types: in a long program the equations one such key emits are
recorded once and replayed for its later equations, with their own operands (a chain of
10,000 steps has a handful of keys). The result is the program the rules would build.

>>> from shax_core.text import parse
>>> df = parse(
...     "def df(arg0 :: f32[], arg1 :: f32[], arg2 :: f32[]) ="
...     "  let d0 = add arg0 arg1  d1 = mul d0 arg2 in [d1]"
... )
>>> print(transpose_program(df, 2))
def dft(arg0 :: f32[],
        arg1 :: f32[]) =
  let t0 :: f32[] = mul arg0 arg1
  in [t0, t0]
"""

from __future__ import annotations

from operator import itemgetter

from shax_core._infer import infer
from shax_core._linearize import Linearized
from shax_core.core import Builder, Tracer, add, bind_at, zeros
from shax_core.ir import (
    Program,
    ShaxError,
    has_subprograms,
    lean_of,
    plain_params,
)
from shax_core.passes._dce import dce
from shax_core.passes.inline import emit_on_first_use
from shax_core.registry import SUBPROGRAM_KINDS, TRANSFORMS, Linear, RuleError, Zero, lookup
from shax_core.text import short_eqn as format_eqn


class TransposeError(ShaxError):
    """The program is not linear in its tangent inputs; the message names the equation."""


# Rule applications are recorded and replayed (``_recorded``) in programs of at least this
# many tangent equations (in smaller ones recording costs more than replaying saves); None
# runs every rule itself (the tests compare the two).
REPLAY_FROM: int | None = 64
_ONCE = ("applied once",)  # the tape of a key applied once: its second application is recorded


def transpose_program(linear: Program | Linearized, num_linear: int | None = None) -> Program:
    """The transpose of a linear program whose first ``num_linear`` inputs are tangents (a
    ``Linearized`` from ``linearize_program`` says how many itself)."""
    if isinstance(linear, Linearized):
        num_linear, linear = linear.n_tangents, linear.linear
    if num_linear is None:
        raise ShaxError(
            f"transpose_program({linear.name}) needs num_linear: how many leading inputs are "
            "tangents (the rest are residuals)"
        )
    return transpose_typed(infer(linear), num_linear)  # annotations are checked, not trusted


def transpose_typed(linear: Program, num_linear: int) -> Program:
    """``transpose_program`` on a program whose types were inferred by shax itself."""
    return _transpose(linear, num_linear, dead_code_removed=False)


def _transpose(linear: Program, num_linear: int, dead_code_removed: bool) -> Program:
    """The transpose of ``dce(linear)``. Dead equations need not be removed first: no
    cotangent reaches them and no live equation reads them, so none is emitted. Only a
    sub-program (DCE prunes it) or an equation without a transpose rule (an error only if it
    is live) makes the walk start again on ``dce(linear)``.

    Values and cotangents are ids in the builder ``b``; a rule runs on tracers of them. Its
    application is recorded (``_recorded``) at the second equation of its key and replayed
    for the equations after: the same columns appended to ``b``, operands substituted."""
    lean = lean_of(linear)
    types, names = lean.types, lean.names
    eqn_prim, eqn_params, eqn_ins, eqn_out = (
        lean.eqn_prim, lean.eqn_params, lean.eqn_ins, lean.eqn_out
    )  # fmt: skip
    extra = lean.eqn_extra
    b = Builder(prefix="t")  # distinct from the primal's names, so zipping reuses both
    # b's columns, appended to directly where b.emit would be called on ids (b._count too)
    bt, bn, b_prim, b_params, b_ins, b_out = (
        b.types, b.names, b.eqn_prim, b.eqn_params, b.eqn_ins, b.eqn_out
    )  # fmt: skip
    # the parameters of b: one cotangent per output, then the residuals (ids 0, 1, ...)
    residuals = lean.params[num_linear:]
    n_cts = len(lean.outs)
    bt.extend([types[v] for v in (*lean.outs, *residuals)])  # = b.add_param(types[v]) each
    bn.extend([f"arg{k}" for k in range(len(bt))])
    b.param_ids.extend(range(len(bt)))
    n = len(types)
    value: list = [None] * n  # by id: the non-linear values, as ids in b
    is_linear = bytearray(n)  # by id: 1 for a tangent
    for p in lean.params[:num_linear]:
        is_linear[p] = 1
    for k, p in enumerate(residuals, n_cts):
        value[p] = k

    backward = []  # the tangent equations, by index
    prims: dict = {}  # by name: the primitives of the tangent equations
    replayable: dict = {}  # by name: whether its rule applications are recorded
    multiple_results: set = set()  # the names of those with multiple results
    forward: dict[int, int] = {}  # id -> its residual-only equation, emitted when first needed
    if (
        not dead_code_removed
        and any(eqn_params)  # (most equations have no parameters)
        and any(p and has_subprograms(p) for p in eqn_params)
    ):
        return _transpose(dce(linear), num_linear, dead_code_removed=True)
    for i, ins in enumerate(eqn_ins):
        for v in ins:
            if is_linear[v]:
                break
        else:  # reads no tangent
            if extra and i in extra:
                for v in lean.eqn_outs(i):
                    forward[v] = i
            else:
                forward[eqn_out[i]] = i
            continue
        name = eqn_prim[i]
        if name not in prims:  # (checked once per primitive)
            prim = prims[name] = lookup(name)
            replayable[name] = not prim.multiple_results and not any(
                p.kind in SUBPROGRAM_KINDS for p in prim.params
            )
            if prim.multiple_results:
                multiple_results.add(name)
            if prim.transpose is None:
                if not dead_code_removed:
                    return _transpose(dce(linear), num_linear, dead_code_removed=True)
                raise TransposeError(
                    f"`{format_eqn(lean.eqn(i))}` is not linear in its tangent input(s): "
                    f"{name} has no transpose rule"
                )
        if extra and i in extra:
            for v in lean.eqn_outs(i):
                is_linear[v] = 1
        else:
            is_linear[eqn_out[i]] = 1
        backward.append(i)

    def tracer(x):
        """A value or cotangent as a rule takes it: a tracer of its id in b."""
        return Tracer(b, x, bt[x]) if x.__class__ is int else x

    def id_in_b(x):
        """A rule's result as it is kept: its id if it is a tracer of b."""
        return x.id if x.__class__ is Tracer and x.builder is b else x

    def forward_eqn(i: int, xs: list):
        name, params = eqn_prim[i], eqn_params[i]
        if (extra and i in extra) or any(x.__class__ is not int for x in xs):
            result = bind_at(b, name, *map(tracer, xs), **lookup(name).kwargs(params))
            if isinstance(result, tuple):
                return tuple(map(id_in_b, result))
            return id_in_b(result)
        # the equation as it is, on values in b: its type is known (the program is typed)
        return b.emit_id(name, params, xs, types[eqn_out[i]])

    def residual(v: int):
        """The value of the non-linear variable ``v``, emitting its forward equations on
        first use (so recomputed residuals are computed right before the backward step that
        reads them, and are not all live at once)."""
        return emit_on_first_use(v, value, lean, forward, forward_eqn)

    ct: list = [None] * n  # by id: the cotangent summed so far (an id in b)
    linear_of: dict = {}  # one Linear marker per type (they are immutable)

    def accumulate(v: int, c):
        prev = ct[v]
        if prev is None:
            ct[v] = c
        elif prev.__class__ is int and c.__class__ is int and bt[prev] == bt[c]:
            # = add(prev, c): two cotangents of one type, nothing to promote or broadcast
            k = b._count
            ct[v] = len(bt)
            bt.append(bt[c])
            bn.append(f"t{k}")
            b._count = k + 1
            b_prim.append("add")
            b_params.append(())
            b_ins.append((prev, c))
            b_out.append(ct[v])
        else:
            ct[v] = id_in_b(add(tracer(prev), tracer(c)))

    for v, c in zip(lean.outs, range(n_cts), strict=True):
        if is_linear[v]:
            accumulate(v, c)

    tapes: dict = {}  # (primitive, params, per operand: tangent?, type) -> its tape
    replay = REPLAY_FROM is not None and len(backward) >= REPLAY_FROM
    for i in reversed(backward):
        name = eqn_prim[i]
        ins, params = eqn_ins[i], eqn_params[i]
        key = tape = None
        if name in multiple_results:  # one cotangent per result, Zero where none arrived
            outs = lean.eqn_outs(i)
            cs = [ct[v] for v in outs]
            for v in outs:
                ct[v] = None
            if all(c is None for c in cs):
                continue
            c = tuple(Zero(types[v]) if c is None else tracer(c) for v, c in zip(outs, cs))
        else:
            out = eqn_out[i]
            c = ct[out]
            if c is None:
                continue
            ct[out] = None
            if replay:  # the rule's recorded equations, if its key has a tape
                # per operand: None for a tangent, else its value (emitting its forward
                # equations); the key: whether each operand is a tangent, and its type
                if len(ins) == 2:
                    u, w = ins
                    lu, lw = is_linear[u], is_linear[w]
                    if lu:
                        xu = None
                    elif (xu := value[u]) is None:
                        xu = residual(u)
                    if lw:
                        xw = None
                    elif (xw := value[w]) is None:
                        xw = residual(w)
                    xs = [xu, xw]
                    key = (name, params, lu, types[u], lw, types[w])
                elif len(ins) == 1:  # a tangent
                    xs = [None]
                    key = (name, params, 1, types[ins[0]])
                else:
                    xs = []
                    for v in ins:
                        if is_linear[v]:
                            xs.append(None)
                        else:
                            x = value[v]
                            xs.append(x if x is not None else residual(v))
                    key = [name, params]
                    for v, x in zip(ins, xs):
                        key.append(1 if x is None else 0)
                        key.append(types[v])
                    key = tuple(key)
                if params and not plain_params(params):  # (0.0 == -0.0 and 1 == True: no key)
                    key = None
                else:
                    tape = tapes.get(key)
                if (
                    tape is not None
                    and tape is not _ONCE
                    and c.__class__ is int
                    and (tape[3] == 0 or (c not in xs if tape[3] == 1 else _distinct(c, xs)))
                ):
                    # the rule's equations again: slot 0 the cotangent, then the operands'
                    # values, the cached constants the rule read, and each variable emitted
                    ops, fixed, results, _ = tape
                    slots = [c, *xs, *fixed] if fixed else [c, *xs]
                    k = b._count
                    for prim_name, prim_params, operands, out_type in ops:
                        u = len(bt)
                        bt.append(out_type)
                        bn.append(f"t{k}")
                        k += 1
                        b_prim.append(prim_name)
                        b_params.append(prim_params)
                        if operands.__class__ is itemgetter:
                            b_ins.append(operands(slots))
                        else:
                            b_ins.append((slots[operands],) if operands.__class__ is int else ())
                        b_out.append(u)
                        slots.append(u)
                    b._count = k
                    for j, r in results:
                        v = ins[j]
                        c_v, prev = slots[r], ct[v]
                        if prev is None:
                            ct[v] = c_v
                        elif prev.__class__ is int and bt[prev] == bt[c_v]:
                            # = accumulate(v, c_v), inlined
                            ct[v] = u = len(bt)
                            bt.append(bt[c_v])
                            bn.append(f"t{k}")
                            k += 1
                            b_prim.append("add")
                            b_params.append(())
                            b_ins.append((prev, c_v))
                            b_out.append(u)
                            b._count = k
                        else:
                            accumulate(v, c_v)
                    continue
        args = []
        for v in ins:  # a Linear marker for each tangent operand, else its value
            if is_linear[v]:
                t = types[v]
                args.append(linear_of[t] if t in linear_of else _linear(linear_of, t))
            else:
                x = value[v]
                if x is None:
                    x = residual(v)
                args.append(Tracer(b, x, bt[x]))
        prim = prims[name]
        if tape is _ONCE:  # the second application of its key: recorded
            before = (len(bt), len(b_prim), b._count, b.checked, len(b.eqn_extra), len(b.param_ids))
        try:
            if params:
                in_cts = prim.transpose(tracer(c), *args, **prim.kwargs(params))
            else:
                in_cts = prim.transpose(tracer(c), *args)
        except RuleError as e:
            raise TransposeError(f"`{format_eqn(lean.eqn(i))}`: {e}") from None
        except ShaxError as e:
            raise TransposeError(f"`{format_eqn(lean.eqn(i))}`: {e}") from None
        if len(in_cts) != len(ins):
            raise TransposeError(
                f"`{format_eqn(lean.eqn(i))}`: the transpose rule of {name} gave "
                f"{len(in_cts)} cotangents for {len(ins)} inputs"
            )
        if tape is _ONCE:  # (a tape of an application that fails below is never used)
            if (tape := _recorded(b, before, c, xs, in_cts)) is not None:
                tapes[key] = tape
        elif tape is None and key is not None and replayable[name]:
            tapes[key] = _ONCE  # a first application: recording pays from the second
        for v, c_v in zip(ins, in_cts):
            if not is_linear[v] or c_v is None or c_v.__class__ is Zero:
                continue
            t = c_v.type
            if t is not types[v] and t != types[v]:
                raise TransposeError(
                    f"`{format_eqn(lean.eqn(i))}`: the transpose rule of {name} gave a "
                    f"cotangent of type {t} for {names[v]} :: {types[v]}"
                )
            if c_v.__class__ is Tracer and c_v.builder is b:
                c_v = c_v.id
            if ct[v] is not None:
                accumulate(v, c_v)
            else:  # = accumulate(v, c_v): the first cotangent of v
                ct[v] = c_v

    outs = []
    for p in lean.params[:num_linear]:
        c = ct[p]
        if c is None:
            c = zeros(b, types[p])
        outs.append(c if c.__class__ is int else c.id)
    return b.program(lean.name + "t", outs, checked=False, final=True)


def _linear(linear_of: dict, t) -> Linear:
    linear_of[t] = Linear(t)
    return linear_of[t]


def _distinct(c: int, xs: list) -> bool:
    """Whether the cotangent ``c`` and the operand values in ``xs`` (None for a tangent) are
    distinct variables, as a tape's slots are."""
    values = [x for x in xs if x is not None]
    return len({c, *values}) == len(values) + 1


def _recorded(b: Builder, before: tuple, c, xs: list, in_cts) -> tuple | None:
    """The tape of the rule application that just emitted into ``b`` (whose sizes were
    ``before``), or None if it cannot be replayed on other operands.

    A tape is ``(ops, fixed, results, n_values)``: replay keeps a list of slots, first the
    cotangent ``c``, then one per operand (its value, None for a tangent), then ``fixed`` (the
    constants of b's cache the rule read), and appends each emitted variable; an op is
    ``(primitive, params, operand slots, type)`` (the slots as an ``itemgetter``, one int, or
    ``()``) and ``results`` holds ``(operand index, slot of its cotangent)`` for each operand
    that gets one. Only plain equations may have been emitted (no new parameters,
    multi-result equations, unchecked types, or constants new to b's cache: the first
    application put them there), and every operand must be an input, a cached constant or
    emitted here."""
    n_vars, n_eqns, count, checked, n_extra, n_params = before
    eqn_out, eqn_ins, names = b.eqn_out, b.eqn_ins, b.names
    n_new = len(eqn_out) - n_eqns
    if (
        len(b.types) - n_vars != n_new
        or b._count - count != n_new
        or b.checked != checked
        or len(b.eqn_extra) != n_extra
        or len(b.param_ids) != n_params
        or c.__class__ is not int
    ):
        return None
    slot = {c: 0}  # variable id -> its slot
    for j, x in enumerate(xs, 1):
        if x is not None:
            if x.__class__ is not int or x in slot:  # (repeated inputs: ambiguous slots)
                return None
            slot[x] = j
    n_values = len(slot) - 1
    constants = {t.id for t in b._constants.values()} if b._constants else set()
    if not constants.isdisjoint(slot):
        return None
    made = range(n_eqns, n_eqns + n_new)
    for k in made:  # each equation binds the next variable, named as emit names it
        u = eqn_out[k]
        if u != n_vars + k - n_eqns or names[u] != f"{b.prefix}{count + k - n_eqns}":
            return None
        if u in constants:  # (put in b's cache: replayed, the rule would find it there)
            return None
    results = []  # (operand index, variable id of its cotangent)
    for j, (x, c_v) in enumerate(zip(xs, in_cts)):
        if x is None and c_v is not None and c_v.__class__ is not Zero:
            if c_v.__class__ is not Tracer or c_v.builder is not b:
                return None
            results.append((j, c_v.id))
    # the constants read from b's cache (the same variables each time), then the variables
    # emitted, numbered after them
    new = range(n_vars, n_vars + n_new)
    fixed: dict[int, int] = {}
    for u in [w for k in made for w in eqn_ins[k]] + [u for _, u in results]:
        if u not in slot and u not in new and u not in fixed:
            if u not in constants:
                return None
            fixed[u] = 1 + len(xs) + len(fixed)
    slot.update(fixed)
    ops = []
    for k in made:
        ins = tuple([slot[w] for w in eqn_ins[k]])
        operands = itemgetter(*ins) if len(ins) > 1 else ins[0] if ins else ()
        u = eqn_out[k]
        ops.append((b.eqn_prim[k], b.eqn_params[k], operands, b.types[u]))
        slot[u] = len(xs) + len(fixed) + len(ops)
    return tuple(ops), tuple(fixed), tuple([(j, slot[u]) for j, u in results]), n_values


TRANSFORMS["transpose"] = transpose_typed
