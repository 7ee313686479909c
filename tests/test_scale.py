"""Large programs go through the whole pipeline: no recursion limits, no quadratic passes.

The W4 chain on scalars x, y: n times ``x, y = sin(x)*y + cos(y), x*y - y``, then
``out = x + y``: 6 equations per step, so n = 16,667 gives a 100,003-equation program. The
100k size is marked slow (``make test`` runs it); n = 2000 (12,003 equations, already far past
Python's default recursion limit of 1000) runs unmarked.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

import shax_core as sx
import shax_core.core as core
from shax_core.core import Builder
from shax_core.ir import Program, Type

EQNS_PER_STEP = 6


def w4_chain(n: int) -> Program:
    b = Builder()
    x = b.add_param(Type("f64", ()))
    y = b.add_param(Type("f64", ()))
    for _ in range(n):
        x, y = core.bind("sin", x) * y + core.bind("cos", y), x * y - y
    out = x + y
    return Program("w4", tuple(b.params), tuple(b.eqns), (out.variable,))


def w4_numpy(x: float, y: float, n: int) -> float:
    for _ in range(n):
        x, y = np.sin(x) * y + np.cos(y), x * y - y
    return x + y


def check_chain(n: int, x0=0.3, y0=0.5):
    p = w4_chain(n)
    assert len(p.eqns) == EQNS_PER_STEP * n + 1
    start = time.perf_counter()
    v = sx.vjp_program(p)
    seconds = time.perf_counter() - start
    sx.verify(v)
    assert len(v.params) == 3 and len(v.outs) == 3
    # the zipped program stays linear in the size of the original
    assert len(v.eqns) <= 6 * len(p.eqns)
    out, gx, gy = sx.evaluate(v, x0, y0, 1.0)
    np.testing.assert_allclose(out, w4_numpy(x0, y0, n), rtol=1e-12)
    eps = 1e-6
    fd_x = (w4_numpy(x0 + eps, y0, n) - w4_numpy(x0 - eps, y0, n)) / (2 * eps)
    fd_y = (w4_numpy(x0, y0 + eps, n) - w4_numpy(x0, y0 - eps, n)) / (2 * eps)
    np.testing.assert_allclose([gx, gy], [fd_x, fd_y], rtol=1e-6, atol=1e-8)
    return p, v, seconds


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_short_chain_gradients_match_finite_differences(n):
    # short chains have non-trivial gradients (long ones contract to a fixed point)
    for x0, y0 in [(0.3, 0.5), (-1.1, 0.7), (0.9, -0.4)]:
        p = w4_chain(n)
        _, gx, gy = sx.evaluate(sx.vjp_program(p), x0, y0, 1.0)
        assert abs(gx) + abs(gy) > 1e-6
        eps = 1e-6
        fd_x = (w4_numpy(x0 + eps, y0, n) - w4_numpy(x0 - eps, y0, n)) / (2 * eps)
        fd_y = (w4_numpy(x0, y0 + eps, n) - w4_numpy(x0, y0 - eps, n)) / (2 * eps)
        np.testing.assert_allclose([gx, gy], [fd_x, fd_y], rtol=1e-6, atol=1e-9)


def test_chain_2000_goes_through_the_pipeline():
    assert sys.getrecursionlimit() < EQNS_PER_STEP * 2000
    p, _, _ = check_chain(2000)
    j = sx.verify(sx.jvp_program(p))
    out, t = sx.evaluate(j, 0.3, 0.5, 1.0, -2.0)
    np.testing.assert_allclose(out, w4_numpy(0.3, 0.5, 2000), rtol=1e-12)
    assert np.isfinite(t)


def test_chain_200_every_stage_and_text_form():
    p = w4_chain(200)  # 1201 equations, past the default recursion limit
    for name, prog in sx.stages(p).items():
        sx.verify(prog)
        assert sx.parse(str(prog)) == prog, name


def _cpu_seconds(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def test_pipeline_time_grows_linearly():
    """8 times the equations must cost well under 8² times the CPU time."""
    small, large = w4_chain(125), w4_chain(1000)
    t_small = _cpu_seconds(lambda: sx.vjp_program(small), repeat=3)
    t_large = _cpu_seconds(lambda: sx.vjp_program(large), repeat=1)
    assert t_large < 24 * max(t_small, 1e-3), (t_small, t_large)


@pytest.mark.slow
def test_chain_100k_equations_goes_through_vjp_program():
    n = 16_667
    cpu = time.process_time()
    p, v, seconds = check_chain(n)
    cpu = time.process_time() - cpu
    assert len(p.eqns) >= 100_000
    print(
        f"\nvjp_program on {len(p.eqns)} equations: {seconds:.1f} s wall -> {len(v.eqns)} "
        f"equations; build + vjp + verify + evaluate: {cpu:.1f} s CPU"
    )
