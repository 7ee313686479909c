"""Transpose a linear program: walk it backwards, turning tangents into cotangents.

The linear program takes ``(tangents..., residuals...)``. Its transpose takes
``(output cotangents..., residuals...)`` and returns the cotangent of each tangent input.
Equations that read no tangent (residual-only work, constants) run forward, each emitted just
before the first backward step that reads it; the others run backwards through their
primitive's transpose rule, cotangents of a value used several
times are summed, and a cotangent that never arrives is a zero of the right type.

>>> from shax_core.text import parse
>>> df = parse(
...     "def df(arg0 :: f32[], arg1 :: f32[], arg2 :: f32[]) ="
...     "  let d0 = add arg0 arg1  d1 = mul d0 arg2 in [d1]"
... )
>>> print(transpose_program(df, 2))
def dft(arg0 :: f32[],
        arg1 :: f32[]) =
  let t0 :: f32[] = mul arg0 arg1
  in [t0, t0]
"""

from __future__ import annotations

from shax_core._infer import infer
from shax_core._linearize import Linearized
from shax_core.core import Builder, Tracer, add, bind_at, zeros
from shax_core.ir import Program, ShaxError, has_subprograms, lean_of
from shax_core.passes._dce import dce
from shax_core.registry import TRANSFORMS, Linear, RuleError, Zero, lookup
from shax_core.text import short_eqn as format_eqn


class TransposeError(ShaxError):
    """The program is not linear in its tangent inputs; the message names the equation."""


def transpose_program(linear: Program | Linearized, num_linear: int | None = None) -> Program:
    """The transpose of a linear program whose first ``num_linear`` inputs are tangents (a
    ``Linearized`` from ``linearize_program`` says how many itself)."""
    if isinstance(linear, Linearized):
        num_linear, linear = linear.n_tangents, linear.linear
    if num_linear is None:
        raise ShaxError(
            f"transpose_program({linear.name}) needs num_linear: how many leading inputs are "
            "tangents (the rest are residuals)"
        )
    return transpose_typed(infer(linear), num_linear)  # annotations are checked, not trusted


def transpose_typed(linear: Program, num_linear: int) -> Program:
    """``transpose_program`` on a program whose types were inferred by shax itself."""
    return _transpose(linear, num_linear, dead_code_removed=False)


def _transpose(linear: Program, num_linear: int, dead_code_removed: bool) -> Program:
    """The transpose of ``dce(linear)``. Dead equations need not be removed first: no
    cotangent reaches them and no live equation reads them, so none is emitted. Only a
    sub-program (DCE prunes it) or an equation without a transpose rule (an error only if it
    is live) makes the walk start again on ``dce(linear)``."""
    lean = lean_of(linear)
    types, names = lean.types, lean.names
    eqn_prim, eqn_params, eqn_ins, eqn_out = (
        lean.eqn_prim, lean.eqn_params, lean.eqn_ins, lean.eqn_out
    )  # fmt: skip
    extra = lean.eqn_extra
    b = Builder(prefix="t")  # distinct from the primal's names, so zipping reuses both
    cts_in = [b.add_param(types[v]) for v in lean.outs]
    n = len(types)
    value: list = [None] * n  # by id: the non-linear values, as tracers in b
    is_linear = bytearray(n)  # by id: 1 for a tangent
    for i, p in enumerate(lean.params):
        if i < num_linear:
            is_linear[p] = 1
        else:
            value[p] = b.add_param(types[p])

    backward = []  # the tangent equations, by index
    prims: dict = {}  # by name: the primitives of the tangent equations
    forward: dict[int, int] = {}  # id -> its residual-only equation, emitted when first needed
    for i, (name, params, ins) in enumerate(zip(eqn_prim, eqn_params, eqn_ins)):
        if not dead_code_removed and params and has_subprograms(params):
            return _transpose(dce(linear), num_linear, dead_code_removed=True)
        for v in ins:
            if is_linear[v]:
                break
        else:  # reads no tangent
            if extra and i in extra:
                for v in lean.eqn_outs(i):
                    forward[v] = i
            else:
                forward[eqn_out[i]] = i
            continue
        prim = prims.get(name)
        if prim is None:
            prim = prims[name] = lookup(name)
        if prim.transpose is None:
            if not dead_code_removed:
                return _transpose(dce(linear), num_linear, dead_code_removed=True)
            raise TransposeError(
                f"`{format_eqn(lean.eqn(i))}` is not linear in its tangent input(s): "
                f"{name} has no transpose rule"
            )
        if extra and i in extra:
            for v in lean.eqn_outs(i):
                is_linear[v] = 1
        else:
            is_linear[eqn_out[i]] = 1
        backward.append(i)

    def forward_eqn(i: int, xs: list):
        name, params = eqn_prim[i], eqn_params[i]
        if (extra and i in extra) or any(
            x.__class__ is not Tracer or x.builder is not b for x in xs
        ):
            return bind_at(b, name, *xs, **lookup(name).kwargs(params))
        # the equation as it is, on values in b: its type is known (the program is typed)
        return b.emit(name, params, [x.id for x in xs], types[eqn_out[i]])

    def residual(v: int):
        """The value of the non-linear variable ``v``, emitting its forward equations on
        first use, operands before their users (so recomputed residuals are computed right
        before the backward step that reads them, and are not all live at once). An explicit
        stack, not recursion: a chain of any length works."""
        stack = [v]
        while stack:
            u = stack[-1]
            if value[u] is not None:
                stack.pop()
                continue
            i = forward[u]
            missing = [w for w in eqn_ins[i] if value[w] is None]
            if missing:
                stack.extend(missing)
                continue
            result = forward_eqn(i, [value[w] for w in eqn_ins[i]])
            if isinstance(result, tuple):  # a multi-result equation: all of its results
                for w, r in zip(lean.eqn_outs(i), result, strict=True):
                    value[w] = r
            else:
                value[u] = result
            stack.pop()
        return value[v]

    ct: list = [None] * n  # by id: the cotangent summed so far
    linear_of: dict = {}  # one Linear marker per type (they are immutable)

    def accumulate(v: int, c):
        if c is None or c.__class__ is Zero:
            return
        prev = ct[v]
        if prev is None:
            ct[v] = c
        elif (
            prev.__class__ is Tracer
            and c.__class__ is Tracer
            and prev.builder is b
            and c.builder is b
            and prev.type == c.type
        ):  # = add(prev, c): two cotangents of one type, nothing to promote or broadcast
            ct[v] = b.emit("add", (), (prev.id, c.id), c.type)
        else:
            ct[v] = add(prev, c)

    for v, c in zip(lean.outs, cts_in, strict=True):
        if is_linear[v]:
            accumulate(v, c)

    for i in reversed(backward):
        name = eqn_prim[i]
        prim = prims[name]
        if prim.multiple_results:  # one cotangent per result, Zero where none arrived
            outs = lean.eqn_outs(i)
            cs = [ct[v] for v in outs]
            for v in outs:
                ct[v] = None
            if all(c is None for c in cs):
                continue
            c = tuple(Zero(types[v]) if c is None else c for v, c in zip(outs, cs))
        else:
            out = eqn_out[i]
            c = ct[out]
            if c is None:
                continue
            ct[out] = None
        ins, params = eqn_ins[i], eqn_params[i]
        args = []
        for v in ins:  # a Linear marker for each tangent operand, else its value
            if is_linear[v]:
                t = types[v]
                args.append(linear_of[t] if t in linear_of else _linear(linear_of, t))
            else:
                x = value[v]
                args.append(x if x is not None else residual(v))
        try:
            if params:
                in_cts = prim.transpose(c, *args, **prim.kwargs(params))
            else:
                in_cts = prim.transpose(c, *args)
        except RuleError as e:
            raise TransposeError(f"`{format_eqn(lean.eqn(i))}`: {e}") from None
        except ShaxError as e:
            raise TransposeError(f"`{format_eqn(lean.eqn(i))}`: {e}") from None
        if len(in_cts) != len(ins):
            raise TransposeError(
                f"`{format_eqn(lean.eqn(i))}`: the transpose rule of {name} gave "
                f"{len(in_cts)} cotangents for {len(ins)} inputs"
            )
        for v, c_v in zip(ins, in_cts):
            if not is_linear[v] or c_v is None or c_v.__class__ is Zero:
                continue
            t = c_v.type
            if t is not types[v] and t != types[v]:
                raise TransposeError(
                    f"`{format_eqn(lean.eqn(i))}`: the transpose rule of {name} gave a "
                    f"cotangent of type {t} for {names[v]} :: {types[v]}"
                )
            if ct[v] is not None:
                accumulate(v, c_v)
            else:  # = accumulate(v, c_v): the first cotangent of v
                ct[v] = c_v

    outs = []
    for p in lean.params[:num_linear]:
        c = ct[p]
        outs.append((c if c is not None else zeros(b, types[p])).id)
    return b.program(lean.name + "t", outs, checked=False)


def _linear(linear_of: dict, t) -> Linear:
    linear_of[t] = Linear(t)
    return linear_of[t]


TRANSFORMS["transpose"] = transpose_typed
