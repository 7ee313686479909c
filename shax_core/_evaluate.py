"""Compile a Program once into a plan of NumPy calls over numbered slots, then run it.

Each equation becomes ``(fn, input slots, output slot, slots to free)``: names are resolved and
parameters bound at compile time, so running the plan does no lookups and no type checks, and
every intermediate is released right after its last use. ``peak_bytes`` is the largest live
set the plan can reach, computed from the types alone, so limits can refuse a program before it
runs.

Outputs are handed over as they are when the plan alone owns them (the new buffer of an
``out_buffer`` or ``fresh`` step); arguments, constants, views and repeated slots are copied.
A big elementwise step is split into chunks over threads only when cores are free:
``SHAX_PLAN_THREADS=auto`` (the default) measures this process's usable cores at most once a
second at run time (one thread under load); ``SHAX_PLAN_THREADS=N`` fixes N (1: never split).

Before planning, a program of at most ``REWRITE_MAX_EQNS`` equations is rewritten by the plan
rules its primitives declare (``prim.extra["plan"]``, see ``rewrite_plan``) into cheaper forms
that are equal bit for bit in IEEE arithmetic (a rule that only holds up to rounding, such as
distributing a product over a sum, is not one); no primitive is named here. A negation that
dies where it is read folds into the sum reading it::

    t1 = negate t0;  t2 = add a t1   ->   t2 = sub a t0

Building the plan is linear: a pass numbering slots and finding each slot's last reader, then
a pass making the steps, their buffers and the live bytes, with one kernel per distinct
(primitive, parameters, operand and result types) shared by its steps. Both read the
program's lean form (``lean_of``: integer variable ids, equation columns), as the plan rules
do, so compiling a view (``from_lean``) never builds its ``Var``/``Eqn`` objects.
"""

from __future__ import annotations

import gc
import operator
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from typing import NamedTuple

import numpy as np

from shax_core import _codegen
from shax_core._infer import infer
from shax_core.ir import Lean, Program, ShaxError, Type, exact_key, from_lean, lean_of
from shax_core.passes._dce import dce
from shax_core.registry import SUBPROGRAM_KINDS, TRANSFORMS, Primitive, derived, lookup


class EvaluationError(ShaxError):
    """Bad arguments for a compiled program, or a failure while running it."""


INF = float("inf")
IN_PLACE_MIN_BYTES = 1 << 16


@contextmanager
def no_gc():
    """Building programs and plans allocates millions of small acyclic objects; the cyclic
    collector's repeated full scans of them cost a third of the time (more on big programs)
    and find nothing. Used around the pipeline and plan construction.

    On leaving, the objects made meanwhile join the oldest generation without a scan
    (``gc.freeze`` then ``gc.unfreeze``: two list splices): otherwise the first allocation
    after ``gc.enable`` scans every one of them as the young generation (0.1-0.4 s after a
    200k-equation plan). A cycle among them is still found, by the next full collection."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


EMPTY: frozenset = frozenset()


# On rank-0 values a ufunc call costs 1-4 µs where the operator costs 0.2: the operator
# dispatches to the same ufunc loop (bitwise the same result), minus the call machinery.
# This is what a loop over scalars (W4 as a fori_loop) spends its time on.
_SCALAR_OPERATORS = {
    np.add: operator.add,
    np.subtract: operator.sub,
    np.multiply: operator.mul,
    np.divide: operator.truediv,
    np.negative: operator.neg,
}


def _kernel(prim, params: tuple, in_types: tuple, out_type) -> object:
    """The function a step calls: the primitive's compiled kernel, or its impl with params.
    ``out_type`` is the result's Type (a tuple of them for a multi-result primitive)."""
    kwargs = prim.kwargs(params)
    if not kwargs and type(out_type) is Type and out_type.rank == 0 and out_type.is_float:
        scalar_op = _SCALAR_OPERATORS.get(prim.impl) if isinstance(prim.impl, np.ufunc) else None
        if scalar_op is not None and all(t == out_type for t in in_types):
            return scalar_op
    if prim.kernel is not None:
        return prim.kernel(in_types, out_type, **kwargs)
    return partial(prim.impl, **kwargs) if kwargs else prim.impl


PARALLEL_MIN_ELEMENTS = 1 << 18
MAX_THREADS = 8
LOAD_SAMPLE_S = 1.0  # how long a measurement of the free cores is trusted
_kernel_pool: ThreadPoolExecutor | None = None


def thread_setting(value: str | None) -> int | None:
    """``SHAX_PLAN_THREADS``: ``auto`` (the default) or empty -> None (decide at run time
    from the free cores, up to ``min(cores, MAX_THREADS)``); a positive integer -> exactly
    that many threads (1: never split)."""
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ShaxError(f"SHAX_PLAN_THREADS must be 'auto' or a positive integer, got {value!r}")
    return min(n, MAX_THREADS)


def threads_that_pay(free: float, most: int) -> int:
    """Threads for a chunked step when ``free`` cores are ours to use (the ones this process
    kept busy plus the idle ones): as many as there are, within ``[1, most]``. Under load the
    idle share is ~0 and this process gets at most one core, so the step runs as one call,
    exactly as fast as an unsplit one."""
    return max(1, min(most, int(free + 0.5)))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _idle_and_total() -> tuple[float, float]:
    """The machine's idle and total CPU time so far (/proc/stat jiffies, all cores)."""
    with open("/proc/stat", "rb") as fh:
        fields = [float(v) for v in fh.readline().split()[1:9]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait, user..steal


class FreeCores:
    """``free()``: the cores this process could use, measured over the time since the last
    call: its own CPU time per wall second plus the machine's idle share times its cores
    (at most the cores it may run on). Before any interval: the cores minus the 1-minute load
    average, plus this thread."""

    def __init__(self):
        self.cores = _cores()
        self.all_cores = os.cpu_count() or self.cores
        self._last = self._sample()

    @staticmethod
    def _sample():
        try:
            idle, total = _idle_and_total()
        except (OSError, ValueError, IndexError):
            return None
        return idle, total, time.process_time(), time.monotonic()

    def free(self) -> float:
        now, last = self._sample(), self._last
        self._last = now
        if now is None or last is None or now[1] <= last[1] or now[3] <= last[3]:
            try:
                return max(0.0, self.cores - os.getloadavg()[0] + 1.0)  # a load above cores
            except (AttributeError, OSError):  # not measurable here: one thread
                return 1.0
        idle_cores = (now[0] - last[0]) / (now[1] - last[1]) * self.all_cores
        own_cores = (now[2] - last[2]) / (now[3] - last[3])
        return min(float(self.cores), idle_cores + own_cores)


class CoreMeter:
    """How many threads a chunked step should use now: measured at most once per
    ``LOAD_SAMPLE_S`` (a step itself costs one monotonic clock read). ``measure`` returns
    the free cores (``FreeCores().free`` unless injected)."""

    def __init__(self, most: int, measure=None, clock=time.monotonic):
        self.most = most
        self.measure = measure if measure is not None else FreeCores().free
        self.clock = clock
        self._until = -INF
        self._threads = 1

    def threads(self) -> int:
        now = self.clock()
        if now >= self._until:
            self._threads = threads_that_pay(self.measure(), self.most)
            self._until = now + LOAD_SAMPLE_S
        return self._threads


_meter: CoreMeter | None = None


def plan_threads() -> tuple[int, CoreMeter | None]:
    """``(most threads a step may be split over, the meter deciding at run time or None)``:
    one meter for every plan of the process, so the cores are sampled once per interval."""
    global _meter
    fixed = thread_setting(os.environ.get("SHAX_PLAN_THREADS"))
    if fixed is not None:
        return fixed, None
    most = min(_cores(), MAX_THREADS)
    if most == 1:
        return 1, None
    if _meter is None or _meter.most != most:
        _meter = CoreMeter(most)
    return most, _meter


def _splits(t: Type, most: int) -> bool:
    """Whether an elementwise result is big enough to compute in chunks on several cores."""
    return most > 1 and t.rank > 0 and t.size >= PARALLEL_MIN_ELEMENTS and t.shape[0] >= most


def _chunks(n: int, k: int) -> list[slice]:
    cuts = [n * j // k for j in range(k + 1)]
    return [slice(lo, hi) for lo, hi in zip(cuts, cuts[1:])]


def _parallel(impl, out_type: Type, position: int | None, most: int, meter: CoreMeter | None):
    """``impl`` (elementwise, with ``out=``) over chunks of the leading axis, one per thread
    (NumPy releases the GIL in its loops), into a fresh buffer or, with ``position``, into that
    dying operand. Elementwise, so the chunks are independent and the result is the same for
    any number of chunks; the calling thread computes the first one. The number of threads is
    ``meter.threads()`` at the time of the call (``most`` without a meter)."""
    shape, dtype = out_type.shape, out_type.np_dtype
    chunks = {k: _chunks(shape[0], k) for k in range(1, most + 1)}

    def run(*args):
        global _kernel_pool
        out = args[position] if position is not None else np.empty(shape, dtype)
        k = meter.threads() if meter is not None else most
        if k == 1:
            return impl(*args, out=out)
        if _kernel_pool is None:
            _kernel_pool = ThreadPoolExecutor(MAX_THREADS - 1, thread_name_prefix="shax-kernel")
        first, *others = chunks[k]
        rest = [_kernel_pool.submit(impl, *(a[c] for a in args), out=out[c]) for c in others]
        impl(*(a[first] for a in args), out=out[first])
        for f in rest:
            f.result()
        return out

    return run


def _in_place(impl, position: int, arity: int):
    """``impl`` writing its result into operand ``position`` (which dies at this step)."""
    if arity == 1:
        return lambda a: impl(a, out=a)
    if arity == 2:
        return (lambda a, b: impl(a, b, out=a)) if position == 0 else lambda a, b: impl(a, b, out=b)
    return lambda *xs: impl(*xs, out=xs[position])


# ---------------------------------------------------------------------------------------------
# plan construction: linear passes over the lean form's columns (slots and lifetimes, then
# steps, buffers and the live bytes), a few list and dictionary operations per equation and no
# Var or Eqn objects. Kernels are built once per distinct (primitive, parameters, operand
# types, result type): an unrolled program repeats a handful of signatures many times.


def _operands(lean: Lean) -> tuple[Sequence, list[tuple], list]:
    """``(slot of each variable id, operand slots of each equation, last reader of each
    slot)``: the parameters take the first slots, then each equation's results in order (an
    id the program does not bind has slot None); the last reader is an equation index, INF
    for an output (never freed), -1 for a value nobody reads. When the ids are numbered so
    already (parameters first, then results in order: ``lean_of`` of a Program), the slot of
    an id is the id and the operands are the equations' own."""
    n_params, eqn_out, extra = len(lean.params), lean.eqn_out, lean.eqn_extra
    n_slots = n_params + len(eqn_out) + sum(map(len, extra.values()))
    if not extra and lean.params == tuple(range(n_params)) and _numbered(eqn_out, n_params):
        slot: Sequence = range(len(lean.types))
        operands = lean.eqn_ins
        last: list = [-1] * n_slots
        for i, ins in enumerate(operands):
            for s in ins:
                last[s] = i
    else:
        slot, operands, last = _renumbered(lean)
    for v in lean.outs:
        last[slot[v]] = INF
    return slot, operands, last


def _numbered(ids: Sequence[int], start: int) -> bool:
    """Whether ``ids`` is ``start, start + 1, ...``."""
    return all(map(operator.eq, ids, range(start, start + len(ids))))


def _renumbered(lean: Lean) -> tuple[list, list[tuple], list]:
    """``_operands`` for ids numbered any other way: each id's slot looked up."""
    slot: list = [None] * len(lean.types)
    for i, v in enumerate(lean.params):
        slot[v] = i
    operands: list[tuple] = []
    last: list = [-1] * len(lean.params)
    extra, eqn_out = lean.eqn_extra, lean.eqn_out
    for i, ins in enumerate(lean.eqn_ins):
        if len(ins) == 1:
            a = slot[ins[0]]
            operands.append((a,))
            last[a] = i
        elif len(ins) == 2:
            a, b = slot[ins[0]], slot[ins[1]]
            operands.append((a, b))
            last[a] = last[b] = i
        else:
            slots = tuple([slot[v] for v in ins])
            operands.append(slots)
            for s in slots:
                last[s] = i
        if extra and i in extra:  # a loop binds several results
            for v in lean.eqn_outs(i):
                slot[v] = len(last)
                last.append(-1)
        else:
            slot[eqn_out[i]] = len(last)
            last.append(-1)
    return slot, operands, last


def _dying(ins: tuple, outs, last: list, i: int) -> tuple:
    """The slots to free after equation ``i``: operands it reads last (once each), then
    results nobody reads."""
    free = tuple(dict.fromkeys(s for s in ins if last[s] == i))
    return free + tuple(s for s in outs if last[s] == -1)


@dataclass(frozen=True)
class _Plan:
    steps: tuple  # the run loop's form (fn, x, y, out, free), see ``Executable.run``
    template: list  # the slots before a run: constants computed, everything else None
    refs: list[frozenset]  # the buffers each slot's value may share
    in_place: int
    parallel: int
    work: int  # equations executed by one run, loop bodies counted per trip
    peak: int  # the most bytes live at once (see ``_plan``), before output copies
    live_at_end: int  # the bytes still live after the last step


@derived
def _has_subprograms(prim: Primitive) -> bool:
    """Whether steps of ``prim`` (by name) run plans of their own (sub-programs)."""
    return prim.multiple_results or any(p.kind in SUBPROGRAM_KINDS for p in prim.params)


def _plan(lean: Lean, threads) -> tuple[list, int, _Plan]:
    """One step per non-constant equation: its kernel, in place into a dying operand and/or
    split over the cores when the traits allow it, and the slots that die after it. Returns
    ``(slot of each variable id, number of slots, plan)``.

    Buffers: an out_buffer or fresh step makes a new buffer, named by its slot; any other
    step's result may alias its operands' buffers; parameters and constants are never owned.
    An elementwise out_buffer step writes into an operand's buffer when that buffer dies
    there (no live value aliases it) and has the result's type.

    Live bytes: the arguments (held by the caller throughout), the constants, each step's new
    buffer until its last reader (a view of an argument allocates nothing), and a loop's body
    working set while the loop runs."""
    slot, operands, last = _operands(lean)
    types = lean.types
    n_slots, n_params = len(last), len(lean.params)
    refs: list[frozenset] = [EMPTY] * n_slots
    template: list = [None] * n_slots
    size = [0] * n_slots
    for i, v in enumerate(lean.params):
        size[i] = types[v].nbytes
    live = sum(size)
    buffer_last: dict[int, float] = {}  # per buffer: the last reader of any value aliasing it
    # per step signature: (kernel or None for a loop, result bytes, primitive, makes a new
    # buffer, elementwise with out=, a view of its operand)
    kernels: dict = {}
    # per primitive name: whether it has sub-programs (their steps are not shared, and their
    # parameters are never hashed: a body is a Program, whose hash would build its view)
    nested_of: dict[str, bool] = {}
    steps = []
    append = steps.append
    work = in_place = parallel = constants = extra_results = 0
    peak = live
    eqn_prim, eqn_params, eqn_ins, eqn_out = (
        lean.eqn_prim,
        lean.eqn_params,
        lean.eqn_ins,
        lean.eqn_out,
    )
    type_id = list(map(id, types))  # types are shared objects: one per distinct type, mostly
    for i, e_ins in enumerate(eqn_ins):
        e_prim, e_params, o = eqn_prim[i], eqn_params[i], eqn_out[i]
        # one lookup per step: its kernel and what its primitive's traits say, shared by
        # every step of one signature (primitive, params, type objects)
        # (parameters exactly: a kernel for `pad 0.0` is not one for `pad -0.0`)
        p_key = exact_key(e_params) if e_params else e_params
        if len(e_ins) == 2:
            key = (e_prim, p_key, type_id[o], type_id[e_ins[0]], type_id[e_ins[1]])
        elif len(e_ins) == 1:
            key = (e_prim, p_key, type_id[o], type_id[e_ins[0]])
        else:
            key = (e_prim, p_key, type_id[o], *[type_id[v] for v in e_ins])
        if e_params:  # a body is a Program: never hashed (its hash would build its view)
            nested = nested_of.get(e_prim)
            if nested is None:
                nested = nested_of[e_prim] = _has_subprograms(e_prim)
            if nested:
                key = None
        try:
            hit = kernels.get(key) if key is not None else None
        except TypeError:  # an unhashable parameter: nothing shared
            key, hit = None, None
        if hit is None:
            out_type = types[o]
            prim = lookup(e_prim)
            t = prim.traits
            if "constant" in t and not e_ins:
                out = n_params + i + extra_results
                template[out] = a = np.asarray(prim.impl(**prim.kwargs(e_params)))
                constants += a.nbytes  # held by the template for the whole run
                continue
            nested = nested_of.get(e_prim)
            if nested is None:
                nested = nested_of[e_prim] = _has_subprograms(e_prim)
            in_types = tuple([types[v] for v in e_ins])
            shared = None if nested else _kernel(prim, e_params, in_types, out_type)
            shaped = bool(out_type.shape)
            hit = (
                shared,
                0 if prim.multiple_results else out_type.nbytes,
                prim,
                ("out_buffer" in t or "fresh" in t) and shaped,  # makes a new buffer
                {"elementwise", "out_buffer"} <= t and shaped,  # may run in place / split
                bool(prim.extra.get("view")),
                prim.multiple_results,
            )
            if key is not None:
                kernels[key] = hit
        fn, nbytes, prim, new_buffer, ufunc, view, multi = hit
        transient = 0
        if fn is None:  # a step with sub-programs: its kernel runs plans of its own
            outs_types = tuple([types[v] for v in lean.eqn_outs(i)]) if multi else types[o]
            fn = _kernel(prim, e_params, tuple([types[v] for v in e_ins]), outs_types)
            work += getattr(fn, "work", 1) - 1
            transient = getattr(fn, "transient_bytes", 0)
        ins = operands[i]
        if multi:  # a loop: one step binding every result (a tuple of slots)
            e_outs = lean.eqn_outs(i)
            outs = tuple([slot[v] for v in e_outs])
            union = EMPTY
            for s in ins:
                union = union | refs[s]
            for s in outs:  # its results may be its operands (zero trips)
                refs[s] = union | {s}
                for b in refs[s]:
                    buffer_last[b] = max(buffer_last.get(b, -1), last[s])
            extra_results += len(outs) - 1
            free = _dying(ins, outs, last, i)
            append((fn, None, ins, outs, free))
            for v, s in zip(e_outs, outs, strict=True):
                size[s] = types[v].nbytes
                live += size[s]
            peak = max(peak, live + transient)
            for s in free:
                if s >= n_params:
                    live -= size[s]
                    size[s] = 0
            continue
        out = n_params + i + extra_results  # the slot _operands gave it
        lu = last[out]
        # the buffers the result may share
        if new_buffer:
            refs[out] = frozenset((out,))
            buffer_last[out] = lu
        else:
            union = EMPTY
            for s in ins:
                r = refs[s]
                if r:
                    union = r if not union else union | r
            if union:
                refs[out] = union
                for b in union:
                    if buffer_last[b] < lu:
                        buffer_last[b] = lu
        if ufunc:
            out_type = types[o]
            reuse = None
            if nbytes >= IN_PLACE_MIN_BYTES:
                for pos, s in enumerate(ins):
                    if (
                        buffer_last.get(s) == i
                        and refs[s] == frozenset((s,))
                        and types[e_ins[pos]] == out_type
                    ):
                        reuse = pos
                        break
            if _splits(out_type, threads[0]):
                fn = _parallel(prim.impl, out_type, reuse, *threads)
                parallel += 1
                in_place += reuse is not None
            elif reuse is not None:
                fn = _in_place(prim.impl, reuse, len(ins))
                in_place += 1
            if reuse is not None:
                nbytes = 0
        # the slots dying here: operands read for the last time, a result nobody reads
        if len(ins) == 2:
            a, b = ins
            if last[a] == i:
                free = (a, b) if last[b] == i and a != b else (a,)
            else:
                free = (b,) if last[b] == i else ()
            if lu == -1:  # nobody reads it: drop it at once
                free += (out,)
            append((fn, a, b, out, free))
        elif len(ins) == 1:
            a = ins[0]
            free = (a,) if last[a] == i else ()
            if lu == -1:
                free += (out,)
            append((fn, a, None, out, free))
        else:
            free = tuple(dict.fromkeys(s for s in ins if last[s] == i))
            if lu == -1:
                free += (out,)
            append((fn, None, ins, out, free))
        # a view (transpose, reshape, slice, broadcast) of an argument is memory the caller
        # holds anyway: it allocates nothing
        if view and ins[0] < n_params:
            size[out] = nbytes = 0
        else:
            size[out] = nbytes if nbytes else max([size[s] for s in ins], default=0)
            live += nbytes
            if live + transient > peak:
                peak = live + transient
        for s in free:
            if s >= n_params and (nbytes or s not in ins or size[s] != size[out]):
                live -= size[s]
            size[s] = 0
    work += len(steps)  # one per step, and a loop's body per trip
    plan = _Plan(
        tuple(steps), template, refs, in_place, parallel, work, peak + constants, live + constants
    )
    return slot, n_slots, plan


# ---------------------------------------------------------------------------------------------
# plan rewrites: cheaper equal forms, declared by the primitives (``prim.extra["plan"]``)

REWRITE_MAX_EQNS = 5000  # longer programs are planned as they are (the pass costs ~2 µs/eqn)
RULE_DEPTH = 4  # how often the result of a rule is offered to the rules again


class PlanEqn(NamedTuple):
    """An equation as plan rules read and write it: variables are the lean form's integer ids
    (``rw.type(v)`` is a variable's type); ``extra`` are a multi-result equation's other
    results."""

    out: int
    prim: str
    params: tuple
    ins: tuple[int, ...]
    extra: tuple[int, ...] = ()


class PlanRewriter:
    """What a plan rule may ask: the equation producing a value (None for a parameter), how
    many equations and outputs read it, its type, a new variable of a type, and a new
    equation. A rule ``rule(eqn, rw) -> tuple[PlanEqn, ...] | None`` returns equations
    computing ``eqn.out`` (the last binds it), reading only values defined before ``eqn``;
    what is left without readers is dropped afterwards. Reads the lean form's columns: no
    Var or Eqn is built."""

    def __init__(self, lean: Lean):
        self._lean = lean
        self._types, self._names = lean.types, lean.names  # copied before a variable is added
        self._producer: dict[int, PlanEqn] = {}
        uses = [0] * len(lean.types)
        for v in lean.outs:
            uses[v] += 1
        for ins in lean.eqn_ins:
            for v in ins:
                uses[v] += 1
        self._uses = uses
        self._bound: set[str] | None = None  # every name bound, once a new one is needed
        self._count = 0
        self._rules: dict[str, tuple] = {}

    def producer(self, v: int) -> PlanEqn | None:
        return self._producer.get(v)

    def uses(self, v: int) -> int:
        return self._uses[v]

    def type(self, v: int) -> Type:
        return self._types[v]

    @staticmethod
    def eqn(out: int, prim: str, params: tuple, ins: tuple[int, ...]) -> PlanEqn:
        return PlanEqn(out, prim, params, ins)

    def fresh(self, t: Type) -> int:
        lean = self._lean
        if self._bound is None:
            name_of = lean.names.__getitem__
            bound = set(map(name_of, lean.params))
            bound.update(map(name_of, lean.eqn_out))
            for extra in lean.eqn_extra.values():
                bound.update(map(name_of, extra))
            self._bound = bound
            self._types, self._names = list(self._types), list(self._names)  # never shared
        while True:
            self._count += 1
            name = f"p{self._count}"
            if name not in self._bound:
                self._bound.add(name)
                self._types.append(t)
                self._names.append(name)
                self._uses.append(0)
                return len(self._types) - 1

    def apply(self) -> Lean | None:
        """The rewritten lean form (dead equations not yet dropped), or None when no rule
        applies."""
        lean, eqns = self._lean, []
        self._changed = False
        extra, n = lean.eqn_extra, len(lean.eqn_out)
        extras = [extra.get(i, ()) for i in range(n)] if extra else repeat((), n)
        rows = zip(lean.eqn_out, lean.eqn_prim, lean.eqn_params, lean.eqn_ins, extras, strict=True)
        new, emit = tuple.__new__, self._emit  # a PlanEqn of a row, without its __new__ call
        for row in rows:
            emit(new(PlanEqn, row), eqns, RULE_DEPTH)
        if not self._changed:
            return None
        outs, prims, params, ins, extras = map(list, zip(*eqns))  # the columns
        return Lean(
            lean.name, self._types, self._names, lean.params, lean.outs, prims, params, ins,
            outs, {i: e for i, e in enumerate(extras) if e},
        )  # fmt: skip

    def _release(self, e: PlanEqn) -> None:
        """``e`` is not computed: its operands lose a reader, and an operand left without any
        is not computed either (DCE drops them all afterwards). A worklist, not recursion:
        a long chain read once may go at once."""
        uses, pending = self._uses, [e]
        while pending:
            for v in pending.pop().ins:
                uses[v] -= 1
                if not uses[v]:
                    dead = self._producer.get(v)
                    if dead is not None and not dead.extra:
                        pending.append(dead)

    def _emit(self, e: PlanEqn, eqns: list, depth: int) -> None:
        """Append ``e``, or what a rule rewrites it to (itself offered to the rules again, up
        to ``depth`` times)."""
        rules = self._rules.get(e.prim)
        if rules is None:
            rules = self._rules[e.prim] = lookup(e.prim).extra.get("plan", ())
        if depth:
            for rule in rules:
                new = rule(e, self)
                if new:
                    self._changed = True
                    for n in new:  # the new reads first, so what they keep never reaches 0
                        for v in n.ins:
                            self._uses[v] += 1
                    self._release(e)  # e is replaced: its reads go
                    for n in new:
                        self._emit(n, eqns, depth - 1)
                    return
        self._producer[e.out] = e
        for v in e.extra:
            self._producer[v] = e
        eqns.append(e)


def rewrite_plan(program: Program) -> Program:
    """``program`` with the primitives' plan rules applied once, in order, and the equations
    left without readers dropped: equal values, fewer or cheaper steps.

    >>> from shax_core import infer, parse
    >>> p = infer(parse(
    ...     "def f(c :: f32[2], w :: f32[2]) = let n = negate c  a = mul w n"
    ...     "  s = add a w in [s]"
    ... ))
    >>> print(rewrite_plan(p))
    def f(c :: f32[2],
          w :: f32[2]) =
      let p1 :: f32[2] = mul w c
          s :: f32[2] = sub w p1
      in [s]
    """
    lean = lean_of(program)
    if len(lean) > REWRITE_MAX_EQNS:
        return program
    rewritten = PlanRewriter(lean).apply()
    if rewritten is None:
        return program
    return dce(from_lean(rewritten, checked=True))


class Steps(Sequence):
    """The steps of a plan as ``(fn, operand slots, result slot, slots to free)``, made on
    demand from the run loop's ``(fn, x, y, out, free)`` (``len`` costs nothing)."""

    __slots__ = ("_loop",)

    def __init__(self, loop: tuple):
        self._loop = loop

    def __len__(self) -> int:
        return len(self._loop)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[k] for k in range(*i.indices(len(self._loop))))
        fn, x, y, out, free = self._loop[i]
        return (fn, (x,) if y is None else y if x is None else (x, y), out, free)

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None


def _out_copies(out_slots, refs) -> list[bool]:
    """An output is handed over without a copy only if the plan owns it exclusively."""
    seen: set[int] = set()
    copies = []
    for s in out_slots:
        copies.append(refs[s] != frozenset({s}) or s in seen)
        seen.add(s)
    return copies


class Executable:
    """A compiled program: call it on arrays, get ``list[np.ndarray]``.

    Plan invariants: constants are evaluated once, at compile time; a slot is cleared right
    after its last reader; an elementwise step whose operand buffer dies there (and that no
    live view aliases) writes its result into that buffer instead of allocating.
    """

    def __init__(self, program: Program, *, rewrite: bool = True):
        with no_gc():
            self._build(program, rewrite)

    def _build(self, program: Program, rewrite: bool) -> None:
        if not program.checked:  # annotations are checked by inference, never trusted
            program = infer(program)
        self.program = program
        lean = lean_of(program)  # a view's own columns: its equations are never built
        types = lean.types
        self.in_types: tuple[Type, ...] = tuple([types[v] for v in lean.params])
        self.out_types: tuple[Type, ...] = tuple([types[v] for v in lean.outs])
        planned = rewrite_plan(program) if rewrite else program
        self.planned = planned  # the program the steps compute (equal values)
        planned_lean = lean_of(planned)
        slot, self.n_slots, plan = _plan(planned_lean, plan_threads())
        self._loop = plan.steps
        self.n_params = len(lean.params)
        self.work = plan.work
        self.template = plan.template
        self.in_place_steps = plan.in_place
        self.parallel_steps = plan.parallel
        self.out_slots = tuple([slot[v] for v in planned_lean.outs])
        self.out_copy = _out_copies(self.out_slots, plan.refs)
        # outputs the plan does not own alone (views such as a transpose) are copied at the
        # end, while everything still live is held
        copies = sum(t.nbytes for t, c in zip(self.out_types, self.out_copy, strict=True) if c)
        self.peak_bytes = max(plan.peak, plan.live_at_end + copies)
        self._expected = [(t.np_dtype, t.shape) for t in self.in_types]
        # the tiers (see _codegen): interpret until the hot_at-th call, then run generated code
        self._calls, self._hot_at, self._generated = 0, _codegen.hot_at(len(self.steps)), None

    @property
    def steps(self) -> Steps:
        """The plan as ``(fn, operand slots, result slot (a tuple for a multi-result step),
        slots to free after it)`` per step, in order (read from the run form on demand)."""
        return Steps(self._loop)

    def check_args(self, args) -> list[np.ndarray]:
        if len(args) == len(self._expected) and all(
            type(a) is np.ndarray and a.dtype == dt and a.shape == shape
            for a, (dt, shape) in zip(args, self._expected)
        ):
            return list(args)  # the common case: arrays of exactly the right type
        return self._check_args_slow(args)

    def _check_args_slow(self, args) -> list[np.ndarray]:
        if len(args) != len(self.in_types):
            raise EvaluationError(
                f"{self.program.name} takes {len(self.in_types)} argument(s), got {len(args)}"
            )
        arrays = []
        lean = lean_of(self.program)
        for v, t, a in zip(lean.params, self.in_types, args, strict=True):
            name = lean.names[v]
            if isinstance(a, np.ndarray | np.generic):
                if a.dtype != t.np_dtype:
                    raise EvaluationError(
                        f"argument {name} of {self.program.name} must be {t}, got dtype {a.dtype}"
                    )
            else:
                try:
                    a = np.asarray(a, dtype=t.np_dtype)
                except (TypeError, ValueError) as e:
                    raise EvaluationError(f"argument {name} must be {t}: {e}") from None
            if tuple(a.shape) != t.shape:
                got = f"got shape {list(a.shape)}"
                raise EvaluationError(f"argument {name} of {self.program.name} must be {t}, {got}")
            arrays.append(a)
        return arrays

    def __call__(self, *args) -> list[np.ndarray]:
        return self.run(self.check_args(args))

    def run(self, arrays) -> list[np.ndarray]:
        """Run on already-checked arrays (see ``check_args``)."""
        if self._generated is not None:
            return self._generated(*arrays)
        self._calls += 1
        if self._calls == self._hot_at:  # once (None: its plan stays interpreted)
            self._generated = _codegen.for_executable(self)
            if self._generated is not None:
                return self._generated(*arrays)
        slots = self.template.copy()
        slots[: self.n_params] = arrays
        for fn, x, y, out, free in self._loop:
            if y is None:
                slots[out] = fn(slots[x])
            elif x is None:
                if type(out) is tuple:
                    for s, a in zip(out, fn(*[slots[i] for i in y])):
                        slots[s] = a
                else:
                    slots[out] = fn(*[slots[i] for i in y])
            else:
                slots[out] = fn(slots[x], slots[y])
            for i in free:
                slots[i] = None
        outs = []
        for slot, t, copy in zip(self.out_slots, self.out_types, self.out_copy, strict=True):
            a = np.asarray(slots[slot])
            if a.dtype != t.np_dtype:
                a = a.astype(t.np_dtype)
            elif copy or not a.flags.writeable:
                a = a.copy()
            outs.append(a)
        return outs

    def hot_body(self, trips: int):
        """This plan as generated code for a loop body, ``fn(*params) -> tuple of outputs``,
        once loops have run it ``trips`` times in all, else None (see ``_codegen.hot_body``)."""
        return _codegen.hot_body(self, trips)

    def body_parts(self):
        """``(new_slots, steps, n_params, out_slots)`` for a body run once per trip of a loop
        (see ``control``): one slots list reused across trips, no argument checks and no
        early frees (the next trip overwrites every slot). Outputs are read from their slots
        as they are: the loop copies what it keeps, and a carry is never written in place
        (a parameter is never a step's output buffer). A step is ``(fn, x, y, out, _)`` as
        in ``run``."""
        return self.template.copy, self._loop, self.n_params, self.out_slots

    @property
    def all_slot_bytes(self) -> int:
        """Bytes of every slot at once: what a body run by ``body_parts`` may hold."""
        lean = lean_of(self.planned)
        bound = list(lean.params)  # every variable the plan binds: parameters, then results
        for i in range(len(lean)):
            bound.extend(lean.eqn_outs(i))
        types = lean.types
        return sum(types[v].nbytes for v in bound) + sum(
            a.nbytes for a in self.template if a is not None
        )


TRANSFORMS["compile"] = Executable


def compile(program: Program) -> Executable:  # noqa: A001 (the public name the API fixes)
    return Executable(program)


def evaluate(program: Program, *arrays) -> list[np.ndarray]:
    return Executable(program)(*arrays)
