"""From a request's program to a compiled, cacheable entry (no HTTP here beyond Problem).

``prepare`` is the cheap part done on the event loop's behalf in a worker: parse or read the graph,
check the equation limit, infer types, canonicalize, resolve ``wrt`` and hash. ``build`` is the
expensive part: run the AD pipeline once (``shax_core.vjp_program``), compile the plans, and check
their peak memory (computed from the types) against the limit before anything runs.

Tensor names of a compiled program (the same on every endpoint, and the Open Inference Protocol
model's input/output names): inputs are named as the client named the program's parameters
(``x``, ``params.w1``; ``a0, a1, ...`` when it sent canonical names), output cotangents
``ct0, ct1, ...``, outputs ``out0, out1, ...``, gradients ``grad_<input>`` (one per ``wrt``
input), input tangents ``t_<input>`` and output tangents ``tout0, ...``. The cache key is
computed on the canonical form, so names never split the cache: a program compiled under other
names shares the entry, and by-id endpoints use the names it was first compiled with.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import shax_core
from shax_core import Executable, Program, TransposeError, infer
from shax_core.graph import canonical_text, canonicalize, content_hash, from_graph
from shax_core.ir import Type, Var, bound_vars, lean_of
from shax_core.passes.rename import rewrite_ins
from shax_core.registry import RuleError, lookup
from shax_core.wire import DATATYPE_OF_IR
from shax_server.problems import Problem, limit_exceeded
from shax_server.settings import Settings


def pipeline_version() -> str:
    return str(getattr(shax_core, "PIPELINE_VERSION", "0"))


@dataclass(frozen=True)
class Source:
    """A validated, canonical program and its cache key."""

    key: str
    program: Program  # canonical, typed
    text: str  # canonical IR text
    wrt: tuple[int, ...]
    residuals: str = "recompute"  # the residual policy the VJP is built with (part of the key)
    names: tuple[str, ...] = ()  # the client's parameter names (default: the canonical ones)

    @property
    def input_names(self) -> list[str]:
        return list(self.names) if self.names else [p.name for p in self.program.params]

    def named_program(self) -> Program:
        """The canonical program with the client's parameter names (for display), when they
        are IR names; else the canonical program."""
        if not self.names or not all(_IR_NAME.fullmatch(n) for n in self.names):
            return self.program
        subst = {
            p.name: Var(n, p.type) for p, n in zip(self.program.params, self.names, strict=True)
        }
        eqns = tuple(rewrite_ins(e, subst) for e in self.program.eqns)
        return Program(
            self.program.name,
            tuple(subst[p.name] for p in self.program.params),
            eqns,
            tuple(subst.get(v.name, v) for v in self.program.outs),
            checked=self.program.checked,
        )


_IR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_'.]*")


def read_program(body: dict) -> Program:
    """The program of a request body: ``program`` (IR text) or ``graph`` (JSON graph); an
    explicit null counts as absent (as the OpenAPI document says)."""
    has_text, has_graph = body.get("program") is not None, body.get("graph") is not None
    if has_text == has_graph:
        raise Problem(
            400,
            "Invalid request",
            "give exactly one of 'program' (IR text) or 'graph' (JSON graph)",
            kind="invalid-request",
        )
    if has_text:
        if not isinstance(body["program"], str):
            raise Problem(
                400,
                "Invalid request",
                "'program' must be a string of IR text",
                kind="invalid-request",
            )
        return shax_core.parse(body["program"])
    return from_graph(body["graph"])


def resolve_wrt(program: Program, wrt: Any) -> tuple[int, ...]:
    """Input indices to differentiate: given, or every float input."""
    n = len(program.params)
    if wrt is None:
        return tuple(i for i, p in enumerate(program.params) if p.type.is_float)
    if not isinstance(wrt, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in wrt
    ):
        raise Problem(
            400, "Invalid request", "'wrt' must be a list of input indices", kind="invalid-request"
        )
    for i in wrt:
        if not 0 <= i < n:
            raise Problem(
                400,
                "Invalid request",
                f"wrt index {i} is out of range: the program has {n} input(s)",
                kind="invalid-request",
            )
        if not program.params[i].type.is_float:
            raise Problem(
                400,
                "Invalid request",
                f"wrt index {i}: input {program.params[i].name} "
                f"is {program.params[i].type}; only float inputs have gradients",
                kind="invalid-request",
            )
    if len(set(wrt)) != len(wrt):
        raise Problem(400, "Invalid request", "'wrt' lists an input twice", kind="invalid-request")
    return tuple(wrt)


def count_equations(program: Program) -> int:
    """Equations of the program and of every sub-program (loop bodies, branches)."""
    return sum(1 + sum(count_equations(b) for b in e.subprograms) for e in program.eqns)


def prepare(program: Program, wrt: Any, settings: Settings, residuals: str | None = None) -> Source:
    n_eqns = count_equations(program)
    if n_eqns > settings.max_equations:
        raise limit_exceeded(
            "max_equations",
            f"the program has {n_eqns} equations (loop bodies included), more than the limit "
            f"of {settings.max_equations}",
        )
    # always infer: a fully annotated program counts as "typed" in the core, but annotations
    # from a request are claims, and the peak-memory check must not trust them
    typed = infer(program)
    check_trips(typed, settings)
    check_sizes(typed, settings)
    canonical = canonicalize(typed)
    resolved = resolve_wrt(canonical, wrt)
    residuals = residuals or "recompute"
    if residuals not in RESIDUAL_POLICIES:
        raise Problem(
            400,
            "Invalid request",
            f"'residuals' must be one of {', '.join(RESIDUAL_POLICIES)}, got {residuals!r}",
            kind="invalid-request",
        )
    # the policy changes the compiled VJP, so it is part of the key (the default keeps old ids)
    version = pipeline_version() + ("" if residuals == "recompute" else f"+residuals={residuals}")
    key = content_hash(canonical, list(resolved), version)
    names = tuple(p.name for p in program.params)
    return Source(
        key, canonical, canonical_text(canonical), resolved, residuals=residuals, names=names
    )


RESIDUAL_POLICIES = ("recompute", "save")


def check_trips(program: Program, settings: Settings, outer: int = 1) -> None:
    """Refuse a loop whose body would run more than ``max_trip_count`` times (nested loops
    multiply), before compiling: the work of a loop is its trip count times its body's."""
    limit = settings.max_trip_count
    for e in program.eqns:
        if not e.subprograms:
            continue
        trips = outer
        prim = lookup(e.prim)
        bound = prim.extra.get("trips")  # declared in the loop primitive's registry block
        if bound is not None:
            trips = outer * bound(prim.kwargs(e.params))
            if trips > limit:
                nested = "" if outer == 1 else f" ({outer} enclosing trips x {trips // outer})"
                raise limit_exceeded(
                    "max_trip_count",
                    f"the {e.prim} binding {e.out.name} runs its body {trips} times{nested}, "
                    f"more than the limit of {limit}",
                )
        for body in e.subprograms:
            check_trips(body, settings, trips)


def check_sizes(program: Program, settings: Settings) -> None:
    """Refuse a program with any single value larger than ``max_peak_bytes``, before compiling.

    Sizes are exact Python integers (``math.prod``): a shape like ``[2**32, 2**32]`` must not
    wrap around to 0 elements in int64 arithmetic and slip past the peak-memory check.
    """
    limit = settings.max_peak_bytes
    for e in program.eqns:
        for body in e.subprograms:
            check_sizes(body, settings)
    for v in bound_vars(program):
        t = v.type
        nbytes = math.prod(t.shape) * t.np_dtype.itemsize
        if nbytes > limit:
            raise limit_exceeded(
                "max_peak_bytes",
                f"{v.name} :: {t} alone needs {nbytes} bytes, more than the limit of {limit} "
                "on the peak memory of one evaluation",
            )


def check_peak(exe: Executable, what: str, settings: Settings) -> None:
    if exe.peak_bytes > settings.max_peak_bytes:
        raise limit_exceeded(
            "max_peak_bytes",
            f"evaluating the {what} program needs {exe.peak_bytes} bytes of live arrays at its "
            f"peak (computed from its types), more than the limit of {settings.max_peak_bytes}",
        )


def tensor_meta(name: str, t: Type) -> dict:
    return {"name": name, "datatype": DATATYPE_OF_IR[t.dtype], "shape": list(t.shape)}


@dataclass
class Compiled:
    """Everything the endpoints need about one program; immutable once built except ``lazy``."""

    source: Source
    vjp: Program | None  # None: the program has no reverse mode (e.g. a while_loop)
    vjp_exe: Executable | None
    forward_exe: Executable
    nbytes: int
    no_reverse_mode: str | None = None  # why vjp is None, for the 400 a VJP request gets
    lazy: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> str:
        return self.source.key

    def require_vjp(self) -> Executable:
        """The VJP plan, or a 400 saying why this program has none (forward and JVP only)."""
        if self.vjp_exe is None:
            raise Problem(
                400,
                "No reverse mode",
                f"this program has no VJP: {self.no_reverse_mode} "
                "(POST /v1/programs/{id}/eval and /jvp still work)",
                kind="no-reverse-mode",
            )
        return self.vjp_exe

    @property
    def program(self) -> Program:
        return self.source.program

    @property
    def input_names(self) -> list[str]:
        return self.source.input_names

    def named(self, source: Source) -> Compiled:
        """This entry under the parameter names of ``source`` (the same program): shares
        every compiled part."""
        if source.names == self.source.names:
            return self
        return dataclasses.replace(self, source=source)

    # names and types of a call's tensors, computed once per entry (read on every call)
    @functools.cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(f"out{i}" for i in range(len(self.program.outs)))

    @functools.cached_property
    def cotangent_names(self) -> tuple[str, ...]:
        return tuple(f"ct{i}" for i in range(len(self.program.outs)))

    @functools.cached_property
    def gradient_names(self) -> tuple[str, ...]:
        names = self.input_names
        return tuple(f"grad_{names[i]}" for i in self.source.wrt)

    @functools.cached_property
    def in_types(self) -> tuple[Type, ...]:
        return tuple(self.program.in_types)

    @functools.cached_property
    def out_types(self) -> tuple[Type, ...]:
        return tuple(self.program.out_types)

    @functools.cached_property
    def vjp_out_types(self) -> tuple[Type, ...]:
        """The types of a VJP's answer: the outputs, then the gradients of the wrt inputs."""
        p = self.program
        return (*self.out_types, *(p.params[i].type for i in self.source.wrt))

    @property
    def tangent_names(self) -> list[str]:
        names = self.input_names
        return [f"t_{names[i]}" for i in self.source.wrt]

    def signature(self) -> dict:
        p = self.program
        return {
            "inputs": [
                tensor_meta(n, v.type) for n, v in zip(self.input_names, p.params, strict=True)
            ],
            "outputs": [
                tensor_meta(n, v.type) for n, v in zip(self.output_names, p.outs, strict=True)
            ],
            "gradients": [
                tensor_meta(n, p.params[i].type)
                for n, i in zip(self.gradient_names, self.source.wrt, strict=True)
            ],
            "wrt": list(self.source.wrt),
        }

    def jvp_exe(self, settings: Settings) -> Executable:
        with self.lock:
            if "jvp" not in self.lazy:
                jvp = shax_core.jvp_program(self.program, wrt=list(self.source.wrt))
                exe = shax_core.compile(jvp)
                check_peak(exe, "JVP", settings)
                self.lazy["jvp"] = exe
            return self.lazy["jvp"]

    def stage_texts(self) -> dict[str, str]:
        with self.lock:
            if "stages" not in self.lazy:
                named = self.source.named_program()
                if self.vjp is None:  # forward only: the stages up to the one that failed
                    self.lazy["stages"] = {"source": str(named), "typed": str(infer(named))}
                else:
                    stages = shax_core.stages(named, wrt=list(self.source.wrt))
                    self.lazy["stages"] = {k: str(v) for k, v in stages.items()}
            return self.lazy["stages"]


def runs_inline(exe: Executable, settings: Settings) -> bool:
    """Whether evaluating ``exe`` is cheap enough to run on the event loop (bounded by its
    peak memory and its number of steps, both known from the plan)."""
    return exe.peak_bytes <= settings.inline_eval_bytes and exe.work <= (settings.inline_eval_steps)


# resident bytes per equation of a cached entry (the source and VJP programs as objects, their
# plans' steps and kernels), calibrated with tracemalloc on programs of 1 to 2000 equations
# (tests/test_limits.py::test_cache_bytes_account_for_what_an_entry_holds checks the bound)
BYTES_PER_EQUATION = 640
BYTES_PER_ENTRY = 8 * 1024
BYTES_PER_CONSTANT = 48  # an element of a literal: Python floats in the programs, then the array


def entry_bytes(source: Source, vjp: Program | None, *exes: Executable) -> int:
    """What a compiled entry holds in memory: its programs and plans (per equation), the IR
    text, and every constant array its plans evaluated at compile time."""
    vjp_eqns = 0 if vjp is None else len(lean_of(vjp))  # (its view's equations unbuilt)
    eqns = len(source.program.eqns) + vjp_eqns + sum(len(e.steps) for e in exes)
    constants = sum(a.size for e in exes for a in e.template if a is not None)
    return (
        BYTES_PER_ENTRY
        + eqns * BYTES_PER_EQUATION
        + 2 * len(source.text)
        + constants * BYTES_PER_CONSTANT
    )


def build(source: Source, settings: Settings) -> Compiled:
    """Run the AD pipeline once and compile: the expensive, cacheable step."""
    forward_exe = shax_core.compile(source.program)
    check_peak(forward_exe, "forward", settings)
    try:
        vjp = shax_core.vjp_program(source.program, wrt=list(source.wrt), policy=source.residuals)
    except (RuleError, TransposeError) as e:  # no reverse mode (while_loop): eval, jvp only
        nbytes = entry_bytes(source, None, forward_exe)
        return Compiled(source, None, None, forward_exe, nbytes, no_reverse_mode=str(e))
    vjp_exe = shax_core.compile(vjp)
    check_peak(vjp_exe, "VJP", settings)
    nbytes = entry_bytes(source, vjp, forward_exe, vjp_exe)
    return Compiled(source, vjp, vjp_exe, forward_exe, nbytes)
