"""Property tests on random programs with loops and branches (hypothesis): the random
straight-line programs of ``test_properties`` become the body of a ``scan`` (with a carry when
the body's first result has its first input's type, else scanning that input) or the branches
of a ``cond``, so every rewrite, stage and derivative is also checked on nested bodies.

Properties: print/parse and JSON round trips of every stage; every pass keeps types and values;
agreement with the same loop unrolled in Python (bitwise: the same ops in the same order); the
JVP against central finite differences; VJP and JVP by the dot-product test.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from test_properties import PASSES, SETTINGS, assert_fd_close, assert_values, fd, programs

import shax_core as sx
from shax_core.graph import from_graph, to_graph
from shax_core.ir import Eqn, Program, Var
from tests.adcheck import random_like, vdot

LENGTH = 2


def scan_of(body: Program, reverse: bool) -> Program:
    """``scan`` over ``body``: its first input is the carry if its first result has that type
    (the rest of the results are stacked), else the first input is scanned; the other inputs
    are loop-invariant consts."""
    first, rest = body.params[0], body.params[1:]
    carried = body.outs[0].type == first.type
    body = body.replace(params=(*rest, first), name="body", checked=True)
    operand_type = first.type if carried else first.type.with_shape((LENGTH, *first.type.shape))
    params = tuple(Var(f"p{i}", p.type) for i, p in enumerate(rest)) + (Var("s", operand_type),)
    out_types = sx.infer(body).out_types
    n_carry = 1 if carried else 0
    outs = tuple(Var(f"r{k}") for k in range(len(out_types)))
    eqn = Eqn(
        outs[0],
        "scan",
        (LENGTH, "reverse" if reverse else "forward", len(rest), n_carry, "save", body),
        params,
        outs[1:],
    )
    return sx.verify(sx.infer(Program("looped", params, (eqn,), outs)))


def unrolled(looped: Program, args):
    """The scan run step by step with the body's own plan (the reference)."""
    eqn = looped.eqns[0]
    length, direction, nc, nk, _, body = eqn.params
    consts, operand = list(args[:nc]), args[nc]
    steps = range(length - 1, -1, -1) if direction == "reverse" else range(length)
    carry, ys = ([operand] if nk else []), {}
    for i in steps:
        outs = sx.evaluate(body, *consts, *(carry if nk else [operand[i]]))
        carry, ys[i] = outs[:nk], outs[nk:]
    stacked = [np.stack([ys[i][k] for i in range(length)]) for k in range(len(ys[0]))]
    return carry + stacked


def cond_of(a: Program, b: Program) -> Program | None:
    if a.in_types != b.in_types or a.out_types != b.out_types:
        return None
    params = (Var("i", sx.Type("f64", ())),) + tuple(
        Var(f"p{k}", t) for k, t in enumerate(a.in_types)
    )
    outs = tuple(Var(f"r{k}") for k in range(len(a.outs)))
    branches = (a.replace(name="left", checked=True), b.replace(name="right", checked=True))
    eqn = Eqn(outs[0], "cond", (branches,), params, outs[1:])
    return sx.verify(sx.infer(Program("branched", params, (eqn,), outs)))


@st.composite
def looped_programs(draw):
    body, seed = draw(programs(max_ops=6))
    return scan_of(body, draw(st.booleans())), seed


def loop_inputs(program, seed):
    rng = np.random.default_rng(seed)
    # bounded inputs: a carry goes through the body twice
    return [rng.uniform(-0.5, 0.5, p.type.shape) for p in program.params], rng


@SETTINGS
@given(looped_programs())
def test_loop_stages_round_trip_and_agree_with_unrolled(case):
    p, seed = case
    args, _ = loop_inputs(p, seed)
    want = unrolled(p, args)
    got = sx.evaluate(p, *args)
    for g, w in zip(got, want, strict=True):
        assert np.asarray(g).tobytes() == np.asarray(w).tobytes()
    for name, stage in sx.stages(p).items():
        sx.verify(stage)
        assert sx.parse(str(stage)) == stage, name
        assert from_graph(to_graph(stage)) == stage, name


@SETTINGS
@given(looped_programs(), st.lists(st.sampled_from(sorted(PASSES)), min_size=1, max_size=3))
def test_passes_keep_loop_values(case, pass_names):
    p, seed = case
    args, _ = loop_inputs(p, seed)
    want = sx.evaluate(p, *args)
    q = p
    for name in pass_names:
        q = sx.verify(PASSES[name](q))
        assert q.in_types == p.in_types and q.out_types == p.out_types, name
        assert_values(sx.evaluate(q, *args), want)


@SETTINGS
@given(looped_programs())
def test_loop_jvp_matches_finite_differences_and_vjp(case):
    p, seed = case
    args, rng = loop_inputs(p, seed)
    n = len(p.outs)
    t = [random_like(rng, q.type) for q in p.params]
    out = sx.evaluate(sx.jvp_program(p), *args, *t)
    assert_fd_close(out[n:], fd(p, args, t, 1e-6), out[:n])
    ct = [rng.uniform(-1, 1, v.type.shape) for v in p.outs]
    jtct = sx.evaluate(sx.vjp_program(p), *args, *ct)[n:]
    lhs, rhs = vdot(ct, out[n:]), vdot(jtct, t)
    scale = max(1.0, vdot([np.abs(c) for c in ct], [np.abs(j) for j in out[n:]]))
    assert abs(lhs - rhs) <= 1e-9 * scale, (lhs, rhs)


@SETTINGS
@given(programs(max_ops=6), programs(max_ops=6), st.sampled_from([-1.0, 0.5, 1.5]))
def test_cond_of_random_branches(left, right, index):
    (a, seed), (b, _) = left, right
    p = cond_of(a, a) if cond_of(a, b) is None else cond_of(a, b)
    other = b if cond_of(a, b) is not None else a
    args, rng = loop_inputs(p, seed)
    args[0] = np.float64(index)
    chosen = a if index < 1.0 else other
    assert_values(sx.evaluate(p, *args), sx.evaluate(chosen, *args[1:]), rtol=0)
    assert sx.parse(str(p)) == p and from_graph(to_graph(p)) == p
    n = len(p.outs)
    t = [random_like(rng, q.type) for q in p.params]
    t[0] = np.float64(0.0)  # the index has no tangent (and FD must not cross a branch)
    out = sx.evaluate(sx.jvp_program(p), *args, *t)
    assert_fd_close(out[n:], fd(p, args, t, 1e-6), out[:n])
    ct = [rng.uniform(-1, 1, v.type.shape) for v in p.outs]
    jtct = sx.evaluate(sx.vjp_program(p), *args, *ct)[n:]
    lhs, rhs = vdot(ct, out[n:]), vdot(jtct, t)
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs)), (lhs, rhs)
