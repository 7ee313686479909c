"""Linearize once: JVP and partial evaluation in a single walk over the program.

Each equation's linearize rule runs on primal tracers (recorded in the primal builder, level 0)
and tangent tracers (recorded in the linear builder, level 1). An operation with a tangent
operand goes to the linear program; one with only primal operands goes to the primal program.
A primal value that the linear program reads becomes a residual: an extra output of the primal
program and an extra input of the linear one. Symbolic zeros emit nothing.

>>> from shax_core.text import parse
>>> lin = linearize_program(
...     parse("def f(arg0 :: f32[], arg1 :: f32[]) = let x0 = add arg0 arg1  x1 = sin x0 in [x1]")
... )

The primal program returns the output and the residual ``cos x0``:

>>> print(lin.primal)
def f(arg0 :: f32[],
      arg1 :: f32[]) =
  let x0 :: f32[] = add arg0 arg1
      x1 :: f32[] = sin x0
      x2 :: f32[] = cos x0
  in [x1, x2]

and the linear program takes the tangents, then the residuals:

>>> print(lin.linear)
def df(arg0 :: f32[],
       arg1 :: f32[],
       arg2 :: f32[]) =
  let d0 :: f32[] = add arg0 arg1
      d1 :: f32[] = mul d0 arg2
  in [d1]
>>> lin.n_tangents, lin.n_outputs, sorted(lin.recomputed)
(2, 1, [])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shax_core._infer import infer
from shax_core._memo import RuleMemo
from shax_core.core import Builder, Tracer, bind_at, zeros
from shax_core.ir import Program, ShaxError, Var, exact_key, has_subprograms, lean_of
from shax_core.passes import dce
from shax_core.registry import TRANSFORMS, Zero, lookup
from shax_core.remat import POLICIES, rematerialize


class _LinearBuilder(Builder):
    """The tangent side: a primal value it reads becomes a residual input (once per value)."""

    def __init__(self):
        super().__init__(level=1, prefix="d")  # tangent-side names: d0, d1, ...
        self.residuals: dict[int, int] = {}  # primal id -> its residual parameter's id
        self.lifted = self.residuals
        self.n_tangents = 0

    def lift_foreign(self, x: Tracer) -> int:
        return self.lift_variable(x.builder, x.id)

    def lift_variable(self, source: Builder, v: int) -> int:
        param = self.residuals.get(v)
        if param is None:  # add_param, without the tracer
            types = self.types
            param = self.residuals[v] = len(types)
            types.append(source.types[v])
            self.names.append(self._param_name(len(self.param_ids)))
            self.param_ids.append(param)
        return param


def float_inputs(program: Program) -> tuple[int, ...]:
    return tuple(i for i, p in enumerate(program.params) if p.type.is_float)


def check_wrt(program: Program, wrt: Sequence[int] | None) -> tuple[int, ...]:
    if wrt is None:
        return float_inputs(program)
    wrt = tuple(int(i) for i in wrt)
    n = len(program.params)
    for i in wrt:
        if not 0 <= i < n:
            raise ShaxError(f"wrt index {i} is out of range for {program.name}'s {n} inputs")
        if not program.params[i].type.is_float:
            raise ShaxError(
                f"cannot differentiate with respect to {program.params[i].name} :: "
                f"{program.params[i].type}: only float inputs have tangents"
            )
    if len(set(wrt)) != len(wrt):
        raise ShaxError(f"wrt {list(wrt)} repeats an input")
    return wrt


@dataclass(frozen=True)
class Linearized:
    """A program linearized once: what transposing and zipping need, carried with it.

    ``primal`` maps the inputs to ``[outputs..., residuals...]``; ``linear`` maps ``(tangents
    of the wrt inputs..., residuals...)`` to the output tangents. ``recomputed`` names the
    primal values the linear program recomputes from other residuals instead of reading them
    (the residual policy's choice; empty under ``"save"``). Unpacks as ``(primal, linear)``.
    """

    primal: Program
    linear: Program
    wrt: tuple[int, ...]
    n_outputs: int
    recomputed: frozenset[str] = frozenset()

    @property
    def n_tangents(self) -> int:
        """How many leading inputs of ``linear`` are tangents (the rest are residuals)."""
        return len(self.wrt)

    @property
    def residuals(self) -> tuple[Var, ...]:
        return self.primal.outs[self.n_outputs :]

    def __iter__(self):
        return iter((self.primal, self.linear))


def linearize_program(
    program: Program, wrt: Sequence[int] | None = None, policy: str = "recompute"
) -> Linearized:
    """Linearize ``program`` once with respect to the inputs ``wrt`` (default: every float
    input). ``policy`` is the residual policy (see ``shax_core.remat``): ``"recompute"``
    (default) recomputes cheap residuals in the linear program; ``"save"`` saves every one."""
    return linearize_typed(infer(program), wrt, policy)  # annotations are checked, not trusted


def linearize_typed(program: Program, wrt: Sequence[int] | None, policy: str) -> Linearized:
    """``linearize_program`` on a program whose types were inferred by shax itself."""
    if policy not in POLICIES:
        raise ShaxError(f"unknown residual policy {policy!r}; choose one of {list(POLICIES)}")
    wrt = check_wrt(program, wrt)
    primal, linear = _jvp_and_partial_eval(program, wrt)
    n = len(program.outs)
    recomputed: frozenset[str] = frozenset()
    if policy == "recompute":
        primal, linear, recomputed = rematerialize(primal, linear, n, len(wrt))
    # the rules emit primal equations that only a recomputed residual (or nothing) reads
    return Linearized(dce(primal), linear, wrt, n, recomputed)


def _jvp_and_partial_eval(program: Program, wrt: tuple[int, ...]) -> tuple[Program, Program]:
    """One walk: each equation's linearize rule on primal and tangent tracers."""
    source = lean_of(program)
    types = source.types
    primal_b = Builder(level=0)
    linear_b = _LinearBuilder()
    walk = _Walk(source, primal_b, linear_b)
    for p in source.params:
        walk.set_primal(p, primal_b.add_param(types[p], source.names[p]))
        walk.set_tangent(p, Zero(types[p]))
    for i in wrt:
        p = source.params[i]
        walk.set_tangent(p, linear_b.add_param(types[p]))
    linear_b.n_tangents = len(wrt)
    walk.run()

    linear_outs = [walk.tangent_out(v) for v in source.outs]
    residual_ids = list(linear_b.residuals)  # primal ids, in the order they were lifted
    primal_prog = primal_b.program(
        program.name,
        [walk.primal_out(v) for v in source.outs] + residual_ids,
        checked=False,
        final=True,
    )
    linear_prog = linear_b.program("d" + program.name, linear_outs, checked=False, final=True)
    return primal_prog, linear_prog


class _Walk:
    """The walk's state by source variable id, as ids and interned type codes (no tracers):
    ``pid[v]`` the primal's id in the primal builder, ``tid[v]`` the tangent's id in the
    linear builder (-1 a symbolic zero), ``pc[v]``/``tc[v]`` the codes of their types (a
    zero's code is ``-1 - code``). Anything else a rule returned is kept as it is in
    ``pobj``/``tobj`` (``pid``/``tid`` -2, code None). An equation whose operands were seen
    in the same state (``signature``) has its tape replayed on ids; others go through
    ``RuleMemo`` with tracers, as the rule is written."""

    def __init__(self, source, primal_b: Builder, linear_b: _LinearBuilder):
        self.source = source
        self.primal_b, self.linear_b = primal_b, linear_b
        n = len(source.types)
        self.pid, self.pc = [-2] * n, [None] * n
        self.tid, self.tc = [-2] * n, [None] * n
        self.pobj: dict[int, object] = {}
        self.tobj: dict[int, object] = {}
        self.code_types: list = []  # code -> Type
        self._code_by_id: dict[int, int] = {}  # id of a Type (kept alive in code_types) -> code
        self._code_by_value: dict = {}
        self._float_by_id: dict[int, bool] = {}
        self.memo = RuleMemo((primal_b, linear_b))
        self.entries: dict = {}  # operand state -> (tape, primal slot, code, tangent slot, code)
        self._values: dict[int, tuple] = {}  # see values

    def code(self, t) -> int:
        c = self._code_by_id.get(id(t))
        if c is None:
            c = self._code_by_value.get(t)
            if c is None:
                c = self._code_by_value[t] = len(self.code_types)
            self._code_by_id[id(t)] = c
            self.code_types.append(t)  # keeps t (and so its id) alive
        return c

    def set_primal(self, v: int, x) -> None:
        if x.__class__ is Tracer and x.builder is self.primal_b:
            c = self._code_by_id.get(id(x.type))
            self.pid[v], self.pc[v] = x.id, self.code(x.type) if c is None else c
        else:
            self.pid[v], self.pc[v], self.pobj[v] = -2, None, x

    def set_tangent(self, v: int, t) -> None:
        if t.__class__ is Tracer and t.builder is self.linear_b:
            c = self._code_by_id.get(id(t.type))
            self.tid[v], self.tc[v] = t.id, self.code(t.type) if c is None else c
        elif t.__class__ is Zero:
            self.tid[v], self.tc[v] = -1, -1 - self.code(t.type)
        else:
            self.tid[v], self.tc[v], self.tobj[v] = -2, None, t

    def values(self, v: int) -> tuple:
        """The primal tracer and the tangent (tracer or zero) of ``v``, as the rule takes
        them (made once per variable, and kept for its other uses)."""
        pair = self._values.get(v)
        if pair is None:
            p, t = self.pid[v], self.tid[v]
            x = Tracer(self.primal_b, p, self.code_types[self.pc[v]]) if p >= 0 else self.pobj[v]
            if t >= 0:
                dx = Tracer(self.linear_b, t, self.code_types[self.tc[v]])
            else:
                dx = Zero(self.code_types[-1 - self.tc[v]]) if t == -1 else self.tobj[v]
            pair = self._values[v] = (x, dx)
        return pair

    def primal_out(self, v: int) -> int:
        p = self.pid[v]
        return p if p >= 0 else self.pobj[v].id

    def tangent_out(self, v: int) -> int:
        t = self.tid[v]
        if t >= 0:
            return t
        if t == -1:
            return zeros(self.linear_b, self.code_types[-1 - self.tc[v]]).id
        t = self.tobj[v]
        return (zeros(self.linear_b, t.type) if t.__class__ is Zero else t).id

    def is_float(self, t) -> bool:
        f = self._float_by_id.get(id(t))
        if f is None:
            f = self._float_by_id[id(t)] = t.is_float
            self.code(t)  # keeps t alive, so its id is not reused
        return f

    def run(self) -> None:
        source = self.source
        types = source.types
        pid, pc, tid, tc = self.pid, self.pc, self.tid, self.tc
        entries, replay, is_float = self.entries, self.memo.replay_slots, self.is_float
        float_by_id = self._float_by_id  # is_float by the id of a Type, inlined
        emit_primal = self.primal_b.emit_id
        kinds: dict = {}  # by name: (primitive, whether it is replayed on ids)
        columns = zip(source.eqn_prim, source.eqn_params, source.eqn_ins, source.eqn_out)
        for i, (name, params, ins, out) in enumerate(columns):
            kind = kinds.get(name)
            if kind is None:
                prim = lookup(name)
                kind = kinds[name] = (prim, not (prim.multiple_results or prim.no_tangent))
            prim, plain = kind
            if plain:
                # the parameters in a key exactly (0.0 == -0.0 and True == 1 in Python)
                pk = exact_key(params) if params else params
                n = len(ins)
                sig = None
                if n == 2:
                    a, b = ins
                    ta, tb = tid[a], tid[b]
                    if ta == -1 and tb == -1:  # zero tangents: the equation as it is
                        pa, pb = pid[a], pid[b]
                        if pa >= 0 and pb >= 0:
                            t = types[out]
                            pid[out], pc[out] = emit_primal(name, params, (pa, pb), t), self.code(t)
                            tid[out], tc[out] = -1, -1 - self.code(t)
                            continue
                    else:
                        pa, pb = pid[a], pid[b]
                        sig = (name, pk, pc[a], pc[b], tc[a], tc[b], pa == pb, ta == tb)
                        operands = [pa, pb, ta, tb]
                elif n == 1:
                    (a,) = ins
                    ta = tid[a]
                    if ta == -1:
                        pa = pid[a]
                        if pa >= 0:
                            t = types[out]
                            pid[out], pc[out] = emit_primal(name, params, (pa,), t), self.code(t)
                            tid[out], tc[out] = -1, -1 - self.code(t)
                            continue
                    else:
                        sig = (name, pk, pc[a], tc[a])
                        operands = [pid[a], ta]
                if sig is not None:  # a tangent operand: the tape of this signature, if any
                    try:
                        entry = entries.get(sig)
                    except TypeError:  # an unhashable parameter
                        entry = None
                    if entry is not None:
                        tape, ps, pcode, ts, tcode = entry
                        slots = replay(tape, operands)
                        pid[out], pc[out] = slots[ps], pcode
                        t = types[out]
                        f = float_by_id.get(id(t))
                        if f is None:
                            f = is_float(t)
                        if f:
                            tid[out], tc[out] = (slots[ts] if ts >= 0 else -1), tcode
                        else:
                            tid[out], tc[out] = -1, -1 - self.code(t)
                        continue
            self.equation(i, prim, name, params, ins, out)

    def signature(self, name: str, params: tuple, ins) -> tuple:
        """The operands' state: the primitive, its parameters, the primal and tangent codes,
        and which operands repeat a primal or a tangent; equal signatures have equal
        ``RuleMemo`` keys (``run`` builds the same tuples for one and two operands)."""
        pid, pc, tid, tc = self.pid, self.pc, self.tid, self.tc
        params = exact_key(params) if params else params
        if len(ins) == 2:
            a, b = ins
            return (name, params, pc[a], pc[b], tc[a], tc[b], pid[a] == pid[b], tid[a] == tid[b])
        if len(ins) == 1:
            return (name, params, pc[ins[0]], tc[ins[0]])
        ps, ts = [pid[v] for v in ins], [tid[v] for v in ins]
        return (
            name,
            params,
            len(ins),
            *[pc[v] for v in ins],
            *[tc[v] for v in ins],
            *map(ps.index, ps),
            *map(ts.index, ts),
        )

    def entry(self, tape) -> tuple | None:
        """What ``run`` needs of a tape whose rule returns (primal tracer, tangent tracer or
        zero): their slots and type codes; None for any other result."""
        cls, leaves = tape[1]
        if cls is None or len(leaves) != 2:
            return None
        (pk, pb, ps, pt), (tk, tb, ts, tt) = leaves
        if pk != 0 or pb != 0:
            return None
        if tk == 0 and tb == 1:
            return (tape, ps, self.code(pt), ts, self.code(tt))
        if tk == 2:  # a zero tangent: its type is the leaf's second field
            return (tape, ps, self.code(pt), -1, -1 - self.code(tb))
        return None

    def equation(self, i: int, prim, name: str, params: tuple, ins, out: int) -> None:
        """An equation as the rule is written: on tracers and zeros (through the memo)."""
        source, types = self.source, self.source.types
        made = self._values
        pairs = [made.get(v) or self.values(v) for v in ins]
        xs = [x for x, _ in pairs]
        ts = [t for _, t in pairs]
        zero_tangents = True
        for t in ts:
            if t.__class__ is not Zero:
                zero_tangents = False
                break
        if prim.no_tangent or zero_tangents:
            if prim.multiple_results:
                ans = bind_at(self.primal_b, name, *xs, **prim.kwargs(params))
                t_out = tuple(Zero(types[v]) for v in source.eqn_outs(i))
            else:  # the equation as it is: its type is known (the program is typed)
                ans = self.primal_b.emit(name, params, [x.id for x in xs], types[out])
                t_out = Zero(types[out])
        else:
            if prim.linearize is None:
                raise ShaxError(
                    f"{name} has no linearize rule (in the binding of {source.names[out]})"
                )
            if prim.multiple_results or (params and has_subprograms(params)):
                ans, t_out = prim.linearize(xs, ts, **prim.kwargs(params))
            else:  # the same rule on operands of the same types: its tape replayed
                memo = self.memo
                operands = xs + ts
                key = memo.key((name, params), operands)
                kwargs = prim.kwargs(params)
                (ans, t_out), tape = memo.applied(key, operands, prim.linearize, xs, ts, **kwargs)
                if tape is not None and 1 <= len(ins) <= 2:  # (run looks such ones up)
                    sig = self.signature(name, params, ins)
                    if None not in sig:  # (an operand kept as it is has no signature)
                        entry = self.entry(tape)
                        if entry is not None:
                            self.entries[sig] = entry
        if prim.multiple_results:  # one primal and one tangent per result
            for v, a, t in zip(source.eqn_outs(i), ans, t_out, strict=True):
                self.set_primal(v, a)
                self.set_tangent(v, t if types[v].is_float else Zero(types[v]))
            return
        if not types[out].is_float:
            t_out = Zero(types[out])
        made[out] = (ans, t_out)
        codes = self._code_by_id
        if ans.__class__ is Tracer and ans.builder is self.primal_b:  # set_primal, inlined
            c = codes.get(id(ans.type))
            self.pid[out], self.pc[out] = ans.id, self.code(ans.type) if c is None else c
        else:
            self.set_primal(out, ans)
        if t_out.__class__ is Tracer and t_out.builder is self.linear_b:  # set_tangent
            c = codes.get(id(t_out.type))
            self.tid[out], self.tc[out] = t_out.id, self.code(t_out.type) if c is None else c
        else:
            self.set_tangent(out, t_out)


TRANSFORMS["linearize"] = linearize_typed
