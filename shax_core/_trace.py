"""Tracing: run a Python function on tracers and record the Program it computes.

>>> import shax_core.numpy as snp
>>> def f(x, y):
...     z = x + y
...     return snp.sin(z) * snp.cos(z)
>>> print(trace(f, Type("f32", ()), Type("f32", ())))
def f(arg0 :: f32[],
      arg1 :: f32[]) =
  let x0 :: f32[] = add arg0 arg1
      x1 :: f32[] = sin x0
      x2 :: f32[] = cos x0
      x3 :: f32[] = mul x1 x2
  in [x3]

Sharing is kept for free: Python names the value ``z`` once, so it is one variable.
"""

from __future__ import annotations

import numpy as np

from shax_core._evaluate import no_gc
from shax_core.core import Builder, Tracer, constant_like
from shax_core.ir import DTYPES, Program, ShaxError, Type, dtype_name, type_of


def as_type(spec) -> Type:
    """A Type from a Type, ``(shape, dtype)``, anything with .shape/.dtype, or an example."""
    if isinstance(spec, Type):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], str | np.dtype | type):
        shape, dtype = spec
        name = dtype if isinstance(dtype, str) and dtype in DTYPES else dtype_name(dtype)
        return Type(name, tuple(shape))
    if hasattr(spec, "shape") and hasattr(spec, "dtype"):
        return Type(dtype_name(spec.dtype), tuple(spec.shape))
    if isinstance(spec, bool):
        return Type("bool", ())
    if isinstance(spec, int | float):
        return Type("f32", ())
    try:
        a = np.asarray(spec)
    except Exception as e:  # noqa: BLE001
        raise ShaxError(f"cannot make a type from {spec!r}: {e}") from None
    if a.dtype.kind in "iu" and (a.ndim == 0 or a.dtype not in (np.int32, np.int64)):
        a = a.astype(np.float32)  # int32/int64 arrays stay integers (indices, labels)
    return type_of(a)


def trace(f, *specs, name: str | None = None) -> Program:
    """Record ``f`` applied to arguments of the given types (or like the given examples)."""
    return trace_returning(f, *specs, name=name)[0]


def trace_returning(f, *specs, name: str | None = None) -> tuple[Program, bool]:
    """``trace``, and whether ``f`` returned one value (True) or a tuple/list of them."""
    builder = Builder()
    args = [builder.add_param(as_type(s)) for s in specs]
    with no_gc():  # recording makes many small acyclic objects: see no_gc
        result = f(*args)
    single = not isinstance(result, tuple | list)
    results = [result] if single else list(result)
    outs = []
    for r in results:
        if not isinstance(r, Tracer) or r.builder is not builder:
            if isinstance(r, Tracer):
                raise ShaxError("the traced function returned a value from another trace")
            r = constant_like(r, args[0] if args else np.float32(0)) if args else r
            r = r if isinstance(r, Tracer) else builder.constant(r, dtype_name(np.asarray(r).dtype))
        outs.append(r.id)
    prog_name = name or getattr(f, "__name__", "f")
    if not prog_name.isidentifier() or prog_name == "<lambda>":
        prog_name = "f"
    # types computed by shape rules while recording are checked (inlined parsed ones are not)
    return builder.program(prog_name, outs), single
