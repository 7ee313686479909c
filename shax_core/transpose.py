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
from shax_core.ir import Program, ShaxError
from shax_core.passes._dce import dce
from shax_core.passes.inline import emit_on_first_use
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
    b = Builder(prefix="t")  # distinct from the primal's names, so zipping reuses both
    cts_in = [b.add_param(v.type) for v in linear.outs]
    value = {}  # non-linear values: tracers in b
    is_linear = set()
    for i, p in enumerate(linear.params):
        if i < num_linear:
            is_linear.add(p.name)
        else:
            value[p.name] = b.add_param(p.type)

    backward = []
    prims: dict = {}  # by name: the primitives of the tangent equations
    forward: dict[str, object] = {}  # residual-only equations, emitted when first needed
    for eqn in linear.eqns:
        if not dead_code_removed and eqn.params and eqn.subprograms:
            return _transpose(dce(linear), num_linear, dead_code_removed=True)
        for v in eqn.ins:
            if v.name in is_linear:
                break
        else:  # reads no tangent
            if eqn.extra_outs:
                for v in eqn.outs:
                    forward[v.name] = eqn
            else:
                forward[eqn.out.name] = eqn
            continue
        prim = prims.get(eqn.prim)
        if prim is None:
            prim = prims[eqn.prim] = lookup(eqn.prim)
        if prim.transpose is None:
            if not dead_code_removed:
                return _transpose(dce(linear), num_linear, dead_code_removed=True)
            raise TransposeError(
                f"`{format_eqn(eqn)}` is not linear in its tangent input(s): "
                f"{eqn.prim} has no transpose rule"
            )
        if eqn.extra_outs:
            is_linear.update(v.name for v in eqn.outs)
        else:
            is_linear.add(eqn.out.name)
        backward.append(eqn)

    def forward_eqn(eqn, xs):
        if eqn.extra_outs or any(x.__class__ is not Tracer or x.builder is not b for x in xs):
            return bind_at(b, eqn.prim, *xs, **lookup(eqn.prim).kwargs(eqn.params))
        # the equation as it is, on values in b: its type is known (the program is typed)
        return b.emit(eqn.prim, eqn.params, [x.variable for x in xs], eqn.out.type)

    def residual(name: str):
        """The value of a non-linear variable, emitting its forward equations on first use
        (so recomputed residuals are computed right before the backward step that reads
        them, and are not all live at once)."""
        return emit_on_first_use(name, value, forward, forward_eqn)

    ct: dict[str, object] = {}
    linear_of: dict = {}  # one Linear marker per type (they are immutable)

    def accumulate(name, c):
        if c is None or c.__class__ is Zero:
            return
        prev = ct.get(name)
        if prev is None:
            ct[name] = c
        elif (
            prev.__class__ is Tracer
            and c.__class__ is Tracer
            and prev.builder is b
            and c.builder is b
            and prev.variable.type == c.variable.type
        ):  # = add(prev, c): two cotangents of one type, nothing to promote or broadcast
            ct[name] = b.emit("add", (), (prev.variable, c.variable), c.variable.type)
        else:
            ct[name] = add(prev, c)

    for v, c in zip(linear.outs, cts_in, strict=True):
        if v.name in is_linear:
            accumulate(v.name, c)

    for eqn in reversed(backward):
        prim = prims[eqn.prim]
        if prim.multiple_results:  # one cotangent per result, Zero where none arrived
            cs = [ct.pop(v.name, None) for v in eqn.outs]
            if all(c is None for c in cs):
                continue
            c = tuple(Zero(v.type) if c is None else c for v, c in zip(eqn.outs, cs))
        else:
            c = ct.pop(eqn.out.name, None)
            if c is None:
                continue
        ins, params = eqn.ins, eqn.params
        args = []
        for v in ins:  # a Linear marker for each tangent operand, else its value
            if v.name in is_linear:
                t = v.type
                args.append(linear_of[t] if t in linear_of else _linear(linear_of, t))
            else:
                args.append(value[v.name] if v.name in value else residual(v.name))
        try:
            if params:
                in_cts = prim.transpose(c, *args, **prim.kwargs(params))
            else:
                in_cts = prim.transpose(c, *args)
        except RuleError as e:
            raise TransposeError(f"`{format_eqn(eqn)}`: {e}") from None
        except ShaxError as e:
            raise TransposeError(f"`{format_eqn(eqn)}`: {e}") from None
        if len(in_cts) != len(ins):
            raise TransposeError(
                f"`{format_eqn(eqn)}`: the transpose rule of {eqn.prim} gave "
                f"{len(in_cts)} cotangents for {len(ins)} inputs"
            )
        for v, c_v in zip(ins, in_cts):
            name = v.name
            if name not in is_linear or c_v is None or c_v.__class__ is Zero:
                continue
            t = c_v.variable.type if c_v.__class__ is Tracer else c_v.type
            if t is not v.type and t != v.type:
                raise TransposeError(
                    f"`{format_eqn(eqn)}`: the transpose rule of {eqn.prim} gave a "
                    f"cotangent of type {c_v.type} for {v.name} :: {v.type}"
                )
            if name in ct:
                accumulate(name, c_v)
            else:  # = accumulate(name, c_v): the first cotangent of name
                ct[name] = c_v

    outs = []
    for p in linear.params[:num_linear]:
        c = ct.get(p.name)
        outs.append((c if c is not None else zeros(b, p.type)).variable)
    return Program(linear.name + "t", tuple(b.params), tuple(b.eqns), tuple(outs))


def _linear(linear_of: dict, t) -> Linear:
    linear_of[t] = Linear(t)
    return linear_of[t]


TRANSFORMS["transpose"] = transpose_typed
