"""W2 mlp (matmul-bound): a 784-512-512-10 tanh MLP on a batch of 256, squared-error loss.

``loss = sum((tanh(tanh(X@W1+b1)@W2+b2)@W3+b3 - Y)**2)``, gradient w.r.t. the six parameters.
All arrays f32, normal(0, 0.05) from a fixed seed. Reports forward, forward+gradient, their
ratio, and GFLOP/s against a 1024^3 f32 NumPy matmul on the same machine.
"""

from __future__ import annotations

import gc
import tracemalloc

import common
import numpy as np

BATCH, D_IN, D_H, D_OUT = 256, 784, 512, 10
SHAPES = {
    "W1": (D_IN, D_H),
    "b1": (D_H,),
    "W2": (D_H, D_H),
    "b2": (D_H,),
    "W3": (D_H, D_OUT),
    "b3": (D_OUT,),
}
# multiply-adds x2: forward = three matmuls; gradient = three weight matmuls and the two
# activation matmuls (no gradient w.r.t. X is needed)
FWD_FLOP = 2 * BATCH * (D_IN * D_H + D_H * D_H + D_H * D_OUT)
GRAD_FLOP = 2 * FWD_FLOP + 2 * BATCH * (D_OUT * D_H + D_H * D_H)


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)

    def normal(shape):
        return rng.normal(0.0, 0.05, size=shape).astype(np.float32)

    params = [normal(s) for s in SHAPES.values()]
    x = normal((BATCH, D_IN))
    y = normal((BATCH, D_OUT))
    return params, x, y


def loss_generic(m, w1, b1, w2, b2, w3, b3, x, y):
    h = m.tanh(x @ w1 + b1)
    h = m.tanh(h @ w2 + b2)
    return m.sum((h @ w3 + b3 - y) ** 2)


# ---------------------------------------------------------------------------------------------
# implementations: (forward callable, forward+gradient callable)


@common.implementation("shax", "shax")
def shax_impls(params, x, y):
    import shax_core as sx
    import shax_core.numpy as snp

    def loss(w1, b1, w2, b2, w3, b3, x, y):
        return loss_generic(snp, w1, b1, w2, b2, w3, b3, x, y)

    program = sx.trace(loss, *params, x, y)
    fwd = sx.compile(program)
    vjp = sx.compile(sx.vjp_program(program, wrt=list(range(6))))
    one = np.ones((), np.float32)
    args = [*params, x, y]
    return (lambda: fwd(*args)), (lambda: vjp(*args, one)), vjp


def numpy_forward(w1, b1, w2, b2, w3, b3, x, y):
    h1 = np.tanh(x @ w1 + b1)
    h2 = np.tanh(h1 @ w2 + b2)
    d = h2 @ w3 + b3 - y
    return np.sum(d * d)


def numpy_value_and_grad(w1, b1, w2, b2, w3, b3, x, y):
    """Hand-written forward and backward, as a person writes it with NumPy."""
    h1 = np.tanh(x @ w1 + b1)
    h2 = np.tanh(h1 @ w2 + b2)
    d = h2 @ w3 + b3 - y
    loss = np.sum(d * d)
    g = 2.0 * d
    gw3 = h2.T @ g
    gb3 = g.sum(0)
    g = (g @ w3.T) * (1.0 - h2 * h2)
    gw2 = h1.T @ g
    gb2 = g.sum(0)
    g = (g @ w2.T) * (1.0 - h1 * h1)
    gw1 = x.T @ g
    gb1 = g.sum(0)
    return loss, (gw1, gb1, gw2, gb2, gw3, gb3)


@common.implementation("NumPy (hand-written)", "numpy")
def numpy_impls(params, x, y):
    return (lambda: numpy_forward(*params, x, y)), (lambda: numpy_value_and_grad(*params, x, y))


def _jax_loss():
    jax, jnp = common.import_jax()

    def loss(w1, b1, w2, b2, w3, b3, x, y):
        return loss_generic(jnp, w1, b1, w2, b2, w3, b3, x, y)

    return jax, jnp, loss


@common.implementation("JAX jit", "jax")
def jax_jit_impls(params, x, y):
    jax, jnp, loss = _jax_loss()
    args = [jnp.asarray(a) for a in [*params, x, y]]
    fwd = jax.jit(loss)
    vg = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(6))))
    return (
        lambda: jax.block_until_ready(fwd(*args)),
        lambda: jax.block_until_ready(vg(*args)),
    )


@common.implementation("JAX eager", "jax")
def jax_eager_impls(params, x, y):
    jax, jnp, loss = _jax_loss()
    args = [jnp.asarray(a) for a in [*params, x, y]]
    vg = jax.value_and_grad(loss, argnums=tuple(range(6)))
    return (
        lambda: jax.block_until_ready(loss(*args)),
        lambda: jax.block_until_ready(vg(*args)),
    )


@common.implementation("PyTorch eager", "torch")
def torch_impls(params, x, y):
    import torch

    ps = [torch.from_numpy(p) for p in params]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def fwd():
        with torch.no_grad():
            return loss_generic(torch, *ps, xt, yt)

    def vg():
        leaves = [p.detach().requires_grad_() for p in ps]
        value = loss_generic(torch, *leaves, xt, yt)
        return value.detach(), torch.autograd.grad(value, leaves)

    return fwd, vg


@common.implementation("autograd", "autograd")
def autograd_impls(params, x, y):
    import autograd
    import autograd.numpy as anp

    def loss(ps, x, y):
        return loss_generic(anp, *ps, x, y)

    vg = autograd.value_and_grad(loss)
    ps = list(params)
    return (lambda: loss(ps, x, y)), (lambda: vg(ps, x, y))


IMPLS = common.implementations(__name__)  # {name: (peer, make)}, as declared


def _traced_peak(fn) -> int:
    """Bytes NumPy holds at most during one call (after a warm-up call), its results included."""
    fn()
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak


def _grads_of(name, result):
    if name == "shax":
        return result[1:]
    value, grads = result
    return list(grads)


def run(cfg: common.Config) -> common.Section:
    sec = common.Section("w2", "W2 mlp (matmul-bound)")
    params, x, y = make_data()
    made = common.build(sec, cfg, IMPLS, params, x, y)
    fwd_fns = {name: fns[0] for name, fns in made.items()}
    vg_fns = {name: fns[1] for name, fns in made.items()}
    vjp_exe = made["shax"][2]

    _, ref = numpy_value_and_grad(*params, x, y)
    for name, g in vg_fns.items():
        got = _grads_of(name, g())
        if not all(common.close(a, b, rtol=1e-3, atol=1e-4) for a, b in zip(got, ref)):
            sec.notes.append(f"{name}: gradients DIFFER from the hand-written NumPy reference")

    n = 1024
    a = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    common.log("W2: forward, forward+gradient, matmul peak")
    # one interleaved set of rounds for forward, forward+gradient and the matmul, so that the
    # grad/fwd ratios and the GFLOP/s are side by side too
    fns = {f"{k} ·fwd": f for k, f in fwd_fns.items()}
    fns.update({f"{k} ·vg": f for k, f in vg_fns.items()})
    fns["matmul"] = lambda: a @ a
    all_t = common.measure(fns, cfg)
    fwd = {k: all_t[f"{k} ·fwd"] for k in fwd_fns}
    vg = {k: all_t[f"{k} ·vg"] for k in vg_fns}
    mm = all_t["matmul"]
    peak = 2 * n**3 / mm.median / 1e9
    np_vg = vg["NumPy (hand-written)"].median
    rows = []
    for name in vg_fns:
        tf, tg = fwd.get(name), vg[name]
        gflops = GRAD_FLOP / tg.median / 1e9
        rows.append(
            [
                name,
                common.fmt_time(tf.median) if tf and tf.ok else "—",
                common.fmt_time(tg.median) if tg.ok else f"error: {tg.error}",
                common.fmt_ratio(common.ratio(tg.median, tf.median if tf else None)),
                common.fmt_ratio(common.ratio(tg.median, np_vg)),
                f"{gflops:.1f} ({100 * gflops / peak:.0f}%)",
            ]
        )
    sec.lines += common.table(
        [
            "implementation",
            "forward",
            "forward+gradient",
            "grad/fwd",
            "vs NumPy (fwd+grad)",
            f"GFLOP/s fwd+grad (% of {n}³ matmul)",
        ],
        rows,
    )
    sec.lines += [
        "",
        f"{n}³ f32 NumPy matmul: {common.fmt_time(mm.median)} = {peak:.1f} GFLOP/s. "
        f"forward = {FWD_FLOP / 1e6:.0f} MFLOP, forward+gradient = {GRAD_FLOP / 1e6:.0f} MFLOP.",
    ]
    # what the VJP program does: count the matmuls and the transposes it materializes
    prims: dict[str, int] = {}
    for e in vjp_exe.program.eqns:
        prims[e.prim] = prims.get(e.prim, 0) + 1
    counts = ", ".join(f"{k} {v}" for k, v in sorted(prims.items()))
    sec.lines += ["", f"shax VJP program: {len(vjp_exe.program.eqns)} equations ({counts})."]

    # peak memory of one forward+gradient call, results included (NumPy allocations, traced)
    peaks = {name: _traced_peak(vg_fns[name]) for name in ("shax", "NumPy (hand-written)")}
    rm = common.ratio(peaks["shax"], peaks["NumPy (hand-written)"])
    sec.lines += [
        "",
        f"peak memory of one forward+gradient (tracemalloc, results included): "
        f"shax {peaks['shax'] / 2**20:.2f} MiB (plan's bound from the types "
        f"{vjp_exe.peak_bytes / 2**20:.2f} MiB, arguments included), hand-written NumPy "
        f"{peaks['NumPy (hand-written)'] / 2**20:.2f} MiB: {common.fmt_ratio(rm)}.",
    ]
    common.ratio_at_most(sec, "W2", "peak memory vs hand-written NumPy", rm, 1.0)

    s = vg["shax"].median
    r = common.ratio(s, np_vg)
    common.ratio_at_most(sec, "W2", "fwd+grad vs hand-written NumPy", r, 1.0)  # issue 18
    rg = common.ratio(s, fwd["shax"].median)
    sec.targets.append(
        common.Target(
            "W2",
            "shax grad/fwd ratio",
            common.fmt_ratio(rg),
            "<= 2.7",
            None if rg is None else rg <= 2.7,
        )
    )
    for peer in ("JAX jit", "PyTorch eager", "autograd"):
        if peer in vg and vg[peer].ok:
            rp = common.ratio(s, vg[peer].median)
            common.ahead_of(sec, "W2", f"fwd+grad vs {peer}", rp)
    sec.data = {
        "fwd": {k: t.median for k, t in fwd.items()},
        "vg": {k: t.median for k, t in vg.items()},
        "matmul_gflops": peak,
        "vjp_prims": prims,
        "peak_bytes": peaks,
    }
    return sec
