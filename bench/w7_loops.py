"""W7 loops (issue 15): W4's recurrence written as ``lax.fori_loop`` beside the unrolled form,
and an RNN (tanh cell, hidden 128, 100 steps, batch 32) as ``lax.scan``, against hand-written
NumPy and JAX's ``lax.scan`` (jit) when installed.

- W4 as a loop: ``vjp_program`` + ``compile`` time at n = 1,000 / 10,000 / 100,000 (the loop
  body is traced once, so it should not grow with n), equation counts, and one fwd+grad call
  against a hand-written NumPy loop (forward keeping x, y per step, backward by hand).
- RNN: ``h = tanh(h @ W + x_t @ U)``, loss ``sum of every h_t``, gradients w.r.t. h0, xs, W, U;
  fwd+grad per call under both residual policies, and the residual memory the primal scan
  stacks, read from the IR's types (exact): ``save`` stacks every step's residuals, ``recompute``
  one carry per step.

Run alone: ``python bench/w7_loops.py`` (prints the section); in the suite: ``make bench``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from common import (
    Config,
    Section,
    Target,
    close,
    fmt_bytes,
    fmt_ratio,
    fmt_time,
    have,
    import_jax,
    log,
    measure,
    missing_note,
    ratio,
    table,
)

X0, Y0 = np.float32(0.5), np.float32(0.3)
HIDDEN, STEPS, BATCH, INPUT = 128, 100, 32, 64


# ---------------------------------------------------------------------------------------------
# W4 as a loop


def w4_loop(n: int):
    import shax_core.numpy as snp
    from shax_core import lax

    def deep(x, y):
        def body(i, carry):
            x, y = carry
            return snp.sin(x) * y + snp.cos(y), x * y - y

        x, y = lax.fori_loop(0, n, body, (x, y))
        return x + y

    return deep


def w4_unrolled(n: int):
    import shax_core.numpy as snp

    def deep(x, y):
        for _ in range(n):
            x, y = snp.sin(x) * y + snp.cos(y), x * y - y
        return x + y

    return deep


def w4_numpy(n: int):
    """Hand-written: the forward keeps each step's (x, y); the backward applies the step's
    Jacobian transposed: x' = sin x · y + cos y, y' = x·y - y."""

    def run(x, y):
        xs, ys = [], []
        for _ in range(n):
            xs.append(x)
            ys.append(y)
            x, y = np.sin(x) * y + np.cos(y), x * y - y
        out = x + y
        gx = gy = np.float32(1.0)
        for k in range(n - 1, -1, -1):
            x, y = xs[k], ys[k]
            gx, gy = (
                gx * np.cos(x) * y + gy * y,
                gx * (np.sin(x) - np.sin(y)) + gy * (x - np.float32(1.0)),
            )
        return out, gx, gy

    return run


def _pipeline_times(make, n: int, runs: int) -> dict:
    import shax_core as sx

    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = sx.trace(make(n), X0, Y0)
        t1 = time.perf_counter()
        v = sx.vjp_program(p)
        t2 = time.perf_counter()
        exe = sx.compile(v)
        t3 = time.perf_counter()
        samples.append((t1 - t0, t2 - t1, t3 - t2))
    trace_s, vjp_s, compile_s = (statistics.median(s[i] for s in samples) for i in range(3))
    return {
        "trace": trace_s,
        "vjp+compile": vjp_s + compile_s,
        "traced_eqns": len(p.eqns),
        "vjp_eqns": len(v.eqns),
        "exe": exe,
    }


def _pipeline_row(label: str, r: dict) -> list:
    times = [fmt_time(r["trace"]), fmt_time(r["vjp+compile"])]
    return [label, *times, r["traced_eqns"], r["vjp_eqns"]]


def run_w4(cfg: Config, sec: Section) -> None:
    sizes = (1000, 10_000) if cfg.quick else (1000, 10_000, 100_000)
    rows, loop = [], {}
    for n in sizes:
        loop[n] = _pipeline_times(w4_loop, n, 3 if cfg.quick else 5)
        rows.append(_pipeline_row(f"loop n={n}", loop[n]))
    unrolled_n = 1000
    flat = _pipeline_times(w4_unrolled, unrolled_n, 1)
    rows.append(_pipeline_row(f"unrolled n={unrolled_n}", flat))
    sec.lines += ["### W4 as `lax.fori_loop` beside the unrolled form", ""]
    sec.lines += table(
        ["program", "trace", "vjp_program + compile", "traced eqns", "VJP eqns"], rows
    )

    n = 10_000
    exe = loop[n]["exe"]
    one = np.float32(1.0)
    hand = w4_numpy(n)
    got, want = exe(X0, Y0, one), hand(X0, Y0)
    agree = all(close(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(got, want))
    fns = {"shax (fori_loop)": lambda: exe(X0, Y0, one), "numpy (hand)": lambda: hand(X0, Y0)}
    flat_exe = flat["exe"]
    small = w4_numpy(unrolled_n)
    loop_small = loop[unrolled_n]["exe"]
    fns_small = {
        "shax (fori_loop) n=1000": lambda: loop_small(X0, Y0, one),
        "shax (unrolled) n=1000": lambda: flat_exe(X0, Y0, one),
        "numpy (hand) n=1000": lambda: small(X0, Y0),
    }
    times = measure(fns, cfg)
    times_small = measure(fns_small, cfg)
    call_ratio = ratio(times["shax (fori_loop)"].median, times["numpy (hand)"].median)
    sec.lines += ["", f"One fwd+grad call at n={n} (values agree with the hand loop: {agree}):", ""]
    sec.lines += table(
        ["implementation", "per call", "vs hand NumPy"],
        [
            [k, fmt_time(t.median), fmt_ratio(ratio(t.median, times["numpy (hand)"].median))]
            for k, t in times.items()
        ]
        + [
            [
                k,
                fmt_time(t.median),
                fmt_ratio(ratio(t.median, times_small["numpy (hand) n=1000"].median)),
            ]
            for k, t in times_small.items()
        ],
    )
    vc = loop[10_000]["vjp+compile"]
    growth = ratio(loop[sizes[-1]]["vjp+compile"], loop[sizes[0]]["vjp+compile"])
    sec.targets += [
        Target("w7", "W4 loop n=10,000: vjp_program + compile", fmt_time(vc), "< 50 ms", vc < 0.05),
        Target(
            "w7",
            f"W4 loop: vjp_program + compile at n={sizes[-1]} / n={sizes[0]}",
            fmt_ratio(growth),
            "independent of n (< 2x)",
            growth is not None and growth < 2.0,
        ),
        Target(
            "w7",
            "W4 loop n=10,000: one fwd+grad vs hand NumPy",
            fmt_ratio(call_ratio),
            "<= 2x",
            call_ratio is not None and call_ratio <= 2.0,
        ),
    ]
    sec.data["w4"] = {
        "vjp_compile_s": {n: loop[n]["vjp+compile"] for n in sizes},
        "call_s": times["shax (fori_loop)"].median,
        "numpy_s": times["numpy (hand)"].median,
    }


# ---------------------------------------------------------------------------------------------
# RNN as a scan


def rnn_inputs():
    rng = np.random.default_rng(0)
    h0 = rng.standard_normal((BATCH, HIDDEN)).astype(np.float32) * 0.1
    xs = rng.standard_normal((STEPS, BATCH, INPUT)).astype(np.float32)
    w = (rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32)
    u = (rng.standard_normal((INPUT, HIDDEN)) / np.sqrt(INPUT)).astype(np.float32)
    return h0, xs, w, u


def rnn_shax(policy: str):
    import shax_core.numpy as snp
    from shax_core import lax

    def loss(h0, xs, w, u):
        def cell(h, x):
            h = snp.tanh(h @ w + x @ u)
            return h, h

        _, hs = lax.scan(cell, h0, xs, policy=policy)
        return snp.sum(hs)

    return loss


def rnn_numpy(h0, xs, w, u):
    """Hand-written forward (keeping every h) and backward through time."""
    hs = [h0]
    h = h0
    for t in range(xs.shape[0]):
        h = np.tanh(h @ w + xs[t] @ u)
        hs.append(h)
    loss = np.float32(sum(float(x.sum()) for x in hs[1:]))
    dw, du = np.zeros_like(w), np.zeros_like(u)
    dxs = np.empty_like(xs)
    g = np.zeros_like(h0)
    for t in range(xs.shape[0] - 1, -1, -1):
        g = g + np.float32(1.0)  # d loss / d h_t from the sum, plus what flows back from t+1
        da = g * (np.float32(1.0) - hs[t + 1] * hs[t + 1])
        dw += hs[t].T @ da
        du += xs[t].T @ da
        dxs[t] = da @ u.T
        g = da @ w.T
    return loss, g, dxs, dw, du


def rnn_jax():
    jax, jnp = import_jax()

    def loss(h0, xs, w, u):
        def cell(h, x):
            h = jnp.tanh(h @ w + x @ u)
            return h, h

        _, hs = jax.lax.scan(cell, h0, xs)
        return jnp.sum(hs)

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))
    return lambda *a: jax.block_until_ready(f(*a))


def stacked_residuals(policy: str, args) -> tuple[int, int]:
    """(bytes the primal scan stacks for the backward pass, bytes of one step's residuals)."""
    import shax_core as sx

    program = sx.trace(rnn_shax(policy), *args)
    primal, _ = sx.linearize_program(program, policy="save")
    scan = next(e for e in primal.eqns if e.prim == "scan")
    n_results = len(next(e for e in program.eqns if e.prim == "scan").outs)
    stacked = scan.outs[n_results:]
    total = sum(v.type.nbytes for v in stacked)
    return total, total // STEPS


def run_rnn(cfg: Config, sec: Section) -> None:
    import shax_core as sx

    args = rnn_inputs()
    one = np.float32(1.0)
    exes = {
        p: sx.compile(sx.vjp_program(sx.trace(rnn_shax(p), *args))) for p in ("save", "recompute")
    }
    want = rnn_numpy(*args)
    agree = {
        p: all(close(a, b, rtol=1e-3, atol=1e-3) for a, b in zip(exe(*args, one), want))
        for p, exe in exes.items()
    }
    fns = {
        "shax scan (save)": lambda: exes["save"](*args, one),
        "shax scan (recompute)": lambda: exes["recompute"](*args, one),
        "numpy (hand)": lambda: rnn_numpy(*args),
    }
    if have("jax", cfg):
        try:
            jf = rnn_jax()
            fns["jax lax.scan (jit)"] = lambda: jf(*args)
        except Exception as e:  # noqa: BLE001
            sec.notes.append(f"jax: {type(e).__name__}: {e}")
    else:
        sec.notes.append(missing_note("jax", cfg))
    times = measure(fns, cfg)
    base = times["numpy (hand)"].median
    sec.lines += [
        "",
        f"### RNN as `lax.scan` (tanh cell, hidden {HIDDEN}, {STEPS} steps, batch {BATCH}, "
        f"input {INPUT}; fwd+grad w.r.t. h0, xs, W, U)",
        "",
        f"Agreement with the hand-written NumPy: {agree}.",
        "",
    ]
    sec.lines += table(
        ["implementation", "per call", "vs hand NumPy"],
        [[k, fmt_time(t.median), fmt_ratio(ratio(t.median, base))] for k, t in times.items()],
    )
    carry = args[0].nbytes
    rows = []
    for p in ("save", "recompute"):
        total, per_step = stacked_residuals(p, args)
        rows.append([p, fmt_bytes(total), f"{per_step / 1024:.0f} KiB", f"{per_step / carry:.2f}"])
        sec.data[f"rnn_residual_{p}"] = total
    sec.lines += ["", "Residuals the primal scan stacks (from the IR's types):", ""]
    sec.lines += table(["policy", "stacked", "per step", "per step / carry"], rows)
    best = min(times["shax scan (save)"].median, times["shax scan (recompute)"].median)
    r_save = ratio(times["shax scan (save)"].median, base)
    save_total, save_step = stacked_residuals("save", args)
    rec_total, _ = stacked_residuals("recompute", args)
    sec.targets += [
        Target(
            "w7",
            "RNN scan (save): fwd+grad vs hand NumPy",
            fmt_ratio(r_save),
            "<= 1.3x",
            r_save is not None and r_save <= 1.3,
        ),
        Target(
            "w7",
            "RNN scan: residual memory under save",
            f"{fmt_bytes(save_total)} = {STEPS} x {save_step / 1024:.0f} KiB",
            "steps x one step's residuals",
            save_total == STEPS * save_step,
        ),
        Target(
            "w7",
            "RNN scan: residual memory under recompute",
            f"{fmt_bytes(rec_total)} ({rec_total / (STEPS * carry):.2f} carries per step)",
            "about one carry per step",
            rec_total == STEPS * carry,
        ),
    ]
    sec.data["rnn"] = {k: t.median for k, t in times.items()}
    sec.data["rnn_best_ratio"] = ratio(best, base)


def run(cfg: Config) -> Section:
    sec = Section("w7", "W7 loops: fori_loop and scan")
    log("w7: W4 as a loop")
    run_w4(cfg, sec)
    log("w7: RNN scan")
    run_rnn(cfg, sec)
    return sec


if __name__ == "__main__":
    import sys

    cfg = Config(quick="--quick" in sys.argv, sample_s=0.05, deadline=time.monotonic() + 300)
    section = run(cfg)
    print("\n".join(section.lines))
    for t in section.targets:
        print(f"- {t.what}: {t.measured} (target {t.target}) {'met' if t.met else 'NOT met'}")
    for n in section.notes:
        print(f"- {n}")
