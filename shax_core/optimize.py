"""Optimizers shaped like optax's, over pytrees, and ``minimize``.

An optimizer is a pair of pure functions over pytrees of arrays (as ``optax`` spells them):
``init(params) -> state`` and ``update(grads, state, params) -> (updates, state')``; then
``apply_updates(params, updates)`` is ``params + updates`` leaf by leaf. ``iterate`` drives
one with any ``value_and_grad`` callable (local, or a compiled VJP next to a server's cache)
and yields every point it visits; ``minimize`` collects the trajectory.

>>> opt = gd(0.5)
>>> params = {"w": np.float32(1.0)}
>>> updates, state = opt.update({"w": np.float32(2.0)}, opt.init(params), params)
>>> apply_updates(params, updates)
{'w': array(0., dtype=float32)}

The seed's run: f(x, y) = sin(x+y)·cos(x+y) from (0.5, -0.75) with step 0.05 in f32:

>>> import numpy as np
>>> from shax_core.demo import f
>>> result = minimize(f, [np.float32(0.5), np.float32(-0.75)], steps=40, lr=0.05)
>>> [str(p.value) for p in result.trajectory[:2]]
['-0.23971277', '-0.31265023']
>>> [str(x) for x in result.params], str(result.value)
(['0.23235208', '-1.0176479'], '-0.5')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from shax_core._evaluate import Executable
from shax_core.api import argnums_indices
from shax_core.api import value_and_grad as api_value_and_grad
from shax_core.ir import Program, ShaxError
from shax_core.pipeline import vjp_program
from shax_core.tree_util import tree_leaves, tree_map


class Optimizer(NamedTuple):
    """optax's GradientTransformation: ``init(params)``, ``update(grads, state, params)``."""

    init: Callable
    update: Callable


def _scaled(lr: float, x):
    return np.asarray(x).dtype.type(lr)


def apply_updates(params, updates):
    """``params + updates`` leaf by leaf, keeping each parameter's dtype."""
    return tree_map(
        lambda p, u: np.asarray(np.asarray(p) + u, dtype=np.asarray(p).dtype), params, updates
    )


def gd(lr: float = 0.05) -> Optimizer:
    """updates = −lr·g"""

    def update(grads, state, params=None):
        return tree_map(lambda g: -(_scaled(lr, g) * g), grads), state

    return Optimizer(init=lambda params: (), update=update)


def momentum(lr: float = 0.05, mass: float = 0.9) -> Optimizer:
    """v ← mass·v + g;  updates = −lr·v"""

    def update(grads, velocity, params=None):
        velocity = tree_map(lambda v, g: v * _scaled(mass, v) + g, velocity, grads)
        return tree_map(lambda v: -(_scaled(lr, v) * v), velocity), velocity

    return Optimizer(init=lambda params: tree_map(np.zeros_like, params), update=update)


class AdamState(NamedTuple):
    count: int
    mu: Any
    nu: Any


def adam(lr: float = 0.05, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma & Ba): bias-corrected first and second moment estimates."""

    def init(params):
        return AdamState(0, tree_map(np.zeros_like, params), tree_map(np.zeros_like, params))

    def update(grads, state, params=None):
        mu = tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        t = state.count + 1

        def step(m, v):
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            return -(lr * m_hat / (np.sqrt(v_hat) + eps))

        return tree_map(step, mu, nu), AdamState(t, mu, nu)

    return Optimizer(init=init, update=update)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {"gd": gd, "momentum": momentum, "adam": adam}


def make_optimizer(name: str, **hyper) -> Optimizer:
    try:
        return OPTIMIZERS[name](**hyper)
    except KeyError:
        raise ShaxError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}") from None


@dataclass(frozen=True)
class Point:
    step: int  # 1-based: the first point is the start
    params: Any  # the structure of x0
    value: np.ndarray


def iterate(
    value_and_grad: Callable[[Any], tuple[np.ndarray, Any]],
    x0: Any,
    steps: int,
    optimizer: Optimizer,
) -> Iterator[Point]:
    """Yield ``steps`` points: the start, then one per update. ``x0`` is any pytree of arrays
    (a list of them, for a program's inputs); ``value_and_grad(params)`` returns the value
    and gradients with ``x0``'s structure."""
    params = tree_map(np.array, x0)
    state = optimizer.init(params)
    for k in range(steps):
        value, grads = value_and_grad(params)
        yield Point(k + 1, params, value)
        if k + 1 < steps:
            updates, state = optimizer.update(grads, state, params)
            params = apply_updates(params, updates)


@dataclass
class Result:
    params: Any  # the structure of x0
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
    *,
    argnums: int | Sequence[int] | None = None,
    **hyper,
) -> Result:
    """Minimize a scalar function (a Program, or a Python function of pytrees) from ``x0``,
    a sequence with one entry (any pytree) per argument. Only the arguments in ``argnums``
    (default: all) move; the others are passed unchanged on every step. ``params`` come back
    as a list in ``x0``'s structure."""
    args = [tree_map(_as_float_array, a) for a in x0]
    nums = tuple(range(len(args))) if argnums is None else argnums_indices(argnums, len(args))
    if isinstance(f_or_program, Program):
        wrt = _program_wrt(f_or_program, args, nums)
        flat_vg = program_value_and_grad(f_or_program, wrt)

        def value_and_grad(moving):
            full = list(args)
            for i, x in zip(nums, moving, strict=True):
                full[i] = x
            value, grads = flat_vg(full)
            return value, grads
    else:
        vg = api_value_and_grad(f_or_program, argnums=nums)

        def value_and_grad(moving):
            full = list(args)
            for i, x in zip(nums, moving, strict=True):
                full[i] = x
            value, grads = vg(*full)
            return value, list(grads)

    opt = make_optimizer(optimizer, lr=lr, **hyper)
    trajectory = []
    for point in iterate(value_and_grad, [args[i] for i in nums], steps, opt):
        trajectory.append(point)
        if callback:
            callback(_full_point(point, args, nums))
    last = trajectory[-1]
    full = _full_point(last, args, nums)
    return Result(full.params, last.value, [_full_point(p, args, nums) for p in trajectory])


def _as_float_array(x):
    a = np.asarray(x)
    return a.astype(np.float32) if a.dtype.kind in "iu" else a


def _program_wrt(program: Program, args, nums) -> list[int]:
    if any(tree_leaves(a) != [a] for a in args):
        raise ShaxError("minimize over a Program takes one array per input")
    return list(nums)


def _full_point(point: Point, args, nums) -> Point:
    full = list(args)
    for i, x in zip(nums, point.params, strict=True):
        full[i] = x
    return Point(point.step, full, point.value)
