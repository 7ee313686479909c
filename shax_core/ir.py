"""The IR: types, variables, equations and programs, all immutable values.

A program is built from them directly, and printed in the seed's text form:

>>> a, b = Var("arg0", Type("f32", ())), Var("arg1", Type("f32", ()))
>>> x2, x3 = Var("x2", Type("f32", ())), Var("x3", Type("f32", ()))
>>> p = Program("f", (a, b), (Eqn(x2, "add", (), (a, b)), Eqn(x3, "sin", (), (x2,))), (x3,))
>>> print(p)
def f(arg0 :: f32[],
      arg1 :: f32[]) =
  let x2 :: f32[] = add arg0 arg1
      x3 :: f32[] = sin x2
  in [x3]

Every equation binds exactly one variable (SSA); constants are equations too (``fromList``),
so the IR has one kind of binding. Passes never mutate a Program: they build a new one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The IR text printer. ``shax_core.text`` (a layer above this one) installs itself here when it
# is imported, and the shax_core package always imports it: ``str(program)`` is its IR text.
_printer: list = []


def set_printer(print_program) -> None:
    _printer[:] = [print_program]


DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "bool": np.dtype(np.bool_),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
}
FLOAT_DTYPES = frozenset({"f32", "f64"})
MAX_NESTING = 32  # sub-programs (loop bodies, branches) nest at most this deep
INT_DTYPES = frozenset({"i32", "i64"})  # indices, counts, comparisons: never tangents


# ---------------------------------------------------------------------------------------------
# floats: the IR text spelling, the canonical value, and the JSON spelling of non-finite ones


def format_float(value: float, dtype: str = "f64") -> str:
    """``1.0``, ``0.1`` (f32: the shortest text that rounds back to the f32), ``nan``, ``-inf``."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = str(np.float32(value)) if dtype == "f32" else repr(float(value))
    return text if any(c in text for c in ".en") else text + ".0"


NAN_VALUE = float("nan")


def canonical_float(v) -> float:
    """A Python float; every NaN is the one object ``NAN_VALUE``, so equal programs compare
    equal."""
    f = float(v)
    return NAN_VALUE if f != f else f


NAN, POS_INF, NEG_INF = "NaN", "Infinity", "-Infinity"
NONFINITE = {NAN: math.nan, POS_INF: math.inf, NEG_INF: -math.inf}


def encode_float(x: float) -> float | str:
    """A float as JSON value: itself, or the documented string for NaN and the infinities."""
    if math.isfinite(x):
        return x
    return NAN if math.isnan(x) else (POS_INF if x > 0 else NEG_INF)


def decode_float(v: Any) -> float:
    """Inverse of ``encode_float``; raises ValueError for anything but a number or the 3 strings."""
    if isinstance(v, str):
        if v in NONFINITE:
            return NONFINITE[v]
        raise ValueError(
            f"{v!r} is not a number (non-finite values are {NAN}, {POS_INF}, {NEG_INF})"
        )
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{v!r} is not a number")
    return float(v)


# ---------------------------------------------------------------------------------------------
# errors


class ShaxError(Exception):
    """Base of every error shax_core raises on bad input."""


class ShaxTypeError(ShaxError):
    """A program is ill-typed; the message names the equation."""


class VerifyError(ShaxError):
    """A program breaks an IR invariant (SSA, scoping, types)."""


@dataclass(frozen=True, slots=True, eq=False)
class Type:
    """An array type: dtype name and shape. Printed ``f32[2, 6]``; a scalar is ``f32[]``."""

    dtype: str
    shape: tuple[int, ...]
    _hash: int = field(init=False, repr=False, compare=False)  # types key many dicts
    # the number of elements (Python ints: never wraps); every pass asks it of many types
    size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ShaxTypeError(f"unknown dtype {self.dtype!r}; expected one of {list(DTYPES)}")
        if not isinstance(self.shape, tuple):
            object.__setattr__(self, "shape", tuple(self.shape))
        for d in self.shape:
            if not isinstance(d, int | np.integer) or isinstance(d, bool) or d < 0:
                raise ShaxTypeError(f"bad dimension {d!r} in shape {list(self.shape)}")
        object.__setattr__(self, "_hash", hash((self.dtype, self.shape)))
        object.__setattr__(self, "size", math.prod(self.shape))

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(map(str, self.shape))}]"

    # equality by value; the identity test first, since rules mostly pass their operand's
    # Type object through
    def __eq__(self, other) -> bool:
        return self is other or (
            other.__class__ is Type and self.shape == other.shape and self.dtype == other.dtype
        )

    def __ne__(self, other) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self):  # rebuilt, so the hash is this process's (str hashes are salted)
        return (Type, (self.dtype, self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.size * self.np_dtype.itemsize

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def is_int(self) -> bool:
        return self.dtype in INT_DTYPES

    def with_shape(self, shape) -> Type:
        return Type(self.dtype, tuple(shape))

    def with_dtype(self, dtype: str) -> Type:
        return Type(dtype, self.shape)


def dtype_name(dtype) -> str:
    """The IR name of a NumPy dtype (``float32`` -> ``f32``)."""
    dt = np.dtype(dtype)
    for name, d in DTYPES.items():
        if d == dt:
            return name
    raise ShaxTypeError(f"unsupported dtype {dt}; shax supports f32, f64, i32, i64 and bool")


def type_of(array) -> Type:
    a = np.asarray(array)
    return Type(dtype_name(a.dtype), tuple(a.shape))


@dataclass(frozen=True, slots=True)
class Var:
    """A name bound once; ``type`` is None until inference fills it in."""

    name: str
    type: Type | None = None

    def __init__(self, name: str, type: Type | None = None):  # noqa: A002
        _set_var_name(self, name)
        _set_var_type(self, type)

    def __str__(self) -> str:
        return self.name


# the pipeline builds hundreds of thousands of these: set the slots directly (the frozen
# dataclass __init__ goes through object.__setattr__ per field, about twice as slow)
_set_var_name, _set_var_type = (Var.__dict__[f].__set__ for f in ("name", "type"))


@dataclass(frozen=True, slots=True)
class Eqn:
    """``out = prim[params] ins``. ``params`` is ordered as the primitive's parameter spec.

    A primitive with several results (a loop: its final carries and stacked outputs) binds
    ``out`` and then ``extra_outs``; ``outs`` is all of them. Parameters may be sub-programs
    (loop bodies, branches): closed Programs, whose free values are passed as operands.
    """

    out: Var
    prim: str
    params: tuple[Any, ...]
    ins: tuple[Var, ...]
    extra_outs: tuple[Var, ...] = ()

    def __init__(self, out: Var, prim: str, params: tuple, ins: tuple, extra_outs: tuple = ()):
        _set_out(self, out)
        _set_prim(self, prim)
        _set_params(self, params)
        _set_ins(self, ins)
        _set_extra_outs(self, extra_outs)

    @property
    def outs(self) -> tuple[Var, ...]:
        return (self.out, *self.extra_outs) if self.extra_outs else (self.out,)

    @property
    def subprograms(self) -> tuple[Program, ...]:
        """The sub-programs among the parameters, in order."""
        if not self.params:
            return ()
        return tuple(p for v in self.params for p in _programs_in(v))

    def with_subprograms(self, fn) -> Eqn:
        """This equation with every sub-program ``p`` replaced by ``fn(p)``."""
        if not any(_programs_in(v) for v in self.params):
            return self
        params = tuple(_map_programs(v, fn) for v in self.params)
        return Eqn(self.out, self.prim, params, self.ins, self.extra_outs)


_set_out, _set_prim, _set_params, _set_ins, _set_extra_outs = (
    Eqn.__dict__[f].__set__ for f in ("out", "prim", "params", "ins", "extra_outs")
)


def _programs_in(value) -> tuple:
    if isinstance(value, Program):
        return (value,)
    if isinstance(value, tuple) and value and isinstance(value[0], Program):
        return value
    return ()


def _map_programs(value, fn):
    if isinstance(value, Program):
        return fn(value)
    if isinstance(value, tuple) and value and isinstance(value[0], Program):
        return tuple(fn(p) for p in value)
    return value


def plain_params(params: tuple) -> bool:
    """Whether ``params`` holds only ints, strings and tuples of them: values that are equal
    only when they print the same (no floats: ``0.0 == -0.0``; no bools: ``True == 1``)."""
    for x in params:
        cls = x.__class__
        if cls is tuple:  # (a shape, axes: the first level is looked at here, without a call)
            for y in x:
                cls = y.__class__
                if cls is not int and cls is not str and not (cls is tuple and plain_params(y)):
                    return False
        elif cls is not int and cls is not str:
            return False
    return True


def exact_key(params: tuple):
    """``params`` as a dictionary key equal only to identical parameters.

    Python's equality takes ``0.0 == -0.0`` and ``True == 1``, so two equations that compute
    different values (``pad -0.0 x`` and ``pad 0.0 x``, ``fromList [-0.0]`` and
    ``fromList [0.0]``) would share a CSE entry, a rule tape or a kernel. Plain parameters are
    their own key; otherwise floats are keyed by their exact spelling (``float.hex``) and bools
    by their type. Sub-programs compare by value (their parameters are not re-keyed).

    >>> exact_key((0.0,)) == exact_key((-0.0,)), exact_key((1,)) == exact_key((True,))
    (False, False)
    >>> exact_key(((2, 3), "f32")) == ((2, 3), "f32")
    True
    """
    if plain_params(params):
        return params
    return (_EXACT, _exact(params))


_EXACT = object()  # marks a re-keyed tuple (no parameter tuple starts with it)


def _exact(value):
    cls = value.__class__
    if cls is tuple:  # (a constant's data: its floats keyed here, without a call each)
        keyed = []
        for v in value:
            cls = v.__class__
            if cls is float:
                keyed.append((float, v.hex()))
            elif cls is tuple or cls is bool:
                keyed.append(_exact(v))
            else:
                keyed.append(v)
        return tuple(keyed)
    if cls is float:
        return (float, value.hex())
    if cls is bool:
        return (bool, value)
    return value


def has_subprograms(params: tuple) -> bool:
    """Whether an equation with parameters ``params`` has sub-programs (``Eqn.subprograms``)."""
    for v in params:
        if _programs_in(v):
            return True
    return False


def bound_vars(program: Program):
    """Every variable ``program`` binds at its top level: parameters, then equation outputs."""
    yield from program.params
    for e in program.eqns:
        yield from e.outs


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    params: tuple[Var, ...]
    eqns: tuple[Eqn, ...]
    outs: tuple[Var, ...]
    _hash: list = field(default_factory=list, compare=False, repr=False)
    # True when shax computed every type (``infer``, or a pass over such a program); False
    # for parsed or hand-built programs, whose annotations are then checked, never trusted
    checked: bool = field(default=False, compare=False, repr=False)
    # the lean form (``lean_of``); a view of one (``from_lean``) leaves params, eqns and outs
    # unset until first read
    _lean: Any = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return _printer[0](self) if _printer else repr(self)

    def __hash__(self) -> int:
        if not self._hash:
            self._hash.append(hash((self.name, self.params, self.eqns, self.outs)))
        return self._hash[0]

    @property
    def in_types(self) -> tuple[Type, ...]:
        return tuple(p.type for p in self.params)

    @property
    def out_types(self) -> tuple[Type, ...]:
        return tuple(v.type for v in self.outs)

    @property
    def is_typed(self) -> bool:
        return all(p.type for p in self.params) and all(e.out.type for e in self.eqns)

    def replace(self, **changes) -> Program:
        lean = self._lean
        if lean is not None and changes.keys() <= {"name", "checked"}:  # the view stays lean
            renamed = lean.renamed(changes.get("name", self.name))
            return from_lean(renamed, checked=changes.get("checked", False))
        fields = dict(name=self.name, params=self.params, eqns=self.eqns, outs=self.outs)
        fields.update(changes)
        return Program(**fields)

    def __getattr__(self, attr: str):
        # only reached for an attribute not in the instance: a view of a Lean builds its
        # parameters, equations and outputs on first access (see ``from_lean``)
        if attr in _VIEW_FIELDS:
            lean = object.__getattribute__(self, "_lean")
            if lean is not None:
                value = _VIEW_FIELDS[attr](lean)
                object.__setattr__(self, attr, value)
                return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")


# ---------------------------------------------------------------------------------------------
# the lean representation: a program as struct of arrays


class Lean:
    """A program as struct of arrays: what the pipeline's passes read and build.

    Variables are integer ids into two columns, ``types[v]`` and ``names[v]``; equation ``i``
    binds ``eqn_out[i]`` (then ``eqn_extra[i]``, for a primitive with several results) to
    ``eqn_prim[i][eqn_params[i]] eqn_ins[i]``. ``params`` and ``outs`` are ids. The columns
    hold every variable of the program and may hold more (ids the program does not use):
    passes that keep variables share their input's columns, so a published Lean's columns
    are never changed; a pass that adds variables extends a copy.

    ``Program`` is the public, printable view, built on demand:

    >>> f32 = Type("f32", ())
    >>> lean = Lean("f", [f32, f32, f32], ["a", "b", "x0"], (0, 1), (2,),
    ...             ["add"], [()], [(0, 1)], [2])
    >>> print(from_lean(lean))
    def f(a :: f32[],
          b :: f32[]) =
      let x0 :: f32[] = add a b
      in [x0]
    >>> lean_of(from_lean(lean)) is lean
    True
    """

    __slots__ = (
        "name",
        "types",
        "names",
        "params",
        "outs",
        "eqn_prim",
        "eqn_params",
        "eqn_ins",
        "eqn_out",
        "eqn_extra",
        "_vars",
    )

    def __init__(
        self,
        name: str,
        types: list,
        names: list,
        params: tuple[int, ...],
        outs: tuple[int, ...],
        eqn_prim: list,
        eqn_params: list,
        eqn_ins: list,
        eqn_out: list,
        eqn_extra: dict | None = None,
        vars_: list | None = None,
    ):
        self.name = name
        self.types, self.names = types, names
        self.params, self.outs = params, outs
        self.eqn_prim, self.eqn_params, self.eqn_ins = eqn_prim, eqn_params, eqn_ins
        self.eqn_out = eqn_out
        self.eqn_extra = eqn_extra or {}  # equation index -> its extra output ids
        self._vars = vars_  # the Var of each id once built (None: none built yet)

    def __len__(self) -> int:
        return len(self.eqn_prim)

    def eqn_outs(self, i: int) -> tuple[int, ...]:
        """Every variable equation ``i`` binds."""
        extra = self.eqn_extra.get(i) if self.eqn_extra else None
        return (self.eqn_out[i], *extra) if extra else (self.eqn_out[i],)

    def renamed(self, name: str) -> Lean:
        if name == self.name:
            return self
        return Lean(
            name, self.types, self.names, self.params, self.outs, self.eqn_prim,
            self.eqn_params, self.eqn_ins, self.eqn_out, self.eqn_extra, self._vars,
        )  # fmt: skip

    def with_outs(self, outs: tuple[int, ...]) -> Lean:
        """This program returning ``outs`` (the same columns)."""
        return Lean(
            self.name, self.types, self.names, self.params, tuple(outs), self.eqn_prim,
            self.eqn_params, self.eqn_ins, self.eqn_out, self.eqn_extra, self._vars,
        )  # fmt: skip

    def var(self, v: int) -> Var:
        """The public ``Var`` of id ``v`` (built once per Lean)."""
        vars_ = self._vars
        if vars_ is None or len(vars_) < len(self.types):
            vars_ = self._vars = (vars_ or []) + [None] * (len(self.types) - len(vars_ or ()))
        var = vars_[v]
        if var is None:
            var = vars_[v] = Var(self.names[v], self.types[v])
        return var

    def eqn(self, i: int) -> Eqn:
        """The public ``Eqn`` of equation ``i``."""
        var = self.var
        extra = self.eqn_extra.get(i) if self.eqn_extra else None
        return Eqn(
            var(self.eqn_out[i]),
            self.eqn_prim[i],
            self.eqn_params[i],
            tuple([var(v) for v in self.eqn_ins[i]]),
            tuple([var(v) for v in extra]) if extra else (),
        )


def from_lean(lean: Lean, checked: bool = False) -> Program:
    """The ``Program`` view of ``lean``: parameters, equations and outputs are built on first
    access, and ``lean_of`` gives ``lean`` back without building them."""
    program = object.__new__(Program)
    for attr, value in (("name", lean.name), ("_hash", []), ("checked", checked), ("_lean", lean)):
        object.__setattr__(program, attr, value)
    return program


def lean_of(program: Program) -> Lean:
    """The lean form of ``program`` (its own if it is a view; else built once and kept).

    Variables are numbered parameters first, then equation outputs in order. A name used
    before it is bound raises ``VerifyError`` naming it (passes run on verified programs)."""
    lean = program._lean
    if lean is None:
        lean = _to_lean(program)
        object.__setattr__(program, "_lean", lean)
    return lean


def _to_lean(program: Program) -> Lean:
    vars_: list[Var] = list(program.params)
    ids = {v.name: i for i, v in enumerate(vars_)}
    eqn_prim, eqn_params, eqn_ins, eqn_out, eqn_extra = [], [], [], [], {}
    try:
        for i, e in enumerate(program.eqns):
            eqn_prim.append(e.prim)
            eqn_params.append(e.params)
            eqn_ins.append(tuple([ids[v.name] for v in e.ins]))
            eqn_out.append(len(vars_))
            ids[e.out.name] = len(vars_)
            vars_.append(e.out)
            if e.extra_outs:
                extra = []
                for v in e.extra_outs:
                    extra.append(len(vars_))
                    ids[v.name] = len(vars_)
                    vars_.append(v)
                eqn_extra[i] = tuple(extra)
        outs = tuple([ids[v.name] for v in program.outs])
    except KeyError as e:
        raise VerifyError(f"{program.name}: {e.args[0]} is used but never bound") from None
    types = [v.type for v in vars_]
    names = [v.name for v in vars_]
    params = tuple(range(len(program.params)))
    return Lean(
        program.name, types, names, params, outs, eqn_prim, eqn_params, eqn_ins, eqn_out,
        eqn_extra, vars_,
    )  # fmt: skip


def _view_eqns(lean: Lean) -> tuple[Eqn, ...]:
    eqn = lean.eqn
    return tuple([eqn(i) for i in range(len(lean.eqn_prim))])


_VIEW_FIELDS = {
    "params": lambda lean: tuple([lean.var(v) for v in lean.params]),
    "eqns": _view_eqns,
    "outs": lambda lean: tuple([lean.var(v) for v in lean.outs]),
}
