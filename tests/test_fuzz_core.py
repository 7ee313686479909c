"""Fuzzing the core's front door: mutated IR texts and JSON graphs raise only ShaxError.

Seeds are the valid programs in ``tests/fixtures/*.shax`` and their JSON graphs. Mutations:
truncation, deleted / duplicated / swapped / replaced tokens (unknown primitives, huge or negative
numbers, unicode, stray punctuation, keywords, real primitive names), and for graphs: wrong
arity, unknown primitives, undefined variables and cycles, bad dims, odd JSON types.

Whatever parses is pushed on through ``infer``, ``compile`` (the plan; never run, so a memory bomb
is never attempted) and ``vjp_program``; the only exceptions allowed anywhere are ShaxError
subclasses. Example counts are fixed and small (the whole file runs in well under 30 s);
SHAX_FUZZ_EXAMPLES=N runs N random (not derandomized) examples per test for a deeper search.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shax_core as sx
from shax_core.graph import from_graph, to_graph
from shax_core.primitives import REGISTRY
from shax_core.wire import json_depth

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.shax"))
TEXTS = [p.read_text() for p in FIXTURES]
GRAPHS = [to_graph(sx.parse(t)) for t in TEXTS]
SIZE_BOUND = 1 << 26  # values larger than this are never compiled (huge dims are fine to type)

TOKEN = re.compile(r"\s+|::|[()\[\],=]|[^\s()\[\],=:]+|:")
NASTY = [
    "nope",
    "sinn",
    "-1",
    "0",
    "1",
    "99999999999999999999999",
    "4611686018427387905",
    "4294967296",
    "1e400",
    "-1e400",
    "nan",
    "inf",
    "-inf",
    "0.5",
    "λ",
    "x\u0301",
    "\u202e",
    "\x00",
    "\ufeff",
    "𝔵",
    "[",
    "]",
    "(",
    ")",
    ",",
    "=",
    "::",
    ":",
    "def",
    "let",
    "in",
    "f32",
    "f64",
    "bool",
    "f16",
    "true",
    "[]",
    "[100000,100000]",
    "[-1]",
    "[(1,-1)]",
    *sorted(REGISTRY),
]

FUZZ = settings(
    max_examples=int(os.environ.get("SHAX_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize="SHAX_FUZZ_EXAMPLES" not in os.environ,  # CI: fixed examples
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def small_enough(program: sx.Program) -> bool:
    """Only compile programs whose values are all modest (exact sizes, no int64 wrap)."""
    for v in (*program.params, *(e.out for e in program.eqns)):
        if math.prod(v.type.shape) * v.type.np_dtype.itemsize > SIZE_BOUND:
            return False
    return True


def run_core(text: str) -> None:
    """parse -> infer -> compile -> vjp_program; anything but ShaxError fails the test."""
    try:
        programs = sx.parse_module(text)
    except sx.ShaxError:
        return
    for p in programs:
        push_through(p)


def push_through(program: sx.Program) -> None:
    try:
        typed = sx.infer(program)
    except sx.ShaxError:
        return
    if not small_enough(typed):
        return
    for step in (sx.compile, sx.vjp_program):
        try:
            step(typed)
        except sx.ShaxError:
            pass
    # every typed program also round-trips through its text and its graph
    assert sx.parse(sx.print_program(typed)) == typed
    assert from_graph(json.loads(json.dumps(to_graph(typed)))) == typed


@st.composite
def mutated_text(draw) -> str:
    text = draw(st.sampled_from(TEXTS))
    tokens = TOKEN.findall(text)
    for _ in range(draw(st.integers(1, 3))):
        if not tokens:
            break
        i = draw(st.integers(0, len(tokens) - 1))
        op = draw(st.sampled_from(["truncate", "delete", "dup", "swap", "replace", "insert"]))
        if op == "truncate":
            tokens = tokens[:i]
        elif op == "delete":
            del tokens[i]
        elif op == "dup":
            tokens.insert(i, tokens[i])
        elif op == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == "replace":
            tokens[i] = draw(st.sampled_from(NASTY) | st.text(max_size=4))
        else:
            tokens.insert(i, " " + draw(st.sampled_from(NASTY)) + " ")
    return "".join(tokens)


@FUZZ
@given(mutated_text())
def test_mutated_text_raises_only_shax_errors(text):
    run_core(text)


@FUZZ
@given(st.sampled_from(TEXTS), st.integers(0, 10_000))
def test_truncated_text(text, cut):
    run_core(text[: cut % (len(text) + 1)])


DIMS = st.sampled_from([0, 1, 2, 3, 6, -1, -(2**40), 2**31, 2**32, 2**62, 2**63, 10**30])


@FUZZ
@given(st.data())
def test_text_with_odd_dims(data):
    """Every integer in a seed text replaced by zero, negative, huge or int64-overflowing."""
    text = data.draw(st.sampled_from(TEXTS))
    nums = list(re.finditer(r"(?<![\w.])\d+(?![\w.])", text))
    if not nums:
        return
    picks = data.draw(st.lists(st.sampled_from(nums), min_size=1, max_size=3, unique_by=id))
    out, last = [], 0
    for m in sorted(picks, key=lambda m: m.start()):
        out += [text[last : m.start()], str(data.draw(DIMS))]
        last = m.end()
    run_core("".join(out) + text[last:])


@pytest.mark.parametrize("depth", [10, 1000, 100_000])
def test_deep_brackets_in_text(depth):
    """Deeply nested brackets and parentheses: a ParseError, never a RecursionError."""
    for opener in "[(":
        run_core(f"def f(a :: f32{opener * depth}) = let in [a]")
        run_core("def f(a :: f32[]) = let x = pad " + opener * depth + " 0.0 a in [x]")


# ---- JSON graphs --------------------------------------------------------------------------

JSON_ODD = st.sampled_from(
    [None, True, 0, -1, 1.5, 2**63, -(2**70), 1e308, "", "x", "λ", "NaN", [], {}, [[[]]], [-1]]
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _set(doc, path, value):
    if not path:
        return value
    target = doc
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return doc


def _delete(doc, path):
    if path:
        target = doc
        for k in path[:-1]:
            target = target[k]
        del target[path[-1]]
    return doc


@st.composite
def mutated_graph(draw):
    g = copy.deepcopy(draw(st.sampled_from(GRAPHS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(g))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["odd", "delete", "prim", "name", "cycle", "arity", "dims"]))
        eqns = g.get("equations") if isinstance(g, dict) else None
        eqns = [e for e in eqns if isinstance(e, dict)] if isinstance(eqns, list) else []
        if op == "odd":
            g = _set(g, path, copy.deepcopy(draw(JSON_ODD)))
        elif op == "delete":
            g = _delete(g, path)
        elif eqns and op == "prim":
            e = draw(st.sampled_from(eqns))
            e["primitive"] = draw(st.sampled_from([*sorted(REGISTRY), "nope", "", "__class__"]))
        elif eqns and op == "name":
            e = draw(st.sampled_from(eqns))
            e["inputs"] = [draw(st.sampled_from(["undefined", "λ", e.get("out", "x"), ""]))]
        elif eqns and op == "cycle":
            # equation i reads a variable that is defined later (or itself)
            i = draw(st.integers(0, len(eqns) - 1))
            j = draw(st.integers(i, len(eqns) - 1))
            if isinstance(eqns[i].get("inputs"), list) and eqns[i]["inputs"]:
                eqns[i]["inputs"][0] = eqns[j].get("out")
        elif eqns and op == "arity":
            e = draw(st.sampled_from(eqns))
            if isinstance(e.get("inputs"), list):
                e["inputs"] = e["inputs"] * draw(st.integers(0, 3))
        elif op == "dims":
            ins = g.get("inputs") if isinstance(g, dict) else None
            for e in [*(ins if isinstance(ins, list) else []), *(eqns or [])]:
                if isinstance(e, dict) and isinstance(e.get("shape"), list) and e["shape"]:
                    e["shape"][0] = draw(DIMS)
                    break
    return g


@FUZZ
@given(mutated_graph())
def test_mutated_graph_raises_only_shax_errors(graph):
    try:
        program = from_graph(graph)
    except sx.ShaxError:
        return
    push_through(program)


def test_graph_cycle_and_self_reference_are_graph_errors():
    g = copy.deepcopy(GRAPHS[0])
    g["equations"][0]["inputs"] = [g["equations"][-1]["out"]]
    with pytest.raises(sx.ShaxError, match="not defined before"):
        from_graph(g)
    g = copy.deepcopy(GRAPHS[0])
    g["equations"][1]["inputs"] = [g["equations"][1]["out"]]
    with pytest.raises(sx.ShaxError, match="not defined before"):
        from_graph(g)


# ---- regressions found by fuzzing ---------------------------------------------------------


@pytest.mark.parametrize("where", ["input", "equation", "primitive", "param"])
@pytest.mark.parametrize("value", [[], {}, [["f32"]]])
def test_unhashable_json_where_a_name_is_expected(where, value):
    """Found by fuzzing: ``dtype not in DTYPES`` raised TypeError for a JSON list or object."""
    g = copy.deepcopy(GRAPHS[0])
    if where == "input":
        g["inputs"][0]["dtype"] = value
    elif where == "equation":
        g["equations"][0]["dtype"] = value
    elif where == "primitive":
        g["equations"][0]["primitive"] = value
    else:
        g["equations"] = [
            {"out": "c", "primitive": "convert", "params": {"dtype": value}, "inputs": ["arg0"]}
        ]
        g["outputs"] = ["c"]
    with pytest.raises(sx.ShaxError):
        from_graph(g)


def test_fromlist_with_wrapping_shape_is_a_shax_error():
    # regression: sizes were multiplied in int64 and [2**32, 2**32] wrapped to 0 elements
    text = "def f(a :: f32[]) = let c = fromList [4294967296,4294967296] [] in [c]"
    with pytest.raises(sx.ShaxError, match="needs 18446744073709551616 values"):
        sx.compile(sx.infer(sx.parse(text)))


def test_peak_bytes_of_huge_types_does_not_wrap():
    p = sx.parse("def f(a :: f32[]) = let y = broadcast [] [4294967296,4294967296] a in [y]")
    assert sx.compile(sx.infer(p)).peak_bytes >= 4 * 2**64


# ---- the JSON depth scanner (wire.json_depth) against a reference -------------------------


def _reference_depth(obj) -> int:
    if isinstance(obj, list):
        return 1 + max((_reference_depth(x) for x in obj), default=0)
    if isinstance(obj, dict):
        return 1 + max((_reference_depth(x) for x in obj.values()), default=0)
    return 0


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.text(alphabet='[]{}"\\ab,:λ\n', max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=4), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(JSON_VALUES, st.sampled_from([1, 2, 3, 7, 1 << 22]), st.booleans())
def test_json_depth_matches_reference(value, chunk, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert json_depth(text, chunk=chunk) == _reference_depth(value)
