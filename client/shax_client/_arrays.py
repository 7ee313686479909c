"""Arrays in and out: pure helpers that turn user arguments into typed NumPy arrays.

Python scalars and integer arrays become f32 (as ``shax_core.trace`` types them); arguments of a
compiled function are cast to the dtype it was compiled for, so ``rf(0.5, 1)`` works on an f32
program. Shapes are left alone: a wrong shape is the server's to report (``InvalidTensor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shax_core import Type, as_type


def spec_type(spec: Any) -> Type:
    """The IR type of a spec or an example (a Type, ``(shape, dtype)``, an array, a scalar)."""
    return as_type(spec)


def example_types(examples: Sequence[Any]) -> tuple[Type, ...]:
    """Types of example arguments, as tracing would see them."""
    return tuple(spec_type(x) for x in examples)


def as_typed(x: Any, type_: Type) -> np.ndarray:
    """``x`` as an array of ``type_``'s dtype (shape unchanged)."""
    dtype = type_.np_dtype
    a = np.asarray(x)
    if a.dtype == dtype:
        return a
    if (a.dtype.kind == "b") != (dtype.kind == "b"):
        raise TypeError(f"argument of dtype {a.dtype} cannot be passed where {type_} is expected")
    return a.astype(dtype)


def as_typed_all(args: Sequence[Any], types: Sequence[Type], what: str = "arguments") -> list:
    """Every argument cast to its type; the count must match."""
    if len(args) != len(types):
        raise TypeError(f"expected {len(types)} {what}, got {len(args)}")
    return [as_typed(a, t) for a, t in zip(args, types, strict=True)]


def unpack(values: Sequence[np.ndarray], single: bool) -> Any:
    """One array when the function returned one value, else a tuple."""
    return values[0] if single else tuple(values)


def nbytes(types: Sequence[Type]) -> int:
    """Bytes of arrays of these types (for the binary-encoding decision on outputs)."""
    return sum(int(np.prod(t.shape, dtype=np.int64)) * t.np_dtype.itemsize for t in types)
