"""Differentiating Python functions: grad, value_and_grad, vjp, jvp, linearize (JAX's API).

Each traces the function once per argument types, runs the pipeline (``shax_core.pipeline``)
once, and caches the compiled plans:

>>> import numpy as np
>>> import shax_core.numpy as snp
>>> grad(lambda x: snp.sum(snp.sin(x)))(np.zeros(3, np.float32))
array([1., 1., 1.], dtype=float32)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from shax_core._evaluate import Executable, no_gc
from shax_core._linearize import linearize_typed
from shax_core._trace import trace_returning
from shax_core.ir import Program, ShaxError, type_of
from shax_core.pipeline import jvp_program, prepare, run, vjp_program

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
        r = run(program, wrt)
        return Executable(r.linearized.primal), Executable(r.transposed), r.linearized.n_outputs

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
        with no_gc():
            lin = linearize_typed(prepare(program), None, "recompute")
        return Executable(lin.primal), Executable(lin.linear), lin.n_outputs

    primal_exe, linear_exe, n_out = _cached(("lin", f, types), build)
    values = primal_exe(*arrays)
    outputs, residuals = values[:n_out], values[n_out:]

    def jvp_fn(*tangents):
        ts = [np.asarray(t, dtype=a.dtype) for t, a in zip(tangents, arrays, strict=True)]
        return _unpack(linear_exe(*ts, *residuals), single)

    return _unpack(outputs, single), jvp_fn


__all__ = ["grad", "jvp", "linearize", "value_and_grad", "vjp"]
