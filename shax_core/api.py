"""JAX-style transformations over Python functions of pytrees, composable to any order.

Every transformation *stages*: it traces the function to a flat Program (one parameter per
leaf, named from the tree path), transforms the Program with the YOLO pipeline
(``vjp_program``, ``jvp_program``, linearize/transpose), then runs the result: compiled and
evaluated on NumPy arrays, or — when an argument is itself being traced by an enclosing
transformation — inlined into that trace, so the enclosing one differentiates the derivative
program (made of primitives that all have rules) again.

Levels keep perturbations apart: each trace records into its own builder at a level above
every enclosing one, and a value of an enclosing trace that an inner function reads
(a closure) becomes an extra, non-differentiated parameter of the inner program. So in
``d/dx [x * d/dy (x + y)]`` the inner derivative is taken with ``x`` held constant, and the
answer is 1 (JAX's perturbation-confusion test):

>>> import numpy as np
>>> import shax_core.numpy as snp
>>> grad(lambda x: x * grad(lambda y: x + y)(1.0))(3.0)
array(1., dtype=float32)
>>> grad(grad(grad(lambda x: x**4)))(2.0)  # 24 x
array(48., dtype=float32)
>>> g = grad(lambda p: snp.sum(p["w"] * p["w"]) + p["b"])
>>> g({"w": np.array([1.0, 2.0], np.float32), "b": 3.0})
{'b': array(1., dtype=float32), 'w': array([2., 4.], dtype=float32)}

The traced Program is flat, one parameter per leaf, named from the signature and the tree path
(``trace_pytree``):

>>> def loss(params, x):
...     return snp.sum(params["w"] * x) + params["b"]
>>> params = {"w": np.ones(2, np.float32), "b": np.float32(0)}
>>> print(trace_pytree(loss, (params, np.ones(2, np.float32))).program)
def loss(params.b :: f32[],
         params.w :: f32[2],
         x :: f32[2]) =
  let x0 :: f32[2] = mul params.w x
      x1 :: f32[] = reduce_sum [0] x0
      x2 :: f32[] = add x1 params.b
  in [x2]

Closed-over arrays of at least ``LIFT_ELEMENTS`` elements are not written into the IR as
literals: they become parameters too (``const0``, ...), passed as arrays on every call.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from shax_core import core as ops
from shax_core._evaluate import Executable
from shax_core.core import Builder, Tracer
from shax_core.ir import Program, ShaxError, Type, lean_of, type_of
from shax_core.passes.inline import inline
from shax_core.pipeline import jvp_program, stages, vjp_program
from shax_core.registry import Zero
from shax_core.tree_util import (
    PyTreeDef,
    leaf_names,
    tree_flatten,
    tree_leaves,
    tree_map,
    tree_unflatten,
)

log = logging.getLogger("shax")

LIFT_ELEMENTS = 4096  # closed-over arrays this large become parameters, not IR literals
LARGE_EQUATIONS = 2000  # traces and pipeline runs this large say so in the log

# names the pipeline's builders give to their own variables; a user name of that shape gets a
# trailing underscore so the two can never collide
_RESERVED = re.compile(r"(x|d|t|arg|outer|const)\d+")


# ---------------------------------------------------------------------------------------------
# tracing pytrees at nested levels

_ACTIVE = threading.local()


def _active_levels() -> list[int]:
    if not hasattr(_ACTIVE, "levels"):
        _ACTIVE.levels = []
    return _ACTIVE.levels


class TraceBuilder(Builder):
    """One user-level trace. A tracer of an enclosing trace (lower level) and a large array
    constant read by the traced function become *captured* parameters: ``captured[i]`` is the
    value to pass for the i-th extra parameter."""

    def __init__(self, level: int, lift_constants: bool = True):
        super().__init__(level=level)
        self.captured: list[object] = []
        self.captured_params: list[int] = []  # ids
        self._by_identity: dict[int, int] = {}
        self._arrays: dict[int, tuple[np.ndarray, int]] = {}
        self.lift_constants = lift_constants

    def lift(self, x) -> int:
        if isinstance(x, Tracer):
            return super().lift(x)
        if not isinstance(x, np.ndarray):
            return super().lift(x)
        # one constant per closed-over array, however often the function reads it
        hit = self._arrays.get(id(x))
        if hit is not None and hit[0] is x:
            return hit[1]
        var = None
        if self.lift_constants and x.size >= LIFT_ELEMENTS and x.dtype.kind in "fb":
            flat = x.ravel()
            if not (flat == flat[0]).all():  # a splat stays one scalar literal
                var = self._capture(x, x, type_of(x), "const")
        if var is None:
            var = super().lift(x)
        self._arrays[id(x)] = (x, var)  # holds x: its id stays unique while this trace lives
        return var

    def lift_foreign(self, x: Tracer) -> int:
        return self._capture(x, x, x.type, "outer")

    def _capture(self, key, value, type_: Type, stem: str) -> int:
        hit = self._by_identity.get(id(key))
        if hit is not None:
            return hit
        param = self.new_var(type_, f"{stem}{len(self.captured)}")
        self._by_identity[id(key)] = param
        self.captured.append(value)
        self.captured_params.append(param)
        return param


@dataclass(frozen=True)
class Traced:
    """A function traced at pytree arguments.

    ``program`` takes the leaves of every argument in order, then the captured values; it
    returns the leaves of the result, whose structure is ``out_tree``."""

    program: Program
    in_trees: tuple[PyTreeDef, ...]
    out_tree: PyTreeDef
    captured: tuple
    leaf_counts: tuple[int, ...]

    @property
    def n_leaves(self) -> int:
        return sum(self.leaf_counts)

    def leaf_indices(self, argnums: Sequence[int]) -> tuple[int, ...]:
        starts = list(itertools.accumulate((0, *self.leaf_counts)))
        return tuple(i for a in argnums for i in range(starts[a], starts[a + 1]))

    @property
    def captures_tracers(self) -> bool:
        return any(isinstance(c, Tracer) for c in self.captured)


def argument_names(f: Callable, n: int) -> list[str]:
    """Names of ``f``'s first ``n`` positional parameters (``args.0``... for ``*args``)."""
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return [f"arg{i}_" for i in range(n)]
    names: list[str] = []
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            names += [f"{p.name}.{i}" for i in range(n - len(names))]
            break
    names += [f"arg{i}_" for i in range(len(names), n)]
    return names[:n]


def _leaf_value(x):
    """A leaf as an array (ints and f16 as f32, as tracing types them) or a tracer."""
    if isinstance(x, Tracer):
        return x
    if isinstance(x, bool):
        return np.asarray(x)
    if isinstance(x, int | float) and not isinstance(x, np.generic):  # f32, as in JAX
        return np.asarray(x, np.float32)
    a = np.asarray(x)
    if a.dtype.kind in "iu" and (a.ndim == 0 or a.dtype not in (np.int32, np.int64)):
        # Python ints and odd integer types are f32 values; int32/int64 arrays stay integers
        # (indices, labels: they have no tangent, as in JAX)
        a = a.astype(np.float32)
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    if a.dtype.kind not in "fbiu":
        raise ShaxError(f"cannot trace an argument of dtype {a.dtype}: {x!r:.80}")
    return a


def _unique(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for n in names:
        if _RESERVED.fullmatch(n):
            n += "_"
        base, k = n, 1
        while n in seen:
            n, k = f"{base}_{k}", k + 1
        seen.add(n)
        out.append(n)
    return out


def flatten_values(args: Sequence):
    """``(leaves, in_trees, leaf_counts)`` of positional arguments (no names: the fast path
    of every call)."""
    leaves: list = []
    trees, counts = [], []
    for arg in args:
        ls, tree = tree_flatten(arg)
        leaves += [_leaf_value(x) for x in ls]
        trees.append(tree)
        counts.append(len(ls))
    return leaves, tuple(trees), tuple(counts)


def flatten_args(args: Sequence, names: Sequence[str] | None = None):
    """``(leaves, in_trees, leaf_counts, leaf names)`` of positional arguments."""
    leaves: list = []
    trees, counts, all_names = [], [], []
    names = list(names) if names is not None else [f"arg{i}_" for i in range(len(args))]
    for arg, name in zip(args, names, strict=True):
        ls, tree = tree_flatten(arg)
        leaves += [_leaf_value(x) for x in ls]
        trees.append(tree)
        counts.append(len(ls))
        all_names += leaf_names(arg, name) if tree.cls is not None else [name]
    return leaves, tuple(trees), tuple(counts), _unique(all_names)


def call_types(args: Sequence) -> tuple:
    """A hashable key of positional arguments' structures and leaf types."""
    leaves, in_trees, _ = flatten_values(args)
    return in_trees, tuple(ops.type_of_value(x) for x in leaves)


def trace_pytree(
    f: Callable,
    args: Sequence,
    *,
    names: Sequence[str] | None = None,
    lift_constants: bool = True,
    name: str | None = None,
) -> Traced:
    """Trace ``f(*args)`` (pytrees of arrays or tracers) into a flat, named Program."""
    leaves, in_trees, counts, leaf_names_ = flatten_args(
        args, names if names is not None else argument_names(f, len(args))
    )
    levels = _active_levels()
    outer = max((x.builder.level for x in leaves if isinstance(x, Tracer)), default=0)
    level = max([outer, *levels]) + 1
    b = TraceBuilder(level, lift_constants)
    tracers = [
        b.add_param(ops.type_of_value(x), n) for x, n in zip(leaves, leaf_names_, strict=True)
    ]
    start = time.perf_counter()
    levels.append(level)
    try:
        result = f(*_unflatten_args(in_trees, counts, tracers))
        out_leaves, out_tree = tree_flatten(result)
        outs = [_output_var(b, r) for r in out_leaves]
    finally:
        levels.pop()
    prog_name = name or getattr(f, "__name__", "f")
    if not prog_name.isidentifier() or prog_name == "<lambda>":
        prog_name = "f"
    program = b.program(prog_name, outs, b.param_ids + b.captured_params, checked=False)
    if len(b.eqn_prim) >= LARGE_EQUATIONS:  # (the view's equations are not built)
        log.info(
            "traced %s: %d equations, %d inputs in %.2fs",
            prog_name,
            len(b.eqn_prim),
            len(program.params),
            time.perf_counter() - start,
        )
    return Traced(program, in_trees, out_tree, tuple(b.captured), counts)


def _unflatten_args(in_trees, counts, leaves) -> list:
    out, i = [], 0
    for tree, n in zip(in_trees, counts, strict=True):
        out.append(tree_unflatten(tree, leaves[i : i + n]))
        i += n
    return out


def _output_var(b: TraceBuilder, r) -> int:
    if isinstance(r, Zero):
        r = np.zeros(r.type.shape, r.type.np_dtype)
    if isinstance(r, Tracer):
        return b.lift(r)
    return b.lift(_leaf_value(r))  # a constant output: Python scalars as f32, as inputs are


# ---------------------------------------------------------------------------------------------
# running a program: compiled on arrays, inlined into the enclosing trace on tracers

_EXECUTABLES: OrderedDict = OrderedDict()


def _executable(program: Program) -> Executable:
    key = id(program)
    hit = _EXECUTABLES.get(key)
    if hit is not None and hit[0] is program:
        _EXECUTABLES.move_to_end(key)
        return hit[1]
    exe = Executable(program)
    _EXECUTABLES[key] = (program, exe)
    while len(_EXECUTABLES) > 256:
        _EXECUTABLES.popitem(last=False)
    return exe


def call(program: Program, inputs: Sequence) -> list:
    """``program`` applied to ``inputs``: arrays out, or tracers of the innermost trace among
    the inputs (the program's equations inlined there)."""
    builder = ops.top_builder(inputs)
    if builder is None:
        exe = _executable(program)  # its types from the lean form: a view stays unbuilt
        arrays = [np.asarray(x, dtype=t.np_dtype) for x, t in zip(inputs, exe.in_types)]
        return exe(*arrays)
    args = [Tracer(builder, builder.lift(_cast(x, p.type))) for x, p in zip(inputs, program.params)]
    return inline(builder, program, args)


def _cast(x, t: Type):
    if isinstance(x, Tracer):
        return ops.convert(x, t.dtype)
    return np.asarray(x, dtype=t.np_dtype)


_PROGRAMS: OrderedDict = OrderedDict()


def _memo(key, build):
    """Derived programs memoised per (function, structure, types, options), bounded."""
    if key is None:
        return build()
    try:
        hit = _PROGRAMS[key]
        _PROGRAMS.move_to_end(key)
        return hit
    except KeyError:
        pass
    except TypeError:  # an unhashable function
        return build()
    value = _PROGRAMS[key] = build()
    while len(_PROGRAMS) > 256:
        _PROGRAMS.popitem(last=False)
    return value


def _trace_memo(f, args, tag):
    """``(traced, memo key or None, argument leaves)``: ``f`` traced at ``args``; a trace is
    reused when nothing it captured is a tracer."""
    leaves, in_trees, _ = flatten_values(args)
    if any(isinstance(x, Tracer) for x in leaves):
        return trace_pytree(f, args), None, leaves  # inside a trace: closures read its tracers
    key = ("trace", f, in_trees, tuple(ops.type_of_value(x) for x in leaves), tag)
    try:
        hit = _PROGRAMS.get(key)
    except TypeError:
        return trace_pytree(f, args), None, leaves
    if hit is not None:
        _PROGRAMS.move_to_end(key)
        return hit, key, leaves
    traced = trace_pytree(f, args)
    if traced.captures_tracers:
        return traced, None, leaves
    return _memo(key, lambda: traced), key, leaves


def _logged(what: str, program: Program, build):
    start = time.perf_counter()
    result = build()
    n_eqns = len(lean_of(program))  # (a view's equations are not built)
    if n_eqns >= LARGE_EQUATIONS:
        log.info(
            "%s of %s (%d equations) built in %.2fs",
            what,
            program.name,
            n_eqns,
            time.perf_counter() - start,
        )
    return result


# ---------------------------------------------------------------------------------------------
# argnums, has_aux


def argnums_indices(argnums, n: int) -> tuple[int, ...]:
    """JAX's ``argnums`` (an int or a tuple; negative counts from the end) as indices."""
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    out = []
    for a in nums:
        if not isinstance(a, int) or not -n <= a < n:
            raise ShaxError(f"argnums {argnums!r} is out of range for {n} positional argument(s)")
        out.append(a % n)
    if len(set(out)) != len(out):
        raise ShaxError(f"argnums {argnums!r} repeats an argument")
    return tuple(out)


def _split_aux(traced: Traced, has_aux: bool) -> tuple[int, PyTreeDef, PyTreeDef | None]:
    """``(number of main output leaves, main tree, aux tree)``."""
    tree = traced.out_tree
    if not has_aux:
        return tree.num_leaves, tree, None
    if tree.cls is not tuple or len(tree.children) != 2:
        raise ShaxError("with has_aux=True the function must return a pair (output, aux)")
    main, aux = tree.children
    return main.num_leaves, main, aux


def _check_wrt_float(traced: Traced, wrt: Sequence[int], what: str) -> None:
    for i in wrt:
        p = traced.program.params[i]
        if not p.type.is_float:
            raise ShaxError(
                f"{what} requires float inputs; {p.name} :: {p.type} is not: only float inputs "
                "have tangents (as in JAX, differentiate only with respect to float arguments)"
            )


def _scalar_output(traced: Traced, n_main: int, what: str) -> None:
    outs = traced.program.outs[:n_main]
    if n_main != 1 or outs[0].type.shape != () or not outs[0].type.is_float:
        raise ShaxError(
            f"{what} needs a function with one float scalar output; "
            f"{traced.program.name} returns " + ", ".join(str(v.type) for v in outs)
        )


def _zero_cotangents(types: Sequence[Type]) -> list[np.ndarray]:
    return [np.zeros(t.shape, t.np_dtype) for t in types]


# ---------------------------------------------------------------------------------------------
# the transformations


def value_and_grad(f: Callable, argnums=0, has_aux: bool = False) -> Callable:
    """``(f(*args), ∇f(*args))`` (``((value, aux), grad)`` with ``has_aux``), as JAX's."""

    @functools.wraps(f)
    def value_and_grad_f(*args):
        nums = argnums_indices(argnums, len(args))
        traced, key, leaves = _trace_memo(f, args, "vg")
        plan = _memo(key and (*key, "vg", nums, has_aux), lambda: _vg_plan(traced, nums, has_aux))
        vjp, cts, n_out, aux_tree = plan
        if key is not None:  # arrays of the traced types: run the compiled plan directly
            results = _executable(vjp)(*leaves, *traced.captured, *cts)
        else:
            results = call(vjp, [*leaves, *traced.captured, *cts])
        outs, grads = results[:n_out], results[n_out:]
        grad_trees = _per_argument(traced, nums, grads)
        grad_value = grad_trees[0] if isinstance(argnums, int) else tuple(grad_trees)
        value = outs[0]
        if has_aux:
            value = (value, tree_unflatten(aux_tree, outs[1:]))
        return value, grad_value

    return value_and_grad_f


def _vg_plan(traced: Traced, nums, has_aux: bool):
    """``(VJP program, cotangents, number of outputs, aux tree)`` for value_and_grad: the
    cotangent is 1 for the value and 0 for the aux outputs."""
    n_main, _, aux_tree = _split_aux(traced, has_aux)
    wrt = traced.leaf_indices(nums)
    _check_wrt_float(traced, wrt, "grad")
    _scalar_output(traced, n_main, "grad")
    program = traced.program
    vjp = _logged("VJP", program, lambda: vjp_program(program, wrt))
    one = np.ones((), program.outs[0].type.np_dtype)
    cts = [one, *_zero_cotangents([v.type for v in program.outs[1:]])]
    return vjp, cts, len(program.outs), aux_tree


def _per_argument(traced: Traced, nums, flat) -> list:
    out, i = [], 0
    for a in nums:
        n = traced.leaf_counts[a]
        out.append(tree_unflatten(traced.in_trees[a], flat[i : i + n]))
        i += n
    return out


def grad(f: Callable, argnums=0, has_aux: bool = False) -> Callable:
    """∇f of a scalar-valued ``f`` (``(∇f, aux)`` with ``has_aux``), as ``jax.grad``."""
    vg = value_and_grad(f, argnums, has_aux)

    @functools.wraps(f)
    def grad_f(*args):
        value, g = vg(*args)
        return (g, value[1]) if has_aux else g

    return grad_f


def jvp(f: Callable, primals: Sequence, tangents: Sequence, has_aux: bool = False):
    """``(f(*primals), ∂f(primals)·tangents)``: forward mode, as ``jax.jvp``."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ShaxError(f"jvp got {len(primals)} primal(s) and {len(tangents)} tangent(s)")
    traced, key, leaves = _trace_memo(f, primals, "jvp")
    n_main, main_tree, aux_tree = _split_aux(traced, has_aux)
    program = traced.program
    wrt = tuple(i for i in range(traced.n_leaves) if program.params[i].type.is_float)
    lin = _memo(
        key and (*key, "jvp", wrt),
        lambda: _logged("JVP", program, lambda: jvp_program(program, wrt)),
    )
    t_leaves = []
    for p_tree, t in zip(traced.in_trees, tangents, strict=True):
        ls, t_tree = tree_flatten(t)
        if t_tree != p_tree:
            raise ShaxError(f"a tangent's structure {t_tree} differs from its primal's {p_tree}")
        t_leaves += ls
    ts = [t_leaves[i] for i in wrt]
    results = call(lin, [*leaves, *traced.captured, *ts])
    n_out = len(program.outs)
    outs, touts = results[:n_out], results[n_out:]
    out = tree_unflatten(main_tree, outs[:n_main])
    tout = tree_unflatten(main_tree, touts[:n_main])
    if has_aux:
        return out, tout, tree_unflatten(aux_tree, outs[n_main:])
    return out, tout


def _linearized(traced: Traced, key, leaves) -> tuple[tuple[int, ...], dict, list, list]:
    """Run the linearized program once at ``leaves``: ``(wrt, stages, outputs, residuals)``
    with ``wrt`` every float leaf and ``stages`` memoised under ``key``."""
    program = traced.program
    wrt = tuple(i for i in range(traced.n_leaves) if program.params[i].type.is_float)
    st = _memo(key and (*key, "stages", wrt), lambda: stages(program, wrt=wrt))
    n_out = len(program.outs)
    values = call(st["linearized"], [*leaves, *traced.captured])
    return wrt, st, values[:n_out], values[n_out:]


def vjp(f: Callable, *primals, has_aux: bool = False):
    """``(f(*primals), vjp_fn)`` (and ``aux``): ``vjp_fn(cotangent)`` returns a tuple with the
    cotangent of each primal, as ``jax.vjp``. The primal runs once, saving residuals."""
    traced, key, leaves = _trace_memo(f, primals, "vjp")
    n_main, main_tree, aux_tree = _split_aux(traced, has_aux)
    wrt, st, outs, residuals = _linearized(traced, key, leaves)
    out_types = [v.type for v in traced.program.outs]

    def vjp_fn(cotangent):
        cts, ct_tree = tree_flatten(cotangent)
        if ct_tree != main_tree:
            raise ShaxError(f"the cotangent's structure {ct_tree} differs from the output's")
        cts = list(cts) + _zero_cotangents(out_types[n_main:])
        grads = call(st["transposed"], [*cts, *residuals])
        full = _scatter(traced, wrt, grads)
        return tuple(_per_argument(traced, range(len(primals)), full))

    out = tree_unflatten(main_tree, outs[:n_main])
    if has_aux:
        return out, vjp_fn, tree_unflatten(aux_tree, outs[n_main:])
    return out, vjp_fn


def _scatter(traced: Traced, wrt, grads) -> list:
    """Cotangents for every argument leaf: the computed ones, zeros for non-float leaves."""
    full: list = [None] * traced.n_leaves
    for i, g in zip(wrt, grads, strict=True):
        full[i] = g
    for i, g in enumerate(full):
        if g is None:
            t = traced.program.params[i].type
            full[i] = np.zeros(t.shape, t.np_dtype)
    return full


def linearize(f: Callable, *primals):
    """``(f(*primals), f_jvp)``: the primal runs once now; ``f_jvp(*tangents)`` runs only the
    linear program on the saved residuals, as ``jax.linearize``."""
    traced, key, leaves = _trace_memo(f, primals, "lin")
    wrt, st, outs, residuals = _linearized(traced, key, leaves)

    def f_jvp(*tangents):
        t_leaves = flatten_values(tangents)[0]
        touts = call(st["linear"], [*[t_leaves[i] for i in wrt], *residuals])
        return tree_unflatten(traced.out_tree, touts)

    return tree_unflatten(traced.out_tree, outs), f_jvp


def _one_hot(t: Type, k: int):
    e = np.zeros(t.size, t.np_dtype)
    e[k] = 1
    return e.reshape(t.shape)


def _stack(columns: list, lead: tuple[int, ...], tail: tuple[int, ...], lead_first: bool):
    """Stack ``columns`` (each of shape ``tail``) into ``lead + tail`` (or ``tail + lead``)."""
    rows = [ops.reshape(c, (1, *tail)) for c in columns]
    stacked = rows[0] if len(rows) == 1 else ops.concatenate(rows, 0)
    stacked = ops.reshape(stacked, (*lead, *tail))
    if lead_first:
        return stacked
    n, m = len(lead), len(tail)
    return ops.transpose(stacked, (*range(n, n + m), *range(n))) if n and m else stacked


def jacfwd(f: Callable, argnums=0, has_aux: bool = False) -> Callable:
    """The Jacobian by forward mode (one JVP per input element), as ``jax.jacfwd``: for each
    output leaf, shape ``out.shape + in.shape`` per differentiated argument leaf."""
    return _jacobian(f, argnums, has_aux, forward=True)


def jacrev(f: Callable, argnums=0, has_aux: bool = False) -> Callable:
    """The Jacobian by reverse mode (one VJP per output element), as ``jax.jacrev``."""
    return _jacobian(f, argnums, has_aux, forward=False)


def _jacobian(f: Callable, argnums, has_aux: bool, forward: bool) -> Callable:
    """``J`` of ``f`` one basis vector at a time: forward, the columns ``J·e_k`` (one JVP per
    element k of each input leaf); reverse, the rows ``e_kᵀ·J`` (one VJP per element k of each
    main output leaf)."""
    what = "jacfwd" if forward else "jacrev"

    @functools.wraps(f)
    def jacobian_f(*args):
        nums = argnums_indices(argnums, len(args))
        traced, key, leaves = _trace_memo(f, args, what)
        n_main, main_tree, aux_tree = _split_aux(traced, has_aux)
        wrt = traced.leaf_indices(nums)
        _check_wrt_float(traced, wrt, what)
        program = traced.program
        n_out = len(program.outs)
        in_types = [program.params[i].type for i in wrt]
        out_types = [v.type for v in program.outs]
        if forward:
            linear = _memo(key and (*key, "jvp", wrt), lambda: jvp_program(program, wrt))
            seeds, n_seeded, n_answers = in_types, len(wrt), n_main
        else:
            linear = _memo(key and (*key, "vjp", wrt), lambda: vjp_program(program, wrt))
            seeds, n_seeded, n_answers = out_types, n_main, len(wrt)
        # answers[s][r][k]: leaf r of the linear map's answer to element k of seed leaf s
        answers = [[[] for _ in range(n_answers)] for _ in range(n_seeded)]
        outs = None
        for s in range(n_seeded):
            for k in range(seeds[s].size):
                basis = [
                    _one_hot(u, k) if m == s else np.zeros(u.shape, u.np_dtype)
                    for m, u in enumerate(seeds)
                ]
                results = call(linear, [*leaves, *traced.captured, *basis])
                outs = results[:n_out]
                for r in range(n_answers):
                    answers[s][r].append(results[n_out + r])
        if outs is None:  # nothing to differentiate (no elements)
            outs = call(program, [*leaves, *traced.captured])
        jac = [
            [
                _jacobian_block(
                    answers[i][j] if forward else answers[j][i], in_types[i], out_types[j], forward
                )
                for i in range(len(wrt))
            ]
            for j in range(n_main)
        ]
        result = _jacobian_tree(traced, nums, main_tree, jac, argnums)
        if has_aux:
            return result, tree_unflatten(aux_tree, outs[n_main:])
        return result

    return jacobian_f


def _jacobian_block(pieces, in_type: Type, out_type: Type, forward: bool):
    """The ``out.shape + in.shape`` block from its columns (forward) or rows (reverse)."""
    if forward:
        if not pieces:
            return np.zeros((*out_type.shape, *in_type.shape), out_type.np_dtype)
        return _stack(pieces, in_type.shape, out_type.shape, lead_first=False)
    if not pieces:
        return np.zeros((*out_type.shape, *in_type.shape), in_type.np_dtype)
    return _stack(pieces, out_type.shape, in_type.shape, lead_first=True)


def _jacobian_tree(traced, nums, main_tree, jac, argnums):
    """Output tree of (per-argument trees of) blocks, as JAX nests them."""
    per_output = []
    for blocks in jac:
        trees = _per_argument(traced, nums, blocks)
        per_output.append(trees[0] if isinstance(argnums, int) else tuple(trees))
    return tree_unflatten(main_tree, per_output)


def hessian(f: Callable, argnums=0, has_aux: bool = False) -> Callable:
    """The Hessian of a scalar ``f``: ``jacfwd(jacrev(f))``, as ``jax.hessian``."""
    return jacfwd(jacrev(f, argnums, has_aux), argnums, has_aux)


def stop_gradient(x):
    """``x`` with no derivative: every leaf through the ``stop_gradient`` primitive."""
    return tree_map(lambda leaf: ops.bind("stop_gradient", _leaf_value(leaf)), x)


# ---------------------------------------------------------------------------------------------
# custom rules
#
# A custom_jvp / custom_vjp function traces, per input structure and types, to one equation of
# a registry primitive whose sub-programs are the function and the user's rule:
# ``custom_jvp_call {fun} {jvp}`` or ``custom_vjp_call {fun} {fwd} {bwd}``
# (``shax_core.primitives.custom``). The rule is part of the program, so it prints, parses,
# crosses the wire and is used by the server's differentiation as by the library's.


class _CustomBase:
    def __init__(self, fun: Callable, nondiff_argnums: Sequence[int] = ()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(sorted({int(i) for i in nondiff_argnums}))
        if any(i < 0 for i in self.nondiff_argnums):
            raise ShaxError("nondiff_argnums must be non-negative positions")
        self._params: dict = {}
        self._building: set = set()

    def _split(self, args) -> tuple[tuple, list]:
        """``(static, differentiable)`` arguments; static ones are hashable Python values
        (they select the traced rule, as a ``jax.custom_jvp`` nondiff argument)."""
        if not self.nondiff_argnums:
            return (), list(args)
        if self.nondiff_argnums[-1] >= len(args):
            raise ShaxError(
                f"{self.__name__}: nondiff_argnums {list(self.nondiff_argnums)} for "
                f"{len(args)} arguments"
            )
        static = tuple(args[i] for i in self.nondiff_argnums)
        if any(isinstance(x, Tracer) for x in tree_leaves(static)):
            raise ShaxError(
                f"{self.__name__}: a nondiff_argnums argument is a traced value; pass arrays "
                "that depend on the input as ordinary arguments"
            )
        try:
            hash(static)
        except TypeError:
            raise ShaxError(
                f"{self.__name__}: nondiff_argnums arguments must be hashable Python values "
                "(numbers, strings, functions, tuples)"
            ) from None
        return static, [a for i, a in enumerate(args) if i not in self.nondiff_argnums]

    def _merge(self, static: tuple, dynamic: Sequence) -> list:
        """The full argument list from the static and the differentiable ones."""
        out, s, d = [], iter(static), iter(dynamic)
        for i in range(len(static) + len(dynamic)):
            out.append(next(s) if i in self.nondiff_argnums else next(d))
        return out

    def _trace(self, f: Callable, args: Sequence, what: str, names=None) -> Traced:
        traced = trace_pytree(f, args, names=names, lift_constants=False, name=_identifier(what))
        if traced.captured:
            raise ShaxError(
                f"{self.__name__}: a custom_jvp/custom_vjp function or rule must not close over "
                "traced values; pass them as arguments"
            )
        return traced

    def __call__(self, *args):
        static, dynamic = self._split(args)
        leaves, in_trees, counts = flatten_values(dynamic)
        if not any(isinstance(x, Tracer) for x in leaves):
            return self.fun(*args)
        types = tuple(ops.type_of_value(x) for x in leaves)
        key = (static, in_trees, types)
        if key in self._building:  # the rule calls the function: its primal needs no rule
            return self.fun(*args)
        params = self._params.get(key)
        if params is None:
            self._building.add(key)
            try:
                names = argument_names(self.fun, len(args))
                traced = self._trace(
                    lambda *d: self.fun(*self._merge(static, d)),
                    _unflatten_args(in_trees, counts, [_example(t) for t in types]),
                    self.__name__,
                    [n for i, n in enumerate(names) if i not in self.nondiff_argnums],
                )
                if not traced.program.outs:
                    raise ShaxError(f"{self.__name__} must return at least one array")
                prim, kwargs = self._make(traced, types, static)
                params = self._params[key] = (prim, kwargs, traced.out_tree)
            finally:
                self._building.discard(key)
        prim, kwargs, out_tree = params
        return tree_unflatten(out_tree, list(ops.bind(prim, *leaves, **kwargs)))


def _example(t: Type):
    return np.zeros(t.shape, t.np_dtype)


def _fit_tree(name: str, what: str, value, tree: PyTreeDef, types) -> list:
    """The leaves of a rule's ``value``, which must have the function's output structure."""
    leaves, got = tree_flatten(value)
    if got != tree:
        raise ShaxError(f"{name} returned {what} of structure {got}; expected {tree}")
    return [_fit(x, t) for x, t in zip(leaves, types, strict=True)]


def _fit(x, t: Type):
    """A rule's result as a value of type ``t`` (dtype converted, broadcast; None is zero)."""
    if x is None or isinstance(x, Zero):
        return np.zeros(t.shape, t.np_dtype)
    if isinstance(x, Tracer):
        if x.type.dtype != t.dtype:
            x = ops.convert(x, t.dtype)
        return x if x.type.shape == t.shape else ops.broadcast_to(x, t.shape)
    return np.broadcast_to(np.asarray(x, t.np_dtype), t.shape).copy()


class custom_jvp(_CustomBase):
    """A function with a custom forward-mode rule, as ``jax.custom_jvp``::

        @custom_jvp
        def safe_log(x):
            return snp.log(x)

        @safe_log.defjvp
        def safe_log_jvp(primals, tangents):
            (x,), (t,) = primals, tangents
            return safe_log(x), t / snp.maximum(x, 1e-6)

    The rule is traced like any function: it must be linear in the tangents for reverse mode
    (shax transposes it), and it is differentiated again for higher orders.
    """

    def __init__(self, fun: Callable, nondiff_argnums: Sequence[int] = ()):
        super().__init__(fun, nondiff_argnums)
        self.jvp_rule: Callable | None = None

    def defjvp(self, rule: Callable) -> Callable:
        self.jvp_rule = rule
        return rule

    def _make(self, traced: Traced, types, static: tuple):
        if self.jvp_rule is None:
            raise ShaxError(f"{self.__name__}: custom_jvp needs a rule (use .defjvp)")
        rule, in_trees, counts = self.jvp_rule, traced.in_trees, traced.leaf_counts
        out_tree, out_types = traced.out_tree, traced.program.out_types
        n = len(types)
        who = f"the rule of {self.__name__}"

        def flat_rule(*leaves):
            primals = _unflatten_args(in_trees, counts, list(leaves[:n]))
            tangents = _unflatten_args(in_trees, counts, list(leaves[n:]))
            result = rule(*static, tuple(primals), tuple(tangents))
            if not isinstance(result, tuple | list) or len(result) != 2:
                raise ShaxError(
                    f"the rule of {self.__name__} must return (primal_out, tangent_out)"
                )
            return (
                *_fit_tree(who, "a primal", result[0], out_tree, out_types),
                *_fit_tree(who, "a tangent", result[1], out_tree, out_types),
            )

        examples = [_example(t) for t in types]
        names = [p.name for p in traced.program.params]
        names += [f"t_{name}" for name in names]
        jvp = self._trace(flat_rule, examples + examples, f"{self.__name__}_jvp", names)
        return "custom_jvp_call", {"fun": traced.program, "jvp": jvp.program}


class custom_vjp(_CustomBase):
    """A function with a custom reverse-mode rule, as ``jax.custom_vjp``::

        @custom_vjp
        def clip_gradient(x):
            return x

        def fwd(x):
            return x, None               # (output, residuals: any pytree)

        def bwd(residuals, g):
            return (snp.clip(g, -1, 1),)  # one cotangent per argument

        clip_gradient.defvjp(fwd, bwd)

    ``bwd`` runs when the derivative is transposed; it need not be linear. Forward mode
    (``jvp``, ``jacfwd``) of a custom_vjp function is an error, as in JAX.
    """

    def __init__(self, fun: Callable, nondiff_argnums: Sequence[int] = ()):
        super().__init__(fun, nondiff_argnums)
        self.fwd: Callable | None = None
        self.bwd: Callable | None = None

    def defvjp(self, fwd: Callable, bwd: Callable) -> None:
        self.fwd, self.bwd = fwd, bwd

    def _make(self, traced: Traced, types, static: tuple):
        if self.fwd is None or self.bwd is None:
            raise ShaxError(f"{self.__name__}: custom_vjp needs rules (use .defvjp)")
        fwd, bwd, in_trees, counts = self.fwd, self.bwd, traced.in_trees, traced.leaf_counts
        out_tree, out_types = traced.out_tree, traced.program.out_types
        n_out = len(out_types)
        who = f"the fwd rule of {self.__name__}"
        res_trees: list = []

        def flat_fwd(*leaves):
            result = fwd(*self._merge(static, _unflatten_args(in_trees, counts, list(leaves))))
            if not isinstance(result, tuple | list) or len(result) != 2:
                raise ShaxError(f"the fwd rule of {self.__name__} must return (output, residuals)")
            res_leaves, res_tree = tree_flatten(result[1])
            res_trees.append(res_tree)
            outs = _fit_tree(who, "an output", result[0], out_tree, out_types)
            return (*outs, *(_leaf_value(r) for r in res_leaves))

        fwd_traced = self._trace(
            flat_fwd,
            [_example(t) for t in types],
            f"{self.__name__}_fwd",
            [p.name for p in traced.program.params],
        )
        res_tree = res_trees[-1]
        res_types = fwd_traced.program.out_types[n_out:]
        n_res = len(res_types)

        def flat_bwd(*leaves):
            residuals = tree_unflatten(res_tree, list(leaves[:n_res]))
            cts = bwd(*static, residuals, tree_unflatten(out_tree, list(leaves[n_res:])))
            if not isinstance(cts, tuple) or len(cts) != len(in_trees):
                raise ShaxError(
                    f"the bwd rule of {self.__name__} must return a tuple with one cotangent "
                    f"per argument ({len(in_trees)})"
                )
            flat = []
            for k, (c, tree) in enumerate(zip(cts, in_trees, strict=True)):
                if c is None:
                    flat += [None] * tree.num_leaves
                    continue
                ls, got = tree_flatten(c)
                if got != tree:
                    raise ShaxError(
                        f"the bwd rule of {self.__name__} returned {got} for argument {k}; "
                        f"expected {tree}"
                    )
                flat += ls
            return tuple(_fit(c, t) for c, t in zip(flat, types, strict=True))

        bwd_args = [_example(t) for t in (*res_types, *out_types)]
        names = [f"r{k}" for k in range(n_res)] + [f"ct{k}" for k in range(n_out)]
        bwd_traced = self._trace(flat_bwd, bwd_args, f"{self.__name__}_bwd", names)
        return "custom_vjp_call", {
            "fun": traced.program,
            "fwd": fwd_traced.program,
            "bwd": bwd_traced.program,
        }


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name) or "f"


__all__ = [
    "LIFT_ELEMENTS",
    "argnums_indices",
    "Traced",
    "call",
    "call_types",
    "custom_jvp",
    "custom_vjp",
    "grad",
    "hessian",
    "jacfwd",
    "jacrev",
    "jvp",
    "linearize",
    "stop_gradient",
    "trace_pytree",
    "tree_leaves",
    "value_and_grad",
    "vjp",
]
