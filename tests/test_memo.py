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
