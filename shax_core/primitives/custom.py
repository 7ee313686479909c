"""Custom differentiation rules: ``custom_jvp_call`` and ``custom_vjp_call``, equations whose
sub-programs are the function and the user's rule, so a rule survives printing, parsing and the
trip to a server.

``custom_jvp_call {fun} {jvp} x...`` evaluates ``fun``; its derivative is ``jvp``, a program
``(primals..., tangents...) -> (outputs..., output tangents...)``:

>>> import numpy as np
>>> from shax_core import evaluate, parse, vjp_program
>>> p = parse('''def f(x :: f32[]) =
...   let y :: f32[] = custom_jvp_call {
...       def safe_log(a :: f32[]) = let b = log a in [b]
...     } {
...       def safe_log_jvp(a :: f32[], t :: f32[]) =
...         let b = log a  c = fromList [] [1e-06]  m = max a c  u = div t m in [b, u]
...     } x
...   in [y]''')
>>> float(evaluate(p, np.float32(np.e))[0])
1.0
>>> float(evaluate(vjp_program(p), np.float32(0.0), np.float32(1.0))[1])
1000000.0

``custom_vjp_call {fun} {fwd} {bwd} x...`` evaluates ``fun``. Linearized, its primal side runs
``fwd`` (``primals -> (outputs..., residuals...)``) and its linear side is one
``custom_vjp_linear {bwd} tangents... residuals...`` equation whose transpose runs ``bwd``
(``(residuals..., output cotangents...) -> input cotangents``, not necessarily linear). Forward
mode of a custom_vjp function is an error, as in JAX: that linear equation has no evaluation.

>>> from shax_core import linearize_program
>>> p = parse('''def f(x :: f32[]) =
...   let y :: f32[] = custom_vjp_call {
...       def fun(a :: f32[]) = let b = sin a in [b]
...     } {
...       def fwd(a :: f32[]) = let b = sin a  c = cos a in [b, c]
...     } {
...       def bwd(c :: f32[], g :: f32[]) = let u = mul c g in [u]
...     } x
...   in [y]''')
>>> lin = linearize_program(p, policy="save")
>>> print(lin.primal)
def f(x :: f32[]) =
  let x0 :: f32[] = sin x
      x1 :: f32[] = cos x
  in [x0, x1]
>>> print(lin.linear)
def df(arg0 :: f32[],
       arg1 :: f32[]) =
  let d0 :: f32[] = custom_vjp_linear {
          def bwd(c :: f32[],
                  g :: f32[]) =
            let u :: f32[] = mul c g
            in [u]
        } arg0 arg1
  in [d0]
>>> print(vjp_program(p))
def f_dft(x :: f32[],
          arg1 :: f32[]) =
  let x0 :: f32[] = sin x
      x1 :: f32[] = cos x
      t0 :: f32[] = mul x1 arg1
  in [x0, t0]

The rules are interpreted equation by equation with ``bind``, so under the linearizer a rule
partial-evaluates like any built-in one (primal-only equations go to the primal program, the
rest to the linear one), and the rule's equations are themselves differentiated for higher
orders.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shax_core import core as ops
from shax_core.core import Tracer, zeros
from shax_core.ir import Program, ShaxTypeError, Type
from shax_core.primitives.control import _builder_of, _compiled, _types_text
from shax_core.registry import RuleError, Zero, define, is_linear, lookup


def interpret(program: Program, args: Sequence) -> list:
    """``program``'s equations applied with ``bind`` (arrays, or tracers of whatever traces
    the arguments belong to); returns its outputs."""
    env = {p.name: a for p, a in zip(program.params, args, strict=True)}
    for eqn in program.eqns:
        prim = lookup(eqn.prim)
        out = ops.bind(eqn.prim, *(env[v.name] for v in eqn.ins), **prim.kwargs(eqn.params))
        if prim.multiple_results:
            for v, o in zip(eqn.outs, out, strict=True):
                env[v.name] = o
        else:
            env[eqn.out.name] = out
    return [env[v.name] for v in program.outs]


def _fun_kernel(in_types, out_types, *, fun, **rules):
    plan = _compiled(fun)

    def run(*args):
        return tuple(plan.run(list(args)))

    run.transient_bytes = plan.peak_bytes
    run.work = 1 + plan.work
    return run


def _fun_impl(*arrays, fun, **rules):
    return tuple(_compiled(fun)(*arrays))


def _check_fun(name: str, fun: Program, in_types) -> tuple[Type, ...]:
    if fun.in_types != tuple(in_types):
        raise ShaxTypeError(
            f"{name}: the function {fun.name} takes {_types_text(fun.in_types)}, but it is "
            f"applied to {_types_text(in_types)}"
        )
    if not fun.out_types:
        raise ShaxTypeError(f"{name}: the function {fun.name} returns nothing")
    return fun.out_types


# ---------------------------------------------------------------------------------------------
# custom_jvp_call


def _custom_jvp_shape(*in_types, fun, jvp):
    outs = _check_fun("custom_jvp_call", fun, in_types)
    want_in = (*in_types, *in_types)
    if jvp.in_types != want_in:
        raise ShaxTypeError(
            f"custom_jvp_call: the rule {jvp.name} takes {_types_text(jvp.in_types)}, but it "
            f"must take (primals..., tangents...) = {_types_text(want_in)}"
        )
    if jvp.out_types != (*outs, *outs):
        raise ShaxTypeError(
            f"custom_jvp_call: the rule {jvp.name} returns {_types_text(jvp.out_types)}, but "
            f"it must return (outputs..., output tangents...) = {_types_text((*outs, *outs))}"
        )
    return outs


custom_jvp_p = define(
    "custom_jvp_call",
    arity=None,
    params=[("fun", "program"), ("jvp", "program")],
    shape=_custom_jvp_shape,
    impl=_fun_impl,
    multiple_results=True,
    doc="custom_jvp_call {fun} {jvp} operands...: fun(operands); its derivative is the rule "
    "jvp: (primals..., tangents...) -> (outputs..., output tangents...)",
)
custom_jvp_p.kernel = _fun_kernel


def _custom_jvp_linearize(primals, tangents, *, fun, jvp):
    # the primal stays a call (so a second derivative uses the rule again); the tangent is the
    # rule's tangent output, its equations split between the primal and linear programs
    ans = ops.bind("custom_jvp_call", *primals, fun=fun, jvp=jvp)
    ts = [ops.instantiate(t, anchor=tangents) for t in tangents]
    n = len(fun.outs)
    t_outs = interpret(jvp, [*primals, *ts])[n:]
    linear_builder = _builder_of(ts)
    out = []
    for t, typ in zip(t_outs, fun.out_types, strict=True):
        if not typ.is_float:
            out.append(Zero(typ))
        elif isinstance(t, Tracer) and t.builder is linear_builder:
            out.append(t)
        else:
            raise RuleError(
                f"the rule {jvp.name} returned a tangent that does not depend on the input "
                "tangents (a custom_jvp rule must be linear in them)"
            )
    return tuple(ans), tuple(out)


custom_jvp_p.linearize = _custom_jvp_linearize


# ---------------------------------------------------------------------------------------------
# custom_vjp_call and its linear part


def _custom_vjp_shape(*in_types, fun, fwd, bwd):
    outs = _check_fun("custom_vjp_call", fun, in_types)
    n = len(outs)
    if fwd.in_types != tuple(in_types) or fwd.out_types[:n] != outs:
        raise ShaxTypeError(
            f"custom_vjp_call: the rule {fwd.name} maps {_types_text(fwd.in_types)} to "
            f"{_types_text(fwd.out_types)}, but it must map {_types_text(in_types)} to "
            f"(outputs..., residuals...) with outputs {_types_text(outs)}"
        )
    residuals = fwd.out_types[n:]
    want_in = (*residuals, *outs)
    if bwd.in_types != want_in or bwd.out_types != tuple(in_types):
        raise ShaxTypeError(
            f"custom_vjp_call: the rule {bwd.name} maps {_types_text(bwd.in_types)} to "
            f"{_types_text(bwd.out_types)}, but it must map (residuals..., output "
            f"cotangents...) = {_types_text(want_in)} to one cotangent per input "
            f"{_types_text(in_types)}"
        )
    return outs


custom_vjp_p = define(
    "custom_vjp_call",
    arity=None,
    params=[("fun", "program"), ("fwd", "program"), ("bwd", "program")],
    shape=_custom_vjp_shape,
    impl=_fun_impl,
    multiple_results=True,
    doc="custom_vjp_call {fun} {fwd} {bwd} operands...: fun(operands); reverse mode runs "
    "fwd: primals -> (outputs..., residuals...) and bwd: (residuals..., cotangents...) -> "
    "input cotangents; no forward mode",
)
custom_vjp_p.kernel = _fun_kernel


def _custom_vjp_linearize(primals, tangents, *, fun, fwd, bwd):
    results = interpret(fwd, list(primals))
    n = len(fun.outs)
    primal_builder = _builder_of(primals)
    held = [
        r if isinstance(r, Tracer) else Tracer(primal_builder, primal_builder.lift(r))
        for r in results
    ]
    ts = [ops.instantiate(t, anchor=tangents) for t in tangents]
    t_outs = ops.bind_at(_builder_of(ts), "custom_vjp_linear", *ts, *held[n:], bwd=bwd)
    t_outs = tuple(t if typ.is_float else Zero(typ) for t, typ in zip(t_outs, fun.out_types))
    return tuple(held[:n]), t_outs


custom_vjp_p.linearize = _custom_vjp_linearize


def _split_linear(in_types, bwd):
    n_in = len(bwd.out_types)
    return in_types[:n_in], in_types[n_in:]


def _custom_vjp_linear_shape(*in_types, bwd):
    tangents, residuals = _split_linear(in_types, bwd)
    if tuple(tangents) != bwd.out_types or tuple(residuals) != bwd.in_types[: len(residuals)]:
        raise ShaxTypeError(
            f"custom_vjp_linear: the rule {bwd.name} maps {_types_text(bwd.in_types)} to "
            f"{_types_text(bwd.out_types)}, but the equation passes (tangents..., "
            f"residuals...) = {_types_text(in_types)}"
        )
    outs = bwd.in_types[len(residuals) :]
    if not outs:
        raise ShaxTypeError(f"custom_vjp_linear: the rule {bwd.name} takes no cotangent")
    return outs


def _forward_mode_error(*args, **params):
    raise RuleError(
        "forward-mode differentiation (jvp, jacfwd, linearize) of a custom_vjp function is "
        "not supported, as in JAX: use reverse mode (grad, vjp, jacrev)"
    )


def _forward_mode_kernel(in_types, out_types, **params):
    return _forward_mode_error


custom_vjp_linear_p = define(
    "custom_vjp_linear",
    arity=None,
    params=[("bwd", "program")],
    shape=_custom_vjp_linear_shape,
    impl=_forward_mode_error,
    multiple_results=True,
    doc="custom_vjp_linear {bwd} tangents... residuals...: the linear part of a linearized "
    "custom_vjp_call; its transpose runs bwd, it has no evaluation (no forward mode)",
)
custom_vjp_linear_p.kernel = _forward_mode_kernel
custom_vjp_linear_p.linearize = _forward_mode_error


def _custom_vjp_linear_transpose(cts, *args, bwd):
    n_in = len(bwd.out_types)
    tangents, residuals = args[:n_in], args[n_in:]
    if any(is_linear(r) for r in residuals):
        raise RuleError("the residuals of custom_vjp_linear have no tangent")
    builder = _builder_of([c for c in cts if not isinstance(c, Zero)] + list(residuals))
    given = [zeros(builder, c.type) if isinstance(c, Zero) else c for c in cts]
    in_cts = interpret(bwd, [*residuals, *given])
    out: list = []
    for c, x in zip(in_cts, tangents, strict=True):
        if not is_linear(x) or not x.type.is_float:
            out.append(None)
        elif not isinstance(c, Tracer):
            out.append(Tracer(builder, builder.lift(np.asarray(c, x.type.np_dtype))))
        else:
            out.append(c)
    return out + [None] * len(residuals)


custom_vjp_linear_p.transpose = _custom_vjp_linear_transpose
