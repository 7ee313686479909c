"""The corpus (tests/corpus): functions written as JAX users write them, run with shax.

Each entry traces with ``shax_core.numpy``, and its VJP (every float input, a random
cotangent) is checked against central finite differences in f64 by the dot-product identity
``<ct, (f(x + εt) - f(x - εt)) / 2ε> == <J^T ct, t>``. Entries that use something shax refuses
must raise ``UnsupportedError`` (naming the function and docs/numpy.md) and be listed in
``corpus.EXPECTED_UNSUPPORTED``; everything else must run. ``python tests/corpus/run.py``
compares the same entries with JAX when it is installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from corpus import DOMAINS, EXPECTED_UNSUPPORTED, load
from corpus.run import cotangent, float_positions, shax_value_and_vjp

import shax_core as sx
import shax_core.numpy as snp

ENTRIES = load()
EPS = 1e-6


def test_corpus_is_large_and_covers_every_domain():
    assert len(ENTRIES) >= 120
    assert len({e.name for e in ENTRIES}) == len(ENTRIES)
    assert {e.domain for e in ENTRIES} == set(DOMAINS)
    assert set(EXPECTED_UNSUPPORTED) <= {e.name for e in ENTRIES}
    # the bar: at least 97% of the corpus runs unchanged
    assert len(EXPECTED_UNSUPPORTED) <= 0.03 * len(ENTRIES)


def _directional(prog, inputs, wrt, directions, eps=EPS):
    plus, minus = list(inputs), list(inputs)
    for i, t in zip(wrt, directions, strict=True):
        plus[i] = inputs[i] + eps * t
        minus[i] = inputs[i] - eps * t
    (fp,) = sx.evaluate(prog, *plus)
    (fm,) = sx.evaluate(prog, *minus)
    return (fp.astype(np.float64) - fm.astype(np.float64)) / (2 * eps)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.domain}-{e.name}")
def test_entry_gradient_matches_finite_differences_f64(entry):
    inputs = entry.inputs(seed=3, fdtype=np.float64)
    if entry.name in EXPECTED_UNSUPPORTED:
        with pytest.raises(snp.UnsupportedError, match="docs/numpy.md"):
            shax_value_and_vjp(entry, inputs)
        return
    out, grads, prog = shax_value_and_vjp(entry, inputs)
    out_type = prog.outs[0].type
    assert np.asarray(out).shape == out_type.shape
    wrt = float_positions(inputs)
    if not out_type.is_float:
        return
    # f64 in, f64 out, unless the function itself casts (astype, .at updates into f32 zeros)
    f32_out = out_type.dtype == "f32"
    assert len(grads) == len(wrt)
    for i, g in zip(wrt, grads, strict=True):
        assert g.dtype == np.float64 and g.shape == inputs[i].shape
    rng = np.random.default_rng(7)
    directions = [rng.uniform(-1, 1, inputs[i].shape) for i in wrt]
    ct = cotangent(out).astype(np.float64)
    numeric = _directional(prog, inputs, wrt, directions, 1e-3 if f32_out else EPS)
    lhs = float(np.vdot(ct, numeric))
    rhs = float(sum(np.vdot(g, t) for g, t in zip(grads, directions, strict=True)))
    scale = max(1.0, float(np.vdot(np.abs(ct), np.abs(numeric))))
    rtol = 1e-3 if f32_out else entry.fd_rtol
    assert abs(lhs - rhs) <= rtol * scale, f"<ct, J t>: FD {lhs!r}, VJP {rhs!r}"


@pytest.mark.parametrize("name", sorted(EXPECTED_UNSUPPORTED))
def test_expected_unsupported_are_documented(name):
    """Every refusal the corpus meets is in docs/numpy.md with its reason."""
    with open("docs/numpy.md", encoding="utf-8") as f:
        text = f.read()
    assert EXPECTED_UNSUPPORTED[name] in text


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.domain}-{e.name}")
def test_entry_runs_eagerly_on_arrays_like_traced(entry):
    """The same source on NumPy arrays (``jnp.asarray`` inputs, as JAX arrays) evaluates at
    once and gives the traced program's value."""
    if entry.name in EXPECTED_UNSUPPORTED:
        return
    inputs = entry.inputs(seed=5, fdtype=np.float64)
    eager = entry.fn(snp, *[snp.asarray(a) for a in inputs])
    (traced,) = sx.evaluate(shax_value_and_vjp(entry, inputs)[2], *inputs)
    np.testing.assert_allclose(np.asarray(eager), traced, rtol=1e-9, atol=1e-12)
