"""W1 seed-medium: the seed's ``medium`` at a=[1..6], b=[[1,2],[3,4]], cotangent [5,9].

Overhead-bound: a dozen tiny ops. Warm VJP = outputs and both gradients from a ready program;
cold = IR text in, first gradient out (parse, infer, pipeline, plan, evaluate) for shax, and
trace + compile + first call of ``jit(vjp)`` for JAX (caches cleared before every run).
"""

from __future__ import annotations

import common
import numpy as np

from shax_core._codegen import HOT_CALLS
from shax_core.demo import SEED_A as A  # the seed's inputs, from one place
from shax_core.demo import SEED_B as B
from shax_core.demo import SEED_CT as CT


def medium_generic(m, x0, x8, minimum, maximum, broadcast):
    """The seed's medium, written once against a NumPy-like module ``m``."""
    x1 = broadcast(x0)
    x2 = m.sin(x1)
    x3 = m.cos(x2)
    x4 = x2 + x3
    x5 = m.exp(x4)
    x6 = x4.T
    x7 = x5 @ x6
    x9 = x7 * x8
    x10 = x7 + x8
    x11 = minimum(x9, x10)
    x12 = maximum(x9, x10)
    x13 = x12 - x11
    return x13.sum(0)


# ---------------------------------------------------------------------------------------------
# implementations: each returns a zero-argument callable giving (outputs, grad a, grad b)


@common.implementation("shax", "shax")
def shax_impl():
    import shax_core as sx
    from shax_core.demo import medium

    exe = sx.compile(sx.vjp_program(sx.trace(medium, A, B)))
    return lambda: exe(A, B, CT)


@common.implementation("shax (plan.run, unchecked)", "shax")
def shax_run_impl():
    """The same plan through ``Executable.run`` (no argument checks): the plan's own cost."""
    import shax_core as sx
    from shax_core.demo import medium

    exe = sx.compile(sx.vjp_program(sx.trace(medium, A, B)))
    args = [A, B, CT]
    return lambda: exe.run(args)


def _compiled_with(codegen: str):
    """The W1 VJP plan built with ``SHAX_CODEGEN=codegen`` (the tier is fixed at build)."""
    import os

    import shax_core as sx
    from shax_core.demo import medium

    old = os.environ.get("SHAX_CODEGEN")
    os.environ["SHAX_CODEGEN"] = codegen
    try:
        return sx.compile(sx.vjp_program(sx.trace(medium, A, B)))
    finally:
        if old is None:
            del os.environ["SHAX_CODEGEN"]
        else:
            os.environ["SHAX_CODEGEN"] = old


@common.implementation("shax (interpreted, SHAX_CODEGEN=0)", "shax")
def shax_interpreted_impl():
    """The plan's interpreter loop on every call (the first tier)."""
    exe = _compiled_with("0")
    return lambda: exe(A, B, CT)


@common.implementation("shax (generated, SHAX_CODEGEN=1)", "shax")
def shax_generated_impl():
    """Straight-line code generated from the plan (the tier hot plans switch to)."""
    exe = _compiled_with("1")
    return lambda: exe(A, B, CT)


def numpy_vjp(a, b, ct):
    """Hand-written forward and backward (what a person would write for this function)."""
    x1 = np.broadcast_to(a, (2, 6))
    x2 = np.sin(x1)
    x3 = np.cos(x2)
    x4 = x2 + x3
    x5 = np.exp(x4)
    x7 = x5 @ x4.T
    x9 = x7 * b
    x10 = x7 + b
    out = np.abs(x9 - x10).sum(0)  # max - min
    # backward
    g9 = np.sign(x9 - x10) * ct  # d|u|/du = sign(u) (0 at ties: the equal split cancels)
    g7 = g9 * b - g9  # through x9 = x7*b and x10 = x7+b (g10 = -g9)
    gb = g9 * x7 - g9
    g5 = g7 @ x4
    g4 = g5 * x5 + (x5.T @ g7).T
    g2 = g4 * (1.0 - np.sin(x2))
    ga = (g2 * np.cos(x1)).sum(0)
    return out, ga, gb


@common.implementation("NumPy (hand-written)", "numpy")
def numpy_impl():
    return lambda: numpy_vjp(A, B, CT)


def _jax_fns():
    jax, jnp = common.import_jax()

    def medium(a, b):
        return medium_generic(
            jnp, a, b, jnp.minimum, jnp.maximum, lambda x: jnp.broadcast_to(x, (2, 6))
        )

    def vjp_all(a, b, ct):
        out, pull = jax.vjp(medium, a, b)
        ga, gb = pull(ct)
        return out, ga, gb

    return jax, jnp, vjp_all


@common.implementation("JAX jit", "jax")
def jax_jit_impl():
    jax, jnp, vjp_all = _jax_fns()
    f = jax.jit(vjp_all)
    a, b, ct = jnp.asarray(A), jnp.asarray(B), jnp.asarray(CT)
    return lambda: jax.block_until_ready(f(a, b, ct))


@common.implementation("JAX eager", "jax")
def jax_eager_impl():
    jax, jnp, vjp_all = _jax_fns()
    a, b, ct = jnp.asarray(A), jnp.asarray(B), jnp.asarray(CT)
    return lambda: jax.block_until_ready(vjp_all(a, b, ct))


@common.implementation("PyTorch eager", "torch")
def torch_impl():
    import torch

    b = torch.from_numpy(B)
    ct = torch.from_numpy(CT)

    def run():
        a = torch.from_numpy(A).requires_grad_()
        bb = b.detach().requires_grad_()
        out = medium_generic(torch, a, bb, torch.minimum, torch.maximum, lambda x: x.expand(2, 6))
        ga, gb = torch.autograd.grad(out, (a, bb), ct)
        return out.detach(), ga, gb

    return run


@common.implementation("autograd", "autograd")
def autograd_impl():
    import autograd
    import autograd.numpy as anp

    def medium(ab):
        a, b = ab
        return medium_generic(
            anp,
            a,
            b,
            anp.minimum,
            anp.maximum,
            lambda x: anp.broadcast_to(anp.reshape(x, (1, 6)), (2, 6)),
        )

    def run():
        pull, out = autograd.make_vjp(medium)((A, B))
        ga, gb = pull(CT)
        return out, ga, gb

    return run


# ---------------------------------------------------------------------------------------------
# cold start


def shax_cold_impl():
    import shax_core as sx
    from shax_core.demo import medium

    text = sx.print_program(sx.trace(medium, A, B))

    def run():
        program = sx.infer(sx.parse(text))
        exe = sx.compile(sx.vjp_program(program))
        return exe(A, B, CT)

    return run, text


def jax_cold_impl():
    jax, jnp, _ = _jax_fns()

    def run():
        jax.clear_caches()
        _, _, vjp_all = _jax_fns()  # a new function object: nothing reused from the last run

        def fresh(a, b, ct):
            return vjp_all(a, b, ct)

        return jax.block_until_ready(jax.jit(fresh)(A, B, CT))

    return run


def plan_note() -> str:
    """How many steps the VJP plan has as written and after the plan rules."""
    import shax_core as sx
    from shax_core._evaluate import Executable
    from shax_core.demo import medium

    v = sx.vjp_program(sx.trace(medium, A, B))
    written, planned = Executable(v, rewrite=False), Executable(v)
    kinds = sorted({e.prim for e in v.eqns} - {e.prim for e in planned.planned.eqns})
    gone = f" ({', '.join(kinds)} gone)" if kinds else ""
    return (
        f"shax VJP plan: {len(written.steps)} steps as written, {len(planned.steps)} after the "
        f"plan rules{gone}."
    )


IMPLS = common.implementations(__name__)  # {name: (peer, make)}, as declared


def run(cfg: common.Config) -> common.Section:
    sec = common.Section("w1", "W1 seed-medium (overhead-bound)")
    fns = common.build(sec, cfg, IMPLS)

    # correctness: every implementation must agree with the hand-written NumPy
    ref = numpy_vjp(A, B, CT)
    for name, fn in fns.items():
        got = fn()
        if not all(common.close(g, r) for g, r in zip(got, ref)):
            sec.notes.append(f"{name}: results DIFFER from the hand-written NumPy reference")

    common.log("W1: warm VJP")
    warm = common.measure(fns, cfg)
    cold_fns = {}
    shax_cold, _text = shax_cold_impl()
    cold_fns["shax (parse, infer, vjp_program, compile, evaluate)"] = shax_cold
    if common.have("jax", cfg):
        cold_fns["JAX (trace, jit compile, first call of jit(vjp))"] = jax_cold_impl()
    common.log("W1: cold start")
    cold = common.measure(cold_fns, cfg, warmup=1)

    np_t = warm.get("NumPy (hand-written)")
    base = np_t.median if np_t and np_t.ok else None
    rows = []
    for name, t in warm.items():
        shax_vs = common.ratio(warm["shax"].median, t.median) if name != "shax" else None
        rows.append(
            [
                name,
                common.fmt_time(t.median) if t.ok else f"error: {t.error}",
                common.fmt_ratio(common.ratio(t.median, base)),
                common.fmt_ratio(shax_vs) if shax_vs else "",
                str(t.runs),
            ]
        )
    sec.lines += ["Warm VJP (outputs and both gradients):", ""]
    sec.lines += common.table(
        ["implementation", "median", "vs hand-written NumPy", "shax / this", "calls timed"], rows
    )
    rows = [
        [n, common.fmt_time(t.median) if t.ok else f"error: {t.error}", str(t.runs)]
        for n, t in cold.items()
    ]
    sec.lines += ["", "Cold start (IR text in, first gradient out; imports excluded):", ""]
    sec.lines += common.table(["implementation", "median", "runs"], rows)
    sec.lines += ["", plan_note()]

    s_warm = warm["shax"].median
    r = common.ratio(s_warm, base)
    common.ratio_at_most(sec, "W1", "warm VJP vs hand-written NumPy", r, 1.2)
    interpreted = warm.get("shax (interpreted, SHAX_CODEGEN=0)")
    generated = warm.get("shax (generated, SHAX_CODEGEN=1)")
    if interpreted and generated and interpreted.ok and generated.ok:
        sec.lines += [
            "",
            "Tiers: interpreted "
            + common.fmt_ratio(common.ratio(interpreted.median, base))
            + ", generated "
            + common.fmt_ratio(common.ratio(generated.median, base))
            + " of hand-written NumPy (the default `shax` row switches to generated code on"
            + f" a plan's call {HOT_CALLS}).",
        ]
    for peer in ("PyTorch eager", "autograd"):
        if peer in warm and warm[peer].ok:
            rp = common.ratio(warm[peer].median, s_warm)
            sec.targets.append(
                common.Target(
                    "W1",
                    f"ahead of {peer} (their time / shax)",
                    common.fmt_ratio(rp),
                    ">= 5x",
                    rp is not None and rp >= 5,
                )
            )
    sc = cold["shax (parse, infer, vjp_program, compile, evaluate)"]
    sec.targets.append(  # issue 18: IR text to first gradient
        common.Target(
            "W1",
            "cold start (IR text to first gradient)",
            common.fmt_time(sc.median),
            "<= 3 ms",
            sc.median <= 3e-3,
        )
    )
    jax_cold = [t for n, t in cold.items() if n.startswith("JAX")]
    if jax_cold and jax_cold[0].ok:
        r = common.ratio(sc.median, jax_cold[0].median)
        sec.targets.append(
            common.Target(
                "W1",
                "cold start vs JAX trace+compile+first call",
                common.fmt_ratio(r),
                "<= 0.04x (1/25)",
                r is not None and r <= 1 / 25,
            )
        )
    else:
        sec.targets.append(
            common.Target("W1", "cold start vs JAX", "JAX not installed", "<= 1/25 of JAX", None)
        )
    sec.data = {
        "warm": {n: t.median for n, t in warm.items()},
        "cold": {n: t.median for n, t in cold.items()},
    }
    return sec
