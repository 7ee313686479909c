"""``shax_core.lax``: structured control flow with JAX's signatures (``cond``, ``switch``,
``scan``, ``fori_loop``, ``while_loop``) and the few other jax.lax names NumPy-style code reaches
for (``stop_gradient``, ``dot_general``, ``erf``, ``logistic``, ``rsqrt``, ``integer_pow``,
``square``, ``select``, ``top_k``).

On arrays they run eagerly (plain Python loops over NumPy). On tracers they record one loop
equation whose body is traced once, whatever the trip count, so a 10,000-step recurrence is a
handful of equations instead of 60,000:

>>> import numpy as np, shax_core as sx
>>> from shax_core import lax
>>> from shax_core.passes import cleanup
>>> def f(x):
...     return lax.fori_loop(0, 1000, lambda i, c: c * 0.999 + 0.001, x)
>>> p = sx.trace(f, np.float32(0.0))
>>> [e.prim for e in cleanup(p).eqns]  # the unused loop index is pruned from the carry
['scan']
>>> bool(np.isclose(sx.evaluate(p, 0.0)[0], 1 - 0.999**1000, rtol=1e-4))
True

Carries, ``xs`` and operands are pytrees (``shax_core.tree_util``: tuples, lists, dicts,
namedtuples, dataclasses, registered classes, nested freely). A body
may read values from the enclosing trace (weights, say): they become operands of the loop.
``fori_loop``'s index ``i`` is an i32 scalar, as in JAX (so ``xs[i]`` gathers one row).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from shax_core import core as _core
from shax_core._trace import as_type
from shax_core.core import Builder, Tracer, bind, convert, top_builder
from shax_core.ir import Program, ShaxError, Type, type_of
from shax_core.numpy import _functions as _snp
from shax_core.numpy import top_k  # noqa: F401  ((values, indices) of the k largest)
from shax_core.tree_util import tree_flatten, tree_unflatten

DEFAULT_MAX_TRIPS = 2**31 - 1


# ---------------------------------------------------------------------------------------------
# flat values and their structure (pytrees)


def _flatten(tree) -> tuple[list, Any]:
    """``(leaves, structure)`` of a pytree (tuples, lists, dicts, namedtuples, dataclasses,
    registered classes; None is an empty node), as ``shax_core.tree_util`` defines them."""
    return tree_flatten(tree)


def _unflatten(structure, leaves) -> Any:
    return tree_unflatten(structure, leaves)


def _traced(leaves) -> bool:
    return any(isinstance(x, Tracer) for x in leaves)


def _leaf_type(x) -> Type:
    if isinstance(x, Tracer):
        return x.type
    if isinstance(x, np.ndarray | np.generic):
        return type_of(x)
    return as_type(x)


def _as_array(x):
    return x if isinstance(x, Tracer) else np.asarray(x, _leaf_type(x).np_dtype)


# ---------------------------------------------------------------------------------------------
# tracing a body: a closed Program whose free values become leading ``consts`` parameters


class _BodyBuilder(Builder):
    """Records a body; a value captured from an enclosing trace becomes a parameter."""

    def __init__(self, level: int, name: str):
        super().__init__(level=level, prefix=f"{name}_")
        # (outer builder, outer id) -> (outer tracer, param)
        self.captured: dict[tuple, tuple[Tracer, Tracer]] = {}

    def lift_foreign(self, x: Tracer):
        key = (id(x.builder), x.id)
        hit = self.captured.get(key)
        if hit is None or hit[0] is not x:
            hit = self.captured[key] = (
                x,
                self.add_param(x.type, f"c{len(self.param_ids)}"),
            )
        return hit[1].id


def _trace_body(fn: Callable, in_types: Sequence[Type], level: int, name: str):
    """``(program, captured outer values, output leaves' structure)``; the program's
    parameters are the captured values first, then ``in_types``."""
    b = _BodyBuilder(level, name)
    args = [b.add_param(t, f"{name}{i}") for i, t in enumerate(in_types)]
    result = fn(args)
    leaves, structure = _flatten(result)
    outs = []
    for leaf in leaves:
        if isinstance(leaf, Tracer) and leaf.builder is b:
            outs.append(leaf.id)
        else:
            outs.append(b.lift(_as_array(leaf) if not isinstance(leaf, Tracer) else leaf))
    captured = [param.id for _, param in b.captured.values()]
    outer = [x for x, _ in b.captured.values()]
    params = captured + [a.id for a in args]
    program = b.program(name, outs, params, checked=True)
    return program, outer, structure


def _level(leaves) -> int:
    outer = top_builder(leaves)
    return (outer.level if outer is not None else 0) + 1


def _with_params(program: Program, leading: Sequence, total_consts: Sequence[Type], start: int):
    """``program`` taking all ``total_consts`` (its own at ``start``) before its inputs."""
    from shax_core.ir import Var

    n_own = len(leading)
    own, inputs = program.params[:n_own], program.params[n_own:]
    names = {v.name for v in program.params}
    extra = []
    for k, t in enumerate(total_consts):
        if start <= k < start + n_own:
            extra.append(own[k - start])
        else:
            fresh = f"u{k}"
            while fresh in names:
                fresh += "_"
            extra.append(Var(fresh, t))
    return program.replace(params=tuple(extra) + tuple(inputs), checked=True)


class CarryTypeError(ShaxError):
    """A loop body returns a carry whose structure or types differ from its input's."""

    def __init__(self, message: str, got: Sequence[Type]):
        super().__init__(message)
        self.got = tuple(got)


def _check_carry(what: str, expected: Sequence[Type], got: Sequence[Type], tree_in, tree_out):
    if tree_in != tree_out or tuple(expected) != tuple(got):
        raise CarryTypeError(
            f"{what}: the body must return a carry of the same structure and types as its "
            f"input; the carry is ({', '.join(map(str, expected))}) but the body returns "
            f"({', '.join(map(str, got))})",
            got if tree_in == tree_out else (),
        )


def _is_weak(leaf) -> bool:
    return isinstance(leaf, int | float) and not isinstance(leaf, bool)


def _promote_weak(leaves: list, error: CarryTypeError) -> list | None:
    """The carry with its Python-scalar (weakly typed) leaves given the dtype the body returns
    for them, as JAX promotes weak-typed loop carries; None when that cannot fix ``error``."""
    if len(error.got) != len(leaves):
        return None
    promoted, changed = [], False
    for leaf, got in zip(leaves, error.got):
        want = _leaf_type(leaf)
        if want == got:
            promoted.append(leaf)
        elif _is_weak(leaf) and want.shape == got.shape and got.is_float:
            promoted.append(np.asarray(leaf, got.np_dtype))
            changed = True
        else:
            return None
    return promoted if changed else None


def _trace_carried(trace: Callable, leaves: list):
    """``trace(leaves)``, retried once with weak carry leaves promoted when the body returns a
    wider float dtype for them. Returns ``(result, leaves)``."""
    try:
        return trace(leaves), leaves
    except CarryTypeError as error:
        promoted = _promote_weak(leaves, error)
        if promoted is None:
            raise
        return trace(promoted), promoted


# ---------------------------------------------------------------------------------------------
# scan


def scan(
    f: Callable,
    init,
    xs=None,
    length: int | None = None,
    reverse: bool = False,
    *,
    policy: str = "auto",
):
    """``(carry, ys)``: ``carry, y = f(carry, x)`` for each ``x`` along the leading axis of
    ``xs``, and the ``y`` stacked. ``policy`` is how reverse mode keeps residuals: ``save``
    every step's, ``recompute`` them from saved carries, or ``auto``."""
    carry_leaves, carry_tree = _flatten(init)
    x_leaves, x_tree = _flatten(xs)
    lengths = {int(_leaf_type(x).shape[0]) for x in x_leaves if _leaf_type(x).rank}
    if any(_leaf_type(x).rank == 0 for x in x_leaves):
        raise ShaxError("scan: every leaf of xs needs a leading axis to scan over")
    if length is None:
        if not lengths:
            raise ShaxError("scan needs xs or an explicit length")
        length = lengths.pop() if len(lengths) == 1 else None
        if length is None:
            raise ShaxError("scan: the leaves of xs have different leading sizes")
    elif lengths and lengths != {int(length)}:
        raise ShaxError(f"scan: length={length} but xs have leading sizes {sorted(lengths)}")
    length = int(length)
    order = range(length - 1, -1, -1) if reverse else range(length)

    if not _traced(carry_leaves + x_leaves):
        carry = init
        ys = [None] * length
        for i in order:
            x = _unflatten(x_tree, [np.asarray(v)[i] for v in x_leaves]) if x_leaves else None
            carry, ys[i] = f(carry, x)
        if length == 0:
            return carry, None
        y_leaves = [_flatten(y)[0] for y in ys]
        stacked = [np.stack([np.asarray(y[k]) for y in y_leaves]) for k in range(len(y_leaves[0]))]
        return carry, _unflatten(_flatten(ys[0])[1], stacked)

    slice_types = [_leaf_type(x).with_shape(_leaf_type(x).shape[1:]) for x in x_leaves]
    nk = len(carry_leaves)
    y_tree = []
    carry_types: list[Type] = []

    def body(args):
        c = _unflatten(carry_tree, args[:nk])
        x = _unflatten(x_tree, args[nk:]) if x_leaves else None
        result = f(c, x)
        if not isinstance(result, tuple) or len(result) != 2:
            raise ShaxError("scan: the body must return a pair (carry, y)")
        new_carry, y = result
        c_leaves, c_tree = _flatten(new_carry)
        y_leaves, tree = _flatten(y)
        y_tree.append(tree)
        got = [_leaf_type(v) for v in c_leaves]
        _check_carry(f"scan of {_fname(f)}", carry_types, got, carry_tree, c_tree)
        return list(c_leaves) + list(y_leaves)

    level = _level(carry_leaves + x_leaves)

    def trace(leaves):
        carry_types[:] = [_leaf_type(c) for c in leaves]
        y_tree.clear()
        return _trace_body(body, carry_types + slice_types, level, "body")

    (program, consts, _), carry_leaves = _trace_carried(trace, carry_leaves)
    results = bind(
        "scan",
        *consts,
        *map(_as_array, carry_leaves),
        *map(_as_array, x_leaves),
        length=length,
        direction="reverse" if reverse else "forward",
        num_consts=len(consts),
        num_carry=nk,
        policy=policy,
        body=program,
    )
    carry_out = _unflatten(carry_tree, results[:nk])
    return carry_out, _unflatten(y_tree[0], results[nk:])


def _fname(f) -> str:
    return getattr(f, "__name__", "the body")


# ---------------------------------------------------------------------------------------------
# fori_loop, while_loop


def _static_int(v) -> int | None:
    if isinstance(v, Tracer):
        return None
    a = np.asarray(v)
    if a.shape != () or a.dtype.kind not in "iu" and not float(a).is_integer():
        raise ShaxError(f"fori_loop bounds must be integers, got {v!r}")
    return int(a)


def fori_loop(lower, upper, body_fun: Callable, init_val, *, policy: str = "auto"):
    """``val = body_fun(i, val)`` for ``i`` in ``range(lower, upper)``. With Python-int bounds
    it is a ``scan`` (so ``grad`` works); with traced bounds a ``while_loop`` (forward only)."""
    lo, hi = _static_int(lower), _static_int(upper)
    leaves, _ = _flatten(init_val)
    if lo is not None and hi is not None:
        if not _traced(leaves):
            val = init_val
            for i in range(lo, hi):
                val = body_fun(np.int32(i), val)
            return val

        def step(carry, _):
            i, val = carry
            return (i + 1, body_fun(i, val)), None

        (_, val), _ = scan(step, (np.int32(lo), init_val), length=max(hi - lo, 0), policy=policy)
        return val

    def cond_fun(carry):
        i, stop, _ = carry
        return i < stop

    def step_fun(carry):
        i, stop, val = carry
        return i + 1, stop, body_fun(i, val)

    bounds = [convert(b, "i32") if isinstance(b, Tracer) else np.int32(b) for b in (lower, upper)]
    return while_loop(cond_fun, step_fun, (bounds[0], bounds[1], init_val))[2]


def while_loop(
    cond_fun: Callable, body_fun: Callable, init_val, *, max_trips: int = DEFAULT_MAX_TRIPS
):
    """``while cond_fun(val): val = body_fun(val)``. Differentiable in forward mode only
    (``jvp``); ``grad`` raises (use ``fori_loop`` with static bounds). A traced loop that runs
    more than ``max_trips`` iterations stops with an error."""
    leaves, tree = _flatten(init_val)
    if not _traced(leaves):
        val, trips = init_val, 0
        while True:
            pred = cond_fun(val)
            if isinstance(pred, Tracer):  # the functions close over traced values: trace
                leaves, tree = _flatten(val)
                max_trips -= trips
                break
            if not bool(pred):
                return val
            if trips >= max_trips:
                raise ShaxError(f"while_loop ran more than its max_trips={max_trips} iterations")
            val, trips = body_fun(val), trips + 1
    types: list[Type] = []
    level = _level(leaves)

    def cond_body(args):
        pred = cond_fun(_unflatten(tree, args))
        if not isinstance(pred, Tracer) or pred.type != Type("bool", ()):
            got = pred.type if isinstance(pred, Tracer) else type(pred).__name__
            raise ShaxError(f"while_loop: the condition must return a bool scalar, got {got}")
        return [pred]

    def step_body(args):
        new = body_fun(_unflatten(tree, args))
        new_leaves, new_tree = _flatten(new)
        got = [_leaf_type(v) for v in new_leaves]
        _check_carry(f"while_loop of {_fname(body_fun)}", types, got, tree, new_tree)
        return new_leaves

    def trace(leaves):
        types[:] = [_leaf_type(v) for v in leaves]
        return _trace_body(step_body, types, level, "body")

    (body_prog, body_consts, _), leaves = _trace_carried(trace, leaves)
    cond_prog, cond_consts, _ = _trace_body(cond_body, types, level, "cond")
    all_consts = [*cond_consts, *body_consts]
    const_types = [c.type for c in all_consts]
    cond_prog = _with_params(cond_prog, cond_consts, const_types, 0)
    body_prog = _with_params(body_prog, body_consts, const_types, len(cond_consts))
    results = bind(
        "while_loop",
        *all_consts,
        *map(_as_array, leaves),
        num_consts=len(all_consts),
        max_trips=int(max_trips),
        cond=cond_prog,
        body=body_prog,
    )
    return _unflatten(tree, results)


# ---------------------------------------------------------------------------------------------
# cond, switch


def switch(index, branches: Sequence[Callable], *operands):
    """``branches[index](*operands)``, the index clamped to the branches (as JAX does)."""
    if not branches:
        raise ShaxError("switch needs at least one branch")
    if not isinstance(index, Tracer):
        i = int(np.clip(np.floor(np.asarray(index, np.float64)), 0, len(branches) - 1))
        return branches[i](*operands)
    if index.type.shape != ():
        raise ShaxError(f"switch: the index must be a scalar, got {index.type}")
    if index.type.dtype == "bool":
        index = _core.select(index, 1.0, 0.0)
    return _cond(index, list(branches), operands)


def cond(pred, true_fun: Callable, false_fun: Callable, *operands):
    """``true_fun(*operands)`` if ``pred`` else ``false_fun(*operands)``; a traced ``pred``
    records both branches in one ``cond`` equation."""
    if not isinstance(pred, Tracer):
        return true_fun(*operands) if bool(np.asarray(pred)) else false_fun(*operands)
    if pred.type.shape != ():
        raise ShaxError(f"cond: the predicate must be a scalar, got {pred.type}")
    if pred.type.dtype != "bool":
        pred = bind("ne", pred, _zero_like(pred))
    return _cond(pred, [false_fun, true_fun], operands)


def _zero_like(x: Tracer):
    return x.builder.constant(0.0, x.type.dtype)


def _cond(index: Tracer, funs, operands):
    leaves, tree = _flatten(list(operands))
    types = [_leaf_type(v) for v in leaves]
    level = _level([index, *leaves])
    traced, structures = [], []
    for k, fn in enumerate(funs):

        def branch(args, fn=fn):
            return fn(*_unflatten(tree, args))

        program, consts, structure = _trace_body(branch, types, level, f"branch{k}")
        traced.append((program, consts))
        structures.append(structure)
    all_consts = [c for _, consts in traced for c in consts]
    const_types = [c.type for c in all_consts]
    programs, start = [], 0
    for program, consts in traced:
        programs.append(_with_params(program, consts, const_types, start))
        start += len(consts)
    for k, p in enumerate(programs):
        if structures[k] != structures[0] or p.out_types != programs[0].out_types:
            raise ShaxError(
                f"cond: branch {k} returns ({', '.join(map(str, p.out_types))}) but branch 0 "
                f"returns ({', '.join(map(str, programs[0].out_types))}): every branch must "
                "return the same structure and types"
            )
    results = bind("cond", index, *all_consts, *map(_as_array, leaves), branches=tuple(programs))
    return _unflatten(structures[0], results)


# ---------------------------------------------------------------------------------------------
# the other jax.lax names


def stop_gradient(x):
    """The identity with a zero derivative."""
    return _snp.stop_gradient(x)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """``((lhs_contract, rhs_contract), (lhs_batch, rhs_batch))`` as in JAX."""
    (lc, rc), (lb, rb) = dimension_numbers
    return _core.dot_general(lhs, rhs, tuple(lc), tuple(rc), tuple(lb), tuple(rb))


def erf(x):
    return _core.bind("erf", _snp._float(x))


def logistic(x):
    from shax_core.nn import sigmoid

    return sigmoid(x)


def rsqrt(x):
    return 1.0 / _snp.sqrt(x)


def integer_pow(x, y):
    return _snp.power(x, int(y))


def square(x):
    return _snp.square(x)


def select(pred, on_true, on_false):
    return _snp.where(pred, on_true, on_false)


CONTROL_FLOW = ("cond", "fori_loop", "scan", "switch", "while_loop")
OTHERS = (
    "dot_general",
    "erf",
    "integer_pow",
    "logistic",
    "rsqrt",
    "select",
    "square",
    "stop_gradient",
    "top_k",
)


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise _snp.UnsupportedError(f"lax.{name}", "not implemented")


def supported_names() -> list[str]:
    return sorted(CONTROL_FLOW + OTHERS)


__all__ = [*CONTROL_FLOW, *OTHERS, "supported_names"]
