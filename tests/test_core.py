"""Inference, evaluation, tracing and the optimizer: the first half of the pipeline."""

import json
import subprocess
import sys

import numpy as np
import pytest

import shax_core as sx
import shax_core.numpy as snp
from shax_core.core import TracerBoolError
from shax_core.ir import Type
from shax_core.optimize import minimize
from tests.seed_numbers import SEED_A, SEED_B, SEED_VALUES

A, B = SEED_A, SEED_B


# ---------------------------------------------------------------------------------------------
# inference


def test_inference_fills_every_type():
    p = sx.infer(
        sx.parse("def f(a :: f32[6]) = let x = broadcast [1] [2,6] a y = reduce_sum [1] x in [y]")
    )
    assert [str(e.out.type) for e in p.eqns] == ["f32[2, 6]", "f32[2]"]
    sx.verify(p)


def test_type_error_prints_the_equation_and_both_types():
    text = "def f(a :: f32[2], b :: f32[3]) = let x = add a b in [x]"
    with pytest.raises(sx.ShaxTypeError) as info:
        sx.infer(sx.parse(text))
    msg = str(info.value)
    assert "x = add a:f32[2] b:f32[3]" in msg and "f32[2] vs f32[3]" in msg


def test_wrong_annotation_is_reported_with_both_types():
    text = "def f(a :: f32[2]) = let x :: f32[3] = sin a in [x]"
    with pytest.raises(sx.ShaxTypeError, match=r"annotated f32\[3\].*gives f32\[2\]"):
        sx.infer(sx.parse(text))


@pytest.mark.parametrize(
    "body, words",
    [
        ("x = broadcast [0] [3] a", "cannot broadcast"),
        ("x = reshape [5] a", "cannot reshape"),
        ("x = transpose [0,0] a", "not a permutation"),
        ("x = slice [0] [9] a", "out of range"),
        ("x = reduce_sum [4] a", "not distinct axes"),
        ("x = dot_general [0] [0] [] [] a a", None),
    ],
)
def test_shape_rules_reject_bad_parameters(body, words):
    text = f"def f(a :: f32[2]) = let {body} in [x]"
    if words is None:
        assert sx.infer(sx.parse(text)).outs[0].type == Type("f32", ())
        return
    with pytest.raises(sx.ShaxTypeError, match=words):
        sx.infer(sx.parse(text))


def test_verify_catches_ssa_and_scope_violations():
    p = sx.infer(sx.parse("def f(a :: f32[]) = let x = sin a y = cos x in [y]"))
    swapped = p.replace(eqns=(p.eqns[1], p.eqns[0]))
    with pytest.raises(sx.VerifyError, match="used before it is defined"):
        sx.verify(swapped)
    twice = p.replace(eqns=(p.eqns[0], p.eqns[0]))
    with pytest.raises(sx.VerifyError, match="bound twice"):
        sx.verify(twice)


# ---------------------------------------------------------------------------------------------
# evaluation


def test_f32_stays_f32_and_f64_stays_f64():
    text = "def f(a :: {t}[2]) = let x = exp a y = mul x a in [y]"
    for t, dt in (("f32", np.float32), ("f64", np.float64)):
        (y,) = sx.evaluate(sx.parse(text.format(t=t)), np.array([1, 2], dt))
        assert y.dtype == dt


def test_bad_arguments_name_the_argument():
    exe = sx.compile(sx.parse(open("tests/fixtures/seed_medium_typed.shax").read()))
    with pytest.raises(
        sx.EvaluationError, match="arg1 of medium must be f32\\[2, 2\\], got shape \\[3\\]"
    ):
        exe(A, np.zeros(3, np.float32))
    with pytest.raises(sx.EvaluationError, match="arg0 .* got dtype float64"):
        exe(A.astype(np.float64), B)
    with pytest.raises(sx.EvaluationError, match="takes 2 argument"):
        exe(A)


def test_plan_frees_intermediates_and_reports_peak_memory():
    # a chain of n elementwise ops: the first allocates, the rest update that buffer in place
    n, size = 50, 20_000  # 80 kB arrays: big enough for in-place updates to pay
    body = " ".join(f"x{i + 1} = sin x{i}" for i in range(n))
    p = sx.parse(f"def f(x0 :: f32[{size}]) = let {body} in [x{n}]")
    exe = sx.compile(p)
    assert exe.in_place_steps == n - 1
    assert exe.peak_bytes == 2 * 4 * size  # the caller's input and one working buffer
    x = np.ones(size, np.float32)
    (y,) = exe(x)
    assert np.allclose(y, _chain_sin(np.ones(size, np.float32), n))
    assert (x == 1).all()  # the caller's array is never written
    small = sx.compile(sx.parse(f"def f(x0 :: f32[100]) = let {body} in [x{n}]"))
    assert small.in_place_steps == 0  # on tiny arrays out= costs more than it saves


def test_in_place_never_clobbers_a_value_still_in_use():
    # x1 dies at x3 but its view x2 (a reshape) is read later: no in-place write into x1
    text = """def f(a :: f32[20000]) =
      let x1 = sin a
          x2 = reshape [2,10000] x1
          x3 = cos x1
          x4 = reshape [2,10000] x3
          x5 = add x2 x4
      in [x5, x1]"""
    a = np.linspace(0, 1, 20000, dtype=np.float32)
    got = sx.evaluate(sx.parse(text), a)
    s = np.sin(a)
    assert np.allclose(got[0], (s + np.cos(s)).reshape(2, 10000))
    assert np.allclose(got[1], s)


def _chain_sin(x, n):
    for _ in range(n):
        x = np.sin(x)
    return x


def test_peak_memory_is_known_before_running():
    p = sx.parse("def bomb(a :: f32[]) = let x = broadcast [] [100000,100000] a in [x]")
    assert sx.compile(p).peak_bytes >= 4 * 10**10


def test_outputs_are_owned_arrays():
    (y,) = sx.evaluate(sx.parse("def f(a :: f32[]) = let x = broadcast [] [3] a in [x]"), 2.0)
    y[0] = 5.0  # a read-only broadcast view would raise here
    assert y.tolist() == [5.0, 2.0, 2.0]


# ---------------------------------------------------------------------------------------------
# tracing


def test_same_function_runs_on_arrays_and_on_tracers():
    from shax_core.demo import medium

    eager = medium(A, B)
    traced = sx.trace(medium, A, B)
    assert np.allclose(sx.evaluate(traced, A, B)[0], eager)
    assert np.allclose(eager, [34.731194, 67.46239], rtol=1e-5)


def test_python_scalars_and_broadcasting_become_explicit_equations():
    p = sx.trace(lambda x, y: 2.0 * x + y, Type("f32", (3,)), Type("f32", (2, 3)))
    prims = [e.prim for e in p.eqns]
    assert prims.count("fromList") == 1 and prims.count("broadcast") == 2
    const = next(e for e in p.eqns if e.prim == "fromList")
    assert const.out.type == Type("f32", ())
    x, y = np.array([1, 2, 3], np.float32), np.ones((2, 3), np.float32)
    assert np.allclose(sx.evaluate(p, x, y)[0], 2 * x + y)


def test_operators_on_tracers():
    def f(x, y):
        return (x + y, x - y, x * y, x / y, x**2, -x, x < y, x >= y, x @ y.T)

    x = np.array([[1.0, 2.0]], np.float32)
    y = np.array([[3.0, 5.0]], np.float32)
    got = sx.evaluate(sx.trace(f, x, y), x, y)
    want = f(x, y)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.asarray(w).dtype
        assert np.allclose(g, w)


def test_branching_on_a_traced_value_explains_what_to_use():
    def relu(x):
        return x if x > 0 else 0.0 * x

    with pytest.raises(TracerBoolError, match="where"):
        sx.trace(relu, Type("f32", ()))
    p = sx.trace(lambda x: snp.where(x > 0, x, 0.0 * x), Type("f32", (3,)))
    assert sx.evaluate(p, np.array([-1, 0, 2], np.float32))[0].tolist() == [0, 0, 2]


def test_trace_takes_specs_types_and_examples():
    f = snp.sin
    assert sx.trace(f, ((2, 3), "f64")).in_types == (Type("f64", (2, 3)),)
    assert sx.trace(f, Type("f32", ())).in_types == (Type("f32", ()),)
    assert sx.trace(f, np.zeros((4,), np.float32)).in_types == (Type("f32", (4,)),)
    assert sx.trace(f, 1.0).in_types == (Type("f32", ()),)


def test_indexing_and_reductions():
    def f(x):
        return x[0, 1:3].sum() + snp.max(x) + snp.mean(x, axis=1)

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = sx.evaluate(sx.trace(f, x), x)[0]
    assert np.allclose(got, x[0, 1:3].sum() + x.max() + x.mean(axis=1))


# ---------------------------------------------------------------------------------------------
# the optimizer reproduces the seed's run


def test_gradient_descent_reproduces_the_seed():
    from shax_core.demo import f

    r = minimize(f, [np.float32(0.5), np.float32(-0.75)], steps=40, lr=0.05)
    assert np.allclose(r.values[:10], SEED_VALUES[:10], rtol=1e-6)
    assert np.allclose([float(x) for x in r.params], [0.23235208, -1.0176479], rtol=1e-6)
    assert float(r.value) == pytest.approx(-0.5, abs=1e-7)
    assert all(np.asarray(x).dtype == np.float32 for x in r.params)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_momentum_and_adam_reach_the_minimum(optimizer):
    from shax_core.demo import f

    r = minimize(f, [np.float32(0.5), np.float32(-0.75)], steps=150, lr=0.05, optimizer=optimizer)
    assert float(r.value) == pytest.approx(-0.5, abs=1e-4)
    assert r.values[-1] < r.values[0]


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(sx.ShaxError, match="unknown optimizer 'sgdx'"):
        minimize(snp.sin, [np.float32(0)], optimizer="sgdx")


# ---------------------------------------------------------------------------------------------
# command line


def _shax(*args):
    return subprocess.run(
        [sys.executable, "-m", "shax_core.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_eval_and_compile():
    r = _shax(
        "eval", "tests/fixtures/seed_medium_typed.shax", "--inputs", "[[1,2,3,4,5,6],[[1,2],[3,4]]]"
    )
    assert r.returncode == 0, r.stderr
    assert np.allclose(json.loads(r.stdout)[0], [34.731194, 67.46239], rtol=1e-5)
    r = _shax("compile", "tests/fixtures/seed_medium_traced.shax", "--stage", "vjp")
    assert r.returncode == 0 and r.stdout.startswith("def medium_dmediumt(")


def test_cli_demo_prints_the_seed_run():
    r = _shax("demo")
    assert r.returncode == 0, r.stderr
    assert "Iteration 1: -0.23971277" in r.stdout
    assert "Minimum location: [fromList [] [0.23235208],fromList [] [-1.0176479]]" in r.stdout
    assert "def medium_dmediumt(" in r.stdout


def test_cli_reports_parse_errors_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.shax"
    bad.write_text("def f(a :: f32[]) =\n  let x = sin\n  in [x]")
    r = _shax("print", str(bad))
    assert r.returncode == 1
    assert "line 2, column 11: sin takes 1 operand(s), found 0" in r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# algebraic simplification


@pytest.mark.parametrize(
    "p, q", [((1, 2, 0), (2, 0, 1)), ((0, 2, 1), (1, 0, 2)), ((2, 1, 0), (1, 2, 0))]
)
def test_transpose_of_transpose_composes_on_rank_3(p, q):
    from shax_core.passes import simplify

    text = (
        f"def f(a :: f32[2, 3, 4]) = let x = transpose {list(q)} a y = transpose {list(p)} x in [y]"
    )
    prog = sx.infer(sx.parse(text.replace(" ", " ")))
    simple = simplify(prog)
    assert len(simple.eqns) <= 1
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert np.array_equal(sx.evaluate(simple, a)[0], a.transpose(q).transpose(p))


def test_simplify_removes_identities_and_folds_constants():
    from shax_core.passes import simplify

    text = """def f(a :: f32[3]) =
      let one = fromList [] [1.0]
          ones = broadcast [] [3] one
          x = mul a ones
          y = negate x
          z = negate y
          r = reshape [3,1] z
          s = reshape [3] r
          two = add one one
      in [s, two]"""
    simple = simplify(sx.infer(sx.parse(text)))
    assert simple.outs[0].name == "a"
    assert [e.prim for e in simple.eqns] == ["fromList"]
    assert sx.evaluate(simple, np.ones(3, np.float32))[1] == 2.0


def test_annotations_are_checked_not_trusted():
    # a fully annotated program is still inferred: a lying annotation is a type error
    bomb = "def f(a :: f32[]) = let x :: f32[1] = broadcast [] [100000,100000] a in [x]"
    with pytest.raises(sx.ShaxTypeError, match=r"annotated f32\[1\]"):
        sx.compile(sx.parse(bomb))
    bad_dot = "def f(a :: f32[2, 3], b :: f32[4]) = let x :: f32[2, 4] = dot a b in [x]"
    with pytest.raises(sx.ShaxTypeError):
        sx.vjp_program(sx.parse(bad_dot))


def test_big_elementwise_steps_run_in_chunks_and_agree():
    from shax_core import _evaluate as ev

    n = ev.PARALLEL_MIN_ELEMENTS + 3  # not a multiple of the chunk count
    text = f"def f(a :: f32[{n}], b :: f32[{n}]) = let x = mul a b y = sin x z = gt y a in [y, z]"
    exe = sx.compile(sx.parse(text))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, n)).astype(np.float32)
    y, z = exe(a, b)
    assert np.array_equal(y, np.sin(a * b)) and np.array_equal(z, np.sin(a * b) > a)
    if ev.plan_threads()[0] > 1:
        assert exe.parallel_steps == 3


def test_big_matmuls_are_not_split_like_elementwise_steps():
    # np.matmul is a (g)ufunc too: it must never be chunked or written in place
    n = 1024
    p = sx.parse(f"def f(a :: f32[{n}, {n}], b :: f32[{n}, {n}]) = let c = dot a b in [c]")
    a = np.random.default_rng(1).normal(size=(n, n)).astype(np.float32)
    (c,) = sx.evaluate(p, a, a.T.copy())
    assert np.allclose(c, a @ a.T, rtol=1e-4, atol=1e-3)
