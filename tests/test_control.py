"""Structured control flow: scan, cond/switch, fori_loop, while_loop, written as JAX users write
them (``shax_core.lax``), checked against finite differences in f64, the dot-product test,
second order, and the same program unrolled in Python."""

from __future__ import annotations

import re

import numpy as np
import pytest

import shax_core as sx
import shax_core.numpy as snp
from shax_core import lax
from shax_core.graph import canonical_text, content_hash, from_graph, to_graph
from shax_core.passes import cleanup, dce
from tests.adcheck import check_hvp, check_jvp, check_transpose, vdot

RNG = np.random.default_rng(15)


def f64(*shape, low=-1.0, high=1.0):
    return RNG.uniform(low, high, shape).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# the functions, each with an unrolled twin (same ops in the same order)


def rnn(h0, xs, w, u):
    def cell(h, x):
        h = snp.tanh(h @ w + x @ u)
        return h, snp.sum(h * h)

    h, ys = lax.scan(cell, h0, xs)
    return snp.sum(h) + snp.sum(ys)


def rnn_unrolled(h0, xs, w, u):
    h, total = h0, 0.0
    for t in range(xs.shape[0]):
        h = snp.tanh(h @ w + xs[t] @ u)
        total = total + snp.sum(h * h)
    return snp.sum(h) + total


def reverse_scan(c0, xs):
    def step(c, x):
        c = snp.sin(c) * x + c
        return c, c * 2.0

    c, ys = lax.scan(step, c0, xs, reverse=True)
    return snp.sum(c * c) + snp.sum(snp.cos(ys))


def deep(x, y, n=7):
    def body(i, carry):
        x, y = carry
        return snp.sin(x) * y + snp.cos(y), x * y - y

    x, y = lax.fori_loop(0, n, body, (x, y))
    return x + y


def deep_unrolled(x, y, n=7):
    for _ in range(n):
        x, y = snp.sin(x) * y + snp.cos(y), x * y - y
    return x + y


def branchy(p, x, y):
    out = lax.cond(p > 0.0, lambda a, b: snp.sin(a) * b, lambda a, b: snp.exp(a - b), x, y)
    return snp.sum(out)


def switchy(i, x):
    branches = [lambda a: a * a, lambda a: snp.sin(a), lambda a: snp.exp(a) * 3.0]
    return snp.sum(lax.switch(i, branches, x))


CASES = {
    "scan-rnn": (rnn, lambda: [f64(2, 4), f64(5, 2, 3), f64(4, 4) * 0.5, f64(3, 4)]),
    "scan-reverse": (reverse_scan, lambda: [f64(3), f64(6, 3)]),
    "fori_loop": (deep, lambda: [f64(), f64()]),
    "cond-true": (branchy, lambda: [np.float64(1.0), f64(3), f64(3)]),
    "cond-false": (branchy, lambda: [np.float64(-1.0), f64(3), f64(3)]),
    "switch": (switchy, lambda: [np.float64(2.5), f64(4)]),  # off the index jumps
}


def traced(name):
    fn, make = CASES[name]
    args = make()
    return sx.verify(sx.trace(fn, *args)), args


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_eager(name):
    fn, make = CASES[name]
    args = make()
    program, _ = traced(name)
    program = sx.trace(fn, *args)
    got = sx.evaluate(program, *args)[0]
    np.testing.assert_allclose(got, fn(*args), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jvp_matches_finite_differences(name):
    program, args = traced(name)
    check_jvp(program, args, RNG)


@pytest.mark.parametrize("name", sorted(CASES))
def test_transpose_dot_product(name):
    program, args = traced(name)
    check_transpose(program, args, RNG)


@pytest.mark.parametrize("name", sorted(CASES))
def test_vjp_gradient_matches_finite_differences(name):
    program, args = traced(name)
    v = sx.verify(sx.vjp_program(program))
    grads = sx.evaluate(v, *args, np.float64(1.0))[1:]
    wrt = [i for i, p in enumerate(program.params) if p.type.is_float]
    for k, i in enumerate(wrt):
        t = f64(*program.params[i].type.shape)
        plus, minus = list(args), list(args)
        plus[i], minus[i] = args[i] + 1e-6 * t, args[i] - 1e-6 * t
        fd = (sx.evaluate(program, *plus)[0] - sx.evaluate(program, *minus)[0]) / 2e-6
        np.testing.assert_allclose(vdot([grads[k]], [t]), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["scan-rnn", "scan-reverse", "fori_loop", "cond-true"])
def test_grad_of_grad(name):
    program, args = traced(name)
    check_hvp(program, args, RNG)


@pytest.mark.parametrize("policy", ["save", "recompute", "auto"])
def test_residual_policies_agree(policy):
    _, make = CASES["scan-rnn"]
    args = make()

    def f(h0, xs, w, u):
        def cell(h, x):
            return snp.tanh(h @ w + x @ u), snp.sum(h)

        h, ys = lax.scan(cell, h0, xs, policy=policy)
        return snp.sum(h * h) + snp.sum(ys)

    program = sx.trace(f, *args)
    check_transpose(program, args, RNG)
    grads = sx.evaluate(sx.vjp_program(program), *args, np.float64(1.0))[1:]
    ref = sx.evaluate(sx.vjp_program(sx.trace(f, *args)), *args, np.float64(1.0))[1:]
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, rtol=1e-12)


def test_recompute_saves_one_carry_per_step():
    h0, xs, w, u = CASES["scan-rnn"][1]()

    def f(policy):
        def g(h0, xs, w, u):
            def cell(h, x):
                h = snp.tanh(h @ w + x @ u)
                return h, None

            return snp.sum(lax.scan(cell, h0, xs, policy=policy)[0])

        return g

    def stacked(policy):
        primal, _ = sx.linearize_program(sx.trace(f(policy), h0, xs, w, u), policy="save")
        scan = next(e for e in primal.eqns if e.prim == "scan")
        return [v.type for v in scan.extra_outs]

    # save: the carry entering each step (read by h @ dw) and tanh's 1 - h², per step;
    # recompute: only the carry entering each step
    step = sx.Type("f64", (5, 2, 4))
    assert stacked("save") == [step, step]
    assert stacked("recompute") == [step]


@pytest.mark.parametrize(
    "fn,unrolled,args",
    [
        (deep, deep_unrolled, [np.float32(0.5), np.float32(0.3)]),
        (rnn, rnn_unrolled, [f64(2, 4), f64(5, 2, 3), f64(4, 4) * 0.5, f64(3, 4)]),
    ],
)
def test_agrees_with_unrolled_program(fn, unrolled, args):
    loop = sx.evaluate(sx.trace(fn, *args), *args)
    flat = sx.evaluate(sx.trace(unrolled, *args), *args)
    np.testing.assert_allclose(
        loop[0], flat[0], rtol=1e-6 if args[0].dtype == np.float32 else 1e-13
    )
    one = np.ones((), args[0].dtype)
    g_loop = sx.evaluate(sx.vjp_program(sx.trace(fn, *args)), *args, one)
    g_flat = sx.evaluate(sx.vjp_program(sx.trace(unrolled, *args)), *args, one)
    for a, b in zip(g_loop, g_flat):
        np.testing.assert_allclose(a, b, rtol=1e-5 if args[0].dtype == np.float32 else 1e-12)


def test_fori_loop_forward_is_bitwise_the_unrolled_loop():
    args = [np.float32(0.5), np.float32(0.3)]
    loop = sx.evaluate(sx.trace(deep, *args), *args)[0]
    flat = sx.evaluate(sx.trace(deep_unrolled, *args), *args)[0]
    assert loop.tobytes() == flat.tobytes()


# ---------------------------------------------------------------------------------------------
# while_loop: forward and forward mode; reverse mode is a clear error


def newton_sqrt(a):
    def cond_fun(c):
        x, k = c
        return k < 20.0

    def body_fun(c):
        x, k = c
        return 0.5 * (x + a / x), k + 1.0

    return lax.while_loop(cond_fun, body_fun, (a, np.float64(0.0)))[0]


def test_while_loop_forward_and_jvp():
    a = np.float64(2.0)
    p = sx.verify(sx.trace(newton_sqrt, a))
    np.testing.assert_allclose(sx.evaluate(p, a)[0], np.sqrt(2.0), rtol=1e-14)
    _, t = sx.evaluate(sx.jvp_program(p), a, np.float64(1.0))
    np.testing.assert_allclose(t, 0.5 / np.sqrt(2.0), rtol=1e-12)
    check_jvp(p, [a], RNG)


def test_while_loop_under_grad_is_a_clear_error():
    with pytest.raises(sx.ShaxError, match="while_loop.*fori_loop"):
        sx.grad(newton_sqrt)(np.float64(2.0))


def test_fori_loop_with_traced_bound_is_a_while_loop():
    def f(x, n):
        return lax.fori_loop(0.0, n, lambda i, c: c * 2.0, x)

    p = sx.trace(f, np.float64(1.0), np.float64(3.0))
    assert [e.prim for e in p.eqns if e.subprograms] == ["while_loop"]
    assert sx.evaluate(p, 1.0, 5.0)[0] == 32.0


def test_while_loop_stops_at_max_trips():
    def f(x):
        return lax.while_loop(lambda c: c > -1.0, lambda c: c + 1.0, x, max_trips=10)

    p = sx.trace(f, np.float64(0.0))
    with pytest.raises(sx.ShaxError, match="max_trips=10"):
        sx.evaluate(p, 0.0)


# ---------------------------------------------------------------------------------------------
# the IR: text and JSON round trips, hashing, inference errors, passes inside bodies


@pytest.mark.parametrize("name", sorted(CASES) + ["while"])
def test_text_and_graph_round_trips(name):
    if name == "while":
        p = sx.trace(newton_sqrt, np.float64(2.0))
    else:
        p, _ = traced(name)
    for stage in [p, sx.vjp_program(p) if name != "while" else sx.jvp_program(p)]:
        text = sx.print_program(stage)
        assert sx.print_program(sx.parse(text)) == text
        assert sx.parse(text) == stage
        assert from_graph(to_graph(stage)) == stage
        # binding annotations are optional: inference fills them in again
        untyped = "\n".join(
            re.sub(r" :: [a-z0-9]+\[[0-9, ]*\]", "", line)
            if " = " in line and "fromList" not in line
            else line
            for line in text.splitlines()
        )
        assert sx.infer(sx.parse(untyped)) == sx.infer(stage)


def test_same_hash_when_traced_twice_and_names_differ():
    p1, args = traced("scan-rnn")
    p2 = sx.trace(rnn, *args)
    assert content_hash(p1, None, "1") == content_hash(p2, None, "1")
    renamed = sx.parse(sx.print_program(p1).replace("body", "cell"))
    assert content_hash(renamed, None, "1") == content_hash(p1, None, "1")
    other = sx.trace(reverse_scan, f64(4), f64(6, 4))
    assert content_hash(other, None, "1") != content_hash(p1, None, "1")
    assert "def body(" in canonical_text(renamed)


BAD_CARRY = """
def f(a :: f32[3], xs :: f32[4, 3]) =
  let c :: f32[3], ys :: f32[4, 3] = scan 4 forward 0 1 save {
        def step(c :: f32[3], x :: f32[3]) =
          let s :: f32[] = reduce_sum [0] c
          in [s, x]
      } a xs
  in [c]
"""


def test_body_output_not_matching_carry_is_a_clear_error():
    with pytest.raises(sx.ShaxTypeError, match=r"step returns \(f32\[\], f32\[3\]\).*carry"):
        sx.infer(sx.parse(BAD_CARRY.replace("c :: f32[3], ys :: f32[4, 3] =", "c, ys =")))

    def f(c, xs):
        return lax.scan(lambda c, x: (snp.sum(c), x), c, xs)[0]

    with pytest.raises(sx.ShaxError, match="carry is .*f32\\[3\\].*returns .*f32\\[\\]"):
        sx.trace(f, np.zeros(3, np.float32), np.zeros((4, 3), np.float32))


def test_scanned_operand_with_wrong_length_names_it():
    text = BAD_CARRY.replace("xs :: f32[4, 3]", "xs :: f32[5, 3]").replace("in [s, x]", "in [c, x]")
    with pytest.raises(sx.ShaxTypeError, match="scanned operand 0 is f32\\[5, 3\\]"):
        sx.infer(sx.parse(text))


def test_parse_errors_inside_a_body_give_line_and_column():
    text = BAD_CARRY.replace("reduce_sum [0] c", "reduce_sum [0] nope")
    with pytest.raises(sx.ParseError, match="line 5, column 43: undefined variable nope"):
        sx.parse(text)


def test_dce_drops_unused_carries_and_outputs():
    def f(x, xs):
        def step(c, x):
            a, b, k = c
            return (snp.sin(a) + x, b * 2.0, k + 1.0), snp.cos(x)

        (a, b, k), ys = lax.scan(step, (x, x, x), xs)
        return a  # b, k and ys are dead; the k carry is read by nothing live

    p = sx.trace(f, f64(3), f64(4, 3))
    scan = next(e for e in dce(p).eqns if e.prim == "scan")
    assert len(scan.outs) == 1 and len(scan.ins) == 2
    args = [f64(3), f64(4, 3)]
    assert sx.evaluate(dce(p), *args)[0].tobytes() == sx.evaluate(p, *args)[0].tobytes()


def test_cse_and_simplify_run_inside_bodies():
    def f(x, xs):
        def step(c, x):
            return snp.sin(c) + snp.sin(c) + x * 1.0, None

        return lax.scan(step, x, xs)[0]

    p = sx.trace(f, f64(3), f64(4, 3))
    body = next(e for e in cleanup(p).eqns if e.prim == "scan").params[-1]
    assert [e.prim for e in body.eqns].count("sin") == 1
    assert "mul" not in [e.prim for e in body.eqns]


def test_nested_scan():
    def f(x, xs):
        def outer(c, row):
            inner = lax.scan(lambda d, v: (d * snp.cos(v) + v, None), c, row)[0]
            return inner, snp.sum(inner)

        c, ys = lax.scan(outer, x, xs)
        return snp.sum(c) + snp.sum(ys)

    args = [f64(2), f64(3, 4)]
    p = sx.verify(sx.trace(f, *args))
    np.testing.assert_allclose(sx.evaluate(p, *args)[0], f(*args), rtol=1e-12)
    check_transpose(p, args, RNG)
    assert sx.parse(sx.print_program(p)) == p


def test_closure_over_outer_tracer_becomes_an_operand():
    def f(x, w):
        return lax.scan(lambda c, _: (c * w, None), x, length=3)[0]

    p = sx.trace(f, f64(2), f64(2))
    scan = next(e for e in p.eqns if e.prim == "scan")
    assert scan.params[2] == 1  # num_consts: w
    x, w = f64(2), f64(2)
    np.testing.assert_allclose(sx.evaluate(p, x, w)[0], x * w**3, rtol=1e-14)


def test_eager_mode_runs_on_arrays():
    c, ys = lax.scan(lambda c, x: (c + x, c * x), np.float64(0.0), np.arange(4.0))
    assert c == 6.0 and list(ys) == [0.0, 0.0, 2.0, 9.0]
    assert lax.fori_loop(0, 3, lambda i, v: v + i, 0.0) == 3.0
    assert lax.cond(True, lambda a: a + 1, lambda a: a - 1, 1.0) == 2.0
    assert lax.switch(5, [lambda a: a, lambda a: -a], 2.0) == -2.0


def test_plan_peak_counts_stacked_outputs_and_body():
    p, args = traced("scan-rnn")
    exe = sx.compile(sx.vjp_program(p))
    stacked = sum(v.type.nbytes for e in exe.program.eqns if e.prim == "scan" for v in e.outs)
    assert exe.peak_bytes >= stacked
    exe(*args, np.float64(1.0))


def test_module_docs_run():
    import doctest

    import shax_core.lax
    import shax_core.primitives.control as control

    assert doctest.testmod(shax_core.lax).failed == 0
    assert doctest.testmod(control).attempted > 0
    assert doctest.testmod(control).failed == 0


def test_scan_of_length_zero():
    def f(c, xs):
        c, ys = lax.scan(lambda c, x: (c * x, c + x), c, xs)
        return snp.sum(c) + snp.sum(ys)

    c, xs = f64(3), np.zeros((0, 3))
    p = sx.verify(sx.trace(f, c, xs))
    np.testing.assert_allclose(sx.evaluate(p, c, xs)[0], c.sum())
    g = sx.evaluate(sx.vjp_program(p), c, xs, np.float64(1.0))
    np.testing.assert_allclose(g[1], np.ones(3))
    assert g[2].shape == (0, 3)


def test_bad_body_in_a_graph_names_the_field():
    from shax_core.graph import GraphError

    p, _ = traced("scan-rnn")
    graph = to_graph(p)
    scan = next(e for e in graph["equations"] if e["primitive"] == "scan")
    scan["params"]["body"]["equations"][0]["inputs"][0] = "nope"
    with pytest.raises(GraphError, match=r"params\.body\.equations\[0\].*inputs\[0\]"):
        from_graph(graph)


def test_sub_programs_nested_too_deep_are_refused():
    deep = "def b(a :: f32[]) = let y = sin a in [y]"
    for _ in range(40):
        deep = f"def b(a :: f32[]) = let y = scan 1 forward 0 1 save {{{deep}}} a in [y]"
    with pytest.raises(sx.ParseError, match="nested more than 32 deep"):
        sx.parse(deep)
    shallow = "def b(a :: f32[]) = let y = sin a in [y]"
    for _ in range(5):
        shallow = f"def b(a :: f32[]) = let y = scan 1 forward 0 1 save {{{shallow}}} a in [y]"
    assert sx.evaluate(sx.parse(shallow), 0.5)[0] == np.sin(np.float32(0.5))


def test_cond_with_a_bool_index_from_text():
    text = """
    def f(p :: bool[], x :: f64[]) =
      let y = cond [{def no(a :: f64[]) = let b = cos a in [b]},
                    {def yes(a :: f64[]) = let b = sin a in [b]}] p x
      in [y]
    """
    p = sx.infer(sx.parse(text))
    assert sx.evaluate(p, True, 0.5)[0] == np.sin(0.5)
    assert sx.evaluate(p, False, 0.5)[0] == np.cos(0.5)
    _, g = sx.evaluate(sx.vjp_program(p), True, 0.5, 1.0)
    assert g == np.cos(0.5)


def test_cond_inside_a_scan_body():
    def f(c, xs):
        def step(c, x):
            c = lax.cond(x > 0.0, lambda a: snp.sin(a) * x, lambda a: a * a - x, c)
            return c, c

        c, ys = lax.scan(step, c, xs)
        return snp.sum(ys) + c

    args = [np.float64(0.3), np.array([0.5, -0.2, 0.7, -0.9, 0.1])]
    p = sx.verify(sx.trace(f, *args))
    np.testing.assert_allclose(sx.evaluate(p, *args)[0], f(*args), rtol=1e-14)
    check_jvp(p, args, RNG)
    check_transpose(p, args, RNG)
    check_hvp(p, args, RNG)


def test_results_of_earlier_calls_are_never_overwritten():
    # a scan reuses its stacked-output buffers across calls only when nothing refers to them
    def f(c, xs):
        c, ys = lax.scan(lambda c, x: (c + x, snp.sin(c * x)), c, xs)
        return ys, ys[1:], c

    args = [f64(3), f64(4, 3)]
    exe = sx.compile(sx.vjp_program(sx.trace(f, *args)))
    cts = [np.ones((4, 3)), np.ones((3, 3)), np.ones(3)]
    first = exe(*args, *cts)
    snapshot = [a.copy() for a in first]
    other = [a + 1.0 for a in args]
    for _ in range(3):
        exe(*other, *cts)
    for a, b in zip(first, snapshot):
        assert a.tobytes() == b.tobytes()
    again = exe(*args, *cts)
    for a, b in zip(again, snapshot):
        assert a.tobytes() == b.tobytes()


def test_carries_are_pytrees():
    import collections

    State = collections.namedtuple("State", "h count")

    def f(h, xs):
        def step(s, x):
            h = snp.tanh(s.h + x["a"] * x["b"])
            return State(h, s.count + 1.0), {"h": h}

        s, ys = lax.scan(step, State(h, np.float64(0.0)), {"a": xs, "b": xs * 2.0})
        return snp.sum(s.h) + s.count + snp.sum(ys["h"])

    args = [f64(3), f64(4, 3)]
    p = sx.verify(sx.trace(f, *args))
    np.testing.assert_allclose(sx.evaluate(p, *args)[0], f(*args), rtol=1e-13)
    check_transpose(p, args, RNG)


def test_fori_loop_index_is_an_integer_that_indexes_rows():
    # as JAX users write it: the loop index picks a row of a captured array
    def f(xs, w):
        return lax.fori_loop(0, xs.shape[0], lambda i, c: snp.tanh(c * w + xs[i]), snp.zeros(3))

    args = [f64(5, 3), f64(3)]
    p = sx.verify(sx.trace(f, *args))
    want = np.zeros(3)
    for row in args[0]:
        want = np.tanh(want * args[1] + row)
    np.testing.assert_allclose(sx.evaluate(p, *args)[0], want, rtol=1e-14)
    check_transpose(p, args, RNG)
    check_jvp(p, args, RNG)


def test_a_python_scalar_carry_takes_the_dtype_the_body_returns():
    # JAX promotes weakly typed carries: lax.scan(step, 0.5, xs) with f64 xs carries an f64
    def loss(xs):
        def step(c, x):
            c = snp.tanh(c * x + 1.0)
            return c, c * 2

        c, ys = lax.scan(step, 0.5, xs)
        return c + snp.sum(ys)

    xs = np.linspace(-1.0, 1.0, 7)
    g = sx.grad(loss)(xs)
    assert g.dtype == np.float64
    eps = 1e-6
    fd = [(loss(xs + eps * e) - loss(xs - eps * e)) / (2 * eps) for e in np.eye(7)]
    np.testing.assert_allclose(g, np.asarray(fd, np.float64), rtol=1e-6, atol=1e-9)

    # a carry that cannot be promoted (an array) is still refused, naming the types
    def bad(xs):
        c, _ = lax.scan(lambda c, x: (c * x, x), np.float32(0.5), xs)
        return c

    with pytest.raises(sx.ShaxError, match=r"the carry is \(f32\[\]\) but the body returns \(f64"):
        sx.grad(bad)(xs)


def test_while_loop_over_a_closed_over_traced_value_runs_under_jvp():
    def f(x):
        return lax.while_loop(lambda c: c < 10.0, lambda c: c + x, 0.0)

    value, tangent = sx.jvp(f, (np.float64(3.0),), (np.float64(1.0),))
    assert float(value) == 12.0 and float(tangent) == 4.0  # 0 -> 3 -> 6 -> 9 -> 12
