"""Parameters that Python calls equal but that compute different values.

``0.0 == -0.0`` and ``True == 1`` in Python; an IR equation with ``-0.0`` in its parameters is
not the one with ``0.0``. CSE, the simplifier's keys, the plan's kernel memo and the rule
tapes must keep them apart, or a program returns the other zero (and ``1 / x`` the other
infinity). Checked from the user's side: traced functions, their cleanup, compile and
gradients.
"""

from __future__ import annotations

import numpy as np

import shax_core as sx
import shax_core.numpy as snp
from shax_core import passes
from shax_core.ir import exact_key


def _signs(values):
    return [np.signbit(np.asarray(v)).tolist() for v in values]


def signed_zeros(x):
    return (
        x * 0.0,
        x * -0.0,
        snp.pad(x, 1, constant_values=-0.0),
        snp.pad(x, 1, constant_values=0.0),
        1.0 / (x * -0.0),
        1.0 / (x * 0.0),
    )


def test_cleanup_keeps_zeros_of_both_signs_apart():
    x = np.ones(3)
    p = sx.trace(signed_zeros, x)
    want = sx.evaluate(p, x)
    got = sx.evaluate(passes.cleanup(p), x)
    assert _signs(got) == _signs(want)
    assert np.all(np.asarray(got[4]) == -np.inf) and np.all(np.asarray(got[5]) == np.inf)


def test_compiled_kernels_keep_zeros_of_both_signs_apart():
    x = np.ones(3)
    p = sx.trace(signed_zeros, x)
    assert _signs(sx.compile(p)(x)) == _signs(signed_zeros(x))


def test_gradients_through_signed_zero_pads_and_scales():
    def f(x):
        a = snp.pad(x, 1, constant_values=-0.0)
        b = snp.pad(x, 1, constant_values=0.0)
        return snp.sum(1.0 / (a * 1e-300 + b * 0.0 + 1.0) + x.sum() * -0.0)

    x = np.linspace(0.5, 1.5, 4)
    g = sx.grad(f)(x)
    eps = 1e-6
    fd = [(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(4)]
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_exact_keys_tell_apart_what_python_equality_does_not():
    assert exact_key((0.0,)) != exact_key((-0.0,))
    assert exact_key(((), (1,), "i32")) != exact_key(((), (True,), "i32"))
    assert exact_key(((2, 3), (0, 1))) == ((2, 3), (0, 1))  # plain parameters are their key
    assert exact_key((float("nan"),)) == exact_key((float("nan"),))


def test_linearize_tapes_keep_parameters_that_only_compare_equal_apart():
    """The rule memo replays a tape per (primitive, parameters, operand state): an application
    with ``-0.0`` must not replay the tape recorded for ``0.0`` (a primitive with a float
    parameter: ``pad``'s padding value, applied to many operands of one type)."""

    def f(x):
        total = 0.0
        for k, value in enumerate((0.0, 0.0, 0.0, -0.0, 0.0, -0.0, -0.0)):
            total = total + 1.0 / snp.pad(x * (k + 2.0), 1, constant_values=value)
        return total

    x = np.linspace(0.5, 1.5, 3)
    p = sx.trace(f, x)
    st = sx.stages(p, policy="save")
    pads = [e.params for e in st["linearized"].eqns if e.prim == "pad"]
    traced = [e.params for e in p.eqns if e.prim == "pad"]
    assert [str(v) for v in pads] == [str(v) for v in traced]
    want = sx.evaluate(p, x)[0]
    got = sx.evaluate(st["linearized"], x)[0]
    assert np.array_equal(np.signbit(got), np.signbit(want)) and np.array_equal(
        got, want, equal_nan=True
    )
