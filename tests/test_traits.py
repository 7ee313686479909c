"""Every trait's law (``shax_core.registry.TRAITS``), checked on every primitive that claims it.

A claim is checked on random inputs of each of the primitive's cases in test_registry.py, so a
primitive that claims a trait it does not have fails here, not in a user's program (pad does
not preserve splats: ``test_a_wrong_claim_fails`` shows the check catches it).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_registry import CASES, CONSTANT_PARAMS, Case

from shax_core.registry import REGISTRY, TRAITS, lookup


def _impl(case: Case, args):
    prim = lookup(case.prim)
    return np.asarray(prim.impl(*args, **prim.kwargs(case.params)))


def _out_type(case: Case, fdtype="f64"):
    return case.program(fdtype).outs[0].type


def _distinct(rng, t):
    """Values that are all different (and far from any parameter constant)."""
    n = int(np.prod(t.shape, dtype=np.int64)) if t.shape else 1
    return (
        (10.0 + rng.permutation(n) + rng.uniform(0.01, 0.5, n)).reshape(t.shape).astype(t.np_dtype)
    )


def law_elementwise(case: Case, rng):
    types = case.in_types("f64")
    out = _out_type(case)
    assert all(t.shape == out.shape for t in types), "operands and result differ in shape"
    args = case.sample(rng, "f64")
    want = _impl(case, args)
    # position-wise: permuting every operand's positions permutes the result the same way
    perm = rng.permutation(out.size)
    permuted = [a.reshape(-1)[perm].reshape(a.shape) for a in args]
    np.testing.assert_array_equal(_impl(case, permuted).reshape(-1), want.reshape(-1)[perm])
    # so an op of splats is the splat of the op on the scalars
    scalars = [a.reshape(-1)[:1].reshape(()) for a in args]
    splats = [np.broadcast_to(s, a.shape).copy() for s, a in zip(scalars, args, strict=True)]
    np.testing.assert_array_equal(
        _impl(case, splats), np.broadcast_to(_impl(case, scalars), want.shape)
    )


def law_preserves_splat(case: Case, rng):
    assert lookup(case.prim).arity == 1
    (t,) = case.in_types("f64")
    c = rng.uniform(-3, 3)
    out = _impl(case, [np.full(t.shape, c, t.np_dtype)])
    assert np.all(out == c), f"{case.prim} of a splat of {c} is not a splat of {c}: {out}"


def law_layout(case: Case, rng):
    args = [_distinct(rng, t) for t in case.in_types("f64")]
    out = _impl(case, args)
    allowed = set(np.concatenate([a.reshape(-1) for a in args]).tolist())
    allowed |= {float(v) for v in _scalar_params(case)}
    stray = set(out.reshape(-1).tolist()) - allowed
    assert not stray, f"{case.prim} computed values that are neither operands nor parameters"


def _scalar_params(case: Case):
    prim = lookup(case.prim)
    for p, v in zip(prim.params, case.params, strict=True):
        if p.kind == "scalar":
            yield v


def law_commutative(case: Case, rng):
    assert lookup(case.prim).arity == 2
    x, y = case.sample(rng, "f64")
    np.testing.assert_array_equal(_impl(case, [x, y]), _impl(case, [y, x]))


def law_out_buffer(case: Case, rng):
    args = case.sample(rng, "f64")
    out_type = _out_type(case)
    want = _impl(case, args)
    fresh = _impl(case, args)
    for a in args:
        assert not np.shares_memory(fresh, a), f"{case.prim}'s result is a view of an operand"
    prim = lookup(case.prim)
    kw = prim.kwargs(case.params)
    buf = np.empty(out_type.shape, out_type.np_dtype)
    assert prim.impl(*args, out=buf, **kw) is buf
    np.testing.assert_array_equal(buf, want)
    for k, a in enumerate(args):
        if a.dtype == out_type.np_dtype and a.shape == out_type.shape:
            operands = [x.copy() for x in args]
            assert prim.impl(*operands, out=operands[k], **kw) is operands[k]
            np.testing.assert_array_equal(operands[k], want)


def law_fresh(case: Case, rng):
    """A new, writeable buffer on every call, from the impl and from the compiled kernel."""
    args = case.sample(rng, "f64")
    prim = lookup(case.prim)
    kw = prim.kwargs(case.params)
    calls = [lambda: prim.impl(*args, **kw)]
    if prim.kernel is not None:
        kernel = prim.kernel(tuple(case.in_types("f64")), _out_type(case), **kw)
        calls.append(lambda: kernel(*args))
    for call in calls:
        first, second = np.asarray(call()), np.asarray(call())
        np.testing.assert_array_equal(first, second)
        for a in args:
            assert not np.shares_memory(first, a), f"{case.prim}'s result shares an operand"
        assert not np.shares_memory(first, second), f"{case.prim} returned one buffer twice"
        assert first.flags.writeable, f"{case.prim}'s result is read-only"


def law_constant(name: str, rng):
    prim = REGISTRY[name]
    assert prim.arity == 0
    params = (*CONSTANT_PARAMS, "f64")
    first, second = prim.impl(*params), prim.impl(*params)
    np.testing.assert_array_equal(first, second)
    assert first is not second and not np.shares_memory(first, second)


LAWS = {
    "elementwise": law_elementwise,
    "preserves_splat": law_preserves_splat,
    "layout": law_layout,
    "commutative": law_commutative,
    "out_buffer": law_out_buffer,
    "fresh": law_fresh,
}


def test_every_trait_has_a_law_and_readers():
    assert set(LAWS) | {"constant"} == set(TRAITS)
    for trait in TRAITS.values():
        assert trait.law and trait.relied_on_by, trait.name


CLAIMS = [
    (trait, name)
    for trait in sorted(LAWS)
    for name, prim in sorted(REGISTRY.items())
    if trait in prim.traits
]


@pytest.mark.parametrize(("trait", "name"), CLAIMS, ids=[f"{t}-{n}" for t, n in CLAIMS])
def test_claimed_law_holds(trait, name):
    cases = [c for c in CASES if c.prim == name]
    assert cases, f"{name} claims {trait} but has no case in test_registry.py"
    rng = np.random.default_rng(11)
    for case in cases:
        for _ in range(3):
            LAWS[trait](case, rng)


@pytest.mark.parametrize("name", sorted(n for n, p in REGISTRY.items() if "constant" in p.traits))
def test_constant_law(name):
    law_constant(name, np.random.default_rng(12))


def test_a_wrong_claim_fails():
    """pad is layout but not splat-preserving: claiming it would fail the check (the
    simplifier bug this test was written for); non-commutative, non-positionwise ops fail too."""
    rng = np.random.default_rng(13)
    pad = next(c for c in CASES if c.prim == "pad" and c.params[1] != 0.0)
    law_layout(pad, rng)
    with pytest.raises(AssertionError, match="not a splat"):
        law_preserves_splat(pad, rng)
    sub = next(c for c in CASES if c.prim == "sub")
    with pytest.raises(AssertionError):
        law_commutative(sub, rng)
    transpose = next(c for c in CASES if c.prim == "transpose")
    with pytest.raises(AssertionError):
        law_elementwise(transpose, rng)
    with pytest.raises(AssertionError, match="shares an operand"):  # a view is not fresh
        law_fresh(transpose, rng)
    with pytest.raises(AssertionError):  # reduce_sum adds: not a layout primitive
        law_layout(next(c for c in CASES if c.prim == "reduce_sum"), rng)
