"""Generated code for hot plans (shax_core/_codegen.py), checked from the user's side.

Programs whose names and literals are hostile (Python builtins, code, quotes, newlines,
huge/NaN/inf literals) go through the whole path (IR text, JSON graph, the tracing SDK and the
server; vjp; compile; hot calls) and give exactly the interpreter's results, while the text
handed to ``compile`` holds nothing but shax's own integer-made names. The template check
rejects tampered lines; random programs and their VJPs give bitwise the interpreter's
results; outputs stay unaliased; loops run (a scan's body stays interpreted, a while_loop's
body plan is generated like any hot plan).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager

import numpy as np
import pytest
from corpus import EXPECTED_UNSUPPORTED
from corpus import load as load_corpus
from corpus.run import cotangent, float_positions, shax_program
from hypothesis import given, settings
from test_differential import programs as differential_programs
from test_evaluate_plan import ALIASES, assert_outputs_independent
from test_properties import SETTINGS, drawn
from test_properties import programs as property_programs
from test_properties_loops import loop_inputs, looped_programs

import shax_core as sx
import shax_core.numpy as snp
from shax_core import _codegen as cg
from shax_core import lax
from shax_core.graph import from_graph
from shax_core.ir import ShaxError

HOT = cg.HOT_CALLS + 4
# the only characters the generated text may hold: shax's names are letters + digits
ALPHABET = set("defrunsckl0123456789(), =[]:\n") | set("delreturn")


@contextmanager
def codegen(mode: str):
    """``SHAX_CODEGEN=mode`` while plans are built (the setting is read then)."""
    old = os.environ.get("SHAX_CODEGEN")
    os.environ["SHAX_CODEGEN"] = mode
    try:
        yield
    finally:
        if old is None:
            del os.environ["SHAX_CODEGEN"]
        else:
            os.environ["SHAX_CODEGEN"] = old


def both_tiers(program):
    """The program compiled twice: interpreted only, and generated from the first call."""
    with codegen("0"):
        interpreted = sx.compile(program)
    with codegen("1"):
        generated = sx.compile(program)
    return interpreted, generated


def assert_same(got, want) -> None:
    """Bitwise equal: same dtype, shape and bytes (NaN payloads included)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape
        assert g.tobytes() == w.tobytes(), (g, w)


def assert_clean_source(exe, *hostile: str) -> str:
    """The text compiled for ``exe``: template lines over shax's alphabet, no hostile text."""
    text = cg.source(cg.read_plan(exe))
    cg.check_lines(text)
    assert set(text) <= ALPHABET, set(text) - ALPHABET
    for h in hostile:
        if len(h) > 3:  # short names like "k0" are shax's own spelling, by design
            assert h not in text
    return text


def hot_calls_agree(program, args, *hostile: str):
    """Many calls of each tier agree exactly, and the generated tier really ran."""
    interpreted, generated = both_tiers(program)
    want = interpreted(*args)
    for _ in range(3):
        assert_same(generated(*args), want)
    assert cg.tier(generated) == "generated" and cg.tier(interpreted) == "interpreted"
    assert_clean_source(generated, *hostile)
    return want


# ---------------------------------------------------------------------------------------------
# hostile names and literals, through the whole path

HOSTILE_TEXT = """-- \"\"\" __import__('os').system('x') ''' \\
def __import__(os.system :: f64[4], k0 :: f64[4], s1 :: f64[]) =
  let __builtins__ :: f64[4] = fromList [4] [1e308, nan, -inf, 5e-324]  -- ');exec('1
      c0 :: f64[] = fromList [] [1e400]
      eval'' = mul os.system k0
      exec = add eval'' __builtins__
      del = tanh exec
      return = sin os.system
      run = mul return del
      c1 = broadcast [] [4] s1
      s0.__class__ = mul run c1
      s2 = reduce_sum [0] s0.__class__
      lambda = max s2 c0
      k3 = min lambda s1
      r = add k3 s2
  in [r]"""


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_hostile_ir_text_names_and_literals():
    program = sx.infer(sx.parse(HOSTILE_TEXT))
    rng = np.random.default_rng(0)
    args = [rng.normal(size=4), rng.normal(size=4), np.float64(0.5)]
    hostile = ["__import__", "os.system", "__builtins__", "eval", "exec", "lambda", "__class__"]
    hot_calls_agree(program, args, *hostile)
    vjp = sx.vjp_program(program)
    out = hot_calls_agree(vjp, [*args, np.float64(1.0)], *hostile)
    assert np.isfinite(out[1][0]) and np.isnan(out[1][1])  # the literals did reach the values


def _hostile_graph(name_of):
    """``f(x, y) = sum(sin(x * y) * K + y)`` with every variable named ``name_of(role)``."""
    n = name_of
    return {
        "format_version": 1,
        "name": "f",
        "inputs": [
            {"name": n("x"), "dtype": "f64", "shape": [3]},
            {"name": n("y"), "dtype": "f64", "shape": [3]},
        ],
        "equations": [
            {"out": n("k"), "primitive": "fromList", "dtype": "f64",
             "params": {"shape": [3], "data": [1.7976931348623157e308, "-Infinity", 1e-300]},
             "inputs": []},
            {"out": n("m"), "primitive": "mul", "params": {}, "inputs": [n("x"), n("y")]},
            {"out": n("s"), "primitive": "sin", "params": {}, "inputs": [n("m")]},
            {"out": n("t"), "primitive": "mul", "params": {}, "inputs": [n("s"), n("k")]},
            {"out": n("u"), "primitive": "add", "params": {}, "inputs": [n("t"), n("y")]},
            {"out": n("r"), "primitive": "reduce_sum", "params": {"axes": [0]},
             "inputs": [n("u")]},
        ],
        "outputs": [n("r")],
    }  # fmt: skip


HOSTILE_NAMES = {
    "x": "__import__('os').system('x')",
    "y": '"); exec("1") #',
    "k": "a\nb\r\nc",
    "m": "'''",
    "s": "k0",
    "t": "s1 = c0",
    "u": "del s0\n    return [__builtins__]",
    "r": "\\u0000\x00 \N{SNOWMAN} s\u0663",
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_hostile_json_graph_names_and_literals():
    program = sx.infer(from_graph(_hostile_graph(HOSTILE_NAMES.get)))
    rng = np.random.default_rng(1)
    args = [rng.normal(size=3), rng.normal(size=3)]
    hot_calls_agree(program, args, *HOSTILE_NAMES.values())
    vjp = sx.vjp_program(program)
    out = hot_calls_agree(vjp, [*args, np.float64(1.0)], *HOSTILE_NAMES.values())
    assert np.isinf(out[0]) or np.isnan(out[0])  # -inf * sin(...) reached the result


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_hostile_names_and_literals_through_the_sdk(monkeypatch):
    """``grad`` of a traced function (hot: the SDK reuses its compiled program) whose name,
    and whose constants, are hostile; the result is the interpreter's, call after call."""

    def make():
        def f(x, y):
            big = snp.asarray([1e308, np.nan, -np.inf, 2.0])
            return snp.sum(snp.tanh(x * y) * 3.0 + snp.where(big > 0, x, y) * 0.25)

        f.__name__ = f.__qualname__ = "__import__('os').system('rm -rf /')\n"
        return f

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=4), rng.normal(size=4)
    made = []
    real = cg.for_executable
    monkeypatch.setattr(cg, "for_executable", lambda exe: made.append(real(exe)) or made[-1])
    results = {}
    for mode in ("0", "1"):
        with codegen(mode):
            g = sx.grad(make(), argnums=(0, 1))
            results[mode] = [g(x, y) for _ in range(HOT)]
        assert len(made) == (0 if mode == "0" else 1) and None not in made, mode
    for got, want in zip(results["1"], results["0"], strict=True):
        assert_same(got, want)
    traced = sx.trace(make(), x, y, name="os.system('x')")
    hot_calls_agree(sx.vjp_program(traced), [x, y, np.float64(1.0)], "os.system")


def test_hostile_graph_through_the_server(client):
    """A real server: a program uploaded with hostile names, then called by id many times
    (hot on the server's side): every answer is the interpreter's."""
    graph = _hostile_graph(HOSTILE_NAMES.get)
    for eq in graph["equations"]:
        if eq["primitive"] == "fromList":
            eq["params"]["data"] = [1e300, -2.5, 1e-300]  # finite: JSON carries it plainly
    r = client.post("/v1/programs", json={"graph": graph})
    assert r.status_code == 200, r.text
    pid = r.json()["id"]
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=3), rng.normal(size=3)
    body = {
        "inputs": [{"data": x.tolist()}, {"data": y.tolist()}],
        "cotangents": [{"data": 1.0}],
    }
    with codegen("0"):
        want = sx.compile(sx.vjp_program(sx.infer(from_graph(graph))))(x, y, np.float64(1.0))
    for _ in range(HOT):
        r = client.post(f"/v1/programs/{pid}/vjp", json=body)
        assert r.status_code == 200, r.text
        doc = r.json()
        got = [doc["outputs"][0], *doc["gradients"]]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(np.asarray(g["data"]).reshape(g["shape"]), w)


def test_hostile_function_through_the_client_sdk(server_url):
    """The client SDK traces a function named like code, with NaN/inf/huge constants, and
    differentiates it on a real server many times: every gradient is the local interpreter's."""
    from shax_client import Client

    def f(x, y):
        big = snp.asarray([1e38, np.nan, -np.inf, 2.0], dtype=np.float32)
        return snp.sum(snp.tanh(x * y) * 3.0 + snp.where(big > 0, x, y) * 0.25)

    f.__name__ = f.__qualname__ = "__import__('os').system('x')\n\"\"\""
    rng = np.random.default_rng(4)
    x, y = (rng.normal(size=4).astype(np.float32) for _ in range(2))
    with codegen("0"):
        want = sx.grad(f, argnums=(0, 1))(x, y)
    with Client(server_url) as client:
        df = client.grad(f, argnums=(0, 1))
        for _ in range(HOT):
            got = df(x, y)
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w)


# ---------------------------------------------------------------------------------------------
# the template and the namespace


def _medium_source() -> str:
    from shax_core.demo import SEED_A, SEED_B, medium

    with codegen("0"):
        exe = sx.compile(sx.vjp_program(sx.trace(medium, SEED_A, SEED_B)))
    return cg.source(cg.read_plan(exe))


TAMPERED = [
    ("    s3 = k0(s0)", "    s3 = k0(s0); __import__('os')"),
    ("    s3 = k0(s0)", "    s3 = __import__('os')"),
    ("    s3 = k0(s0)", "    import os"),
    ("    s3 = k0(s0)", "    s3 = k0(s0).T"),
    ("    s3 = k0(s0)", "    s3 = k0('s0')"),
    ("    s3 = k0(s0)", "    s3 = k0(*s0)"),
    ("    s3 = k0(s0)", "    s3 = k0(s0, x=1)"),
    ("    s3 = k0(s0)", "    s3 = k0(s0)  # comment"),
    ("    s3 = k0(s0)", "\ts3 = k0(s0)"),
    ("    s3 = k0(s0)", "    s3 = k0(s0)\n    s4 = k1(s3)[0]"),
    ("    s3 = k0(s0)", "    s\u0663 = k0(s0)"),  # a non-ASCII digit
    ("    s3 = k0(s0)", "    s3 = k0(s0)\ndef run():"),
    ("    s3 = k0(s0)", "    s3 = k0(k1)"),
    ("    s3 = k0(s0)", "    s3 = k0(c0())"),
    ("    s3 = k0(s0)", "    s3 = k0(1)"),
    ("    s3 = k0(s0)", "    x = k0(s0)"),
    ("    s3 = k0(s0)", "    s3 = k0(s0)\r"),
    ("def run(s0, s1, s2):", "def run(s0, s1, s2=__builtins__):"),
    ("def run(s0, s1, s2):", "async def run(s0, s1, s2):"),
    ("    del s0", "    del s0, k0"),
    ("    return [", "    return 1 or ["),
    ("    return [", "    yield ["),
]


@pytest.mark.parametrize(("line", "tampered"), TAMPERED)
def test_the_template_check_rejects_a_tampered_line(line, tampered):
    text = _medium_source()
    cg.check_lines(text)  # the real text passes
    assert line in text
    bad = text.replace(line, tampered, 1)
    with pytest.raises(cg.CodegenError):
        cg.check_lines(bad)
    with pytest.raises(cg.CodegenError):
        cg.code_of(bad)


def test_a_name_outside_the_namespace_is_refused(monkeypatch):
    """A template-shaped line naming a kernel the plan does not have is refused too."""
    program = sx.parse("def f(a :: f32[2]) = let b = sin a in [b]")
    with codegen("0"):
        exe = sx.compile(program)
    plan = cg.read_plan(exe)
    real = cg.source(plan)
    monkeypatch.setattr(cg, "source", lambda *_: real.replace("k0(", "k99("))
    with pytest.raises(cg.CodegenError, match="k99"):
        cg.generate(plan)


def test_the_namespace_holds_the_plans_objects_and_no_builtins():
    program = sx.parse(
        "def f(a :: f32[3]) = let k = fromList [3] [1.0, 2.0, 3.0]\n b = mul a k\n"
        " c = sin b in [c, k]"
    )
    with codegen("1"):
        exe = sx.compile(program)
    a = np.ones(3, np.float32)
    exe(a)
    fn = exe._generated
    ns = fn.__globals__
    assert ns["__builtins__"] == {}
    assert all(re.fullmatch(r"[kc]\d+", n) for n in ns if n != "__builtins__"), sorted(ns)
    assert [ns[f"k{i}"] for i in range(len(exe.steps))] == [s[0] for s in exe.steps]
    assert set(fn.__code__.co_names) <= set(ns)
    constant = next(v for n, v in ns.items() if n.startswith("c"))
    assert constant is next(t for t in exe.template if t is not None)


class _FakeExecutable:
    def __init__(self, steps):
        self.steps = steps
        self.template = [None] * 4
        self.n_params = 1
        self.out_slots = (1,)
        self.out_types = (sx.Type("f32", (2,)),)
        self.out_copy = [False]


@pytest.mark.parametrize(
    "step",
    [
        (np.sin, ("0",), 1, ()),  # a string slot
        (np.sin, (True,), 1, ()),  # a bool is not a slot
        (np.sin, (np.int64(0),), 1, ()),  # nor a NumPy integer
        (np.sin, (0,), -1, ()),
        (np.sin, (0,), 1, ("__import__",)),
        ("sin", (0,), 1, ()),  # not callable
        (np.sin, (0,), (), ()),  # binds nothing
    ],
)
def test_a_plan_not_made_of_plain_ints_is_not_generated(step):
    exe = _FakeExecutable((step,))
    with pytest.raises(cg.CodegenError):
        cg.read_plan(exe)
    assert cg.for_executable(exe) is None  # it stays interpreted


@pytest.mark.parametrize(
    "steps",
    [
        ((np.sin, (2,), 1, ()),),  # reads a slot nothing bound
        ((np.sin, (0,), 1, ()), (np.cos, (0,), 1, ())),  # binds a slot twice
        ((np.sin, (0,), 2, (0,)), (np.add, (2, 0), 1, ())),  # reads a deleted slot
        ((np.sin, (0,), 1, (1,)),),  # deletes an output, then returns it
        ((np.sin, (0,), 0, ()),),  # rebinds a parameter
    ],
)
def test_a_plan_whose_slots_do_not_flow_is_not_generated(steps):
    exe = _FakeExecutable(steps)
    with pytest.raises(cg.CodegenError):
        cg.source(cg.read_plan(exe))
    assert cg.for_executable(exe) is None


def test_a_slot_freed_twice_is_deleted_once():
    exe = _FakeExecutable(((np.sin, (0,), 2, (0, 0)), (np.cos, (2,), 1, (2, 0))))
    text = cg.source(cg.read_plan(exe))
    assert text.count("del s0") == 1 and "del s2\n" in text
    fn = cg.for_executable(exe)
    x = np.array([0.5, 1.0], np.float32)
    np.testing.assert_array_equal(fn(x)[0], np.cos(np.sin(x)))


# ---------------------------------------------------------------------------------------------
# the same values as the interpreter


@settings(SETTINGS, max_examples=min(SETTINGS.max_examples, 25))
@given(differential_programs())
def test_random_programs_and_their_vjps_agree_with_the_interpreter(case):
    program, args, rng = drawn(case)
    interpreted, generated = both_tiers(program)
    assert_same(generated(*args), interpreted(*args))
    vjp = sx.vjp_program(program)
    cts = [rng.uniform(-1, 1, v.type.shape) for v in program.outs]
    interpreted, generated = both_tiers(vjp)
    assert_same(generated(*args, *cts), interpreted(*args, *cts))
    assert cg.tier(generated) == "generated"


CORPUS = [e for e in load_corpus() if e.name not in EXPECTED_UNSUPPORTED]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: f"{e.domain}-{e.name}")
def test_corpus_vjps_agree_with_the_interpreter(entry):
    """Every corpus function (written as JAX users write them) and its VJP: the generated
    tier gives bitwise the interpreter's outputs and gradients."""
    inputs = entry.inputs(seed=3)
    program = shax_program(entry, inputs)
    interpreted, generated = loop_tiers(program)
    want = interpreted(*inputs)
    assert_same(generated(*inputs), want)
    wrt = float_positions(inputs)
    if program.outs[0].type.is_float and wrt:
        vjp = sx.vjp_program(program, wrt)
        ct = cotangent(want[0])
        interpreted, generated = loop_tiers(vjp)
        assert_same(generated(*inputs, ct), interpreted(*inputs, ct))
        assert cg.tier(generated) == "generated" or len(generated.steps) > cg.MAX_STEPS


@settings(SETTINGS, max_examples=min(SETTINGS.max_examples, 10))
@given(property_programs())
def test_random_generated_outputs_are_independent(case):
    program, args, _ = drawn(case)
    with codegen("1"):
        exe = sx.compile(program)
        dup = sx.compile(
            program.__class__(program.name, program.params, program.eqns, program.outs * 2)
        )
    assert_outputs_independent(exe, args)
    assert_outputs_independent(dup, args)
    assert cg.tier(exe) == cg.tier(dup) == "generated"


def test_generated_outputs_alias_nothing():
    """The plan's output-copy rules hold in generated code: views, arguments, constants and
    repeated slots are copied; fresh results are handed over."""
    with codegen("1"):
        exe = sx.compile(sx.parse(ALIASES))
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4)).astype(np.float32)
    b = rng.normal(size=(4, 5)).astype(np.float32)
    outs = exe(a, b)
    assert cg.tier(exe) == "generated"
    assert outs[0] is not outs[1] and not np.shares_memory(outs[0], outs[1])
    assert not np.shares_memory(outs[0], outs[2]) and not np.shares_memory(outs[4], a)
    assert_outputs_independent(exe, [a, b])
    with codegen("0"):
        assert_same(exe(a, b), sx.compile(sx.parse(ALIASES))(a, b))


def loop_tiers(program):
    """``both_tiers`` for a program with loops: the generated tier gets its own copy of the
    bodies (a body's plan is compiled once per body object, in the tier of its first use)."""
    with codegen("0"):
        interpreted = sx.compile(program)
    with codegen("1"):
        generated = sx.compile(sx.parse(str(program)))
    return interpreted, generated


@pytest.fixture
def bodies_made(monkeypatch):
    """The loop-body functions generated while a test runs (None: a body left interpreted)."""
    made = []
    real = cg.for_executable

    def spy(exe, body=False):
        fn = real(exe, body)
        if body:
            made.append(fn)
        return fn

    monkeypatch.setattr(cg, "for_executable", spy)
    return made


@settings(SETTINGS, max_examples=min(SETTINGS.max_examples, 10))
@given(looped_programs())
def test_scans_agree_with_the_interpreter(case):
    """A scan is one multi-result step of the outer plan; under SHAX_CODEGEN=1 its body runs
    as generated code too, trip after trip, with bitwise the interpreter's results."""
    program, seed = case
    args, rng = loop_inputs(program, seed)
    made = []
    real = cg.for_executable

    def spy(exe, body=False):
        made.append((body, real(exe, body)))
        return made[-1][1]

    cg.for_executable = spy
    try:
        interpreted, generated = loop_tiers(program)
        assert_same(generated(*args), interpreted(*args))
        vjp = sx.vjp_program(program)
        cts = [rng.uniform(-1, 1, v.type.shape) for v in program.outs]
        interpreted, generated = loop_tiers(vjp)
        assert_same(generated(*args, *cts), interpreted(*args, *cts))
        assert_same(generated(*args, *cts), interpreted(*args, *cts))
    finally:
        cg.for_executable = real
    bodies = [fn for body, fn in made if body]
    assert len(bodies) >= 2 and None not in bodies  # the scan's body, the transposed one


def _fori(trips: int):
    def f(x, y):
        def body(i, c):
            u, v = c
            return snp.sin(u) * v + snp.cos(v), u * v - v * 0.5

        u, v = lax.fori_loop(0, trips, body, (x, y))
        return u + v

    return sx.vjp_program(sx.trace(f, np.float64(0.3), np.float64(0.7)))


def test_a_long_loop_body_is_generated_on_its_first_call(bodies_made):
    """W4 as a fori_loop: HOT_TRIPS trips make a body hot within one call."""
    args = [np.float64(0.3), np.float64(0.7), np.float64(1.0)]
    program = _fori(cg.HOT_TRIPS)
    with codegen("0"):
        want = sx.compile(program)(*args)
    with codegen("auto"):
        exe = sx.compile(sx.parse(str(program)))
    assert_same(exe(*args), want)
    assert len(bodies_made) == 2 and None not in bodies_made  # forward and transposed bodies
    assert cg.tier(exe) == "interpreted"  # the outer plan: not hot yet
    for _ in range(cg.HOT_CALLS):
        assert_same(exe(*args), want)
    assert cg.tier(exe) == "generated" and len(bodies_made) == 2  # made once each


def test_a_short_loop_body_waits_until_hot(bodies_made):
    trips = 10
    calls_to_hot = -(-cg.HOT_TRIPS // trips)
    args = [np.float64(0.3), np.float64(0.7), np.float64(1.0)]
    program = _fori(trips)
    with codegen("0"):
        want = sx.compile(program)(*args)
        off = sx.compile(sx.parse(str(program)))
    with codegen("auto"):
        exe = sx.compile(sx.parse(str(program)))
    for _ in range(calls_to_hot - 1):
        assert_same(exe(*args), want)
        assert_same(off(*args), want)
    assert bodies_made == []
    assert_same(exe(*args), want)
    assert len(bodies_made) == 2 and None not in bodies_made
    for _ in range(calls_to_hot):
        assert_same(off(*args), want)
    assert len(bodies_made) == 2  # SHAX_CODEGEN=0: never


def test_while_loops_and_conds_agree_with_the_interpreter():
    def f(x, n):
        def body(carry):
            i, v = carry
            return i + 1, snp.sin(v) * 1.5 + lax.cond(i % 2 == 0, lambda u: u, snp.cos, v)

        return lax.while_loop(lambda c: c[0] < n, body, (0, x))[1]

    x = np.linspace(-1, 1, 5)
    program = sx.trace(f, x, np.int32(7))
    interpreted, generated = both_tiers(program)
    for n in (0, 1, 7, 30):
        assert_same(generated(x, np.int32(n)), interpreted(x, np.int32(n)))


def test_a_failing_kernel_raises_the_interpreters_error():
    program = sx.trace(
        lambda x: lax.while_loop(lambda v: v < 1e9, lambda v: v + 1.0, x, max_trips=3),
        np.float64(0.0),
    )
    errors = []
    for exe in both_tiers(program):
        with pytest.raises(ShaxError) as info:
            for _ in range(3):
                exe(np.float64(0.0))
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


# ---------------------------------------------------------------------------------------------
# the tiers


def _chain(n: int):
    body = "\n".join(f"      x{i + 1} = sin x{i}" for i in range(n))
    return sx.parse(f"def f(x0 :: f64[2]) =\n  let\n{body}\n  in [x{n}]")


def test_plans_are_interpreted_until_hot():
    with codegen("auto"):
        exe = sx.compile(_chain(5))
    x = np.array([0.1, 0.2])
    want = exe(x)
    for call in range(2, cg.HOT_CALLS):
        assert cg.tier(exe) == "interpreted", call
        assert_same(exe(x), want)
    assert_same(exe(x), want)  # the HOT_CALLS-th call runs the generated code
    assert cg.tier(exe) == "generated"
    assert_same(exe(x), want)


def test_the_setting_turns_generation_off_or_on():
    x = np.array([0.1, 0.2])
    with codegen("0"):
        off = sx.compile(_chain(3))
    with codegen("always"):
        on = sx.compile(_chain(3))
    for _ in range(HOT):
        assert_same(off(x), on(x))
    assert cg.tier(off) == "interpreted" and cg.tier(on) == "generated"
    assert cg.setting(None) == cg.setting("") == cg.setting(" AUTO ") == "auto"
    assert cg.setting("off") == "off" and cg.setting("1") == "always"
    with codegen("sometimes"), pytest.raises(ShaxError, match="SHAX_CODEGEN"):
        sx.compile(_chain(2))


def test_long_plans_stay_interpreted(monkeypatch):
    monkeypatch.setattr(cg, "MAX_STEPS", 6)
    x = np.array([0.1, 0.2])
    with codegen("1"):
        short, long = sx.compile(_chain(6)), sx.compile(_chain(7))
    for _ in range(HOT):
        short(x), long(x)
    assert cg.tier(short) == "generated" and cg.tier(long) == "interpreted"


def test_plans_of_one_structure_share_one_compiled_code():
    """Two programs that differ only in names and constants compile to the same code."""
    a = sx.parse("def f(a :: f32[2]) = let k = fromList [2] [1.0, 2.0]\n b = mul a k in [b]")
    b = sx.parse("def g(z :: f32[2]) = let q = fromList [2] [7.0, nan]\n r = mul z q in [r]")
    with codegen("1"):
        ea, eb = sx.compile(a), sx.compile(b)
    x = np.ones(2, np.float32)
    ea(x)
    hits, misses = cg.CODES.hits, cg.CODES.misses
    got = eb(x)
    assert (cg.CODES.hits, cg.CODES.misses) == (hits + 1, misses)
    assert ea._generated.__code__ is eb._generated.__code__
    assert ea._generated is not eb._generated  # each with its own kernels and constants
    np.testing.assert_array_equal(got[0], [7.0, np.nan])


def test_the_text_depends_on_the_plans_structure_only():
    """Programs differing in names, literals and params (axes, permutations) of the same
    shapes compile to the same text: none of those reach it."""
    template = """def {f}({a} :: f64[2, 2, 2]) =
  let {k} :: f64[2, 2, 2] = fromList [2, 2, 2] [{lits}]
      {m} = mul {a} {k}
      {t} = transpose {perm} {m}
      {r} = reduce_sum {axes} {t}
  in [{r}]"""
    first = template.format(
        f="f",
        a="a",
        k="k",
        m="m",
        t="t",
        r="r",
        lits="2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0",
        perm="[1, 0, 2]",
        axes="[0]",
    )
    second = template.format(
        f="__import__", a="os.system", k="exec", m="s1", t="k0", r="c0",
        lits="1e308, nan, -inf, inf, 5e-324, -0.0, 2.0, 3.0", perm="[2, 1, 0]", axes="[1]",
    )  # fmt: skip
    with codegen("0"):
        one, two = (sx.compile(sx.vjp_program(sx.infer(sx.parse(t)))) for t in (first, second))
    assert one.steps != two.steps  # different kernels and constants ...
    text = cg.source(cg.read_plan(one))
    assert cg.source(cg.read_plan(two)) == text  # ... in the same text
    assert set(text) <= ALPHABET


def test_the_code_cache_is_bounded_by_the_size_of_its_texts():
    cache = cg.CodeCache(max_chars=3 * len(_chain_source(4)))
    texts = [_chain_source(n) for n in (4, 4, 5, 6, 7, 8)]
    codes = [cache.get(t, cg.compile_checked) for t in texts]
    assert codes[0] is codes[1] and cache.hits == 1 and cache.misses == 5
    assert cache.chars <= cache.max_chars and len(cache._codes) < 5
    assert texts[-1] in cache._codes and texts[0] not in cache._codes  # oldest out first
    with pytest.raises(cg.CodegenError):
        cache.get(texts[0] + "    import os\n", cg.compile_checked)


def _chain_source(n: int) -> str:
    with codegen("0"):
        return cg.source(cg.read_plan(sx.compile(_chain(n))))


def test_threads_calling_one_plan_across_its_switch_agree():
    """A server calls one cached plan from several threads: across the switch to generated
    code every call gives the interpreter's result."""
    from concurrent.futures import ThreadPoolExecutor

    from shax_core.demo import SEED_A, SEED_B, SEED_CT, medium

    program = sx.vjp_program(sx.trace(medium, SEED_A, SEED_B))
    with codegen("0"):
        want = sx.compile(program)(SEED_A, SEED_B, SEED_CT)
    with codegen("auto"):
        exe = sx.compile(program)

    def calls(_):
        return [exe(SEED_A, SEED_B, SEED_CT) for _ in range(cg.HOT_CALLS // 2)]

    with ThreadPoolExecutor(4) as pool:
        results = [r for rs in pool.map(calls, range(4)) for r in rs]
    assert len(results) == 2 * cg.HOT_CALLS and cg.tier(exe) == "generated"
    for got in results:
        assert_same(got, want)
