"""Replayed transpose rules (shax_core.transpose) build exactly the programs the rules build.

The transposer records the equations a transpose rule emits for one key (primitive,
parameters, which operands are tangents and their types) and replays them for later
equations with the same key. Every stage must then print the same as with each rule run on
its own: on every corpus entry, on random programs, and on chains that repeat steps reading
constants, zeros, repeated operands and residuals; and the gradients stay right.
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
from shax_core import transpose
from shax_core.pipeline import run

ENTRIES = [e for e in load() if e.name not in EXPECTED_UNSUPPORTED]


def _stages(program, wrt=None, *, replay: bool, policy: str | None = None) -> dict[str, str]:
    with pytest.MonkeyPatch.context() as m:  # replayed in programs of any size, or never
        m.setattr(transpose, "REPLAY_FROM", 0 if replay else None)
        kwargs = {} if policy is None else {"policy": policy}
        stages = run(program, wrt, **kwargs).stages()
    return {name: str(p) for name, p in stages.items()}


@pytest.mark.parametrize("policy", ["save", "recompute"])
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.domain}-{e.name}")
def test_replayed_transpose_rules_give_the_same_programs_on_the_corpus(entry, policy):
    inputs = entry.inputs(seed=5, fdtype=np.float64)
    prog = shax_program(entry, inputs)
    wrt = float_positions(inputs)
    if not wrt or not prog.outs[0].type.is_float:
        pytest.skip("nothing to differentiate")
    replayed = _stages(prog, wrt, replay=True, policy=policy)
    assert replayed == _stages(prog, wrt, replay=False, policy=policy)


@SETTINGS
@given(programs())
def test_replayed_transpose_rules_give_the_same_programs_on_random_programs(case):
    p, _, _ = drawn(case)
    assert _stages(p, replay=True) == _stages(p, replay=False)


def _chain(x, y, m):
    """Steps whose transposes read constants (div, where, clip), zeros (where's other
    branch), broadcasts and sums, the same value twice, and residuals of each step."""
    for _ in range(5):
        z = snp.where(x > 0.1, x * x / 3.0, -y)
        x, y = snp.sum(snp.broadcast_to(z, (2, 3)) * m, axis=0)[1] + 2.0 * y, snp.clip(z, -1, 1) * x
        y = y / (1.5 + x * x)
    return x * y


@pytest.mark.parametrize("policy", ["save", "recompute"])
def test_a_chain_of_repeated_steps_is_replayed_exactly_and_its_gradient_is_right(policy):
    m = np.arange(6.0).reshape(2, 3) / 7
    args = (np.float64(0.4), np.float64(-0.3), m)
    p = sx.trace(_chain, *args)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transpose, "REPLAY_FROM", None)
        plain = sx.vjp_program(p, policy=policy)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transpose, "REPLAY_FROM", 0)
        replayed = sx.vjp_program(p, policy=policy)
    assert str(replayed) == str(plain)
    assert len(replayed.eqns) > 100
    out, gx, gy, gm = sx.evaluate(replayed, *args, np.float64(1.0))
    eps = 1e-6
    for i, g in enumerate((gx, gy)):
        hi, lo = list(args), list(args)
        hi[i], lo[i] = args[i] + eps, args[i] - eps
        fd = (sx.evaluate(p, *hi)[0] - sx.evaluate(p, *lo)[0]) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    assert np.asarray(gm).shape == (2, 3)
