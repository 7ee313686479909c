"""Gradient descent (plain, momentum, Adam) over any differentiable program.

An optimizer is a pair of pure functions: ``init(x) -> state`` and
``update(x, g, state, step) -> (x', state')`` over lists of arrays. ``iterate`` drives one
with any ``value_and_grad`` callable (local, or a compiled VJP next to a server's cache) and
yields every point it visits; ``minimize`` collects the trajectory.

The seed's run: f(x, y) = sin(x+y)·cos(x+y) from (0.5, -0.75) with step 0.05 in f32 visits
points whose values are -0.23971277, -0.31265023, ... and whose 40th point is
(0.23235208, -1.0176479) with value -0.5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from shax_core._evaluate import Executable
from shax_core._trace import trace
from shax_core.ir import Program, ShaxError
from shax_core.pipeline import vjp_program


@dataclass(frozen=True)
class Optimizer:
    init: Callable
    update: Callable


def gd(lr: float = 0.05) -> Optimizer:
    """x ← x − lr·g"""
    return Optimizer(
        init=lambda xs: None,
        update=lambda xs, gs, state, k: ([x - x.dtype.type(lr) * g for x, g in zip(xs, gs)], None),
    )


def momentum(lr: float = 0.05, mass: float = 0.9) -> Optimizer:
    """v ← mass·v + g;  x ← x − lr·v"""

    def update(xs, gs, vs, k):
        vs = [v * v.dtype.type(mass) + g for v, g in zip(vs, gs)]
        return [x - x.dtype.type(lr) * v for x, v in zip(xs, vs)], vs

    return Optimizer(init=lambda xs: [np.zeros_like(x) for x in xs], update=update)


def adam(lr: float = 0.05, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma & Ba): bias-corrected first and second moment estimates."""

    def update(xs, gs, state, k):
        ms, vs = state
        ms = [b1 * m + (1 - b1) * g for m, g in zip(ms, gs)]
        vs = [b2 * v + (1 - b2) * g * g for v, g in zip(vs, gs)]
        t = k + 1
        new = []
        for x, m, v in zip(xs, ms, vs):
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            new.append((x - lr * m_hat / (np.sqrt(v_hat) + eps)).astype(x.dtype))
        return new, (ms, vs)

    return Optimizer(
        init=lambda xs: ([np.zeros_like(x) for x in xs], [np.zeros_like(x) for x in xs]),
        update=update,
    )


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {"gd": gd, "momentum": momentum, "adam": adam}


def make_optimizer(name: str, **hyper) -> Optimizer:
    try:
        return OPTIMIZERS[name](**hyper)
    except KeyError:
        raise ShaxError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}") from None


@dataclass(frozen=True)
class Point:
    step: int  # 1-based: the first point is the start
    params: list[np.ndarray]
    value: np.ndarray


def iterate(
    value_and_grad: Callable[[list[np.ndarray]], tuple[np.ndarray, list[np.ndarray]]],
    x0: Sequence,
    steps: int,
    optimizer: Optimizer,
) -> Iterator[Point]:
    """Yield ``steps`` points: the start, then one per update."""
    xs = [np.array(x) for x in x0]
    state = optimizer.init(xs)
    for k in range(steps):
        value, grads = value_and_grad(xs)
        yield Point(k + 1, xs, value)
        if k + 1 < steps:
            xs, state = optimizer.update(xs, grads, state, k)
            xs = [np.asarray(x) for x in xs]


@dataclass
class Result:
    params: list[np.ndarray]
    value: np.ndarray
    trajectory: list[Point] = field(repr=False)

    @property
    def values(self) -> list[float]:
        return [float(p.value) for p in self.trajectory]


def program_value_and_grad(program: Program, wrt: Sequence[int] | None = None):
    """``xs -> (value, grads)`` from a program with one scalar output (via its zipped VJP)."""
    if len(program.outs) != 1 or (program.outs[0].type and program.outs[0].type.shape != ()):
        raise ShaxError("minimize needs a program with one scalar output")
    exe = Executable(vjp_program(program, wrt))
    one = np.ones((), exe.out_types[0].np_dtype)

    def value_and_grad(xs):
        value, *grads = exe(*xs, one)
        return value, grads

    return value_and_grad


def minimize(
    f_or_program,
    x0: Sequence,
    steps: int = 40,
    lr: float = 0.05,
    optimizer: str = "gd",
    callback: Callable[[Point], None] | None = None,
    **hyper,
) -> Result:
    """Minimize a scalar function (a Program, or a Python function traced at x0's types)."""
    x0 = [np.asarray(x) for x in x0]
    x0 = [x.astype(np.float32) if x.dtype.kind in "iu" else x for x in x0]
    program = f_or_program if isinstance(f_or_program, Program) else trace(f_or_program, *x0)
    opt = make_optimizer(optimizer, lr=lr, **hyper)
    trajectory = []
    for point in iterate(program_value_and_grad(program), x0, steps, opt):
        trajectory.append(point)
        if callback:
            callback(point)
    last = trajectory[-1]
    return Result(last.params, last.value, trajectory)
