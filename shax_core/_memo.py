"""Memoized rule applications: a rule recorded once per key, its equations replayed after.

A linearize rule is a pure function of its operands' types and of the primitive's
parameters: run on tracers, it records the same equations for every operand of the same
types (with the same builders, zero tangents and repeated operands). ``RuleMemo`` runs the
rule for the first application of a key, records what it does to the builders (equations,
constants, residual lifts) on the second, and replays that tape for the applications after:
the same calls on the builders, in the same order, with operands substituted. The result is
the program the rule itself would have built, without running the rule and its shape rules
again (on a 10,000-step chain, the same few keys recur 10,000 times; a key seen once costs
no recording).

>>> from shax_core.core import Builder
>>> from shax_core.ir import Type
>>> import shax_core.numpy as snp
>>> b = Builder()
>>> memo = RuleMemo((b,))
>>> x, y = (b.add_param(Type("f32", ())) for _ in range(2))
>>> rule = lambda x: snp.sin(x) * 2.0
>>> for v in (x, y, x):  # the rule runs, runs again recording its tape, then is replayed
...     out = memo.apply(memo.key(("rule",), [v]), [v], rule, v)
>>> for e in b.eqns:
...     print(e.out, "=", " ".join([e.prim, *map(str, e.ins)]))
x0 = sin arg0
x1 = fromList
x2 = mul x0 x1
x3 = sin arg1
x4 = mul x3 x1
x5 = sin arg0
x6 = mul x5 x1
>>> out.variable.name
'x6'

A tape is kept only if every value it reads is an operand or one of its own results, and only
equations, constants and residual lifts happened on the memo's builders; anything else (a rule
with sub-programs, one that returns something other than tracers, zeros and None) runs the rule
every time.
"""

from __future__ import annotations

import numpy as np

from shax_core.core import Builder, Tracer
from shax_core.ir import exact_key
from shax_core.registry import Linear, Zero

_EMIT, _MULTI, _CONST, _LIFT, _EMIT_1, _EMIT_2, _RESIDUAL = range(7)
_ONCE = ("applied once",)  # a key seen once: its second application is recorded
_ABSENT = ("not applied",)


class _Recorder:
    """Wraps the builders' methods for one rule call and writes the tape."""

    def __init__(self, builders: tuple[Builder, ...], input_vars: list):
        self.builders = builders
        self.slot: dict[tuple[int, int], int] = {}  # (builder index, variable id) -> its slot
        self.vars: list = []  # one entry per slot
        for v in input_vars:
            if v is not None and v not in self.slot:
                self._bind(v)
            else:
                self.vars.append(v)
        self.n_inputs = len(input_vars)
        self.tape: list[tuple] = []
        self.depth = 0
        self.valid = True

    def _bind(self, v: tuple[int, int]) -> int:
        self.slot[v] = len(self.vars)
        self.vars.append(v)
        return len(self.vars) - 1

    def _slots(self, i: int, ins) -> tuple[int, ...]:
        """The slots of ``ins`` (ids in builder ``i``); a value from outside the tape makes
        it invalid."""
        slot = self.slot
        for v in ins:
            if (i, v) not in slot:
                self.valid = False
                return ()
        return tuple([slot[i, v] for v in ins])

    def install(self) -> None:
        for i, b in enumerate(self.builders):
            self._wrap(i, b)

    def remove(self) -> None:
        for b in self.builders:
            for name in ("emit", "emit_id", "emit_multi", "constant", "lift_foreign", "add_param"):
                b.__dict__.pop(name, None)

    def _wrap(self, i: int, b: Builder) -> None:
        emit, emit_multi = b.emit, b.emit_multi
        constant, lift_foreign, add_param = b.constant, b.lift_foreign, b.add_param

        def rec_emit(prim, params, ins, out_type):
            if self.depth:
                return emit(prim, params, ins, out_type)
            slots = self._slots(i, ins) if self.valid else ()
            t = emit(prim, params, ins, out_type)
            if self.valid:
                self.tape.append((_EMIT, i, prim, params, slots, out_type))
                self._bind((i, t.id))
            return t

        def rec_emit_multi(prim, params, ins, out_types):
            if self.depth:
                return emit_multi(prim, params, ins, out_types)
            slots = self._slots(i, ins) if self.valid else ()
            ts = emit_multi(prim, params, ins, out_types)
            if self.valid:
                self.tape.append((_MULTI, i, prim, params, slots, tuple(out_types)))
                for t in ts:
                    self._bind((i, t.id))
            return ts

        def rec_constant(value, dtype):
            if self.depth:
                return constant(value, dtype)
            self.depth += 1
            try:
                t = constant(value, dtype)
            finally:
                self.depth -= 1
            if self.valid:
                self.tape.append((_CONST, i, _frozen(value), dtype))
                self._bind((i, t.id))
            return t

        def rec_lift_foreign(x):
            if self.depth:
                return lift_foreign(x)
            level = self.builders.index(x.builder) if x.builder in self.builders else -1
            if level < 0:
                self.valid = False
            src = self._slots(level, (x.id,))[0] if self.valid else 0
            self.depth += 1
            try:
                v = lift_foreign(x)
            finally:
                self.depth -= 1
            if self.valid:
                self.tape.append((_LIFT, i, level, src))
                self._bind((i, v))
            return v

        def rec_add_param(*args, **kwargs):
            if not self.depth:
                self.valid = False
            return add_param(*args, **kwargs)

        b.emit, b.emit_multi, b.constant = rec_emit, rec_emit_multi, rec_constant
        b.emit_id = lambda prim, params, ins, out_type: rec_emit(prim, params, ins, out_type).id
        b.lift_foreign, b.add_param = rec_lift_foreign, rec_add_param


def _frozen(value):
    """A constant's value as it is replayed (a copy of an array: the rule's may change)."""
    return np.array(value, copy=True) if isinstance(value, np.ndarray) else value


class RuleMemo:
    """Tapes of rule applications by key, for one set of builders (one pipeline stage)."""

    def __init__(self, builders: tuple[Builder, ...]):
        self.builders = builders
        self.tapes: dict = {}
        # the builders of levels 0 and 1 (None where there is none: no tracer's builder is None)
        self.first_two = (*builders[:2], None, None)[:2]

    def key(self, head: tuple, inputs) -> tuple | None:
        """The memo key: ``head`` (primitive, parameters) and, per input, its builder and type
        (tracers), zero or linear marker and type, or None; and which inputs repeat a tracer.
        None when an input is anything else."""
        parts = []
        seen: dict[int, int] = {}
        first_builder, second_builder = self.first_two
        for j, x in enumerate(inputs):
            cls = x.__class__
            if cls is Tracer:
                b = x.builder
                if b is first_builder:
                    level = 0
                elif b is second_builder:
                    level = 1
                else:
                    return None
                parts.append((level, x.type, seen.setdefault((level, x.id), j)))
            elif cls is Zero or cls is Linear:
                parts.append((cls, x.type))
            elif x is None:
                parts.append(None)
            else:
                return None
        # the parameters exactly: 0.0 == -0.0 and True == 1 in Python, not in a rule's output
        return (head[0], *map(exact_key, head[1:]), *parts)

    def recorded(self, key: tuple | None):
        """The replayable tape of ``key``, or None (then ``apply`` runs or records the rule)."""
        if key is None:
            return None
        try:
            tape = self.tapes.get(key)
        except TypeError:  # an unhashable parameter
            return None
        return None if tape is _ONCE else tape

    def apply(self, key: tuple | None, inputs, rule, *args, **params):
        """``rule(*args, **params)`` (the rule applied to ``inputs``, which are ``args``
        flattened), or the tape of its first application with this key replayed on them."""
        return self.applied(key, inputs, rule, *args, **params)[0]

    def applied(self, key: tuple | None, inputs, rule, *args, **params):
        """``(apply(...), the replayable tape of key after it, or None)``."""
        if key is None:
            return rule(*args, **params), None
        tapes = self.tapes
        try:
            tape = tapes.get(key, _ABSENT)
        except TypeError:  # an unhashable parameter
            return rule(*args, **params), None
        if tape is _ABSENT:  # a first application: recording pays from the second
            tapes[key] = _ONCE
            return rule(*args, **params), None
        if tape is None:  # a rule its tape cannot replay
            return rule(*args, **params), None
        if tape is not _ONCE:
            return self.replay(tape, inputs), tape
        builders = self.builders
        input_vars = [
            (builders.index(x.builder), x.id) if x.__class__ is Tracer else None for x in inputs
        ]
        rec = _Recorder(self.builders, input_vars)
        rec.install()
        try:
            result = rule(*args, **params)
        finally:
            rec.remove()
        out = _flatten(result, rec) if rec.valid else None
        tape = (tuple(rec.tape), out, _compiled(rec.tape, builders)) if out is not None else None
        tapes[key] = tape
        return result, tape

    def replay(self, tape, inputs):
        """What the rule of ``tape``'s key returns on ``inputs``: the tape's calls on the
        builders made again, with operands substituted (``replay_slots``)."""
        slots = [x.id if x.__class__ is Tracer else None for x in inputs]
        return _unflatten(tape[1], self.replay_slots(tape, slots), self.builders)

    @staticmethod
    def replay_slots(tape, slots: list) -> list:
        """``tape`` replayed on the variable ids ``slots`` of its key's inputs (None for an
        input that is no tracer), which it extends with the id of each value the rule made,
        in the order it made them. An equation is ``Builder.emit`` inlined: its columns
        appended to its builder, binding a new variable ``prefix + count`` of its out type."""
        append = slots.append
        for op in tape[2]:
            kind = op[0]
            if kind is _EMIT_2:
                # (kind, builder, its types, names, prims, params, operands and outs columns,
                #  prim, params, first and second operand slot, out type)
                _, b, types, names, prims, params_col, ins_col, outs, prim, params, s, r, t = op
                v = len(types)
                types.append(t)
                n = b._count
                b._count = n + 1
                cache = b._name_cache
                names.append(cache[n] if n < len(cache) else b._generated_name(n))
                prims.append(prim)
                params_col.append(params)
                ins_col.append((slots[s], slots[r]))
                outs.append(v)
                append(v)
            elif kind is _EMIT_1:  # (the same, with one operand slot)
                _, b, types, names, prims, params_col, ins_col, outs, prim, params, s, t = op
                v = len(types)
                types.append(t)
                n = b._count
                b._count = n + 1
                cache = b._name_cache
                names.append(cache[n] if n < len(cache) else b._generated_name(n))
                prims.append(prim)
                params_col.append(params)
                ins_col.append((slots[s],))
                outs.append(v)
                append(v)
            elif kind is _RESIDUAL:
                # (kind, builder, its lifted, types, names, param ids, source types, slot)
                _, b, lifted, types, names, param_ids, source_types, s = op
                v = slots[s]
                param = lifted.get(v)
                if param is None:  # Builder.lift_variable of a builder with ``lifted``, inlined
                    param = lifted[v] = len(types)
                    types.append(source_types[v])
                    k = len(param_ids)
                    cache = b._param_names
                    names.append(cache[k] if k < len(cache) else b._param_name(k))
                    param_ids.append(param)
                append(param)
            elif kind is _LIFT:  # (kind, builder's lift_variable, source builder, slot)
                append(op[1](op[2], slots[op[3]]))
            elif kind is _CONST:  # (kind, builder, value, dtype)
                append(op[1].constant(op[2], op[3]).id)
            elif kind is _EMIT:  # (kind, builder, prim, params, operand slots, out type)
                _, b, prim, params, ins, out_type = op
                append(b.emit_id(prim, params, tuple([slots[s] for s in ins]), out_type))
            else:  # (kind, builder, prim, params, operand slots, out types)
                _, b, prim, params, ins, out_types = op
                for t in b.emit_multi(prim, params, [slots[s] for s in ins], out_types):
                    append(t.id)
        return slots


def _compiled(tape: list[tuple], builders: tuple[Builder, ...]) -> tuple[tuple, ...]:
    """The tape as ``replay_slots`` reads it: builders by object, and an equation of one or
    two operands (``_EMIT_1``, ``_EMIT_2``) with its builder's columns bound in."""
    ops: list[tuple] = []
    for op in tape:
        kind, i = op[0], op[1]
        b = builders[i]
        if kind is _EMIT and 1 <= len(op[4]) <= 2:
            columns = (b.types, b.names, b.eqn_prim, b.eqn_params, b.eqn_ins, b.eqn_out)
            kind = _EMIT_2 if len(op[4]) == 2 else _EMIT_1
            ops.append((kind, b, *columns, op[2], op[3], *op[4], op[5]))
        elif kind is _LIFT and b.lifted is not None:  # one parameter per lifted id
            columns = (b.lifted, b.types, b.names, b.param_ids, builders[op[2]].types)
            ops.append((_RESIDUAL, b, *columns, op[3]))
        elif kind is _LIFT:  # (kind, builder, level of the lifted value, its slot)
            ops.append((_LIFT, b.lift_variable, builders[op[2]], op[3]))
        else:
            ops.append((kind, b, *op[2:]))
    return tuple(ops)


def _flatten(result, rec: _Recorder):
    """The result as ``(container, leaves)``, each leaf ``(0, builder index, slot, type)``
    for a tracer, ``(1, None, None, None)`` for None or ``(2, type, None, None)`` for a
    zero; or a lone leaf as ``(None, leaf)``. None if not replayable (anything else, or
    deeper nesting)."""
    cls = result.__class__
    if cls is tuple or cls is list:
        leaves = tuple(_leaf(r, rec) for r in result)
        return None if None in leaves else (cls, leaves)
    leaf = _leaf(result, rec)
    return None if leaf is None else (None, leaf)


def _leaf(x, rec: _Recorder):
    cls = x.__class__
    if cls is Tracer:
        if x.builder not in rec.builders:
            return None
        b = rec.builders.index(x.builder)
        s = rec.slot.get((b, x.id))
        if s is None:
            return None
        return (0, b, s, x.type)
    if x is None:
        return (1, None, None, None)
    if cls is Zero:
        return (2, x.type, None, None)
    return None


def _unflatten(spec, slots, builders):
    cls, leaves = spec
    if cls is None:
        leaves = (leaves,)
    out = [
        Tracer(builders[b], slots[s], t) if k == 0 else (None if k == 1 else Zero(b))
        for k, b, s, t in leaves
    ]
    return out[0] if cls is None else (out if cls is list else tuple(out))
