"""Gradient-checking helpers shared by the AD test files (JAX ``check_grads`` style).

- ``check_jvp``: the JVP program's output tangents against central finite differences in f64
  along random directions.
- ``check_transpose``: the dot-product test ``<ct, J t> == <J^T ct, t>`` with the linear
  program from ``linearize_program`` and its transpose from ``transpose_program``.
- ``check_transpose_linear``: the same test for a program that is itself linear in its leading
  inputs (a linear primitive transposed directly, without linearizing first).

All of them evaluate programs with ``shax_core.evaluate`` and verify every program they get.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import shax_core as sx
from shax_core.ir import Eqn, Program, Type, Var

FD_EPS = 1e-6


def one_eqn_program(prim: str, params: tuple, in_types: Sequence[Type], name: str = "f"):
    """``def f(a0, a1, ...) = let y = prim[params] a0 a1 ... in [y]``, typed by ``infer``."""
    ins = tuple(Var(f"a{i}", t) for i, t in enumerate(in_types))
    out = Var("y")
    return sx.verify(sx.infer(Program(name, ins, (Eqn(out, prim, tuple(params), ins),), (out,))))


def float_indices(program: Program) -> tuple[int, ...]:
    return tuple(i for i, p in enumerate(program.params) if p.type.is_float)


def random_like(rng: np.random.Generator, t: Type, low=-1.0, high=1.0) -> np.ndarray:
    if t.dtype == "bool":
        return rng.random(t.shape) < 0.5
    return rng.uniform(low, high, t.shape).astype(t.np_dtype)


def zeros_of(t: Type) -> np.ndarray:
    return np.zeros(t.shape, t.np_dtype)


def vdot(xs, ys) -> float:
    return float(
        sum(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in zip(xs, ys))
    )


def fd_jvp(program: Program, args, wrt, tangents, eps: float = FD_EPS) -> list[np.ndarray]:
    """Central differences ``(f(x + eps t) - f(x - eps t)) / 2 eps`` of the float outputs."""
    plus, minus = list(args), list(args)
    for i, t in zip(wrt, tangents, strict=True):
        plus[i] = args[i] + eps * t
        minus[i] = args[i] - eps * t
    fp = sx.evaluate(program, *plus)
    fm = sx.evaluate(program, *minus)
    return [
        (a - b) / (2 * eps) if v.type.is_float else None
        for a, b, v in zip(fp, fm, program.outs, strict=True)
    ]


def assert_close(actual, expected, rtol=1e-5, atol=1e-8, what=""):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=what)


def check_jvp(program: Program, args, rng, wrt=None, rtol=1e-5, atol=1e-7, eps=FD_EPS):
    """The zipped JVP program agrees with central finite differences (and keeps the primal)."""
    wrt = float_indices(program) if wrt is None else tuple(wrt)
    jp = sx.verify(sx.jvp_program(program, wrt))
    tangents = [random_like(rng, program.params[i].type) for i in wrt]
    outs = sx.evaluate(jp, *args, *tangents)
    n = len(program.outs)
    primal, tan = outs[:n], outs[n:]
    assert len(tan) == n
    for got, want in zip(primal, sx.evaluate(program, *args), strict=True):
        assert_close(got, want, rtol=1e-12, atol=1e-12, what="jvp primal output")
    numeric = fd_jvp(program, args, wrt, tangents, eps)
    for k, (got, want, v) in enumerate(zip(tan, numeric, program.outs, strict=True)):
        assert got.shape == v.type.shape, (got.shape, v.type)
        if want is None:
            continue
        assert got.dtype == v.type.np_dtype
        assert_close(got, want, rtol=rtol, atol=atol, what=f"tangent of output {k}")
    return tan


def linearize_and_transpose(program: Program, wrt):
    primal, linear = sx.linearize_program(program, wrt)
    transposed = sx.transpose_program(linear, len(wrt))
    for q in (primal, linear, transposed):
        sx.verify(q)
    return primal, linear, transposed


def check_transpose(program: Program, args, rng, wrt=None, rtol=1e-10):
    """Dot-product test on the linear program of ``program`` and its transpose.

    Also checks the linear program's tangents against finite differences' direction of use:
    ``J t`` from the linear program must match the JVP program's tangents.
    """
    wrt = float_indices(program) if wrt is None else tuple(wrt)
    primal, linear, transposed = linearize_and_transpose(program, wrt)
    n = len(program.outs)
    values = sx.evaluate(primal, *args)
    outs, residuals = values[:n], values[n:]
    for got, want in zip(outs, sx.evaluate(program, *args), strict=True):
        assert_close(got, want, rtol=1e-12, atol=1e-12, what="primal output")
    t = [random_like(rng, program.params[i].type) for i in wrt]
    jt = sx.evaluate(linear, *t, *residuals)
    ct = [random_like(rng, v.type) if v.type.is_float else zeros_of(v.type) for v in program.outs]
    jtct = sx.evaluate(transposed, *ct, *residuals)
    assert len(jtct) == len(wrt)
    for g, i in zip(jtct, wrt, strict=True):
        assert g.shape == program.params[i].type.shape
        assert g.dtype == program.params[i].type.np_dtype
    float_out = [k for k, v in enumerate(program.outs) if v.type.is_float]
    lhs = vdot([ct[k] for k in float_out], [jt[k] for k in float_out])
    rhs = vdot(jtct, t)
    scale = max(
        1.0,
        vdot([np.abs(ct[k]) for k in float_out], [np.abs(jt[k]) for k in float_out]),
        vdot([np.abs(g) for g in jtct], [np.abs(x) for x in t]),
    )
    assert abs(lhs - rhs) <= rtol * scale, f"<ct, J t> = {lhs!r} but <J^T ct, t> = {rhs!r}"
    return jt, jtct, t, ct


def check_transpose_linear(program: Program, num_linear: int, args_rest, rng, rtol=1e-10):
    """``program`` is linear in its first ``num_linear`` inputs (the rest are fixed residuals):
    transpose it directly and check ``<ct, P(t)> == <P^T ct, t>``."""
    transposed = sx.verify(sx.transpose_program(program, num_linear))
    t = [random_like(rng, p.type) for p in program.params[:num_linear]]
    jt = sx.evaluate(program, *t, *args_rest)
    ct = [random_like(rng, v.type) for v in program.outs]
    jtct = sx.evaluate(transposed, *ct, *args_rest)
    for g, p in zip(jtct, program.params[:num_linear], strict=True):
        assert g.shape == p.type.shape and g.dtype == p.type.np_dtype
    lhs, rhs = vdot(ct, jt), vdot(jtct, t)
    scale = max(
        1.0,
        vdot([np.abs(c) for c in ct], [np.abs(j) for j in jt]),
        vdot([np.abs(g) for g in jtct], [np.abs(x) for x in t]),
    )
    assert abs(lhs - rhs) <= rtol * scale, f"<ct, P t> = {lhs!r} but <P^T ct, t> = {rhs!r}"
    return jtct


def check_hvp(program: Program, args, rng, eps: float = 1e-5, rtol: float = 1e-4):
    """Reverse over reverse: ``h = vjp_program(vjp_program(p))`` with cotangent ``v`` on the
    gradients gives ``H v`` (H the Hessian of ``<ct, f>``), checked against central differences
    of the gradient along v, and against forward over reverse (``jvp_program`` of the VJP)."""
    wrt = float_indices(program)
    n = len(program.outs)
    g = sx.verify(sx.vjp_program(program, wrt))  # (inputs..., cts...) -> [outs..., grads...]
    h = sx.verify(sx.vjp_program(g, wrt))
    assert sx.parse(str(h)) == h
    ct = [random_like(rng, v.type) if v.type.is_float else zeros_of(v.type) for v in program.outs]
    v = [random_like(rng, program.params[i].type) for i in wrt]
    zero_outs = [zeros_of(o.type) for o in program.outs]
    res = sx.evaluate(h, *args, *ct, *zero_outs, *v)
    assert len(res) == n + len(wrt) + len(wrt)
    grads, hv = res[n : n + len(wrt)], res[n + len(wrt) :]

    def gradient(xs):
        return sx.evaluate(g, *xs, *ct)[n:]

    assert_all_close(grads, gradient(args), rtol=1e-12)
    plus, minus = list(args), list(args)
    for i, d in zip(wrt, v, strict=True):
        plus[i] = args[i] + eps * d
        minus[i] = args[i] - eps * d
    numeric = [(a - b) / (2 * eps) for a, b in zip(gradient(plus), gradient(minus), strict=True)]
    scale = 1.0 + max(float(np.max(np.abs(x), initial=0.0)) for x in grads)
    for got, want in zip(hv, numeric, strict=True):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6 * scale)
    # forward over reverse: the tangents of the gradients along v
    fwd = sx.verify(sx.jvp_program(g, wrt))
    hv_fwd = sx.evaluate(fwd, *args, *ct, *v)[n + len(wrt) + n :]
    assert_all_close(hv_fwd, hv, rtol=1e-9)
    return hv


def assert_all_close(got, want, rtol=1e-10):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape
        scale = max(1.0, float(np.max(np.abs(w), initial=0.0)))
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale)
