"""Table-driven tests over the primitive registry.

For every primitive: the registry declares a shape rule, an impl, and a way to differentiate
it (linearize rule, transpose rule or no tangent); the impl agrees with a NumPy reference and
keeps the dtype (f32 stays f32, f64 stays f64). For every primitive with a float output, on
random f64 inputs in a safe domain: the linearize rule agrees with central finite differences,
and the linear program passes the dot-product test ``<ct, J t> == <J^T ct, t>`` after
transposition. Linear primitives are also transposed directly. Tie conventions of max, min,
reduce_max and abs are pinned explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from adcheck import (
    assert_close,
    check_hvp,
    check_jvp,
    check_transpose,
    check_transpose_linear,
    fd_jvp,
    float_indices,
    one_eqn_program,
)

import shax_core as sx
from shax_core.ir import Eqn, Program, Type, Var
from shax_core.primitives import REGISTRY, lookup

F = "F"  # placeholder for "the case's float dtype" (f32 or f64)


# ---------------------------------------------------------------------------------------------
# samplers: (rng, Type) -> array in a safe domain


def uniform(lo, hi):
    return lambda rng, t: rng.uniform(lo, hi, t.shape).astype(t.np_dtype)


def away_from_zero(lo=0.3, hi=2.0):
    def sample(rng, t):
        mag = rng.uniform(lo, hi, t.shape)
        sign = np.where(rng.random(t.shape) < 0.5, -1.0, 1.0)
        return (sign * mag).astype(t.np_dtype)

    return sample


def distinct(rng, t):
    """Values with no ties, at least 0.1 apart (for reduce_max and friends)."""
    n = int(np.prod(t.shape, dtype=np.int64)) if t.shape else 1
    v = (rng.permutation(n) - n / 2) * 0.25 + rng.uniform(-0.05, 0.05, n)
    return v.reshape(t.shape).astype(t.np_dtype)


def booleans(rng, t):
    return rng.random(t.shape) < 0.5


@dataclass
class Case:
    """One primitive applied to inputs of given types, with a NumPy reference."""

    id: str
    prim: str
    params: tuple
    types: list  # [(dtype or F, shape)]
    samplers: list
    ref: Callable
    # inputs the primitive is linear in (for the direct transpose test); None: not linear
    linear_in: tuple | None = None
    fd_eps: float = 1e-6
    fd_rtol: float = 1e-6
    fd_atol: float = 1e-7
    # tolerance of the dot-product test (f64 round-off; looser when f32 values are involved)
    dp_rtol: float = 1e-10
    # how the input at position i is derived from earlier ones, e.g. max's second operand
    derive: dict = field(default_factory=dict)

    def in_types(self, fdtype: str) -> list[Type]:
        return [Type(fdtype if d == F else d, s) for d, s in self.types]

    def sample(self, rng, fdtype: str) -> list[np.ndarray]:
        types = self.in_types(fdtype)
        args = [s(rng, t) for s, t in zip(self.samplers, types, strict=True)]
        for i, fn in self.derive.items():
            args[i] = fn(rng, args).astype(types[i].np_dtype)
        return args

    def program(self, fdtype: str, params: tuple | None = None) -> Program:
        return one_eqn_program(
            self.prim, self.params if params is None else params, self.in_types(fdtype)
        )


def _tied_or_apart(rng, args):
    """A second operand that differs from the first by at least 0.1 everywhere."""
    x = args[0]
    return x + np.where(rng.random(x.shape) < 0.5, -1.0, 1.0) * rng.uniform(0.1, 1.0, x.shape)


def _mostly_equal(rng, args):
    x = args[0]
    return np.where(rng.random(x.shape) < 0.4, x, rng.uniform(-2, 2, x.shape))


# ---------------------------------------------------------------------------------------------
# independent NumPy references


def ref_broadcast(x, dims, shape):
    # move operand axes into the order of their target axes, insert the new axes, stretch
    order = np.argsort(dims)
    y = np.transpose(x, order)
    sorted_dims = [dims[i] for i in order]
    expanded = [1] * len(shape)
    for axis, d in enumerate(sorted_dims):
        expanded[d] = y.shape[axis]
    return np.broadcast_to(y.reshape(expanded), shape)


def ref_dot_general(x, y, lc, rc, lb, rb):
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    xs = [None] * x.ndim
    ys = [None] * y.ndim
    for a, b in zip(lb, rb, strict=True):
        xs[a] = ys[b] = next(letters)
    for a, b in zip(lc, rc, strict=True):
        xs[a] = ys[b] = next(letters)
    for i in range(x.ndim):
        xs[i] = xs[i] or next(letters)
    for i in range(y.ndim):
        ys[i] = ys[i] or next(letters)
    out = [xs[a] for a in lb]
    out += [xs[i] for i in range(x.ndim) if i not in lc and i not in lb]
    out += [ys[i] for i in range(y.ndim) if i not in rc and i not in rb]
    spec = f"{''.join(xs)},{''.join(ys)}->{''.join(out)}"
    return np.einsum(spec, x.astype(np.float64), y.astype(np.float64)).astype(x.dtype)


def ref_pad(x, config, value):
    out = np.full([n + lo + hi for n, (lo, hi) in zip(x.shape, config)], value, x.dtype)
    out[tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape, config))] = x
    return out


def ref_concatenate(*args):
    *xs, axis = args
    return np.concatenate(xs, axis)


def _unary_case(name, ref, sampler, **kw):
    return Case(name, name, (), [(F, (2, 3))], [sampler], ref, **kw)


U = uniform(-2.0, 2.0)


ROUNDING = dict(fd_eps=1e-2, fd_rtol=1e-4, fd_atol=1e-5, dp_rtol=1e-6)


def convert_case(src: str, dst: str, shape: tuple, sampler, linear: bool, id=None, **tol) -> Case:
    """``convert dst`` of a ``src`` operand; the reference is NumPy's astype."""
    to = Type(dst, ()).np_dtype
    return Case(
        id or f"convert-{src}-{dst}",
        "convert",
        (dst,),
        [(src, shape)],
        [sampler],
        lambda x, dtype: x.astype(to),
        linear_in=(0,) if linear else None,
        **tol,
    )


# dot_general dimension numbers (lhs_contract, rhs_contract, lhs_batch, rhs_batch) of two cases
UNUSUAL = ((3, 2), (0, 2), (1,), (3,))  # two contracted axes out of order, a batch axis
X4, Y4 = (3, 2, 4, 5), (5, 6, 4, 2)
SWAPPED = ((2,), (2,), (0, 1), (1, 0))  # two batch axes paired in swapped order


def linear1(id: str, prim: str, params: tuple, shape: tuple, ref: Callable) -> Case:
    """A primitive linear in its one float operand, on uniform inputs of ``shape``."""
    return Case(id, prim, params, [(F, shape)], [U], ref, linear_in=(0,))


def contraction(id: str, params: tuple, x: tuple, y: tuple, linear_in: tuple) -> Case:
    """``dot_general`` with ``params`` on operands of shapes x and y."""
    return Case(id, "dot_general", params, [(F, x), (F, y)], [U, U], ref_dot_general, linear_in)


CASES: list[Case] = [
    # linear arithmetic
    Case("add", "add", (), [(F, (2, 3)), (F, (2, 3))], [U, U], np.add, linear_in=(0, 1)),
    Case("sub", "sub", (), [(F, (2, 3)), (F, (2, 3))], [U, U], np.subtract, linear_in=(0, 1)),
    _unary_case("negate", np.negative, U, linear_in=(0,)),
    _unary_case("id", lambda x: x, U, linear_in=(0,)),
    linear1("id-scalar", "id", (), (), lambda x: x),
    # bilinear and division
    Case("mul", "mul", (), [(F, (2, 3)), (F, (2, 3))], [U, U], np.multiply, linear_in=(0,)),
    Case("mul-rhs", "mul", (), [(F, (3,)), (F, (3,))], [U, U], np.multiply, linear_in=(1,)),
    Case(
        "div",
        "div",
        (),
        [(F, (2, 3)), (F, (2, 3))],
        [U, away_from_zero(0.5, 2.0)],
        np.divide,
        linear_in=(0,),
    ),
    Case("pow", "pow", (), [(F, (2, 3)), (F, (2, 3))], [uniform(0.5, 2.0), U], np.power),
    Case("pow-scalar", "pow", (), [(F, ()), (F, ())], [uniform(0.5, 2.0), U], np.power),
    # the Floating functions
    _unary_case("sin", np.sin, U),
    _unary_case("cos", np.cos, U),
    _unary_case("exp", np.exp, U),
    _unary_case("log", np.log, uniform(0.3, 3.0)),
    _unary_case("sqrt", np.sqrt, uniform(0.3, 3.0)),
    _unary_case("tan", np.tan, uniform(-1.2, 1.2)),
    _unary_case("asin", np.arcsin, uniform(-0.9, 0.9)),
    _unary_case("acos", np.arccos, uniform(-0.9, 0.9)),
    _unary_case("atan", np.arctan, U),
    _unary_case("sinh", np.sinh, U),
    _unary_case("cosh", np.cosh, U),
    _unary_case("tanh", np.tanh, U),
    _unary_case("asinh", np.arcsinh, U),
    _unary_case("acosh", np.arccosh, uniform(1.2, 3.0)),
    _unary_case("atanh", np.arctanh, uniform(-0.9, 0.9)),
    _unary_case("log1p", np.log1p, uniform(-0.5, 3.0)),
    _unary_case("expm1", np.expm1, U),
    _unary_case("abs", np.abs, away_from_zero()),
    _unary_case("sign", np.sign, away_from_zero()),
    # max / min (no ties here; ties are tested below)
    Case(
        "max", "max", (), [(F, (2, 3)), (F, (2, 3))], [U, U], np.maximum, derive={1: _tied_or_apart}
    ),
    Case(
        "min", "min", (), [(F, (2, 3)), (F, (2, 3))], [U, U], np.minimum, derive={1: _tied_or_apart}
    ),
    # comparisons (bool results; some equal operands so eq/le/ge see both answers)
    *[
        Case(n, n, (), [(F, (3, 4)), (F, (3, 4))], [U, U], fn, derive={1: _mostly_equal})
        for n, fn in zip(
            ["eq", "ne", "lt", "le", "gt", "ge"],
            [np.equal, np.not_equal, np.less, np.less_equal, np.greater, np.greater_equal],
            strict=True,
        )
    ],
    Case(
        "select",
        "select",
        (),
        [("bool", (2, 3)), (F, (2, 3)), (F, (2, 3))],
        [booleans, U, U],
        np.where,
        linear_in=(1, 2),
    ),
    Case(
        "select-scalar",
        "select",
        (),
        [("bool", ()), (F, ()), (F, ())],
        [booleans, U, U],
        np.where,
        linear_in=(1, 2),
    ),
    # convert: between float types (linear; an f32 step rounds, so looser tolerances), to and
    # from bool (no tangent)
    convert_case("f64", "f32", (2, 3), U, linear=True, **ROUNDING),
    convert_case("f32", "f64", (2, 3), U, linear=True, **ROUNDING),
    convert_case("f64", "f64", (4,), U, linear=True, id="convert-same"),
    convert_case("bool", "f32", (2, 3), booleans, linear=False),
    convert_case("f64", "bool", (2, 3), away_from_zero(), linear=False),
    # contractions
    contraction("dot_general-matmul", ((1,), (0,), (), ()), (2, 3), (3, 4), linear_in=(0,)),
    contraction("dot_general-batch-2contract-unusual", UNUSUAL, X4, Y4, linear_in=(0,)),
    contraction("dot_general-batch-2contract-unusual-rhs", UNUSUAL, X4, Y4, linear_in=(1,)),
    contraction(
        "dot_general-batch-middle", ((2,), (0,), (1,), (1,)), (4, 2, 3), (3, 2, 5), linear_in=(1,)
    ),
    contraction("dot_general-2batch-swapped", SWAPPED, (2, 3, 4), (3, 2, 4, 5), linear_in=(0,)),
    contraction(
        "dot_general-full-contract", ((0, 1), (1, 0), (), ()), (2, 3), (3, 2), linear_in=(1,)
    ),
    contraction("dot_general-outer", ((), (), (), ()), (2,), (3,), linear_in=(0,)),
    contraction("dot_general-batch-only", ((), (), (0,), (0,)), (3, 2), (3, 4), linear_in=(1,)),
    Case("dot-mm", "dot", (), [(F, (2, 3)), (F, (3, 4))], [U, U], np.matmul, linear_in=(0,)),
    Case("dot-vm", "dot", (), [(F, (3,)), (F, (3, 2))], [U, U], np.matmul, linear_in=(1,)),
    Case("dot-mv", "dot", (), [(F, (2, 3)), (F, (3,))], [U, U], np.matmul, linear_in=(0,)),
    Case("dot-vv", "dot", (), [(F, (3,)), (F, (3,))], [U, U], np.matmul, linear_in=(1,)),
    # layout
    linear1("broadcast-new-axis", "broadcast", ((1,), (2, 6)), (6,), ref_broadcast),
    linear1("broadcast-stretch", "broadcast", ((0, 1), (4, 3)), (1, 3), ref_broadcast),
    linear1("broadcast-stretch-and-new", "broadcast", ((0, 2), (3, 2, 4)), (1, 4), ref_broadcast),
    linear1("broadcast-scalar", "broadcast", ((), (2, 3)), (), ref_broadcast),
    linear1("broadcast-all-stretched", "broadcast", ((0, 1), (2, 3)), (1, 1), ref_broadcast),
    linear1("reshape", "reshape", ((4, 6),), (2, 3, 4), lambda x, shape: x.reshape(shape)),
    linear1("reshape-to-scalar", "reshape", ((),), (1, 1), lambda x, shape: x.reshape(shape)),
    linear1("reshape-add-axes", "reshape", ((1, 2, 3),), (6,), lambda x, shape: x.reshape(shape)),
    linear1(
        "transpose-3d", "transpose", ((2, 0, 1),), (2, 3, 4), lambda x, perm: np.transpose(x, perm)
    ),
    linear1("transpose-2d", "transpose", ((1, 0),), (2, 3), lambda x, perm: np.transpose(x, perm)),
    linear1(
        "slice",
        "slice",
        ((1, 2), (3, 5)),
        (4, 5),
        lambda x, s, lim: x[s[0] : lim[0], s[1] : lim[1]],
    ),
    linear1(
        "slice-3d",
        "slice",
        ((0, 1, 2), (2, 2, 4)),
        (3, 2, 4),
        lambda x, s, lim: x[tuple(map(slice, s, lim))],
    ),
    Case("pad-value", "pad", (((1, 0), (0, 2)), 1.5), [(F, (2, 3))], [U], ref_pad),
    linear1("pad-zero", "pad", (((2, 1), (1, 0)), 0.0), (2, 3), ref_pad),
    Case("pad-1d-negative-value", "pad", (((0, 3),), -2.0), [(F, (3,))], [U], ref_pad),
    Case(
        "concatenate-3",
        "concatenate",
        (1,),
        [(F, (2, 1)), (F, (2, 3)), (F, (2, 2))],
        [U, U, U],
        ref_concatenate,
        linear_in=(0, 1, 2),
    ),
    Case(
        "concatenate-axis0",
        "concatenate",
        (0,),
        [(F, (1, 3)), (F, (2, 3))],
        [U, U],
        ref_concatenate,
        linear_in=(0, 1),
    ),
    linear1("concatenate-1", "concatenate", (0,), (4,), ref_concatenate),
    # reductions
    linear1(
        "reduce_sum-2axes", "reduce_sum", ((0, 2),), (2, 3, 4), lambda x, axes: np.sum(x, axis=axes)
    ),
    linear1(
        "reduce_sum-all",
        "reduce_sum",
        ((0, 1, 2),),
        (2, 3, 4),
        lambda x, axes: np.sum(x, axis=axes),
    ),
    linear1("reduce_sum-none", "reduce_sum", ((),), (2, 3), lambda x, axes: np.sum(x, axis=axes)),
    linear1(
        "reduce_sum-middle", "reduce_sum", ((1,),), (2, 3, 4), lambda x, axes: np.sum(x, axis=axes)
    ),
    Case(
        "reduce_max-2axes",
        "reduce_max",
        ((0, 2),),
        [(F, (2, 3, 4))],
        [distinct],
        lambda x, axes: np.max(x, axis=axes),
    ),
    Case(
        "reduce_max-last",
        "reduce_max",
        ((1,),),
        [(F, (3, 4))],
        [distinct],
        lambda x, axes: np.max(x, axis=axes),
    ),
    Case(
        "reduce_max-all",
        "reduce_max",
        ((0, 1),),
        [(F, (3, 4))],
        [distinct],
        lambda x, axes: np.max(x, axis=axes),
    ),
]

# the NumPy surface's primitives (indexing, numeric, decompositions) live in their own table
from registry_cases_numpy import NUMPY_CASES  # noqa: E402

CASES += NUMPY_CASES

# fromList takes no operands; it is tested through programs with a parameter it ignores
CONSTANT_PARAMS = ((2, 2), (1.5, -2.0, 0.25, 3.0))


def constant_program(fdtype: str) -> Program:
    a = Var("a0", Type(fdtype, (2, 2)))
    c = Var("c")
    y = Var("y")
    eqns = (
        Eqn(c, "fromList", (*CONSTANT_PARAMS, fdtype), ()),
        Eqn(y, "mul", (), (a, c)),
    )
    return sx.verify(sx.infer(Program("f", (a,), eqns, (y, c))))


def _id(case):
    return case.id


def _case_ids():
    return [c.id for c in CASES]


FLOAT_OUT = [c for c in CASES if c.program("f64").outs[0].type.is_float]
# stop_gradient's tangent is zero by definition, not by finite differences
# (test_no_tangent_primitives_have_no_float_tangent checks it)
DIFFERENTIABLE = [
    c for c in FLOAT_OUT if any(t.is_float for t in c.in_types("f64")) and c.prim != "stop_gradient"
]


# ---------------------------------------------------------------------------------------------
# completeness


# primitives with sub-programs (loops, branches) have their registry checks (FD in f64,
# dot-product test, second order, agreement with the unrolled program) in tests/test_control.py
WITH_SUBPROGRAMS = {"scan", "cond", "while_loop"}


def test_cases_cover_every_primitive():
    covered = {c.prim for c in CASES} | {"fromList"} | WITH_SUBPROGRAMS
    assert set(REGISTRY) <= covered, f"no test case for {sorted(set(REGISTRY) - covered)}"
    assert len(set(_case_ids())) == len(CASES)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_declares_rules(name):
    prim = REGISTRY[name]
    assert prim.name == name and lookup(name) is prim
    assert callable(prim.shape_rule)
    assert callable(prim.impl)
    assert prim.linearize is not None or prim.transpose is not None or prim.no_tangent
    if any(c.prim == name and c.linear_in is not None for c in CASES):
        assert prim.transpose is not None, f"linear primitive {name} has no transpose rule"
    if not prim.no_tangent:
        assert prim.linearize is not None, f"{name} has tangents but no linearize rule"


@pytest.mark.parametrize("name", sorted(n for n, p in REGISTRY.items() if p.no_tangent))
def test_no_tangent_primitives_have_no_float_tangent(name):
    """A no-tangent primitive is piecewise constant: its linearize rule gives a symbolic zero."""
    cases = [c for c in CASES if c.prim == name and any(t.is_float for t in c.in_types("f64"))]
    for case in cases:
        p = case.program("f64")
        _, linear = sx.linearize_program(p)
        args = case.sample(np.random.default_rng(0), "f64")
        tangents = [np.ones(p.params[i].type.shape) for i in float_indices(p)]
        (out,) = sx.evaluate(sx.jvp_program(p), *args, *tangents)[1:]
        assert not np.any(out), f"{name} gave a non-zero tangent {out}"


# ---------------------------------------------------------------------------------------------
# impl against NumPy, dtype kept


@pytest.mark.parametrize("fdtype", ["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_impl_matches_numpy(case, fdtype):
    rng = np.random.default_rng(1)
    p = case.program(fdtype)
    args = case.sample(rng, fdtype)
    out_type = p.outs[0].type
    want = np.asarray(case.ref(*args, *case.params))
    # the raw impl, before evaluate's final cast could hide a dtype change
    prim = lookup(case.prim)
    raw = np.asarray(prim.impl(*args, **prim.kwargs(case.params)))
    assert raw.dtype == out_type.np_dtype, f"impl returned {raw.dtype}, the type is {out_type}"
    assert raw.shape == out_type.shape
    (got,) = sx.evaluate(p, *args)
    assert got.dtype == out_type.np_dtype and got.shape == out_type.shape
    if out_type.is_float:
        assert out_type.dtype == (fdtype if case.prim != "convert" else case.params[0])
        rtol = 1e-5 if out_type.dtype == "f32" else 1e-12
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(raw, want, rtol=rtol, atol=rtol)
    else:
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(raw, want)


@pytest.mark.parametrize("fdtype", ["f32", "f64"])
def test_from_list_impl(fdtype):
    prog = constant_program(fdtype)
    a = np.ones((2, 2), Type(fdtype, ()).np_dtype)
    y, c = sx.evaluate(prog, a)
    want = np.array(CONSTANT_PARAMS[1], Type(fdtype, ()).np_dtype).reshape(2, 2)
    assert c.dtype == want.dtype and y.dtype == want.dtype
    np.testing.assert_array_equal(c, want)
    raw = REGISTRY["fromList"].impl(*CONSTANT_PARAMS, fdtype)
    assert raw.dtype == want.dtype
    np.testing.assert_array_equal(raw, want)


UNORDERED_BROADCASTS = [
    # (dims, shape, operand shape): operand axes land on output axes out of order
    ((1, 0), (3, 2), (2, 3)),  # a transpose
    ((2, 0), (2, 4, 3), (3, 1)),  # out of order, a new axis, and a stretched size-1 axis
    ((2, 0, 1), (4, 2, 3), (3, 4, 1)),
]


@pytest.mark.parametrize("dims,shape,xshape", UNORDERED_BROADCASTS)
def test_broadcast_dims_out_of_order_rejected_or_correct(dims, shape, xshape):
    """``broadcast [1,0] [3,2] x`` maps operand axis 0 to output axis 1: a transpose. The shape
    rule must either reject unordered dims, or the impl, the linearize rule and the transpose
    rule must all honour them. (At 18b26f9 the rule accepted them and the impl reshaped.)"""
    rng = np.random.default_rng(8)
    try:
        p = one_eqn_program("broadcast", (dims, shape), [Type("f64", xshape)])
    except sx.ShaxError:
        return
    x = rng.uniform(-1, 1, xshape)
    (got,) = sx.evaluate(p, x)
    np.testing.assert_array_equal(got, ref_broadcast(x, dims, shape))
    raw = REGISTRY["broadcast"].impl(x, dims, shape)
    np.testing.assert_array_equal(raw, ref_broadcast(x, dims, shape))
    check_jvp(p, [x], rng)
    check_transpose(p, [x], rng)
    check_transpose_linear(p, 1, [], rng)


def test_pow_zero_base_gradient_in_exponent_is_finite():
    """d(x^y)/dy is taken as 0 at x == 0 (like JAX), so 0 ** y stays differentiable in y."""
    p = one_eqn_program("pow", (), [Type("f64", (3,)), Type("f64", (3,))])
    x = np.array([0.0, 2.0, 0.0])
    y = np.array([2.0, 1.5, 3.0])
    _, dy = sx.evaluate(sx.jvp_program(p), x, y, np.zeros(3), np.ones(3))
    np.testing.assert_allclose(dy, [0.0, np.log(2.0) * 2.0**1.5, 0.0], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# linearize rules against finite differences (f64), and the dot-product test


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=_id)
def test_linearize_matches_finite_differences(case):
    rng = np.random.default_rng(2)
    p = case.program("f64")
    for _ in range(2):
        args = case.sample(rng, "f64")
        check_jvp(p, args, rng, rtol=case.fd_rtol, atol=case.fd_atol, eps=case.fd_eps)


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=_id)
def test_linear_program_matches_finite_differences(case):
    """The raw linearize rule (no rewrites before it): the linear program's J t against
    central differences."""
    rng = np.random.default_rng(3)
    p = case.program("f64")
    wrt = float_indices(p)
    args = case.sample(rng, "f64")
    jt, _, t, _ = check_transpose(p, args, rng, wrt, rtol=case.dp_rtol)
    (numeric,) = fd_jvp(p, args, wrt, t, case.fd_eps)
    assert_close(jt[0], numeric, rtol=case.fd_rtol, atol=case.fd_atol)


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=_id)
def test_transpose_dot_product_of_linearization(case):
    rng = np.random.default_rng(4)
    p = case.program("f64")
    for _ in range(2):
        check_transpose(p, case.sample(rng, "f64"), rng, rtol=case.dp_rtol)
    # with respect to each float input alone
    for i in float_indices(p):
        check_transpose(p, case.sample(rng, "f64"), rng, wrt=(i,), rtol=case.dp_rtol)


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=_id)
def test_zipped_vjp_matches_transposed(case):
    """vjp_program = primal outputs + J^T ct, the same numbers as the separate programs."""
    rng = np.random.default_rng(5)
    p = case.program("f64")
    args = case.sample(rng, "f64")
    ct = rng.uniform(-1, 1, p.outs[0].type.shape).astype(p.outs[0].type.np_dtype)
    v = sx.verify(sx.vjp_program(p))
    out, *grads = sx.evaluate(v, *args, ct)
    assert_close(out, sx.evaluate(p, *args)[0], rtol=1e-12, atol=1e-12)
    primal, _, transposed = (sx.stages(p)[k] for k in ("linearized", "linear", "transposed"))
    values = sx.evaluate(primal, *args)
    want = sx.evaluate(transposed, ct, *values[1:])
    assert len(grads) == len(want) == len(float_indices(p))
    for g, w in zip(grads, want, strict=True):
        assert_close(g, w, rtol=1e-12, atol=1e-12)


SECOND_ORDER = [c for c in DIFFERENTIABLE if c.prim != "convert" or c.params[0] == "f64"]


@pytest.mark.parametrize("case", SECOND_ORDER, ids=_id)
def test_second_order_matches_finite_differences(case):
    """vjp_program(vjp_program(p)) is valid and its Hessian-vector products match central
    differences of the gradient: the linearize rules of the ops the first-order rules emit."""
    rng = np.random.default_rng(9)
    p = case.program("f64")
    check_hvp(p, case.sample(rng, "f64"), rng)


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=_id)
def test_f32_stays_f32_through_ad(case):
    """In an f32 program, every stage (constants the rules introduce included) stays f32, and
    the VJP/JVP results match the f64 ones to f32 precision."""
    rng = np.random.default_rng(10)
    p32, p64 = case.program("f32"), case.program("f64")
    args32 = case.sample(rng, "f32")
    args64 = [a.astype(np.float64) if a.dtype == np.float32 else a for a in args32]
    if case.prim == "convert":
        args64 = args32  # the input dtype is the case's own
    allowed = {"f32", "bool", "i32"} if case.prim != "convert" else {"f32", "f64", "bool"}
    stages = sx.stages(p32)
    for name, prog in stages.items():
        for e in prog.eqns:
            assert e.out.type.dtype in allowed, f"{name}: {e.out.name} = {e.prim} :: {e.out.type}"
    ct32 = rng.uniform(-1, 1, p32.outs[0].type.shape).astype(p32.outs[0].type.np_dtype)
    ct64 = ct32.astype(p64.outs[0].type.np_dtype)
    got = sx.evaluate(sx.vjp_program(p32), *args32, ct32)
    want = sx.evaluate(sx.vjp_program(p64), *args64, ct64)
    types = [p32.outs[0].type] + [p32.params[i].type for i in float_indices(p32)]
    for g, w, t in zip(got, want, types, strict=True):
        assert g.dtype == t.np_dtype, (g.dtype, t)
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5)
    tangents = [
        np.ones(p32.params[i].type.shape, p32.params[i].type.np_dtype) for i in float_indices(p32)
    ]
    out, tan = sx.evaluate(sx.jvp_program(p32), *args32, *tangents)
    assert out.dtype == tan.dtype == p32.outs[0].type.np_dtype


LINEAR = [c for c in CASES if c.linear_in is not None]


@pytest.mark.parametrize("case", LINEAR, ids=_id)
def test_transpose_rule_of_linear_primitive(case):
    """Transpose the one-equation program itself, linear inputs first, residuals after."""
    rng = np.random.default_rng(6)
    types = case.in_types("f64")
    order = list(case.linear_in) + [i for i in range(len(types)) if i not in case.linear_in]
    params = tuple(Var(f"a{i}", types[i]) for i in order)
    by_index = {i: v for i, v in zip(order, params, strict=True)}
    ins = tuple(by_index[i] for i in range(len(types)))
    y = Var("y")
    p = sx.verify(sx.infer(Program("f", params, (Eqn(y, case.prim, case.params, ins),), (y,))))
    for _ in range(2):
        args = case.sample(rng, "f64")
        rest = [args[i] for i in order[len(case.linear_in) :]]
        check_transpose_linear(p, len(case.linear_in), rest, rng, rtol=case.dp_rtol)


def test_constant_has_zero_tangent_and_transposes():
    rng = np.random.default_rng(7)
    p = constant_program("f64")
    args = [rng.uniform(-1, 1, (2, 2))]
    tangents = check_jvp(p, args, rng)
    assert not np.any(tangents[1])
    check_transpose(p, args, rng)


def test_transpose_of_nonlinear_program_is_an_error():
    p = one_eqn_program("sin", (), [Type("f64", (3,))])
    with pytest.raises(sx.TransposeError, match="sin"):
        sx.transpose_program(p, 1)
    p = one_eqn_program("mul", (), [Type("f64", (3,)), Type("f64", (3,))])
    with pytest.raises(sx.TransposeError, match="mul"):
        sx.transpose_program(p, 2)
    p = one_eqn_program("div", (), [Type("f64", (3,)), Type("f64", (3,))])
    with pytest.raises(sx.TransposeError, match="div"):
        sx.transpose_program(p.replace(params=p.params[::-1]), 1)


# ---------------------------------------------------------------------------------------------
# tie conventions: max/min give half to each side; reduce_max splits equally; |x|' = 1 at 0


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_ties_split_half(name):
    p = one_eqn_program(name, (), [Type("f64", (4,)), Type("f64", (4,))])
    x = np.array([1.0, 2.0, -3.0, 0.5])
    y = np.array([1.0, 1.0, -3.0, 0.7])
    tx = np.array([1.0, 10.0, 100.0, 1000.0])
    ty = np.array([2.0, 20.0, 200.0, 2000.0])
    _, t = sx.evaluate(sx.jvp_program(p), x, y, tx, ty)
    x_wins = (x > y) if name == "max" else (x < y)
    tie = x == y
    want = np.where(tie, (tx + ty) / 2, np.where(x_wins, tx, ty))
    np.testing.assert_allclose(t, want, rtol=1e-15)
    ct = np.array([4.0, 8.0, 16.0, 32.0])
    _, gx, gy = sx.evaluate(sx.vjp_program(p), x, y, ct)
    np.testing.assert_allclose(gx, np.where(tie, ct / 2, np.where(x_wins, ct, 0.0)), rtol=1e-15)
    np.testing.assert_allclose(gy, np.where(tie, ct / 2, np.where(x_wins, 0.0, ct)), rtol=1e-15)


def test_max_of_value_with_itself_has_full_gradient():
    x = Var("x", Type("f64", (3,)))
    y = Var("y")
    p = sx.infer(Program("f", (x,), (Eqn(y, "max", (), (x, x)),), (y,)))
    _, g = sx.evaluate(sx.vjp_program(p), np.array([1.0, -2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(g, [1.0, 2.0, 3.0], rtol=1e-15)


def test_reduce_max_ties_split_equally():
    p = one_eqn_program("reduce_max", ((1,),), [Type("f64", (3, 4))])
    x = np.array(
        [
            [3.0, 1.0, 3.0, 2.0],  # two-way tie
            [5.0, 5.0, 5.0, -1.0],  # three-way tie
            [0.0, 0.0, 0.0, 0.0],  # four-way tie
        ]
    )
    ct = np.array([6.0, 9.0, 8.0])
    out, g = sx.evaluate(sx.vjp_program(p), x, ct)
    np.testing.assert_array_equal(out, [3.0, 5.0, 0.0])
    want = np.array([[3.0, 0.0, 3.0, 0.0], [3.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    np.testing.assert_allclose(g, want, rtol=1e-15)
    t = np.arange(12.0).reshape(3, 4)
    _, jt = sx.evaluate(sx.jvp_program(p), x, t)
    np.testing.assert_allclose(jt, [(0 + 2) / 2, (4 + 5 + 6) / 3, (8 + 9 + 10 + 11) / 4])


def test_reduce_max_ties_over_several_axes():
    p = one_eqn_program("reduce_max", ((0, 2),), [Type("f64", (2, 2, 2))])
    x = np.zeros((2, 2, 2))
    x[:, 0, :] = [[1.0, 7.0], [7.0, 7.0]]  # column 0: max 7 at three places
    x[:, 1, :] = [[2.0, -1.0], [0.0, 1.0]]  # column 1: a unique max
    out, g = sx.evaluate(sx.vjp_program(p), x, np.array([3.0, 5.0]))
    np.testing.assert_array_equal(out, [7.0, 2.0])
    want = np.zeros((2, 2, 2))
    want[:, 0, :] = [[0.0, 1.0], [1.0, 1.0]]
    want[0, 1, 0] = 5.0
    np.testing.assert_allclose(g, want, rtol=1e-15)


def test_abs_derivative_at_zero_is_one():
    p = one_eqn_program("abs", (), [Type("f64", (3,))])
    _, t = sx.evaluate(sx.jvp_program(p), np.array([0.0, -1.0, 2.0]), np.array([3.0, 3.0, 3.0]))
    np.testing.assert_array_equal(t, [3.0, -3.0, 3.0])
