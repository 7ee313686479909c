"""Memoized linearize rules (shax_core._memo) build exactly the programs the rules build.

The linearizer replays a rule's recorded equations for later equations with the same key
(primitive, parameters, operand types, zero tangents, repeated operands). Every stage of the
pipeline must then print the same as with each rule run on its own: on every corpus entry
(functions written as JAX users write them, every primitive family) and on random programs.
"""

from __future__ import annotations

import numpy as np
import pytest
from corpus import EXPECTED_UNSUPPORTED, load
from corpus.run import float_positions, shax_program
from hypothesis import given
from test_differential import programs
from test_properties import SETTINGS, drawn

import shax_core as sx
import shax_core.numpy as snp
from shax_core import _memo
from shax_core.pipeline import run

ENTRIES = [e for e in load() if e.name not in EXPECTED_UNSUPPORTED]


def _stages_text(program, wrt, memo: bool, monkeypatch) -> dict[str, str]:
    with monkeypatch.context() as m:
        if not memo:  # no key: every rule runs on its own
            m.setattr(_memo.RuleMemo, "key", lambda self, head, inputs: None)
        stages = run(program, wrt).stages()
    return {name: str(p) for name, p in stages.items()}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.domain}-{e.name}")
def test_memoized_rules_give_the_same_programs_on_the_corpus(entry, monkeypatch):
    inputs = entry.inputs(seed=3, fdtype=np.float64)
    prog = shax_program(entry, inputs)
    wrt = float_positions(inputs)
    if not wrt or not prog.outs[0].type.is_float:
        pytest.skip("nothing to differentiate")
    assert _stages_text(prog, wrt, True, monkeypatch) == _stages_text(prog, wrt, False, monkeypatch)


@SETTINGS
@given(programs())
def test_memoized_rules_give_the_same_programs_on_random_programs(case):
    p, _, _ = drawn(case)
    with pytest.MonkeyPatch.context() as m:
        want = {k: str(v) for k, v in run(p).stages().items()}
        m.setattr(_memo.RuleMemo, "key", lambda self, head, inputs: None)
        without = {k: str(v) for k, v in run(p).stages().items()}
    assert want == without


def test_a_repeated_step_is_replayed_with_its_residuals_and_constants():
    """A chain repeats one step: the replayed steps read their own residuals and share the
    linear program's constants, as the rule run each time would."""

    def chain(x, y):
        for _ in range(4):
            x, y = snp.sin(x) * y + 2.0 * snp.cos(y), snp.tanh(x * y) - y
        return x + y

    p = sx.trace(chain, np.float64(0.5), np.float64(0.3))
    with pytest.MonkeyPatch.context() as m:
        memoized = sx.vjp_program(p)
        m.setattr(_memo.RuleMemo, "key", lambda self, head, inputs: None)
        plain = sx.vjp_program(p)
    assert str(memoized) == str(plain)
    x, y, ct = np.float64(0.5), np.float64(0.3), np.float64(1.0)
    out, gx, gy = sx.evaluate(memoized, x, y, ct)
    eps = 1e-6
    fd_x = (sx.evaluate(p, x + eps, y)[0] - sx.evaluate(p, x - eps, y)[0]) / (2 * eps)
    fd_y = (sx.evaluate(p, x, y + eps)[0] - sx.evaluate(p, x, y - eps)[0]) / (2 * eps)
    assert np.isfinite([gx, gy]).all()
    np.testing.assert_allclose([gx, gy], [fd_x, fd_y], rtol=1e-6)


def test_replayed_equations_of_every_arity_match_the_rule_run_again():
    """Equations of no, one, two and three operands, a constant and a lifted value: the
    replayed tape appends, to each builder, what running the rule again appends."""
    from shax_core._linearize import _LinearBuilder
    from shax_core.core import Builder, Tracer
    from shax_core.ir import Type

    f32, pred = Type("f32", ()), Type("bool", ())
    current = {}  # the builders of the run in progress

    def rule(x, y, c):
        outer, inner = current["builders"]
        z = outer.emit_var("iota", ((), 0, "f32"), (), f32)  # no operands
        s = outer.emit_var("sin", (), (x.variable,), f32)
        m = outer.emit_var("mul", (), (s, y.variable), f32)
        w = outer.emit_var("select", (), (c.variable, m, z), f32)
        two = inner.constant(2.0, "f32").variable
        r = inner.lift_foreign(Tracer(outer, w))
        return Tracer(outer, w), Tracer(inner, inner.emit_var("mul", (), (r, two), f32))

    def built(memoized: bool):
        outer, inner = current["builders"] = Builder(), _LinearBuilder()
        memo = _memo.RuleMemo((outer, inner))
        args = [outer.add_param(t) for t in (f32, f32, pred, f32, f32, pred)]
        results = []
        for trio in (args[:3], args[3:], args[:3], args[3:]):
            key = memo.key(("rule",), trio) if memoized else None
            results.append(memo.apply(key, trio, rule, *trio))
        return outer, inner, results, memo

    plain, memoized = built(False), built(True)
    assert [len(t[0]) for t in memoized[3].tapes.values() if t is not _memo._ONCE] == [7]
    for a, b in zip(plain[:2], memoized[:2]):
        assert [str(e) for e in a.eqns] == [str(e) for e in b.eqns]
        assert [str(v) for v in a.params] == [str(v) for v in b.params]
        assert len(b.eqns) > 4
    assert [(str(p), str(t)) for p, t in plain[2]] == [(str(p), str(t)) for p, t in memoized[2]]
    assert len(memoized[1].residuals) == 4  # one per application: each lifts its own w
