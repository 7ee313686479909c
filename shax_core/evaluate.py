"""Compile a Program once into a plan of NumPy calls over numbered slots, then run it.

Each equation becomes ``(fn, input slots, output slot, slots to free)``: names are resolved and
parameters bound at compile time, so running the plan does no lookups and no type checks, and
every intermediate is released right after its last use. ``peak_bytes`` is the largest live
set the plan can reach, computed from the types alone, so limits can refuse a program before it
runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from shax_core.infer import infer
from shax_core.ir import Program, ShaxError, Type
from shax_core.primitives import lookup


class EvaluationError(ShaxError):
    """Bad arguments for a compiled program, or a failure while running it."""


@dataclass(frozen=True, slots=True)
class Step:
    fn: object
    ins: tuple[int, ...]
    out: int
    free: tuple[int, ...]


class Executable:
    """A compiled program: call it on arrays, get ``list[np.ndarray]``."""

    def __init__(self, program: Program):
        if not program.is_typed:
            program = infer(program)
        self.program = program
        self.in_types: tuple[Type, ...] = program.in_types
        self.out_types: tuple[Type, ...] = program.out_types
        slot_of: dict[str, int] = {}
        for p in program.params:
            slot_of[p.name] = len(slot_of)
        for e in program.eqns:
            slot_of[e.out.name] = len(slot_of)
        # last use of each slot: the index of the equation that reads it last
        last_use: dict[int, int] = {}
        for i, e in enumerate(program.eqns):
            for v in e.ins:
                last_use[slot_of[v.name]] = i
        keep = {slot_of[v.name] for v in program.outs}
        frees: list[list[int]] = [[] for _ in program.eqns]
        for slot, i in last_use.items():
            if slot not in keep:
                frees[i].append(slot)
        steps = []
        for i, e in enumerate(program.eqns):
            prim = lookup(e.prim)
            fn = partial(prim.impl, **prim.kwargs(e.params)) if prim.params else prim.impl
            out = slot_of[e.out.name]
            # a value nobody reads is freed as soon as it is made
            free = tuple(frees[i]) + ((out,) if out not in last_use and out not in keep else ())
            steps.append(Step(fn, tuple(slot_of[v.name] for v in e.ins), out, free))
        self.steps = tuple(steps)
        self.n_slots = len(slot_of)
        self.out_slots = tuple(slot_of[v.name] for v in program.outs)
        self.peak_bytes = _peak_bytes(program, self.steps)

    def check_args(self, args) -> list[np.ndarray]:
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
        slots: list = [None] * self.n_slots
        slots[: len(arrays)] = arrays
        for step in self.steps:
            slots[step.out] = step.fn(*[slots[i] for i in step.ins])
            for i in step.free:
                slots[i] = None
        outs = []
        for slot, t in zip(self.out_slots, self.out_types, strict=True):
            a = np.asarray(slots[slot])
            if a.dtype != t.np_dtype:
                a = a.astype(t.np_dtype)
            if not a.flags.owndata or not a.flags.writeable:
                a = a.copy()
            outs.append(a)
        return outs


def _peak_bytes(program: Program, steps) -> int:
    size = {}
    for i, p in enumerate(program.params):
        size[i] = p.type.nbytes
    for step, e in zip(steps, program.eqns, strict=True):
        size[step.out] = e.out.type.nbytes
    live = sum(size[i] for i in range(len(program.params)))
    peak = live
    for step in steps:
        live += size[step.out]
        peak = max(peak, live)
        live -= sum(size[i] for i in step.free)
    return peak


def compile(program: Program) -> Executable:  # noqa: A001 (the public name the API fixes)
    return Executable(program)


def evaluate(program: Program, *arrays) -> list[np.ndarray]:
    return Executable(program)(*arrays)
