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
"""

from __future__ import annotations

import gc
import operator
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np

from shax_core import _codegen
from shax_core._infer import infer
from shax_core.ir import Program, ShaxError, Type
from shax_core.registry import TRANSFORMS, lookup


class EvaluationError(ShaxError):
    """Bad arguments for a compiled program, or a failure while running it."""


INF = float("inf")
IN_PLACE_MIN_BYTES = 1 << 16


@contextmanager
def no_gc():
    """Building programs and plans allocates millions of small acyclic objects; the cyclic
    collector's repeated full scans of them cost a third of the time (more on big programs)
    and find nothing. Used around the pipeline and plan construction."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


EMPTY: frozenset = frozenset()
VIEWS = frozenset({"transpose", "reshape", "broadcast", "slice"})  # of a C-contiguous array


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


def _kernel(prim, eqn) -> object:
    """The function a step calls: the primitive's compiled kernel, or its impl with params."""
    params = prim.kwargs(eqn.params)
    if not params and eqn.out.type.rank == 0 and eqn.out.type.is_float:
        scalar_op = _SCALAR_OPERATORS.get(prim.impl) if isinstance(prim.impl, np.ufunc) else None
        if scalar_op is not None and all(v.type == eqn.out.type for v in eqn.ins):
            return scalar_op
    if prim.kernel is not None:
        out_type = tuple(v.type for v in eqn.outs) if prim.multiple_results else eqn.out.type
        return prim.kernel(tuple(v.type for v in eqn.ins), out_type, **params)
    return partial(prim.impl, **params) if params else prim.impl


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
                return self.cores - os.getloadavg()[0] + 1.0
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
# the phases of plan construction, each a function of the program and the earlier phases


def _slots(program: Program) -> dict[str, int]:
    """A numbered slot per value: the parameters first, then each equation's result."""
    slot_of = {p.name: i for i, p in enumerate(program.params)}
    for e in program.eqns:
        for v in e.outs:  # a loop binds several results
            slot_of[v.name] = len(slot_of)
    return slot_of


def _last_uses(program: Program, slot_of: dict[str, int]) -> dict[int, float]:
    """The index of the last equation reading each slot (INF for outputs: never freed)."""
    last_use: dict[int, float] = {slot_of[v.name]: INF for v in program.outs}
    for i, e in enumerate(program.eqns):
        for v in e.ins:
            s = slot_of[v.name]
            if last_use.get(s) != INF:
                last_use[s] = i
    return last_use


def _buffers(program: Program, prims, slot_of) -> tuple[list[frozenset], list]:
    """``(refs, template)``: the buffers each slot's value may share (an out_buffer step makes
    a fresh buffer, named by its slot; any other step's result may alias its operands'), and
    the constants, computed now (parameters and constants are never owned)."""
    refs: list[frozenset] = [EMPTY] * len(slot_of)
    template: list = [None] * len(slot_of)
    for e, prim in zip(program.eqns, prims, strict=True):
        out = slot_of[e.out.name]
        if prim.multiple_results:  # a loop's results may be its operands (zero trips)
            union = EMPTY
            for v in e.ins:
                union = union | refs[slot_of[v.name]]
            for v in e.outs:
                refs[slot_of[v.name]] = union | {slot_of[v.name]}
        elif "constant" in prim.traits:
            template[out] = np.asarray(prim.impl(**prim.kwargs(e.params)))
        elif e.out.type.rank and ("out_buffer" in prim.traits or "fresh" in prim.traits):
            refs[out] = frozenset({out})  # a new buffer, shared with nothing (the traits' laws)
        else:
            union = EMPTY
            for v in e.ins:
                r = refs[slot_of[v.name]]
                if r:
                    union = r if not union else union | r
            refs[out] = union
    return refs, template


@dataclass(frozen=True)
class _Plan:
    steps: tuple  # (fn, operand slots, result slot, slots to free after it)
    alloc: list[int]  # bytes each step allocates (0 when it writes into a dying operand)
    views: frozenset[int]  # slots that are NumPy views of an argument (allocate nothing)
    in_place: int
    parallel: int
    transient: list[int]  # bytes a step holds only while it runs (a loop's body)
    work: int  # equations executed by one run, loop bodies counted per trip


def _steps(program: Program, prims, slot_of, last_use, refs, template, threads) -> _Plan:
    """One step per non-constant equation: its kernel, in place into a dying operand and/or
    split over the cores when the traits allow it, and the slots that die after it."""
    buffer_last: dict[int, float] = {}
    for slot in range(len(slot_of)):
        for b in refs[slot]:
            buffer_last[b] = max(buffer_last.get(b, -1), last_use.get(slot, -1))
    steps, alloc, transient = [], [], []
    work = 0
    views: set[int] = set()
    n_params = len(program.params)
    in_place = parallel = 0
    for i, (e, prim) in enumerate(zip(program.eqns, prims, strict=True)):
        out = slot_of[e.out.name]
        if template[out] is not None:
            continue
        ins = tuple(slot_of[v.name] for v in e.ins)
        fn = _kernel(prim, e)
        transient.append(getattr(fn, "transient_bytes", 0))
        work += getattr(fn, "work", 1)
        if prim.multiple_results:  # one step binding every result (a tuple of slots)
            outs = tuple(slot_of[v.name] for v in e.outs)
            free = tuple(dict.fromkeys(s for s in ins if last_use[s] == i))
            free += tuple(s for s in outs if s not in last_use)
            steps.append((fn, ins, outs, free))
            alloc.append(sum(v.type.nbytes for v in e.outs))
            continue
        reuse = None
        # an elementwise out_buffer step may write into a dying operand (the laws of both
        # traits) and be split into chunks of the leading axis. (Rank-0 results are NumPy
        # scalars, not buffers; on small arrays the ``out=`` call costs more than the
        # allocation saves.)
        elementwise = {"elementwise", "out_buffer"} <= prim.traits
        if elementwise and e.out.type.rank and e.out.type.nbytes >= IN_PLACE_MIN_BYTES:
            for pos, s in enumerate(ins):
                if (
                    refs[s] == frozenset({s})
                    and buffer_last.get(s) == i
                    and e.ins[pos].type == e.out.type
                ):
                    reuse = pos
                    break
        if elementwise and _splits(e.out.type, threads[0]):
            fn = _parallel(prim.impl, e.out.type, reuse, *threads)
            parallel += 1
            in_place += reuse is not None
        elif reuse is not None:
            fn = _in_place(prim.impl, reuse, len(ins))
            in_place += 1
        free = tuple(dict.fromkeys(s for s in ins if last_use[s] == i))
        if out not in last_use:  # nobody reads it: drop it at once
            free += (out,)
        steps.append((fn, ins, out, free))
        # a structural step (transpose, reshape, slice, broadcast) of an argument is a view
        # of memory the caller holds anyway: it allocates nothing
        if e.prim in VIEWS and ins[0] < n_params:
            views.add(out)
        alloc.append(0 if reuse is not None or out in views else e.out.type.nbytes)
    return _Plan(tuple(steps), alloc, frozenset(views), in_place, parallel, transient, work)


def _run_form(steps) -> tuple:
    """The run loop's form of the steps: (fn, x, y, out, free) with y None for one operand and
    x None (y the operand tuple) for any other count; a multi-result step always takes the
    last form, its ``out`` a tuple of slots."""
    return tuple(
        (fn, ins[0], None, out, free)
        if len(ins) == 1 and type(out) is int
        else (fn, ins[0], ins[1], out, free)
        if len(ins) == 2 and type(out) is int
        else (fn, None, ins, out, free)
        for fn, ins, out, free in steps
    )


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

    def __init__(self, program: Program):
        with no_gc():
            self._build(program)

    def _build(self, program: Program) -> None:
        if not program.checked:  # annotations are checked by inference, never trusted
            program = infer(program)
        self.program = program
        self.in_types: tuple[Type, ...] = program.in_types
        self.out_types: tuple[Type, ...] = program.out_types
        prims = [lookup(e.prim) for e in program.eqns]
        slot_of = _slots(program)
        last_use = _last_uses(program, slot_of)
        refs, template = _buffers(program, prims, slot_of)
        plan = _steps(program, prims, slot_of, last_use, refs, template, plan_threads())
        self.steps = plan.steps
        self._loop = _run_form(plan.steps)
        self.n_slots = len(slot_of)
        self.n_params = len(program.params)
        self._vars = [*program.params, *(v for e in program.eqns for v in e.outs)]
        self.work = plan.work
        self.template = template
        self.in_place_steps = plan.in_place
        self.parallel_steps = plan.parallel
        self.out_slots = tuple(slot_of[v.name] for v in program.outs)
        self.out_copy = _out_copies(self.out_slots, refs)
        self.peak_bytes = self._peak(plan.alloc, plan.views, plan.transient)
        self._expected = [(t.np_dtype, t.shape) for t in self.in_types]
        # the tiers (see _codegen): interpret until the hot_at-th call, then run generated code
        self._calls, self._hot_at, self._generated = 0, _codegen.hot_at(len(self.steps)), None

    def _peak(self, alloc, views, transient) -> int:
        """The most bytes live at once: the arguments (held by the caller throughout), the
        constants, each step's fresh buffer until its last reader, a loop's body working set
        while the loop runs, and the final copies of outputs the plan does not own alone."""
        size = [0] * self.n_slots
        for i, p in enumerate(self.program.params):
            size[i] = p.type.nbytes
        live = sum(size[: self.n_params])
        live += sum(a.nbytes for a in self.template if a is not None)
        peak = live
        for (_, ins, out, free), nbytes, extra in zip(self.steps, alloc, transient, strict=True):
            if type(out) is tuple:  # a loop: fresh results, and its body's working set
                for s in out:
                    size[s] = self._vars[s].type.nbytes
                live += nbytes
                peak = max(peak, live + extra)
                for s in free:
                    if s >= self.n_params:
                        live -= size[s]
                        size[s] = 0
                continue
            if out in views:
                size[out] = 0  # the argument's memory, counted once, held throughout
            else:
                size[out] = nbytes if nbytes else max((size[s] for s in ins), default=0)
            live += nbytes
            peak = max(peak, live)
            for s in free:
                if s < self.n_params:
                    continue  # the caller holds its arguments for the whole run
                if nbytes or s not in ins or size[s] != size[out]:
                    live -= size[s]
                size[s] = 0
        # outputs the plan does not own alone (views such as a transpose) are copied at the end,
        # while everything still live is held
        copies = sum(t.nbytes for t, c in zip(self.out_types, self.out_copy, strict=True) if c)
        return max(peak, live + copies)

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
        for p, t, a in zip(self.program.params, self.in_types, args, strict=True):
            if isinstance(a, np.ndarray | np.generic):
                if a.dtype != t.np_dtype:
                    raise EvaluationError(
                        f"argument {p.name} of {self.program.name} must be {t}, got dtype {a.dtype}"
                    )
            else:
                try:
                    a = np.asarray(a, dtype=t.np_dtype)
                except (TypeError, ValueError) as e:
                    raise EvaluationError(f"argument {p.name} must be {t}: {e}") from None
            if tuple(a.shape) != t.shape:
                got = f"got shape {list(a.shape)}"
                raise EvaluationError(
                    f"argument {p.name} of {self.program.name} must be {t}, {got}"
                )
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
        return sum(v.type.nbytes for v in self._vars) + sum(
            a.nbytes for a in self.template if a is not None
        )


TRANSFORMS["compile"] = Executable


def compile(program: Program) -> Executable:  # noqa: A001 (the public name the API fixes)
    return Executable(program)


def evaluate(program: Program, *arrays) -> list[np.ndarray]:
    return Executable(program)(*arrays)
