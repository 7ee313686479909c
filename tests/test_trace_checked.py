"""A traced program's types come from the shape rules, so it is ``checked``: the pipeline
does not infer it again. A program whose annotations shax did not compute (parsed text) and
that a traced function calls makes the trace unchecked, so its annotations are still checked
(and a wrong one is reported) before anything is built from them."""

from __future__ import annotations

import numpy as np
import pytest

import shax_core as sx
import shax_core.numpy as snp
from shax_core import api


def test_a_traced_program_is_checked_and_infer_keeps_it():
    p = sx.trace(lambda x: snp.sin(x) * 2.0, np.zeros(3, np.float32))
    assert p.checked
    assert sx.infer(p) is p
    assert sx.verify(p) is p


def test_a_wrong_annotation_in_a_called_parsed_program_is_still_reported():
    bad = sx.parse("def g(a :: f32[3]) = let y :: f32[2] = sin a in [y]")
    p = sx.trace(lambda x: api.call(bad, [x])[0], np.zeros(3, np.float32))
    assert not p.checked
    with pytest.raises(sx.ShaxTypeError, match=r"annotated f32\[2\], but sin of f32\[3\]"):
        sx.vjp_program(p)


def test_calling_an_inferred_program_keeps_the_trace_checked():
    good = sx.infer(sx.parse("def g(a :: f32[3]) = let y = sin a in [y]"))
    p = sx.trace(lambda x: api.call(good, [x])[0] * 3.0, np.zeros(3, np.float32))
    assert p.checked
    (out, grad) = sx.evaluate(
        sx.vjp_program(p), np.full(3, 0.5, np.float32), np.ones(3, np.float32)
    )
    np.testing.assert_allclose(out, 3.0 * np.sin(0.5), rtol=1e-6)
    np.testing.assert_allclose(grad, 3.0 * np.cos(0.5), rtol=1e-6)
