"""IR text: the seed's syntax printed and parsed; errors name line and column."""

from pathlib import Path

import pytest

import shax_core as sx
from shax_core.text import ParseError

FIXTURES = sorted(Path(__file__).parent.joinpath("fixtures").glob("seed_*.shax"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_seed_programs_round_trip(path):
    program = sx.parse(path.read_text())
    assert sx.parse(str(program)) == program
    typed = sx.infer(program)
    assert sx.parse(str(typed)) == typed
    assert str(sx.parse(str(typed))) == str(typed)


def test_whitespace_and_newlines_are_insignificant():
    one_line = "def f(a :: f32[2], b :: f32[2]) = let x :: f32[2] = add a b y = mul x x in [y]"
    spread = """
        def f(a :: f32[2],
              b :: f32[2])
        =
          let x :: f32[2] =
                add a
                    b
              y = mul x x
          in [ y ]
    """
    assert sx.parse(one_line) == sx.parse(spread)


def test_several_defs_and_parse_returns_the_first():
    text = "def f(a :: f32[]) = let x = sin a in [x]\ndef g(a :: f32[]) = let y = cos a in [y]"
    f, g = sx.parse_module(text)
    assert (f.name, g.name) == ("f", "g")
    assert sx.parse(text) == f
    assert sx.parse_module(sx.print_module([f, g])) == [f, g]


def test_constants_keep_their_dtype_and_special_values():
    text = (
        "def c(a :: f64[]) = let k :: f64[3] = fromList [3] [0.1, nan, -inf]"
        " p :: bool[2] = fromList [2] [true, false] in [k, p]"
    )
    p = sx.infer(sx.parse(text))
    assert [str(t) for t in p.out_types] == ["f64[3]", "bool[2]"]
    assert sx.parse(str(p)) == p
    k, m = sx.evaluate(p, 1.0)
    assert k[0] == 0.1 and k.dtype.name == "float64"
    assert m.tolist() == [True, False]


@pytest.mark.parametrize(
    "text, line, column, words",
    [
        ("def f(a :: f32[]) = let x = sin a", 1, 34, ["'in'"]),
        (
            "def f(a :: f32[]) =\n  let x = frobnicate a\n  in [x]",
            2,
            11,
            ["undefined variable", "frobnicate"],
        ),
        ("def f(a :: f32[2]) =\n let x = broadcast [0] a\n in [x]", 2, 24, ["'['", "shape"]),
        ("def f(a :: f32[]) = let x = add a in [x]", 1, 29, ["add takes 2 operand(s)"]),
        ("def f(a :: f33[]) = let x = sin a in [x]", 1, 12, ["unknown dtype", "f33"]),
        ("def f(a :: f32[]) = let x = sin b in [x]", 1, 33, ["undefined variable b"]),
        ("def f(a :: f32[]) = let x = sin a x = cos a in [x]", 1, 35, ["bound twice"]),
        ("def f(a :: f32[]) = let x = sin a in [x", 1, 40, ["',' or ']'"]),
        ("def f(a :: f32[]) = let x = sin a $ in [x]", 1, 35, ["unexpected character"]),
        ("", 1, 1, ["'def'"]),
    ],
)
def test_parse_errors_name_line_column_and_what_was_expected(text, line, column, words):
    with pytest.raises(ParseError) as info:
        sx.parse(text)
    err = info.value
    assert (err.line, err.column) == (line, column), str(err)
    for w in words:
        assert w in str(err)
    assert str(err).startswith(f"line {line}, column {column}: ")


def test_unknown_primitive_with_operands_is_a_parse_error():
    # `frobnicate` is neither a primitive nor a variable: a ParseError, never a crash
    with pytest.raises(ParseError):
        sx.parse("def f(a :: f32[]) = let x = frobnicate a a in [x]")


def test_annotation_mismatch_on_outputs_is_reported():
    with pytest.raises(ParseError, match="annotated here as f32\\[2\\]"):
        sx.parse("def f(a :: f32[]) = let x :: f32[] = sin a in [x :: f32[2]]")


def test_identity_bindings_print_as_bare_variables():
    p = sx.parse("def f(a :: f32[]) = let x0 = a in [x0]")
    assert p.eqns[0].prim == "id"
    assert "x0 = a" in str(p)
