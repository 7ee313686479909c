"""The second tier of a compiled plan: straight-line Python generated from its steps.

An ``Executable`` interprets its plan (a loop over ``(kernel, operand slots, result slot,
slots to free)``). Once a plan is hot (called ``HOT_CALLS`` times) and short (at most
``MAX_STEPS`` steps), its steps are written out as one function, one line per step, so a call
costs the kernels and almost nothing else:

>>> import shax_core as sx
>>> program = sx.parse('''def f(a :: f32[3], b :: f32[3]) =
...   let x = mul a b
...       y = sin x
...       z = add y a
...   in [z, y]''')
>>> print(source(read_plan(sx.compile(program))))
def run(s0, s1):
    s2 = k0(s0, s1)
    del s1
    s3 = k1(s2)
    del s2
    s4 = k2(s3, s0)
    del s0
    return [k3(s4), k4(s3)]

A loop body (a ``scan``'s, so also ``fori_loop``'s) runs once per trip; once its loop has
counted ``HOT_TRIPS`` trips, the ones about to run included (so a long loop at once), its
plan is generated in the body form, which returns the output values as they are instead of
finished copies:

>>> print(source(read_plan(sx.compile(program)), body=True).splitlines()[-1])
    return (s4, s3, )

Safety: the text is made from integers only. ``s<N>`` is slot N (the parameters first),
``k<N>`` the N-th callable (step kernels, then one output finisher per result) and ``c<N>``
the constant in slot N; kernels and constants are objects in the function's namespace, never
rendered into the text, and the namespace's ``__builtins__`` is empty, so the function can
reach nothing else. Nothing from a program (names, literals, params) is an input of
``source``: it reads slot numbers, kernel positions and which slots hold constants, and
refuses anything that is not a plain ``int``. Every line is matched against a fixed template
(``LINE``) before ``compile``; the compiled function's names are then checked against its
namespace. The function is built from the compiled code object with ``types.FunctionType``
(no ``exec``).

Semantics are the interpreter's: the same kernels in the same order on the same values, a
slot deleted right after its last reader, and each output through the same finisher (an
array of the declared dtype, copied unless the plan owns it alone). Code objects are cached
by source, so plans of one structure share one compile.

``SHAX_CODEGEN`` chooses the tier: ``auto`` (the default) generates for a plan of at most
``MAX_STEPS`` steps on its ``HOT_CALLS``-th call; ``0`` (or ``off``) always interprets;
``1`` (or ``always``) generates on the first call or trip (still at most ``MAX_STEPS``
steps). It is read when a plan is built. ``compile`` costs 6-7 µs a line here (W1's 85 lines:
0.6 ms, what its generated code saves in 70 calls), which is why it waits for hot plans and
never runs for long ones (W4's 60k-200k steps) or on the cold path. A thread switch exactly
at the ``HOT_CALLS``-th call can skip the switch; the plan then stays interpreted.
"""

from __future__ import annotations

import os
import re
import threading
import types
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from shax_core.ir import ShaxError

# When to generate (a ski rental): compile costs what generated code saves in about 70-170
# calls, whatever the plan's length (both grow with it), so switching near that count keeps
# the total within about 2x of the best choice in hindsight, for plans called once or forever.
HOT_CALLS = 64  # generate on this call of a plan
HOT_TRIPS = 256  # a loop body is generated once loops have run it this many times
MAX_STEPS = 2000  # longer plans stay interpreted (compile ~ 7 µs a line: <= ~25 ms at once)
NEVER = 1 << 62
CACHED_CHARS = 4 << 20  # the code cache holds at most this much source (and its code)
FILENAME = "<shax plan>"


class CodegenError(ShaxError):
    """A generated line does not match the template, or a plan is not in a form we generate."""


# ---------------------------------------------------------------------------------------------
# the plan, as the generator reads it


@dataclass(frozen=True)
class PlanView:
    """What the generator needs of an ``Executable``: integers and objects, nothing else.

    ``steps``: ``(operand slots, result slot or tuple of slots, slots to free)``; ``kernels``:
    the callable of each step; ``constants``: slot -> array for constant slots;
    ``outputs``: ``(slot, dtype, copy)`` per result."""

    n_params: int
    steps: tuple
    kernels: tuple
    constants: dict
    outputs: tuple


def _ints(xs) -> tuple[int, ...]:
    xs = tuple(xs)
    if not all(type(x) is int and x >= 0 for x in xs):
        raise CodegenError("plan slots must be non-negative ints")
    return xs


def read_plan(exe) -> PlanView:
    """The one place that reads an ``Executable``'s step format (``exe.steps`` as
    ``(fn, ins, out, free)``, ``exe.template``, ``exe.out_slots/out_types/out_copy``)."""
    steps, kernels = [], []
    for step in exe.steps:
        fn, ins, out, free = step
        if not callable(fn):
            raise CodegenError("a step's kernel is not callable")
        out = _ints(out) if type(out) is tuple else _ints((out,))[0]
        if out == ():
            raise CodegenError("a step binds no result")
        steps.append((_ints(ins), out, _ints(free)))
        kernels.append(fn)
    constants = {i: a for i, a in enumerate(exe.template) if a is not None}
    outputs = tuple(
        (_ints((s,))[0], t.np_dtype, bool(c))
        for s, t, c in zip(exe.out_slots, exe.out_types, exe.out_copy, strict=True)
    )
    return PlanView(_ints((exe.n_params,))[0], tuple(steps), tuple(kernels), constants, outputs)


# ---------------------------------------------------------------------------------------------
# source text, from integers only

_SLOT = r"s\d+"
_VALUE = r"[sc]\d+"
_ARGS = rf"(?:{_VALUE}(?:, {_VALUE})*)?"
LINE = re.compile(  # ASCII: \d is 0-9 only
    "|".join(
        [
            rf"def run\((?:{_SLOT}(?:, {_SLOT})*)?\):",  # the header: parameters only
            rf"    {_SLOT} = k\d+\({_ARGS}\)",  # one step
            rf"    (?:{_SLOT}, )+= k\d+\({_ARGS}\)",  # a multi-result step
            rf"    del {_SLOT}(?:, {_SLOT})*",  # slots that die here
            rf"    return \[(?:k\d+\({_VALUE}\)(?:, k\d+\({_VALUE}\))*)?\]",  # finished outputs
            rf"    return \((?:{_VALUE}, )*\)",  # a loop body's outputs, as they are
        ]
    ),
    re.ASCII,
)


def source(plan: PlanView, body: bool = False) -> str:
    """The plan as one function ``run(s0, ..., s<n_params-1>)`` returning the output list
    (each output finished as the interpreter's ``run`` does), or with ``body`` the tuple of
    the output values as they are (what a loop reads from a body's slots each trip).

    Every slot read must be live (a parameter, a constant, or bound by an earlier step and not
    deleted since), every slot bound once: else the plan is refused (``CodegenError``), so the
    function can never fail where the interpreter would not."""
    for x in (plan.n_params, *plan.constants):
        _ints((x,))
    live = set(range(plan.n_params))
    bound = set(live)

    def value(s: int) -> str:
        if s in plan.constants:
            return f"c{s:d}"
        if s not in live:
            raise CodegenError(f"slot {s:d} is read while it holds nothing")
        return f"s{s:d}"

    def bind(s: int) -> str:
        if s in bound or s in plan.constants:
            raise CodegenError(f"slot {s:d} is bound twice")
        bound.add(s)
        live.add(s)
        return f"s{s:d}"

    lines = [f"def run({', '.join(f's{i:d}' for i in range(plan.n_params))}):"]
    for k, (ins, out, free) in enumerate(plan.steps):
        args = ", ".join(value(s) for s in _ints(ins))
        if type(out) is tuple:  # s6, s7, = k2(...)
            target = "".join(f"{bind(s)}, " for s in _ints(out))
        else:
            target = f"{bind(_ints((out,))[0])} "
        lines.append(f"    {target}= k{k:d}({args})")
        dead = [s for s in dict.fromkeys(_ints(free)) if s in live]
        if dead:
            live.difference_update(dead)
            lines.append(f"    del {', '.join(f's{s:d}' for s in dead)}")
    n = len(plan.steps)
    if body:
        lines.append(f"    return ({''.join(f'{value(s)}, ' for s, _, _ in plan.outputs)})")
    else:
        finished = ", ".join(f"k{n + j:d}({value(s)})" for j, (s, _, _) in enumerate(plan.outputs))
        lines.append(f"    return [{finished}]")
    return "\n".join(lines) + "\n"


def check_lines(text: str) -> None:
    """Every line must be one of ``LINE``'s fixed forms (nothing else can reach compile)."""
    for number, line in enumerate(text.split("\n"), 1):
        if line and not LINE.fullmatch(line):
            raise CodegenError(f"generated line {number} does not match the template: {line!r}")
    if not text.startswith("def run(") or text.count("def ") != 1:
        raise CodegenError("generated source must be exactly one function")


class CodeCache:
    """Code objects by source text, least recently used first out, bounded by the total
    length of the texts (a code object is about as big as its text)."""

    def __init__(self, max_chars: int):
        self.max_chars = max_chars
        self.chars = self.hits = self.misses = 0
        self._codes: OrderedDict[str, types.CodeType] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str, make) -> types.CodeType:
        with self._lock:
            code = self._codes.get(text)
            if code is not None:
                self._codes.move_to_end(text)
                self.hits += 1
                return code
            self.misses += 1
        code = make(text)  # outside the lock: two threads may both compile; one is kept
        with self._lock:
            if text not in self._codes:
                self._codes[text] = code
                self.chars += len(text)
            while self.chars > self.max_chars and len(self._codes) > 1:
                old, _ = self._codes.popitem(last=False)
                self.chars -= len(old)
        return code

    def clear(self) -> None:
        with self._lock:
            self._codes.clear()
            self.chars = 0


CODES = CodeCache(CACHED_CHARS)


def compile_checked(text: str) -> types.CodeType:
    """The code object of the one function in ``text``, compiled only after every line
    matched the template (the one builtin compile() of the packages, see test_security)."""
    check_lines(text)
    module = compile(text, FILENAME, "exec", dont_inherit=True)
    (code,) = [c for c in module.co_consts if isinstance(c, types.CodeType)]
    return code


def code_of(text: str) -> types.CodeType:
    """The code object of ``run`` in ``text`` (checked against the template first), cached by
    the text itself: plans of one structure share one compile."""
    return CODES.get(text, compile_checked)


# ---------------------------------------------------------------------------------------------
# the function


def finisher(dtype: np.dtype, copy: bool):
    """What the interpreter does to each output: an array of the declared dtype, copied when
    the plan does not own it alone or it is read-only."""
    asarray = np.asarray

    def finish(x):
        a = asarray(x)
        if a.dtype != dtype:
            return a.astype(dtype)
        if copy or not a.flags.writeable:
            return a.copy()
        return a

    return finish


def namespace(plan: PlanView) -> dict:
    ns: dict = {"__builtins__": {}}
    for k, fn in enumerate(plan.kernels):
        ns[f"k{k:d}"] = fn
    n = len(plan.kernels)
    for j, (_, dtype, copy) in enumerate(plan.outputs):
        ns[f"k{n + j:d}"] = finisher(dtype, copy)
    for s, a in plan.constants.items():
        ns[f"c{s:d}"] = a
    return ns


def generate(plan: PlanView, body: bool = False):
    """The plan as a Python function of its arguments (``fn(*arrays) -> list``; with
    ``body``, ``fn(*values) -> tuple`` of the output values as they are)."""
    code = code_of(source(plan, body))
    ns = namespace(plan)
    unknown = [n for n in code.co_names if n not in ns]
    if unknown:
        raise CodegenError(f"generated code names {unknown} outside its namespace")
    return types.FunctionType(code, ns, "run")


# ---------------------------------------------------------------------------------------------
# the tiers


def setting(value: str | None) -> str:
    """``SHAX_CODEGEN``: ``auto`` (default, also empty), ``0``/``off``, ``1``/``always``."""
    v = (value or "auto").strip().lower()
    if v in ("", "auto"):
        return "auto"
    if v in ("0", "off", "false", "no"):
        return "off"
    if v in ("1", "on", "always", "true", "yes"):
        return "always"
    raise ShaxError(f"SHAX_CODEGEN must be 'auto', '0' or '1', got {value!r}")


def hot_at(n_steps: int) -> int:
    """The call on which a plan of ``n_steps`` steps switches to generated code (NEVER: it
    stays interpreted). Read from ``SHAX_CODEGEN`` when the plan is built."""
    mode = setting(os.environ.get("SHAX_CODEGEN"))
    if mode == "off" or n_steps > MAX_STEPS:
        return NEVER
    return 1 if mode == "always" else HOT_CALLS


def tier(exe) -> str:
    """``"generated"`` once ``exe`` runs generated code, else ``"interpreted"``."""
    return "generated" if getattr(exe, "_generated", None) is not None else "interpreted"


def for_executable(exe, body: bool = False):
    """The generated function for ``exe``, or None when its plan is not in a form we generate
    (it then stays interpreted)."""
    try:
        return generate(read_plan(exe), body)
    except (CodegenError, TypeError, ValueError, SyntaxError, RecursionError):
        return None  # not a form we generate (or a bug here): interpret, as before


_NOT_YET = object()


def hot_body(exe, trips: int):
    """``exe``'s plan as a loop body, ``fn(*params) -> tuple of outputs``, once the loop
    asking has counted ``trips >= HOT_TRIPS`` trips of it, the ones about to run included
    (at once under ``SHAX_CODEGEN=1``; never when off or longer than ``MAX_STEPS``); None:
    interpret the body's steps (``Executable.body_parts``). Made once per plan."""
    made = getattr(exe, "_generated_body", _NOT_YET)
    if made is not _NOT_YET:
        return made
    hot = exe._hot_at
    if hot >= NEVER or (hot > 1 and trips < HOT_TRIPS):
        return None
    exe._generated_body = made = for_executable(exe, body=True)
    return made
