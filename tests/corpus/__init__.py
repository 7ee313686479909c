"""A corpus of functions written the way JAX users write them.

Each entry is ``def name(np, *arrays)``: ``np`` is ``jax.numpy`` or ``shax_core.numpy`` and the
body uses only what a JAX user would write, so the same source runs on both. ``libs(np)`` gives
the companion namespaces of the same backend (``nn``, ``special``, ``linalg`` for
``scipy.linalg``, ``lax``), as a JAX user imports ``jax.nn`` next to ``jax.numpy``.

Inputs are declared with the decorator: ``R`` uniform floats, ``P`` positive floats, ``SPD``
symmetric positive-definite matrices, ``I`` integer indices, ``B`` booleans, ``C`` a fixed
array. Entries marked ``f64=True`` are float64 programs (JAX runs them with x64 enabled).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as onp

DOMAINS = (
    "elementwise",
    "reductions",
    "ml",
    "attention",
    "statistics",
    "gp",
    "physics",
    "optim",
    "indexing",
    "shapes",
    "linalg",
    "float64",
)


@dataclass(frozen=True)
class Spec:
    """How one input is drawn: ``make(rng, float_dtype) -> array``."""

    kind: str
    shape: tuple
    lo: float = -1.0
    hi: float = 1.0
    value: object = None

    def make(self, rng, fdtype):
        if self.kind == "R":
            return rng.uniform(self.lo, self.hi, self.shape).astype(fdtype)
        if self.kind == "SPD":
            n = self.shape[-1]
            a = rng.uniform(-1, 1, self.shape[:-1] + (n, n))
            m = a @ onp.swapaxes(a, -1, -2) + n * onp.eye(n)
            return m.astype(fdtype)
        if self.kind == "I":
            return rng.integers(int(self.lo), int(self.hi), self.shape).astype(onp.int32)
        if self.kind == "B":
            return rng.random(self.shape) < 0.5
        if self.kind == "C":
            a = onp.asarray(self.value)
            return a.astype(fdtype) if a.dtype.kind == "f" else a
        raise AssertionError(self.kind)


def R(*shape, lo=-1.0, hi=1.0):
    return Spec("R", shape, lo, hi)


def P(*shape, lo=0.5, hi=2.0):
    return Spec("R", shape, lo, hi)


def SPD(*shape):
    return Spec("SPD", shape)


def I(hi, *shape, lo=0):  # noqa: E743
    return Spec("I", shape, lo, hi)


def B(*shape):
    return Spec("B", shape)


def C(value):
    return Spec("C", (), value=value)


@dataclass(frozen=True)
class Entry:
    name: str
    domain: str
    fn: object
    specs: tuple
    f64: bool = False
    # inputs whose gradient is not compared (JAX has none either: piecewise-constant spots)
    note: str = ""
    fd_rtol: float = 1e-5
    tags: tuple = field(default_factory=tuple)

    def inputs(self, seed=0, fdtype=None):
        rng = onp.random.default_rng(seed)
        fdtype = fdtype or (onp.float64 if self.f64 else onp.float32)
        return [s.make(rng, fdtype) for s in self.specs]


CORPUS: list[Entry] = []

# entries that meet a refusal: entry name -> the unsupported name (listed in docs/numpy.md)
EXPECTED_UNSUPPORTED = {"norm_matrix_spectral": "linalg.norm"}


def case(*specs, f64=False, fd_rtol=1e-5, note="", domain=None):
    def register(fn):
        module = fn.__module__.rsplit(".", 1)[-1].removeprefix("c_")
        dom = domain or ("float64" if f64 else module)
        CORPUS.append(Entry(fn.__name__, dom, fn, specs, f64, note, fd_rtol))
        return fn

    return register


def libs(np):
    """``nn``, ``special``, ``linalg`` (scipy.linalg) and ``lax`` of the backend ``np`` is."""
    if np.__name__.startswith("jax"):
        import jax

        return SimpleNamespace(
            nn=jax.nn,
            special=importlib.import_module("jax.scipy.special"),
            linalg=importlib.import_module("jax.scipy.linalg"),
            lax=jax.lax,
        )
    import shax_core.lax
    import shax_core.nn
    import shax_core.scipy.linalg
    import shax_core.scipy.special

    return SimpleNamespace(
        nn=shax_core.nn,
        special=shax_core.scipy.special,
        linalg=shax_core.scipy.linalg,
        lax=shax_core.lax,
    )


def load() -> list[Entry]:
    for module in ("elementwise", "reductions", "ml", "science", "indexing", "shapes", "linalg"):
        importlib.import_module(f"{__name__}.c_{module}")
    return CORPUS
