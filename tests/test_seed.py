"""The seed's numbers, from the seed's own programs and from our pipeline.

The seed README prints ``medium`` at every stage (fixtures ``tests/fixtures/seed_*.shax``) and
the numbers for ``arg0 = [1..6] :: f32[6]``, ``arg1 = [[1,2],[3,4]] :: f32[2,2]``, tangents equal
to the inputs and the output cotangent ``[5, 9]``. These are the only hard-coded results in the
AD tests; everything else is checked against finite differences or the dot-product identity.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import shax_core as sx
from shax_core import passes
from tests.seed_numbers import DF, DFT0, DFT1, SEED_A, SEED_B, SEED_CT, F

FIXTURES = Path(__file__).parent / "fixtures"
ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.shax"))

ARG0, ARG1, CT = SEED_A, SEED_B, SEED_CT  # the seed's inputs and cotangent, from one place

RTOL = 1e-5


def close(got, want):
    assert got.dtype == np.float32, f"f32 must stay f32, got {got.dtype}"
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)


def fixture(name: str) -> sx.Program:
    return sx.parse((FIXTURES / f"seed_{name}.shax").read_text())


# ---------------------------------------------------------------------------------------------
# the seed's f and medium in Python


# the seed's f and medium, written against shax_core.numpy (the seed's HNP)
from shax_core.demo import f, medium  # noqa: E402

# ---------------------------------------------------------------------------------------------
# fixtures: parse, infer to exactly the printed types, survive print/parse


_ANNOTATION = re.compile(r"(\b[A-Za-z_]\w*)\s*::\s*(f32|f64|bool)\s*\[[^\]]*\]")


def strip_binding_annotations(text: str) -> str:
    """Drop the ``:: type`` of every binding and output, keeping the parameters' types."""
    head, sep, body = text.partition("=")
    # the parameter list ends at the first "=" after "def ...(...)"
    return head + sep + _ANNOTATION.sub(r"\1", body)


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_fixture_parses_and_round_trips(name):
    text = (FIXTURES / name).read_text()
    programs = sx.parse_module(text)
    assert len(programs) == 1
    p = programs[0]
    assert sx.parse(text) == p
    printed = str(p)
    assert sx.parse(printed) == p
    assert str(sx.parse(printed)) == printed  # printing is stable


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_fixture_infers_to_printed_types(name):
    text = (FIXTURES / name).read_text()
    p = sx.parse(text)
    typed = sx.verify(sx.infer(p))
    untyped = sx.parse(strip_binding_annotations(text))
    assert not untyped.is_typed or not p.eqns
    inferred = sx.infer(untyped)
    if p.is_typed:
        assert {e.out.name: e.out.type for e in inferred.eqns} == {
            e.out.name: e.out.type for e in p.eqns
        }
        assert inferred == typed
    else:  # the "after tracing" text: its types are the ones the seed prints after inference
        assert inferred == fixture("medium_typed")
    sx.verify(inferred)


def test_wrong_annotation_is_a_type_error():
    text = (FIXTURES / "seed_medium_typed.shax").read_text()
    bad = text.replace("x7 :: f32[2, 2] = dot", "x7 :: f32[2, 3] = dot")
    assert bad != text
    with pytest.raises(sx.ShaxTypeError, match="x7"):
        sx.infer(sx.parse(bad))


# ---------------------------------------------------------------------------------------------
# the seed's own programs evaluate to the seed's numbers


@pytest.mark.parametrize("name", ["medium_traced", "medium_typed", "medium_rewritten"])
def test_seed_medium_value(name):
    (out,) = sx.evaluate(fixture(name), ARG0, ARG1)
    close(out, F)


def test_seed_linearized_and_dmedium():
    out, *residuals = sx.evaluate(fixture("medium_linearized"), ARG0, ARG1)
    close(out, F)
    assert len(residuals) == 11
    (df,) = sx.evaluate(fixture("dmedium"), ARG0, ARG1, *residuals)
    close(df, DF)
    g0, g1 = sx.evaluate(fixture("dmediumt"), CT, *residuals)
    close(g0, DFT0)
    close(g1, DFT1)


def test_seed_zipped_medium_dmediumt():
    out, g0, g1 = sx.evaluate(fixture("medium_dmediumt"), ARG0, ARG1, CT)
    close(out, F)
    close(g0, DFT0)
    close(g1, DFT1)


def test_seed_f_value():
    p = fixture("f")
    x, y = np.float32(0.5), np.float32(-0.75)
    (out,) = sx.evaluate(p, x, y)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.sin(x + y) * np.cos(x + y), rtol=1e-6)
    np.testing.assert_allclose(out, -0.23971277, rtol=RTOL)  # the seed's iteration 0


# ---------------------------------------------------------------------------------------------
# our pipeline reproduces them


def seed_sources():
    typed = sx.infer(fixture("medium_traced"))
    return {
        "seed-traced": fixture("medium_traced"),
        "seed-typed": fixture("medium_typed"),
        "python-traced": sx.trace(medium, ARG0, ARG1),
        # the seed's "after rewrites" form: reductions lowered to sums of slices first
        "lowered": passes.lower_reduce_sum(passes.canonicalize_dot(typed)),
        "seed-rewritten": fixture("medium_rewritten"),
    }


SOURCES = list(seed_sources())


@pytest.fixture(scope="module")
def sources():
    return seed_sources()


def check_stages(st):
    for name, prog in st.items():
        sx.verify(prog)
        assert sx.parse(str(prog)) == prog, name
    out, *residuals = sx.evaluate(st["linearized"], ARG0, ARG1)
    close(out, F)
    (df,) = sx.evaluate(st["linear"], ARG0, ARG1, *residuals)
    close(df, DF)
    g0, g1 = sx.evaluate(st["transposed"], CT, *residuals)
    close(g0, DFT0)
    close(g1, DFT1)
    out, g0, g1 = sx.evaluate(st["vjp"], ARG0, ARG1, CT)
    close(out, F)
    close(g0, DFT0)
    close(g1, DFT1)
    for name in ("typed", "rewritten"):
        (out,) = sx.evaluate(st[name], ARG0, ARG1)
        close(out, F)


@pytest.mark.parametrize("policy", ["recompute", "save"])
@pytest.mark.parametrize("source", SOURCES)
def test_pipeline_reproduces_seed_numbers(sources, source, policy):
    check_stages(sx.stages(sources[source], policy=policy))


@pytest.mark.parametrize("source", SOURCES)
def test_vjp_and_jvp_programs_reproduce_seed_numbers(sources, source):
    p = sources[source]
    out, g0, g1 = sx.evaluate(sx.verify(sx.vjp_program(p)), ARG0, ARG1, CT)
    close(out, F)
    close(g0, DFT0)
    close(g1, DFT1)
    out, df = sx.evaluate(sx.verify(sx.jvp_program(p)), ARG0, ARG1, ARG0, ARG1)
    close(out, F)
    close(df, DF)


def test_lowered_pipeline_with_lowering_after_rewrite():
    typed = sx.infer(fixture("medium_traced"))
    lowered = passes.lower_reduce_sum(passes.rewrite(typed))
    check_stages(sx.stages(lowered))
    # the lowering introduced the seed's slices and adds, and no reduce_sum is left
    prims = [e.prim for e in lowered.eqns]
    assert "reduce_sum" not in prims and prims.count("slice") == 2


def test_rewrite_reproduces_seed_rewritten_program():
    """Our rewrites plus the opt-in lowering give the seed's "after rewrites" program (up to
    names and the seed's ``x0 = arg0`` aliases)."""
    typed = sx.infer(fixture("medium_traced"))
    ours = passes.lower_reduce_sum(passes.rewrite(typed))
    seed = passes.rewrite(fixture("medium_rewritten"))
    assert passes.canonical_names(ours) == passes.canonical_names(seed)


def test_public_api_reproduces_seed_numbers():
    out, vjp_fn = sx.vjp(medium, ARG0, ARG1)
    close(out, F)
    g0, g1 = vjp_fn(CT)
    close(g0, DFT0)
    close(g1, DFT1)
    out, df = sx.jvp(medium, (ARG0, ARG1), (ARG0, ARG1))
    close(out, F)
    close(df, DF)
    out, jvp_fn = sx.linearize(medium, ARG0, ARG1)
    close(out, F)
    close(jvp_fn(ARG0, ARG1), DF)


# ---------------------------------------------------------------------------------------------
# tracing the Python versions gives programs equal in meaning to the seed's


def _same_meaning(a: sx.Program, b: sx.Program, arg_sets):
    a, b = sx.infer(a), sx.infer(b)
    assert a.in_types == b.in_types
    assert a.out_types == b.out_types
    for args in arg_sets:
        for x, y in zip(sx.evaluate(a, *args), sx.evaluate(b, *args), strict=True):
            assert x.dtype == y.dtype
            np.testing.assert_allclose(x, y, rtol=1e-6)


def test_traced_medium_means_the_seed_medium():
    rng = np.random.default_rng(0)
    args = [(ARG0, ARG1)] + [
        (rng.uniform(-2, 2, 6).astype(np.float32), rng.uniform(-2, 2, (2, 2)).astype(np.float32))
        for _ in range(5)
    ]
    traced = sx.trace(medium, ARG0, ARG1)
    _same_meaning(traced, fixture("medium_traced"), args)
    (out,) = sx.evaluate(traced, ARG0, ARG1)
    close(out, F)
    # and the same Python function run on NumPy arrays gives the same numbers
    close(np.asarray(medium(ARG0, ARG1)), F)


def test_traced_f_means_the_seed_f():
    rng = np.random.default_rng(1)
    args = [(np.float32(0.5), np.float32(-0.75))] + [
        tuple(np.float32(v) for v in rng.uniform(-3, 3, 2)) for _ in range(5)
    ]
    traced = sx.trace(f, np.float32(0), np.float32(0))
    _same_meaning(traced, fixture("f"), args)
    # its gradient by our pipeline against the closed form cos(2(x+y))
    for x, y in args:
        gx, gy = sx.evaluate(sx.vjp_program(traced), x, y, np.float32(1))[1:]
        np.testing.assert_allclose(gx, np.cos(2 * (x + y)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gy, np.cos(2 * (x + y)), rtol=1e-5, atol=1e-6)


def test_grad_of_seed_f_in_f32():
    """The seed's gradient-descent start point: f and its gradient, f32 kept."""
    x, y = np.float32(0.5), np.float32(-0.75)
    value, (gx, gy) = sx.value_and_grad(f, argnums=(0, 1))(x, y)
    assert value.dtype == gx.dtype == gy.dtype == np.float32
    np.testing.assert_allclose(value, -0.23971277, rtol=RTOL)
    np.testing.assert_allclose([gx, gy], [np.cos(2 * (x + y))] * 2, rtol=1e-5)
    gx_only = sx.grad(f)(x, y)
    np.testing.assert_allclose(gx_only, gx, rtol=1e-6)
    # one step of the seed's gradient descent (step 0.05) lands on its iteration 1 value
    x1, y1 = x - np.float32(0.05) * gx, y - np.float32(0.05) * gy
    np.testing.assert_allclose(f(x1, y1), -0.31265023, rtol=RTOL)
