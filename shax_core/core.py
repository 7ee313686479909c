"""The bind layer (JAX's core): Builder, Tracer, bind, and the array operations rules use.

It sits above ``ir`` and ``registry`` and below every primitive declaration, pass and front
end: ``bind(name, ...)`` finds the primitive by name in the registry at call time, so this
module never imports a declaration.

``bind(name, *args, **params)`` evaluates the primitive's impl when no argument is a tracer,
and otherwise records an equation in the builder of the innermost tracer. Builders have levels:
during linearization the primal builder is level 0 and the linear (tangent) builder level 1, so
``t * cos(x)`` records ``cos x`` in the primal program and ``mul`` in the linear program, with
``cos x`` becoming a residual. That dispatch is the whole of partial evaluation.

The array operations here (``add``, ``mul``, ``broadcast_to``, ``select``, ``power``, ...) do
NumPy-style implicit broadcasting and weak-scalar promotion by emitting explicit
``fromList``/``broadcast``/``convert`` equations, so the IR itself never broadcasts implicitly.
Registry rules and ``shax_core.numpy`` are both written with them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from shax_core.ir import (
    DTYPES,
    Eqn,
    Lean,
    Program,
    ShaxError,
    ShaxTypeError,
    Type,
    Var,
    canonical_float,
    dtype_name,
    from_lean,
    lean_of,
)
from shax_core.ir import type_of as array_type
from shax_core.registry import REGISTRY as _REGISTRY
from shax_core.registry import Zero, lookup


class TracerBoolError(ShaxError, TypeError):
    pass


# the generated names ``prefix + str(i)`` of the first variables, shared by every builder of
# the pipeline's prefixes (a builder names thousands of variables; a name from here is one list
# read instead of a format). A shared list is replaced, never extended in place, so threads only
# ever read complete lists; a builder past the shared names (or with a prefix of its own)
# continues on a private copy (``_OwnNames``), extended in place. Every such list holds
# ``prefix + str(i)`` at index i.
_NAME_LIMIT = 1 << 17
_NAMES: dict[str, list[str]] = {"x": [], "d": [], "t": [], "arg": []}


class _OwnNames(list):
    """A builder's own continuation of the names of its prefix."""


def _name_cache(prefix: str, end: int) -> list[str] | tuple:
    """The shared names of ``prefix``: at least ``min(end, _NAME_LIMIT)`` of them, or ``()``
    for a prefix that is not cached."""
    names = _NAMES.get(prefix)
    if names is None:
        return ()
    n = len(names)
    if n < end and n < _NAME_LIMIT:
        want = min(max(end, 2 * n, 256), _NAME_LIMIT)
        names = _NAMES[prefix] = names + [f"{prefix}{i}" for i in range(n, want)]
    return names


def _names_through(prefix: str, names, n: int) -> list[str]:
    """A list of ``prefix`` names that reaches index ``n``, from ``names`` (one such list):
    the shared one while it can, else the builder's own."""
    if n < _NAME_LIMIT and prefix in _NAMES:
        return _name_cache(prefix, n + 1)
    if names.__class__ is not _OwnNames:
        names = _OwnNames(names)
    m = len(names)
    names.extend([f"{prefix}{i}" for i in range(m, max(n + 1, m + max(16, m >> 2)))])
    return names


class Builder:
    """Collects the equations of one program being built, as ``Lean`` columns.

    Variables are integer ids local to the builder (``types[v]``, ``names[v]``); equations are
    appended to the equation columns; ``program`` publishes a ``Lean`` (copies of the columns,
    so a builder may go on recording) and its ``Program`` view. ``level`` orders nested
    builders."""

    def __init__(self, level: int = 0, prefix: str = "x"):
        self.level = level
        self.prefix = prefix
        self.types: list[Type] = []  # variable columns
        self.names: list[str] = []
        self.param_ids: list[int] = []
        self.eqn_prim: list[str] = []  # equation columns
        self.eqn_params: list[tuple] = []
        self.eqn_ins: list[tuple[int, ...]] = []
        self.eqn_out: list[int] = []
        self.eqn_extra: dict[int, tuple[int, ...]] = {}
        self._count = 0  # generated names so far: the next is prefix + str(_count)
        self._name_cache: list[str] | tuple = _NAMES.get(prefix, ())  # see _NAMES
        self._param_names: list[str] = _NAMES["arg"]
        self._constants: dict = {}
        self._vars: list = []  # the public Var of each id, once asked for
        self._var_ids: dict[int, int] = {}  # id() of such a Var -> its id
        # every type recorded so far came from a shape rule or a checked program
        self.checked = True
        # primal id -> parameter id, in a builder that lifts a foreign variable as one
        # parameter per id (``lift_variable``); the rule memo replays such lifts inline
        self.lifted: dict[int, int] | None = None

    # the public view of the columns: ``Var`` and ``Eqn`` objects, for error messages and
    # callers that build programs by hand (the pipeline's passes use ids)

    def var(self, v: int) -> Var:
        """The public ``Var`` of id ``v`` (one object per id)."""
        vars_ = self._vars
        if len(vars_) <= v:
            vars_.extend([None] * (len(self.types) - len(vars_)))
        var = vars_[v]
        if var is None:
            var = vars_[v] = Var(self.names[v], self.types[v])
            self._var_ids[id(var)] = v
        return var

    def id_of(self, x: int | Var) -> int:
        """The id of ``x``: an id, or a ``Var`` this builder made (``var``)."""
        if x.__class__ is int:
            return x
        v = self._var_ids.get(id(x))
        if v is not None and self._vars[v] is x:
            return v
        for v in range(len(self.names) - 1, -1, -1):  # a Var equal to one of this builder's
            if self.names[v] == x.name and self.types[v] == x.type:
                return v
        raise ShaxError(f"{x.name} is not a variable of this builder")

    @property
    def params(self) -> list[Var]:
        return [self.var(v) for v in self.param_ids]

    @property
    def eqns(self) -> list[Eqn]:
        var, extra = self.var, self.eqn_extra
        return [
            Eqn(
                var(out),
                prim,
                params,
                tuple([var(v) for v in ins]),
                tuple([var(v) for v in extra[i]]) if i in extra else (),
            )
            for i, (prim, params, ins, out) in enumerate(
                zip(self.eqn_prim, self.eqn_params, self.eqn_ins, self.eqn_out)
            )
        ]

    def emit_var(self, prim: str, params: tuple, ins: Sequence, out_type: Type) -> Var:
        """``emit`` on operands given as ``Var``s (or ids), returning the bound ``Var``."""
        return self.var(self.emit_id(prim, params, [self.id_of(v) for v in ins], out_type))

    def lean(
        self,
        name: str,
        outs: Sequence[int],
        params: Sequence[int] | None = None,
        final: bool = False,
    ) -> Lean:
        """The program recorded so far, with outputs ``outs`` (ids) and parameters ``params``
        (default: in the order they were added). ``final``: the builder records nothing
        more, so the ``Lean`` takes its columns as they are instead of copies (a published
        ``Lean``'s columns never change). Only for a pass's own builders, whose tracers never
        reach user code: a user's trace copies, so a leaked tracer cannot grow its program."""
        take = (lambda column: column) if final else list.copy
        vars_ = self._vars
        return Lean(
            name,
            take(self.types),
            take(self.names),
            tuple(self.param_ids if params is None else params),
            tuple(outs),
            take(self.eqn_prim),
            take(self.eqn_params),
            take(self.eqn_ins),
            take(self.eqn_out),
            self.eqn_extra if final else dict(self.eqn_extra),
            vars_[:] + [None] * (len(self.types) - len(vars_)) if vars_ else None,
        )

    def program(
        self,
        name: str,
        outs: Sequence[int],
        params: Sequence[int] | None = None,
        checked: bool | None = None,
        final: bool = False,
    ) -> Program:
        """``lean(...)``'s ``Program`` view; ``checked`` defaults to the builder's own."""
        lean = self.lean(name, outs, params, final)
        return from_lean(lean, checked=self.checked if checked is None else checked)

    def new_var(self, type_: Type, name: str | None = None) -> int:
        """A new variable (named ``prefix + count`` unless ``name`` is given)."""
        v = len(self.types)
        self.types.append(type_)
        if name is None:
            n = self._count
            self._count = n + 1
            cache = self._name_cache
            name = cache[n] if n < len(cache) else self._generated_name(n)
        self.names.append(name)
        return v

    def add_param(self, type_: Type, name: str | None = None) -> Tracer:
        v = len(self.types)
        self.types.append(type_)
        self.names.append(name or self._param_name(len(self.param_ids)))
        self.param_ids.append(v)
        return Tracer(self, v, type_)

    def emit(self, prim: str, params: tuple, ins: Sequence[int], out_type: Type) -> Tracer:
        """Record ``prim[params] ins`` (operand ids) binding a new variable of ``out_type``."""
        types = self.types
        v = len(types)
        types.append(out_type)
        n = self._count
        self._count = n + 1
        cache = self._name_cache
        self.names.append(cache[n] if n < len(cache) else self._generated_name(n))
        self.eqn_prim.append(prim)
        self.eqn_params.append(params)
        self.eqn_ins.append(ins if ins.__class__ is tuple else tuple(ins))
        self.eqn_out.append(v)
        t = _new_tracer(Tracer)  # Tracer(self, v, out_type), without the call of __init__
        t.builder, t.id, t.type = self, v, out_type
        return t

    def emit_id(self, prim: str, params: tuple, ins: Sequence[int], out_type: Type) -> int:
        """``emit``, returning the bound variable's id (no tracer). The same body, not a call:
        the rule memo wraps ``emit`` and ``emit_id`` separately, and this runs per equation."""
        types = self.types
        v = len(types)
        types.append(out_type)
        n = self._count
        self._count = n + 1
        cache = self._name_cache
        self.names.append(cache[n] if n < len(cache) else self._generated_name(n))
        self.eqn_prim.append(prim)
        self.eqn_params.append(params)
        self.eqn_ins.append(ins if ins.__class__ is tuple else tuple(ins))
        self.eqn_out.append(v)
        return v

    def _generated_name(self, n: int) -> str:
        """``prefix + str(n)`` (past the end of the builder's names list)."""
        names = self._name_cache = _names_through(self.prefix, self._name_cache, n)
        return names[n]

    def _param_name(self, k: int) -> str:
        """``arg + str(k)``, the default name of the k-th parameter."""
        names = self._param_names
        if k >= len(names):
            names = self._param_names = _names_through("arg", names, k)
        return names[k]

    def emit_multi(
        self, prim: str, params: tuple, ins: Sequence[int], out_types: Sequence[Type]
    ) -> tuple[Tracer, ...]:
        """An equation of a multi-result primitive (a loop): one variable per result."""
        outs = [self.new_var(t) for t in out_types]
        i = len(self.eqn_prim)
        self.eqn_prim.append(prim)
        self.eqn_params.append(params)
        self.eqn_ins.append(tuple(ins))
        self.eqn_out.append(outs[0])
        if len(outs) > 1:
            self.eqn_extra[i] = tuple(outs[1:])
        return tuple(Tracer(self, v, t) for v, t in zip(outs, out_types, strict=True))

    def constant(self, value, dtype: str) -> Tracer:
        """A constant as a ``fromList`` equation (scalars are shared within a builder)."""
        a = np.asarray(value, dtype=DTYPES[dtype])
        key = (dtype, a.shape, a.tobytes()) if a.size <= 16 else None
        if key is not None and key in self._constants:
            return self._constants[key]
        if dtype == "bool":
            data = tuple(bool(x) for x in a.ravel())
        elif a.dtype.kind in "iu":
            data = tuple(int(x) for x in a.ravel())
        else:
            data = tuple(canonical_float(x) for x in a.ravel())
        t = self.emit("fromList", (tuple(a.shape), data, dtype), (), Type(dtype, a.shape))
        if key is not None:
            self._constants[key] = t
        return t

    def lift(self, x) -> int:
        """The variable of ``x`` inside this builder (a constant for arrays and scalars)."""
        if isinstance(x, Tracer):
            if x.builder is self:
                return x.id
            if x.builder.level < self.level:
                return self.lift_foreign(x)
            raise ShaxError("a value from an inner trace escaped into an outer one")
        a = np.asarray(x)
        dtype = dtype_name(a.dtype)
        flat = a.ravel()
        if a.size > 1 and (flat == flat[0]).all():
            # a splat array is a scalar constant broadcast: no large literal in the IR
            scalar = self.constant(flat[0], dtype)
            return bind("broadcast", scalar, dims=(), shape=a.shape).id
        return self.constant(a, dtype).id

    def lift_variable(self, source: Builder, v: int) -> int:
        """``lift_foreign(Tracer(source, v))``: the variable ``v`` of ``source`` lifted."""
        return self.lift_foreign(Tracer(source, v, source.types[v]))

    def lift_foreign(self, x: Tracer) -> int:
        raise ShaxError(
            "a traced value from another function was captured; pass it as an argument instead"
        )


class Tracer:
    """A value being recorded: a builder, the id of its variable there, and its type."""

    __slots__ = ("builder", "id", "type")
    __array_priority__ = 1000  # so `ndarray * tracer` defers to Tracer.__rmul__

    def __init__(self, builder: Builder, var: int | Var, type_: Type | None = None):
        self.builder = builder
        if type_ is None:  # (a Var of the builder is accepted too)
            var = builder.id_of(var)
            type_ = builder.types[var]
        self.id = var
        self.type = type_

    @property
    def variable(self) -> Var:
        """The public ``Var`` (built on demand: passes use ``id``)."""
        return self.builder.var(self.id)

    shape = property(lambda self: self.type.shape)
    dtype = property(lambda self: self.type.np_dtype)
    ndim = property(lambda self: len(self.type.shape))
    size = property(lambda self: self.type.size)

    def __repr__(self) -> str:
        return f"Tracer({self.variable.name} :: {self.variable.type})"

    def __bool__(self):
        raise TracerBoolError(
            f"cannot branch on the traced value {self.variable.name} :: {self.variable.type}: "
            "shax records "
            "one straight-line program, so Python `if`, `while`, `and`/`or` and bool() cannot "
            "depend on traced data. Compute both branches and pick with "
            "shax_core.numpy.where(cond, a, b) (the `select` primitive) instead."
        )

    def __float__(self):
        raise TracerBoolError(
            f"cannot convert the traced value {self.variable.name} to a Python number while "
            "tracing; "
            "keep it as an array"
        )

    __int__ = __index__ = __float__

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a scalar")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __hash__(self):
        return id(self)

    __add__ = lambda s, o: add(s, o)  # noqa: E731
    __radd__ = lambda s, o: add(o, s)  # noqa: E731
    __sub__ = lambda s, o: sub(s, o)  # noqa: E731
    __rsub__ = lambda s, o: sub(o, s)  # noqa: E731
    __mul__ = lambda s, o: mul(s, o)  # noqa: E731
    __rmul__ = lambda s, o: mul(o, s)  # noqa: E731
    __truediv__ = lambda s, o: div(s, o)  # noqa: E731
    __rtruediv__ = lambda s, o: div(o, s)  # noqa: E731
    __pow__ = lambda s, o: power(s, o)  # noqa: E731
    __rpow__ = lambda s, o: power(o, s)  # noqa: E731
    __neg__ = lambda s: neg(s)  # noqa: E731
    __pos__ = lambda s: s  # noqa: E731
    __abs__ = lambda s: bind("abs", s)  # noqa: E731
    __matmul__ = lambda s, o: matmul(s, o)  # noqa: E731
    __rmatmul__ = lambda s, o: matmul(o, s)  # noqa: E731
    __lt__ = lambda s, o: compare("lt", s, o)  # noqa: E731
    __le__ = lambda s, o: compare("le", s, o)  # noqa: E731
    __gt__ = lambda s, o: compare("gt", s, o)  # noqa: E731
    __ge__ = lambda s, o: compare("ge", s, o)  # noqa: E731
    __eq__ = lambda s, o: compare("eq", s, o)  # noqa: E731
    __ne__ = lambda s, o: compare("ne", s, o)  # noqa: E731

    @property
    def T(self):
        return transpose(self, tuple(reversed(range(self.ndim))))

    def reshape(self, *shape):
        return reshape(self, shape[0] if len(shape) == 1 and not _is_int(shape[0]) else shape)

    def sum(self, axis=None):
        return reduce_sum(self, _axes(axis, self.ndim))

    def __getitem__(self, index):
        return getitem(self, index)


_new_tracer = object.__new__


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral)


def _axes(axis, ndim) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if _is_int(axis):
        axis = (axis,)
    return tuple(sorted(a % ndim if ndim else a for a in axis))


# ---------------------------------------------------------------------------------------------
# bind


def top_builder(args) -> Builder | None:
    best = None
    for a in args:
        if isinstance(a, Tracer) and (best is None or a.builder.level > best.level):
            best = a.builder
    return best


def _freeze(v):
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


# shape rules of parameterless primitives by (rule, operand types), by identity: a rule is a
# pure function of its operands' types, and the chain a program is traced from meets the same
# few Type objects again and again. An entry holds its rule and types, so their ids are not
# reused while it lives; the table is bounded (cleared when full).
_SHAPES: dict[tuple, tuple] = {}
_SHAPES_LIMIT = 4096


def _remember_shape(key: tuple, out, rule, types: tuple):
    """Remember ``out = rule(*types)`` under ``key`` (see _SHAPES); returns ``out``."""
    if len(_SHAPES) >= _SHAPES_LIMIT:
        _SHAPES.clear()
    _SHAPES[key] = (out, rule, types)
    return out


def bind(name: str, *args, **params):
    """Apply primitive ``name``: NumPy evaluation on arrays, an equation on tracers."""
    prim = _REGISTRY.get(name) or lookup(name)
    if not params and len(args) == 1:  # the common case: one tracer, no parameters
        x = args[0]
        if x.__class__ is Tracer and prim.arity == 1 and not prim.multiple_results:
            t, rule = x.type, prim.shape_rule
            key = (id(rule), id(t))
            hit = _SHAPES.get(key)
            if hit is not None:
                return x.builder.emit(name, (), (x.id,), hit[0])
            try:
                out_type = rule(t)
            except Exception:  # noqa: BLE001  (_record raises it with the equation named)
                return _record(x.builder, prim, (), args)
            _remember_shape(key, out_type, rule, (t,))
            return x.builder.emit(name, (), (x.id,), out_type)
    values = tuple(_freeze(params[p.name]) for p in prim.params) if params else ()
    builder = top_builder(args)
    if builder is None:
        arrays = [np.asarray(a) for a in args]
        return prim.impl(*arrays, **prim.kwargs(values))
    return _record(builder, prim, values, args)


def _record(builder: Builder, prim, values: tuple, args) -> Tracer:
    ins = tuple(
        [a.id if a.__class__ is Tracer and a.builder is builder else builder.lift(a) for a in args]
    )
    types = [builder.types[v] for v in ins]
    try:
        if prim.arity is not None and len(types) != prim.arity:
            raise ShaxTypeError("arity")
        out_type = (
            prim.shape_rule(*types, **prim.kwargs(values)) if values else prim.shape_rule(*types)
        )
    except Exception:  # noqa: BLE001  (out_type re-raises it with the equation named)
        named = tuple([builder.var(v) for v in ins])
        out_type = prim.out_type(Eqn(Var("_"), prim.name, values, named), types)
    if prim.multiple_results:
        return builder.emit_multi(prim.name, values, ins, out_type)
    return builder.emit(prim.name, values, ins, out_type)


def bind_at(builder: Builder, name: str, *args, **params):
    """``bind``, recording into ``builder`` even when no argument is a tracer (constants)."""
    inner = top_builder(args)
    if inner is not None and inner.level >= builder.level:
        return bind(name, *args, **params)
    prim = lookup(name)
    values = tuple(_freeze(params[p.name]) for p in prim.params)
    return _record(builder, prim, values, args)


def inline(builder: Builder, program: Program, args: Sequence[Tracer]) -> list[Tracer]:
    """Emit ``program``'s equations into ``builder`` with its parameters bound to ``args``;
    return its outputs. Types are already known, so no rule runs: if ``program``'s were not
    computed by shax (a parsed program), the builder's program is not ``checked`` either."""
    if not program.checked:
        builder.checked = False
    lean = lean_of(program)
    env = [0] * len(lean.types)  # program id -> builder id
    for p, a in zip(lean.params, args, strict=True):
        env[p] = a.id
    types, extra = lean.types, lean.eqn_extra
    for i, (prim, params, ins) in enumerate(zip(lean.eqn_prim, lean.eqn_params, lean.eqn_ins)):
        new_ins = [env[v] for v in ins]
        if extra and i in extra:
            outs = lean.eqn_outs(i)
            made = builder.emit_multi(prim, params, new_ins, [types[v] for v in outs])
            for v, t in zip(outs, made, strict=True):
                env[v] = t.id
            continue
        out = lean.eqn_out[i]
        env[out] = builder.emit_id(prim, params, new_ins, types[out])
    return [Tracer(builder, env[v], types[v]) for v in lean.outs]


def zeros(builder: Builder, type_: Type):
    """Zeros of ``type_`` recorded in ``builder``: ``broadcast [] shape (fromList [] [0.0])``."""
    c = builder.constant(0.0 if type_.dtype != "bool" else False, type_.dtype)
    return c if type_.shape == () else broadcast(c, (), type_.shape)


def type_of_value(x) -> Type:
    if isinstance(x, Tracer):
        return x.type
    if isinstance(x, Zero):
        return x.type
    return array_type(x)


type_of = type_of_value


def shape_of(x) -> tuple[int, ...]:
    return type_of_value(x).shape


def constant_like(value, like, dtype: str | None = None):
    """``value`` as a constant of ``like``'s dtype, in ``like``'s builder (or as an array)."""
    dtype = dtype or type_of_value(like).dtype
    if isinstance(like, Tracer):
        return like.builder.constant(value, dtype)
    return np.asarray(value, dtype=DTYPES[dtype])


def full_like(like, value, shape=None, dtype: str | None = None):
    """``value`` broadcast to ``shape`` (default: like's shape): ``broadcast [] shape c``."""
    shape = tuple(shape_of(like) if shape is None else shape)
    c = constant_like(value, like, dtype)
    return c if shape == () else broadcast(c, (), shape)


def instantiate(t, anchor):
    """A real zeros value for a symbolic Zero, built next to a non-zero value in ``anchor``."""
    if not isinstance(t, Zero):
        return t
    like = next((a for a in anchor if not isinstance(a, Zero)), None)
    if like is None:
        raise ShaxError("cannot instantiate a zero with nothing to anchor it")
    return full_like(like, 0.0, t.type.shape, t.type.dtype)


# ---------------------------------------------------------------------------------------------
# implicit broadcasting and promotion


def is_weak(x) -> bool:
    """Weakly typed: a Python scalar, a NumPy scalar (``np.float64(2.0)``) or a 0-d array that
    is not a tracer. As in JAX, a weak operand takes the dtype of the array it meets."""
    if isinstance(x, Tracer):
        return False
    if isinstance(x, np.ndarray):
        return x.ndim == 0
    return isinstance(x, numbers.Number | np.generic)


def _promote(x, y):
    """Weak operands (Python and NumPy scalars) take the other operand's dtype; f32 with f64
    converts to f64. ``x32 * np.float64(2.0)`` is f32: f32 in, f32 out."""
    x_weak, y_weak = is_weak(x), is_weak(y)
    if x_weak and y_weak:
        dtype = _weak_pair_dtype(x, y)
        x, y = np.asarray(x, DTYPES[dtype]), np.asarray(y, DTYPES[dtype])
    elif x_weak:
        x = constant_like(_scalar_value(x), y, _scalar_dtype(x, y))
    elif y_weak:
        y = constant_like(_scalar_value(y), x, _scalar_dtype(y, x))
    tx, ty = type_of_value(x), type_of_value(y)
    if tx.dtype != ty.dtype:
        common = promote_dtypes(tx.dtype, ty.dtype)
        x, y = convert(x, common), convert(y, common)
    return x, y


def promote_dtypes(a: str, b: str) -> str:
    """The common dtype: floats win (f64 over f32), then i64 over i32, then bool."""
    for d in ("f64", "f32", "i64", "i32"):
        if d in (a, b):
            return d
    return a


def _scalar_value(x):
    return x.item() if isinstance(x, np.ndarray | np.generic) else x


def _is_bool_scalar(x) -> bool:
    return isinstance(x, bool | np.bool_) or (isinstance(x, np.ndarray) and x.dtype == np.bool_)


def _weak_pair_dtype(x, y) -> str:
    """Two weak operands: bool if both are bools; else f64 if either is an f64 NumPy value, f32
    otherwise (Python floats alone stay f32, shax's default float)."""
    if _is_bool_scalar(x) and _is_bool_scalar(y):
        return "bool"
    numpy_f64 = any(
        isinstance(a, np.ndarray | np.generic) and np.asarray(a).dtype == np.float64 for a in (x, y)
    )
    return "f64" if numpy_f64 else "f32"


def _scalar_dtype(scalar, other) -> str:
    other_dtype = type_of_value(other).dtype
    if _is_bool_scalar(scalar) and other_dtype == "bool":
        return "bool"
    if other_dtype in ("i32", "i64", "bool"):
        # an integer scalar keeps an integer array integer; a float scalar makes it f32
        if isinstance(_scalar_value(scalar), numbers.Integral):
            return other_dtype if other_dtype != "bool" else "i32"
        return "f32"
    return other_dtype


def broadcast_to(x, shape):
    """NumPy broadcasting of ``x`` to ``shape`` as one ``broadcast`` equation (or none)."""
    shape = tuple(shape)
    xs = shape_of(x)
    if xs == shape:
        return x
    offset = len(shape) - len(xs)
    if offset < 0 or any(d != 1 and d != shape[offset + i] for i, d in enumerate(xs)):
        raise ShaxTypeError(f"cannot broadcast shape {list(xs)} to {list(shape)}")
    return broadcast(x, tuple(range(offset, len(shape))), shape)


def _broadcast_shapes(a, b) -> tuple[int, ...]:
    if a == b:
        return a
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        raise ShaxTypeError(f"shapes {list(a)} and {list(b)} do not broadcast together") from None


def _binary(name, x, y):
    if x.__class__ is Tracer and y.__class__ is Tracer:
        tx, ty = x.type, y.type
        if (tx is ty or tx == ty) and x.builder is y.builder:
            # the common case (nothing to promote or broadcast): bind without its dispatch
            rule = _REGISTRY[name].shape_rule
            key = (id(rule), id(tx), id(ty))
            hit = _SHAPES.get(key)
            if hit is not None:
                return x.builder.emit(name, (), (x.id, y.id), hit[0])
            try:
                out_type = rule(tx, ty)
            except Exception:  # noqa: BLE001  (bind raises it with the equation named)
                return bind(name, x, y)
            _remember_shape(key, out_type, rule, (tx, ty))
            return x.builder.emit(name, (), (x.id, y.id), out_type)
        if tx == ty:
            return bind(name, x, y)
    x, y = _promote(x, y)
    shape = _broadcast_shapes(shape_of(x), shape_of(y))
    return bind(name, broadcast_to(x, shape), broadcast_to(y, shape))


def add(x, y):
    return _binary("add", x, y)


def sub(x, y):
    return _binary("sub", x, y)


def mul(x, y):
    return _binary("mul", x, y)


def div(x, y):
    """True division; integer operands are converted to f32 first (as JAX does)."""
    if _is_integral(x) and _is_integral(y):
        x, y = _promote(x, y)
        x, y = convert(x, "f32"), convert(y, "f32")
    return _binary("div", x, y)


def _is_integral(x) -> bool:
    if isinstance(x, Tracer | np.ndarray | np.generic):
        return type_of_value(x).dtype in ("i32", "i64", "bool")
    return isinstance(x, numbers.Integral)


def power(x, y):
    """``x ** y`` with JAX's conventions (see docs/conventions.md).

    An integer exponent (a Python or NumPy int) is JAX's ``integer_pow``: multiplications by
    repeated squaring, ``1 / x**n`` for negative n, and ``x ** 0`` is ones, whose derivative is 0
    everywhere (0 at x = 0 too). Any other exponent is the ``pow`` primitive (``0.5`` is ``sqrt``,
    the same function with an exact derivative), whose conventions are JAX's ``lax.pow``:
    ``d/dx x**y = y x**(y-1)`` (NaN at x = 0 for y = 0.0, 0 for y > 1) and
    ``d/dy x**y = log(x) x**y`` taken as 0 at x = 0 (NaN for a negative x)."""
    if isinstance(y, numbers.Integral | np.integer) and not isinstance(y, bool | np.bool_):
        if isinstance(x, Tracer) or not is_weak(x):
            return integer_power(x, int(y))
    if isinstance(y, float) and isinstance(x, Tracer):
        if y == 1.0:
            return x
        if y == 2.0:
            return mul(x, x)
        if y == 0.5:
            return bind("sqrt", x)
    return _binary("pow", x, y)


def integer_power(x, n: int):
    """``x ** n`` for an integer n as multiplications (JAX's ``integer_pow``)."""
    if n == 0:
        return full_like(x, 1.0)
    if n < 0:
        return div(1.0, integer_power(x, -n))
    result, square = None, x
    while True:  # binary exponentiation: x^n = prod of x^(2^k) over the bits k of n
        if n & 1:
            result = square if result is None else mul(result, square)
        n >>= 1
        if not n:
            return result
        square = mul(square, square)


def maximum(x, y):
    return _binary("max", x, y)


def minimum(x, y):
    return _binary("min", x, y)


def compare(name, x, y):
    return _binary(name, x, y)


def neg(x):
    return bind("negate", x)


def select(pred, on_true, on_false):
    on_true, on_false = _promote(on_true, on_false)
    shape = _broadcast_shapes(
        shape_of(pred), _broadcast_shapes(shape_of(on_true), shape_of(on_false))
    )
    pred = broadcast_to(pred, shape)
    if isinstance(pred, Tracer) and _scalar_array(on_true) and _scalar_array(on_false):
        # two scalar branches (the weights of a rule): their splats built in pred's builder,
        # the equations lifting their broadcast arrays would record, without the arrays
        b = pred.builder
        return bind("select", pred, _splat(b, on_true, shape), _splat(b, on_false, shape))
    return bind("select", pred, broadcast_to(on_true, shape), broadcast_to(on_false, shape))


def _scalar_array(x) -> bool:
    """A 0-d array other than NaN (lifting a NaN splat records a literal array instead)."""
    return isinstance(x, np.ndarray) and x.ndim == 0 and bool(x == x)


def _splat(builder: Builder, scalar: np.ndarray, shape: tuple[int, ...]):
    """``builder.lift(np.broadcast_to(scalar, shape))``: the constant, broadcast if large."""
    if math.prod(shape) <= 1:
        return np.broadcast_to(scalar, shape)  # lifted as a literal by bind, as before
    c = builder.constant(scalar, dtype_name(scalar.dtype))
    return bind("broadcast", c, dims=(), shape=shape)


def convert(x, dtype: str):
    if type_of_value(x).dtype == dtype:
        return x
    return bind("convert", x, dtype=dtype)


def broadcast(x, dims, shape):
    return bind("broadcast", x, dims=tuple(dims), shape=tuple(shape))


def transpose(x, perm):
    return bind("transpose", x, perm=tuple(perm))


def reshape(x, shape):
    shape = tuple(int(d) for d in shape)
    size = type_of_value(x).size
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1) or 1
        shape = tuple(size // known if d == -1 else d for d in shape)
    if shape == shape_of(x):
        return x
    return bind("reshape", x, shape=shape)


def reduce_sum(x, axes):
    return bind("reduce_sum", x, axes=tuple(axes))


def reduce_max(x, axes):
    return bind("reduce_max", x, axes=tuple(axes))


def slice_(x, start, limit):
    return bind("slice", x, start=tuple(start), limit=tuple(limit))


def pad(x, config, value=0.0):
    return bind("pad", x, config=tuple(tuple(p) for p in config), value=float(value))


def concatenate(xs, axis: int):
    return bind("concatenate", *xs, axis=int(axis))


def dot_general(x, y, lhs_contract, rhs_contract, lhs_batch=(), rhs_batch=()):
    return bind(
        "dot_general",
        x,
        y,
        lhs_contract=tuple(lhs_contract),
        rhs_contract=tuple(rhs_contract),
        lhs_batch=tuple(lhs_batch),
        rhs_batch=tuple(rhs_batch),
    )


def matmul(x, y):
    """NumPy's ``@`` for rank 1 and 2 operands (``dot`` in the IR)."""
    x, y = _promote(x, y)
    return bind("dot", x, y)


def getitem(x, index):
    """Basic indexing (ints and unit-step slices) as ``slice`` + ``reshape``."""
    shape = shape_of(x)
    if not isinstance(index, tuple):
        index = (index,)
    if len(index) > len(shape):
        raise IndexError(f"too many indices for an array of shape {list(shape)}")
    start, limit, keep = [], [], []
    for axis, n in enumerate(shape):
        ix = index[axis] if axis < len(index) else slice(None)
        if _is_int(ix):
            i = int(ix) + n if ix < 0 else int(ix)
            if not 0 <= i < n:
                raise IndexError(f"index {ix} out of range for axis {axis} of size {n}")
            start.append(i)
            limit.append(i + 1)
        elif isinstance(ix, slice):
            lo, hi, step = ix.indices(n)
            if step != 1:
                raise IndexError("shax supports only unit-step slices")
            start.append(lo)
            limit.append(max(lo, hi))
            keep.append(max(lo, hi) - lo)
        else:
            raise IndexError(f"unsupported index {ix!r}: use ints and unit-step slices")
    y = slice_(x, start, limit) if (tuple(start), tuple(limit)) != ((0,) * len(shape), shape) else x
    return reshape(y, keep)
