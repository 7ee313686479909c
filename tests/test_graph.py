"""JSON graph form, canonical text and content hash."""

from __future__ import annotations

import json

import pytest

import shax_core as sx
from shax_core.graph import (
    GraphError,
    canonical_text,
    content_hash,
    from_graph,
    to_graph,
)
from tests.conftest import FIXTURES

SEEDS = sorted(FIXTURES.glob("*.shax"))


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.stem)
def test_graph_round_trip(path):
    for program in sx.parse_module(path.read_text()):
        graph = json.loads(json.dumps(to_graph(program)))
        assert from_graph(graph) == program


def test_constants_and_nonfinite_params_round_trip():
    text = (
        "def f(a :: f32[2]) = let c :: f32[2] = fromList [2] [1.5, nan]\n"
        " b :: bool[] = fromList [] [true]\n"
        " p = pad [(1,0)] -inf a\n y = mul a c in [y, p, b]"
    )
    p = sx.parse(text)
    g = to_graph(p)
    assert g["equations"][0]["params"]["data"] == [1.5, "NaN"]
    assert g["equations"][2]["params"]["value"] == "-Infinity"
    assert str(from_graph(json.loads(json.dumps(g)))) == str(p)


def test_canonical_text_ignores_names():
    a = sx.parse("def f(x :: f32[3]) = let y = sin x\n z = mul y x in [z]")
    b = sx.parse("def g(q :: f32[3]) = let r :: f32[3] = sin q\n s = mul r q in [s]")
    assert canonical_text(a) == canonical_text(b)
    assert content_hash(a, None, "1") == content_hash(b, [0], "1")
    assert content_hash(a, None, "1") != content_hash(a, None, "2")
    c = sx.parse("def f(x :: f32[3]) = let y = cos x\n z = mul y x in [z]")
    assert content_hash(a, None, "1") != content_hash(c, None, "1")
    d = sx.parse("def f(x :: f32[3]) = let y = fromList [3] [1.0, 2.0, 3.0]\n z = mul y x in [z]")
    e = sx.parse("def f(x :: f32[3]) = let y = fromList [3] [1.0, 2.0, 4.0]\n z = mul y x in [z]")
    assert content_hash(d, None, "1") != content_hash(e, None, "1")  # constants are hashed


BASE = {"inputs": [{"name": "a", "dtype": "f32", "shape": [2]}], "outputs": ["y"]}


def one_eqn(out: str, primitive: str, inputs: list[str]) -> dict:
    """A graph patch: one equation without parameters."""
    return {"equations": [{"out": out, "primitive": primitive, "inputs": inputs}]}


@pytest.mark.parametrize(
    ("patch", "where", "needle"),
    [
        (one_eqn("y", "frob", ["a"]), "equations[0] (y).primitive", "unknown primitive"),
        (one_eqn("y", "add", ["a"]), "equations[0] (y).inputs", "takes 2 input(s), got 1"),
        (one_eqn("y", "sin", ["y"]), "equations[0] (y).inputs[0]", "not defined"),
        (one_eqn("a", "sin", ["a"]), "equations[0] (a).out", "bound twice"),
        (one_eqn("y", "reduce_sum", ["a"]), "equations[0] (y).params", "needs parameter 'axes'"),
        (
            {"equations": [{"out": "y", "primitive": "sin", "params": {"k": 1}, "inputs": ["a"]}]},
            "equations[0] (y).params",
            "unknown parameter",
        ),
        (
            {
                "equations": [
                    {
                        "out": "y",
                        "primitive": "pad",
                        "inputs": ["a"],
                        "params": {"config": [[1]], "value": 0},
                    }
                ]
            },
            "equations[0] (y).params.config[0]",
            "pair",
        ),
        ({"equations": [], "outputs": ["nope"]}, "outputs[0]", "not defined"),
        (
            {"inputs": [{"name": "a", "dtype": "i8", "shape": []}], "equations": []},
            "inputs[0].dtype",
            "expected one of",
        ),
        ({"format_version": 2, "equations": []}, "format_version", "unsupported"),
    ],
)
def test_graph_errors_name_the_field(patch, where, needle):
    with pytest.raises(GraphError) as info:
        from_graph({**BASE, **patch})
    assert info.value.where == where
    assert needle in info.value.message


def test_bad_params_surface_as_type_errors_naming_the_equation():
    g = {
        **BASE,
        "equations": [
            {"out": "y", "primitive": "reduce_sum", "params": {"axes": [5]}, "inputs": ["a"]}
        ],
    }
    with pytest.raises(sx.ShaxTypeError, match="y = reduce_sum"):
        sx.infer(from_graph(g))
