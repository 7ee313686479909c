"""Zip primal and transpose into one VJP program, and the public differentiation API.

The stages, for a program ``f``:

    typed       infer(f)
    rewritten   simplify (constant folding), CSE, DCE
    linearized  f   (inputs) -> [outputs..., residuals...]
    linear      df  (tangents..., residuals...) -> [output tangents...]
    transposed  dft (output cotangents..., residuals...) -> [input cotangents...]
    vjp         f_dft (inputs..., output cotangents...) -> [outputs..., input cotangents...]

The zipped program inlines ``f`` and feeds its residuals straight into ``dft``, then runs
CSE and DCE, as the seed's ``medium_dmediumt``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from shax_core._evaluate import Executable, no_gc
from shax_core._infer import infer
from shax_core._linearize import check_wrt, linearize_typed
from shax_core._trace import as_type, trace, trace_returning
from shax_core.core import Builder
from shax_core.ir import Program, ShaxError, Var, type_of
from shax_core.passes import cleanup, cse, dce, simplify
from shax_core.passes.inline import inline
from shax_core.passes.rename import rewrite_ins
from shax_core.remat import POLICIES, rematerialize
from shax_core.transpose import transpose_typed

PIPELINE_VERSION = "1"


def _prepare(program: Program) -> Program:
    """Infer (annotations are checked, not trusted), then simplify, fold, CSE and DCE.

    ``canonicalize_dot`` (the seed's rewrite) is not needed: ``dot`` and general
    ``dot_general`` transpose directly, and the plan runs them as one BLAS matmul on views,
    so the canonical form would only add reshape steps."""
    return cleanup(infer(program))


def zip_vjp(
    primal: Program, transposed: Program, n_outputs: int, cse_across: bool = True
) -> Program:
    """``f_dft(inputs..., cotangents...) = [outputs..., input cotangents...]``.

    ``cse_across=False`` keeps recomputed residuals apart from the primal values they equal
    (merging them would undo the residual policy: the value would be saved after all)."""
    ct_types = [v.type for v in primal.outs[:n_outputs]]
    zipped = _append(f"{primal.name}_d{primal.name}t", primal, transposed, ct_types, n_outputs)
    return cleanup(zipped) if cse_across else dce(simplify(zipped))


def zip_jvp(primal: Program, linear: Program, wrt: Sequence[int], n_outputs: int) -> Program:
    """``f_jvp(inputs..., tangents of wrt...) = [outputs..., output tangents...]``."""
    t_types = [primal.params[i].type for i in wrt]
    return cleanup(_append(f"{primal.name}_jvp", primal, linear, t_types, n_outputs))


def _append(name: str, first: Program, second: Program, new_types, n_outputs: int) -> Program:
    """One program running ``first`` then ``second``, where ``second`` takes the new
    parameters then ``first``'s outputs after the first ``n_outputs`` (the residuals).

    Parameters: ``first``'s, then the new ones; outputs: ``first``'s first ``n_outputs``, then
    ``second``'s. Equations are reused as they are (the pipeline's builders name variables
    with distinct prefixes); only if names clash are both inlined under fresh names."""
    new_params = tuple(Var(f"arg{len(first.params) + i}", t) for i, t in enumerate(new_types))
    first_names = {p.name for p in first.params} | {e.out.name for e in first.eqns}
    second_names = {e.out.name for e in second.eqns}
    new_names = {p.name for p in new_params}
    if (first_names | new_names) & second_names or first_names & new_names:
        b = Builder()
        args = [b.add_param(p.type) for p in first.params]
        new = [b.add_param(t) for t in new_types]
        first_outs = inline(b, first, args)
        second_outs = inline(b, second, new + first_outs[n_outputs:])
        outs = tuple(t.var for t in first_outs[:n_outputs] + second_outs)
        return Program(name, tuple(b.params), tuple(b.eqns), outs)
    args = new_params + first.outs[n_outputs:]
    subst = {p.name: a for p, a in zip(second.params, args, strict=True)}
    eqns = first.eqns + tuple(rewrite_ins(e, subst) for e in second.eqns)
    outs = first.outs[:n_outputs] + tuple(subst.get(v.name, v) for v in second.outs)
    return Program(name, first.params + new_params, eqns, outs)


def stages(
    program_or_f, *specs, wrt: Sequence[int] | None = None, policy: str = "recompute"
) -> dict[str, Program]:
    """Every stage of the pipeline by name (see the module docstring), each cleaned up."""
    result: dict[str, Program] = {}
    if isinstance(program_or_f, Program):
        program = program_or_f
    else:
        program = trace(program_or_f, *specs)
        result["traced"] = program
    typed = infer(program)
    rewritten = cleanup(typed)
    wrt = check_wrt(rewritten, wrt)
    primal, linear, recomputed = _linearize(rewritten, wrt, policy)
    primal, linear = cleanup(primal), cleanup(linear)
    transposed = cleanup(transpose_typed(linear, len(wrt)))
    n = len(rewritten.outs)
    result.update(
        typed=typed,
        rewritten=rewritten,
        linearized=primal,
        linear=linear,
        transposed=transposed,
        vjp=zip_vjp(primal, transposed, n, cse_across=not recomputed),
    )
    return {name: _checked(p) if name != "traced" else p for name, p in result.items()}


def vjp_program(
    program: Program, wrt: Sequence[int] | None = None, policy: str = "recompute"
) -> Program:
    """The zipped VJP program of ``program`` with respect to the inputs ``wrt`` (default:
    every float input), under the residual ``policy`` (see ``shax_core.remat``)."""
    with no_gc():
        rewritten = _prepare(program)
        wrt = check_wrt(rewritten, wrt)
        primal, linear, recomputed = _linearize(rewritten, wrt, policy)
        transposed = transpose_typed(linear, len(wrt))
        n = len(rewritten.outs)
        if not recomputed:  # one cleanup after zipping is where it pays
            return _checked(zip_vjp(primal, transposed, n))
        # each half: CSE within it (not across: see zip_vjp); simplify once, after zipping
        zipped = zip_vjp(dce(cse(primal)), dce(cse(transposed)), n, cse_across=False)
        return _checked(zipped)


def _linearize(program: Program, wrt, policy: str) -> tuple[Program, Program, bool]:
    """``(primal, linear, whether any residual is recomputed)`` under ``policy``."""
    if policy not in POLICIES:
        raise ShaxError(f"unknown residual policy {policy!r}; choose one of {list(POLICIES)}")
    saved = linearize_typed(program, wrt, "save")
    if policy == "save":
        return (*saved, False)
    primal, linear = rematerialize(*saved, len(program.outs), len(wrt))
    return primal, linear, linear is not saved[1]


def _checked(program: Program) -> Program:
    """Mark a program the pipeline derived from an inferred one: its types are shax's own
    (every pass keeps types; the tests verify it), so compiling it need not re-infer."""
    return program.replace(checked=True)


def jvp_program(program: Program, wrt: Sequence[int] | None = None) -> Program:
    with no_gc():
        rewritten = _prepare(program)
        wrt = check_wrt(rewritten, wrt)
        primal, linear = linearize_typed(rewritten, wrt, "recompute")
        return _checked(zip_jvp(primal, linear, wrt, len(rewritten.outs)))


# ---------------------------------------------------------------------------------------------
# differentiation of Python functions (trace at the arguments' types, then the pipeline)

_CACHE: OrderedDict = OrderedDict()


def _cached(key, build):
    try:
        hit = _CACHE[key]
        _CACHE.move_to_end(key)
        return hit
    except KeyError:
        pass
    except TypeError:  # unhashable function: no caching
        return build()
    value = _CACHE[key] = build()
    while len(_CACHE) > 128:
        _CACHE.popitem(last=False)
    return value


def _as_arrays(args):
    out = []
    for a in args:
        a = np.asarray(a)
        if a.dtype.kind in "iu":
            a = a.astype(np.float32)
        elif a.dtype == np.float16:
            a = a.astype(np.float32)
        out.append(a)
    return out


def _types(arrays):
    return tuple(type_of(a) for a in arrays)


def _unpack(values, single):
    return values[0] if single else tuple(values)


def _traced(f, types) -> tuple[Program, bool]:
    """f traced once per argument types: the program, and whether f returns one value."""
    return _cached(("trace", f, types), lambda: trace_returning(f, *types))


def _wrt_of(argnums, n):
    if argnums is None:
        return tuple(range(n))
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def vjp(f: Callable, *args, wrt=None):
    """``(outputs, vjp_fn)``: outputs of ``f(*args)``; ``vjp_fn(*cotangents)`` returns the
    cotangents of the inputs in ``wrt`` (default all). The function is linearized once."""
    arrays = _as_arrays(args)
    types = _types(arrays)
    wrt = _wrt_of(wrt, len(arrays))

    program, single = _traced(f, types)

    def build():
        st = stages(program, wrt=wrt)
        return (
            Executable(st["linearized"]),
            Executable(st["transposed"]),
            len(st["typed"].outs),
        )

    primal_exe, transposed_exe, n_out = _cached(("vjp", f, types, wrt), build)
    values = primal_exe(*arrays)
    outputs, residuals = values[:n_out], values[n_out:]

    def vjp_fn(*cotangents):
        if len(cotangents) != n_out:
            raise ShaxError(f"vjp_fn takes {n_out} cotangent(s), got {len(cotangents)}")
        cts = [np.asarray(c, dtype=o.dtype) for c, o in zip(cotangents, outputs, strict=True)]
        return tuple(transposed_exe(*cts, *residuals))

    return _unpack(outputs, single), vjp_fn


def value_and_grad(f: Callable, argnums=0):
    """``(f(x), ∇f(x))`` for a scalar-valued f, as one zipped VJP program."""

    def wrapped(*args):
        arrays = _as_arrays(args)
        types = _types(arrays)
        wrt = _wrt_of(argnums, len(arrays))

        def build():
            program = _traced(f, types)[0]
            if len(program.outs) != 1 or program.outs[0].type.shape != ():
                raise ShaxError(
                    f"grad needs a function with one scalar output; {program.name} returns "
                    + ", ".join(str(v.type) for v in program.outs)
                )
            return Executable(vjp_program(program, wrt))

        exe = _cached(("grad", f, types, wrt), build)
        one = np.ones((), dtype=exe.out_types[0].np_dtype)
        value, *grads = exe(*arrays, one)
        return value, grads[0] if isinstance(argnums, int) else tuple(grads)

    return wrapped


def grad(f: Callable, argnums=0):
    """∇f for a scalar-valued f (``argnums`` int or tuple, as in JAX)."""
    vg = value_and_grad(f, argnums)
    return lambda *args: vg(*args)[1]


def jvp(f: Callable, primals: Sequence, tangents: Sequence):
    """``(outputs, output tangents)`` of f at ``primals`` along ``tangents`` (forward mode)."""
    arrays = _as_arrays(primals)
    types = _types(arrays)
    program, single = _traced(f, types)
    exe = _cached(("jvp", f, types), lambda: Executable(jvp_program(program)))
    ts = [np.asarray(t, dtype=a.dtype) for t, a in zip(tangents, arrays, strict=True)]
    values = exe(*arrays, *ts)
    n = len(values) // 2
    return _unpack(values[:n], single), _unpack(values[n:], single)


def linearize(f: Callable, *args):
    """``(outputs, jvp_fn)``: the primal runs once now; ``jvp_fn(*tangents)`` runs only the
    linear program on the saved residuals."""
    arrays = _as_arrays(args)
    types = _types(arrays)

    program, single = _traced(f, types)

    def build():
        st = stages(program)
        return (
            Executable(st["linearized"]),
            Executable(st["linear"]),
            len(st["typed"].outs),
        )

    primal_exe, linear_exe, n_out = _cached(("lin", f, types), build)
    values = primal_exe(*arrays)
    outputs, residuals = values[:n_out], values[n_out:]

    def jvp_fn(*tangents):
        ts = [np.asarray(t, dtype=a.dtype) for t, a in zip(tangents, arrays, strict=True)]
        return _unpack(linear_exe(*ts, *residuals), single)

    return _unpack(outputs, single), jvp_fn


__all__ = [
    "PIPELINE_VERSION",
    "as_type",
    "grad",
    "jvp",
    "jvp_program",
    "linearize",
    "stages",
    "value_and_grad",
    "vjp",
    "vjp_program",
    "zip_jvp",
    "zip_vjp",
]
