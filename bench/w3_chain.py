"""W3 elementwise-chain (memory-bound): x f32[1_000_000]; y = x; 32 times
``y = sin(y) * cos(x) + exp(-(y*y))``; ``loss = sum(y)``; gradient w.r.t. x. Time and peak memory.

Peak memory is measured the same way for every implementation: each runs in its own fresh
subprocess (``w3_chain.py --probe NAME N``) with glibc's malloc told to serve every block over
64 KiB with mmap (so freed memory goes back to the OS and warm-up leftovers cannot hide
allocations); after a warm-up call the process's resident-set high-water mark (VmHWM) is reset
through /proc/self/clear_refs, one forward+gradient call runs, and the figure is VmHWM minus the RSS
before the call: the memory the call needed on top of its inputs, whoever allocated it (NumPy,
PyTorch's or XLA's allocator). For the NumPy-based implementations tracemalloc's peak (NumPy
allocations only) is reported next to it as a cross-check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import common
import numpy as np

STEPS = 32


def make_x(n: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1.0, 1.0, n).astype(np.float32)


def chain_generic(m, x):
    y = x
    cx = m.cos(x)
    for _ in range(STEPS):
        y = m.sin(y) * cx + m.exp(-(y * y))
    return m.sum(y)


def chain_literal(m, x):
    """Exactly as the issue writes it: cos(x) inside the loop (a tracer's CSE may share it)."""
    y = x
    for _ in range(STEPS):
        y = m.sin(y) * m.cos(x) + m.exp(-(y * y))
    return m.sum(y)


# ---------------------------------------------------------------------------------------------
# implementations: make(x) -> zero-argument callable returning (loss, grad x)


@common.implementation("shax", "shax")
def shax_make(x):
    import shax_core as sx
    import shax_core.numpy as snp

    def chain(x):
        return chain_literal(snp, x)

    exe = sx.compile(sx.vjp_program(sx.trace(chain, x)))
    one = np.ones((), np.float32)
    return lambda: exe(x, one)


def numpy_value_and_grad(x):
    """Hand-written: the forward keeps each step's y (4 MB each); the backward recomputes the
    cheap elementwise factors from it, as a person writing a memory-conscious backward would."""
    cx = np.cos(x)
    ys = []
    y = x
    for _ in range(STEPS):
        ys.append(y)
        y = np.sin(y) * cx + np.exp(-(y * y))
    loss = y.sum()
    g = np.ones_like(x)
    gx = np.zeros_like(x)
    for y in reversed(ys):
        # d/dy: cos(y)*cos(x) - 2y*exp(-y^2); d/dx (through cos x): -sin(y)*sin(x)
        gx += g * np.sin(y)
        g *= np.cos(y) * cx - 2.0 * y * np.exp(-(y * y))
    gx *= -np.sin(x)
    gx += g  # y0 = x
    return loss, gx


@common.implementation("NumPy (hand-written)", "numpy")
def numpy_make(x):
    return lambda: numpy_value_and_grad(x)


@common.implementation("JAX jit", "jax")
def jax_jit_make(x):
    jax, jnp = common.import_jax()
    f = jax.jit(jax.value_and_grad(lambda x: chain_literal(jnp, x)))
    xj = jnp.asarray(x)
    return lambda: jax.block_until_ready(f(xj))


@common.implementation("JAX eager", "jax")
def jax_eager_make(x):
    jax, jnp = common.import_jax()
    f = jax.value_and_grad(lambda x: chain_literal(jnp, x))
    xj = jnp.asarray(x)
    return lambda: jax.block_until_ready(f(xj))


@common.implementation("PyTorch eager", "torch")
def torch_make(x):
    import torch

    xt = torch.from_numpy(x)

    def run():
        leaf = xt.detach().requires_grad_()
        loss = chain_literal(torch, leaf)
        (g,) = torch.autograd.grad(loss, (leaf,))
        return loss.detach(), g

    return run


@common.implementation("autograd", "autograd")
def autograd_make(x):
    import autograd
    import autograd.numpy as anp

    f = autograd.value_and_grad(lambda x: chain_literal(anp, x))
    return lambda: f(x)


IMPLS = common.implementations(__name__)  # {name: (peer, make)}, as declared
NUMPY_BASED = {"shax", "NumPy (hand-written)", "autograd"}


# ---------------------------------------------------------------------------------------------
# peak memory (run in a subprocess per implementation: python w3_chain.py --probe NAME N)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def probe(name: str, n: int) -> dict:
    import gc
    import tracemalloc

    x = make_x(n)
    fn = IMPLS[name][1](x)
    fn()  # warm-up: compilation, caches
    result = None
    gc.collect()
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    result = fn()
    peak = _status_kib("VmHWM")
    out = {
        "rss_before": before * 1024,
        "rss_peak": peak * 1024,
        "rss_delta": (peak - before) * 1024,
    }
    del result
    if name in NUMPY_BASED:
        gc.collect()
        tracemalloc.start()
        fn()
        _, tm_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["tracemalloc_peak"] = tm_peak
    return out


def measure_memory(name: str, n: int, timeout: float) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    env.setdefault("JAX_PLATFORMS", "cpu")
    proc = subprocess.run(
        [sys.executable, os.path.join(common.BENCH_DIR, "w3_chain.py"), "--probe", name, str(n)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=common.BENCH_DIR,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return {"error": f"exit {proc.returncode}: {tail[0]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(cfg: common.Config) -> common.Section:
    sec = common.Section("w3", "W3 elementwise-chain (memory-bound)")
    n = 100_000 if cfg.quick else 1_000_000
    if cfg.quick:
        sec.notes.append(f"--quick: n = {n:,} instead of 1,000,000")
    x = make_x(n)
    fns = common.build(sec, cfg, IMPLS, x)
    ref_loss, ref_g = numpy_value_and_grad(x)
    for name, fn in fns.items():
        loss, g = fn()[:2] if name != "shax" else fn()
        if not (common.close(loss, ref_loss, rtol=1e-3, atol=1e-2) and common.close(g, ref_g)):
            sec.notes.append(f"{name}: results DIFFER from the hand-written NumPy reference")

    common.log("W3: time")
    times = common.measure(fns, cfg, warmup=0)  # the correctness check above was the warm-up call
    common.log("W3: peak memory (one subprocess per implementation)")
    mem = {}
    for name in fns:
        need = 3 * times[name].median + 10  # import, warm-up call, measured call
        if cfg.remaining() < need and name not in ("shax", "NumPy (hand-written)"):
            mem[name] = {"error": "skipped: time budget"}
            continue
        try:
            mem[name] = measure_memory(name, n, timeout=min(120.0, max(cfg.remaining(), 10)))
        except subprocess.TimeoutExpired:
            mem[name] = {"error": "timed out"}
    np_t = times["NumPy (hand-written)"].median
    np_m = mem.get("NumPy (hand-written)", {}).get("rss_delta")
    rows = []
    for name, t in times.items():
        m = mem.get(name, {})
        rows.append(
            [
                name,
                common.fmt_time(t.median) if t.ok else f"error: {t.error}",
                common.fmt_ratio(common.ratio(t.median, np_t)),
                common.fmt_bytes(m.get("rss_delta")) if "error" not in m else m["error"],
                common.fmt_ratio(common.ratio(m.get("rss_delta"), np_m)),
                common.fmt_bytes(m.get("tracemalloc_peak")) if "tracemalloc_peak" in m else "—",
            ]
        )
    sec.lines += common.table(
        [
            "implementation",
            "fwd+grad",
            "vs NumPy",
            "peak memory (RSS high-water - before)",
            "vs NumPy",
            "tracemalloc peak",
        ],
        rows,
    )
    sec.lines += [
        "",
        f"Input x is {common.fmt_bytes(4 * n)}; the 32 saved y's of the hand-written version "
        f"alone are {common.fmt_bytes(32 * 4 * n)}.",
    ]
    s = times["shax"].median
    r = common.ratio(s, np_t)
    common.ratio_at_most(sec, "W3", "fwd+grad time vs hand-written NumPy", r, 1.1)
    rm = common.ratio(mem.get("shax", {}).get("rss_delta"), np_m)
    common.ratio_at_most(sec, "W3", "peak memory vs hand-written NumPy", rm, 1.2)
    for peer in ("JAX jit", "JAX eager", "PyTorch eager", "autograd"):
        if peer in times and times[peer].ok:
            rp = common.ratio(s, times[peer].median)
            common.ahead_of(sec, "W3", f"fwd+grad time vs {peer}", rp)
    threads = thread_settings(sec, cfg, x)
    sec.data = {
        "n": n,
        "time": {k: t.median for k, t in times.items()},
        "mem": mem,
        "threads": threads,
    }
    return sec


# ---------------------------------------------------------------------------------------------
# the chunk threads of big elementwise steps: one thread, every core, and the run-time decision
# (SHAX_PLAN_THREADS=auto), idle and with every core kept busy by other processes


def _shax_with_threads(setting: str, x):
    old = os.environ.get("SHAX_PLAN_THREADS")
    os.environ["SHAX_PLAN_THREADS"] = setting
    try:
        return shax_make(x)  # the setting is read when the plan is built
    finally:
        if old is None:
            del os.environ["SHAX_PLAN_THREADS"]
        else:
            os.environ["SHAX_PLAN_THREADS"] = old


BUSY = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


@contextmanager
def busy_cores(k: int, seconds: float):
    """k processes spinning for at most ``seconds`` (stopped by their ids when done)."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY.format(s=seconds)]) for _ in range(k)]
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def thread_settings(sec: common.Section, cfg: common.Config, x) -> dict:
    cores = len(os.sched_getaffinity(0))
    fns = {f"shax, SHAX_PLAN_THREADS={t}": _shax_with_threads(t, x) for t in ("1", str(cores))}
    fns["shax, SHAX_PLAN_THREADS=auto (default)"] = _shax_with_threads("auto", x)
    fns["NumPy (hand-written)"] = numpy_make(x)
    common.log("W3: chunk threads, idle")
    idle = common.measure(fns, cfg)
    common.log(f"W3: chunk threads, {cores} busy processes")
    # spinning for at most 120 s, stopped as soon as the rounds end (they must all see the load)
    with busy_cores(cores, seconds=120.0):
        loaded = common.measure(fns, cfg)
    one = "shax, SHAX_PLAN_THREADS=1"
    rows = [
        [
            name,
            common.fmt_time(idle[name].median),
            common.fmt_ratio(common.ratio(idle[name].median, idle["NumPy (hand-written)"].median)),
            common.fmt_time(loaded[name].median),
            common.fmt_ratio(
                common.ratio(loaded[name].median, loaded["NumPy (hand-written)"].median)
            ),
            common.fmt_ratio(common.ratio(loaded[name].median, loaded[one].median)),
        ]
        for name in fns
    ]
    sec.lines += ["", f"Chunk threads of big elementwise steps ({cores} cores):", ""]
    sec.lines += common.table(
        [
            "implementation",
            "as the machine is",
            "vs NumPy",
            f"{cores} busy processes",
            "vs NumPy",
            "vs one thread",
        ],
        rows,
    )
    auto = "shax, SHAX_PLAN_THREADS=auto (default)"
    r = common.ratio(loaded[auto].median, loaded[one].median)
    common.ratio_at_most(sec, "W3", "auto threads vs one thread, cores busy", r, 1.05)
    r = common.ratio(loaded[auto].median, loaded["NumPy (hand-written)"].median)
    common.ratio_at_most(sec, "W3", "fwd+grad time vs hand-written NumPy, cores busy", r, 1.0)
    return {
        "idle": {k: t.median for k, t in idle.items()},
        "loaded": {k: t.median for k, t in loaded.items()},
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        print(json.dumps(probe(sys.argv[2], int(sys.argv[3]))))
    else:
        sys.exit("usage: w3_chain.py --probe NAME N  (the suite runs this; see run.py)")
