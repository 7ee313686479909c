"""W4 deep-scalar (pipeline scaling): scalars x, y; n times ``x, y = sin(x)*y + cos(y), x*y - y``;
``out = x + y``; n in {1000, 10000, 100000}.

Measures the whole shax pipeline (trace -> vjp_program -> compile), equation counts, the scaling
exponent between sizes, and per-call evaluation; against JAX's ``make_jaxpr`` of the VJP (and its
jit compile at the smallest n), and PyTorch eager / autograd per call.

Every (implementation, n) runs in its own subprocess (``python w4_deep.py --child KIND N MAX_S``),
so a size that would take too long is cut by a timeout instead of stalling the suite, and each
starts with a fresh heap. A child times one run; if that took under a second it runs 5 more and
quotes their median, otherwise as many more as fit in MAX_S (maybe none: then the single run is
quoted and the table says ``runs 1``); the previous run's results are dropped, untimed, before
each run (so no run pays for freeing them or shares memory with them). Sizes whose projected
time (from the previous size and the measured exponent) exceeds the remaining budget are not
started and are reported as projections.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time

import common
import numpy as np

X0, Y0 = np.float32(0.5), np.float32(0.3)


def make_deep(m, n: int):
    def deep(x, y):
        for _ in range(n):
            x, y = m.sin(x) * y + m.cos(y), x * y - y
        return x + y

    return deep


# ---------------------------------------------------------------------------------------------
# children


def _repeat(fn, max_s: float, reset=None) -> tuple[float, int]:
    """(quoted seconds, runs) by the rule in the module docstring. ``reset`` (untimed, before
    each run) drops the previous run's results, so a run neither frees them nor competes with
    them for memory (at 100k they are millions of objects)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first < 1.0:
        more = 5
    else:
        more = min(5, int(max_s / first) - 1)
    if more <= 0:
        return first, 1
    samples = []
    for _ in range(more):
        if reset is not None:
            reset()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), len(samples)


def child_shax(n: int, max_s: float) -> dict:
    import shax_core as sx
    import shax_core.numpy as snp

    deep = make_deep(snp, n)
    state = {}

    def pipeline():
        t0 = time.perf_counter()
        p = sx.trace(deep, X0, Y0)
        t1 = time.perf_counter()
        v = sx.vjp_program(p)
        t2 = time.perf_counter()
        exe = sx.compile(v)
        t3 = time.perf_counter()
        state.setdefault("stages", []).append((t1 - t0, t2 - t1, t3 - t2))
        state.update(p=p, v=v, exe=exe)

    def reset():
        for k in ("p", "v", "exe"):
            state.pop(k, None)

    total, runs = _repeat(pipeline, max_s, reset)
    stages = state["stages"][-runs:] if runs > 1 else state["stages"]
    trace_s, vjp_s, compile_s = (statistics.median(s[i] for s in stages) for i in range(3))
    exe = state["exe"]
    one = np.float32(1.0)
    call, call_runs = _repeat(lambda: exe(X0, Y0, one), max_s / 2)
    out = exe(X0, Y0, one)
    return {
        "total": total,
        "runs": runs,
        "trace": trace_s,
        "vjp": vjp_s,
        "compile": compile_s,
        "traced_eqns": len(state["p"].eqns),
        "vjp_eqns": len(state["v"].eqns),
        "call": call,
        "call_runs": call_runs,
        "value": [float(o) for o in out],
    }


def _jax_deep(n):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp

    deep = make_deep(jnp, n)

    def vjp_all(x, y, ct):
        out, pull = jax.vjp(deep, x, y)
        return (out, *pull(ct))

    return jax, vjp_all


def child_jax_jaxpr(n: int, max_s: float) -> dict:
    jax, _ = _jax_deep(n)
    state = {}

    def run():
        # a new function object and cleared caches: make_jaxpr would otherwise hit its cache
        jax.clear_caches()
        _, vjp_all = _jax_deep(n)
        state["jaxpr"] = jax.make_jaxpr(vjp_all)(X0, Y0, np.float32(1.0))

    total, runs = _repeat(run, max_s, lambda: state.pop("jaxpr", None))
    return {"total": total, "runs": runs, "eqns": len(state["jaxpr"].jaxpr.eqns)}


def child_jax_jit(n: int, max_s: float) -> dict:
    jax, vjp_all = _jax_deep(n)
    f = jax.jit(vjp_all)
    t0 = time.perf_counter()
    jax.block_until_ready(f(X0, Y0, np.float32(1.0)))
    compile_s = time.perf_counter() - t0
    call, runs = _repeat(lambda: jax.block_until_ready(f(X0, Y0, np.float32(1.0))), max_s)
    return {"compile": compile_s, "call": call, "call_runs": runs}


def child_torch(n: int, max_s: float) -> dict:
    import torch

    deep = make_deep(torch, n)

    def run():
        x = torch.tensor(X0, requires_grad=True)
        y = torch.tensor(Y0, requires_grad=True)
        out = deep(x, y)
        gx, gy = torch.autograd.grad(out, (x, y))
        return out.item(), gx.item(), gy.item()

    call, runs = _repeat(run, max_s)
    return {"call": call, "call_runs": runs, "value": list(run())}


def child_autograd(n: int, max_s: float) -> dict:
    import autograd
    import autograd.numpy as anp

    deep = make_deep(anp, n)

    def run():
        pull, out = autograd.make_vjp(lambda xy: deep(*xy))((X0, Y0))
        return out, pull(np.float32(1.0))

    call, runs = _repeat(run, max_s)
    return {"call": call, "call_runs": runs}


CHILDREN = {
    "shax": child_shax,
    "jax-jaxpr": child_jax_jaxpr,
    "jax-jit": child_jax_jit,
    "torch": child_torch,
    "autograd": child_autograd,
}


def spawn(kind: str, n: int, timeout: float) -> dict:
    max_s = max(min(timeout / 4, 30.0), 1.0)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    try:
        proc = subprocess.run(
            [
                sys.executable,
                os.path.join(common.BENCH_DIR, "w4_deep.py"),
                "--child",
                kind,
                str(n),
                str(max_s),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=common.BENCH_DIR,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "timeout": timeout}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:200]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# the workload


def exponent(n1, t1, n2, t2) -> float | None:
    if not (t1 and t2) or t1 <= 0 or t2 <= 0:
        return None
    return math.log(t2 / t1) / math.log(n2 / n1)


class Series:
    """One implementation over increasing sizes; a size whose projection (from the previous
    size and the measured exponent) does not fit the time left is reported, not run."""

    def __init__(self, cfg: common.Config, kind: str, key: str, cap: float, label: str, notes):
        self.cfg, self.kind, self.key, self.cap, self.label = cfg, kind, key, cap, label
        self.notes = notes
        self.results: dict[int, dict] = {}
        self.prev: tuple[int, float] | None = None
        self.prev_exp: float | None = None
        self.first = True

    def step(self, n: int) -> None:
        budget = min(self.cap, self.cfg.remaining() - 5)
        if self.prev is not None:
            (pn, pt), e = self.prev, max(self.prev_exp or 1.0, 1.0)
            projected = pt * (n / pn) ** e
            if projected * 1.2 > budget:
                self.results[n] = {"projected": projected}
                self.notes.append(
                    f"{self.label} at n={n:,}: not run, projected {common.fmt_time(projected)} "
                    f"(from n={pn:,} at exponent {e:.2f}) exceeds the {max(budget, 0):.0f} s "
                    "left for it"
                )
                self.prev = (n, projected)
                return
        if self.kind == "shax" and self.first:
            budget = max(budget, 60.0)  # the suite is also shax's smoke test: always run one
        self.first = False
        if budget < 5:
            self.results[n] = {"error": "skipped: time budget"}
            return
        common.log(f"W4: {self.label} n={n:,} (timeout {budget:.0f} s)")
        r = spawn(self.kind, n, budget)
        self.results[n] = r
        if "error" in r:
            if self.kind == "shax" and "timeout" not in r:
                raise RuntimeError(f"shax W4 child at n={n}: {r['error']}")
            self.notes.append(f"{self.label} at n={n:,}: {r['error']}")
            if "timeout" in r:
                if self.prev:
                    r["exponent_at_least"] = exponent(self.prev[0], self.prev[1], n, r["timeout"])
                self.prev, self.prev_exp = (n, r["timeout"]), max(self.prev_exp or 1.0, 1.0)
            return
        t = r.get(self.key)
        self.prev_exp = exponent(self.prev[0], self.prev[1], n, t) if self.prev else None
        self.prev = (n, t)


def run(cfg: common.Config) -> common.Section:
    sec = common.Section("w4", "W4 deep-scalar (pipeline scaling)")
    sizes = (100, 200, 400) if cfg.quick else (1000, 10_000, 100_000)
    if cfg.quick:
        sec.notes.append(f"--quick: n in {sizes} instead of (1000, 10000, 100000)")
    notes = sec.notes
    cap = 30 if cfg.quick else 150
    jax_ok, torch_ok, ag_ok = (
        common.have("jax", cfg),
        common.have("torch", cfg),
        common.have("autograd", cfg),
    )
    series = {"shax": Series(cfg, "shax", "total", cap, "shax pipeline", notes)}
    if jax_ok:
        series["jaxpr"] = Series(cfg, "jax-jaxpr", "total", cap / 2, "JAX make_jaxpr", notes)
    if torch_ok:
        series["torch"] = Series(cfg, "torch", "call", cap / 3, "PyTorch eager", notes)
    if ag_ok:
        series["autograd"] = Series(cfg, "autograd", "call", cap / 4, "autograd", notes)
    # size by size, so that every implementation gets the small sizes before any gets the big
    for i, n in enumerate(sizes):
        for name, sr in series.items():
            if name == "jaxpr" and i == 2 and not cfg.quick:
                continue  # >120 s at n=100,000
            sr.step(n)
    shax = series["shax"].results
    jaxpr = series["jaxpr"].results if jax_ok else {}
    torch = series["torch"].results if torch_ok else {}
    ag = series["autograd"].results if ag_ok else {}
    jit = {}
    if jax_ok and not cfg.quick and cfg.remaining() > 120:
        jit_series = Series(cfg, "jax-jit", "compile", 90, "JAX jit", notes)
        jit_series.step(sizes[0])
        jit = jit_series.results
    elif jax_ok:
        notes.append("JAX jit per call: not run (its compile takes ~30 s at n=1000; full run only)")
    for peer, ok in (("jax", jax_ok), ("torch", torch_ok), ("autograd", ag_ok)):
        if not ok:
            notes.append(common.missing_note(peer, cfg))
    if jax_ok and not cfg.quick:
        notes.append("JAX make_jaxpr is run at the two smaller sizes only (>120 s at n=100,000)")

    def t(res, n, key):
        r = res.get(n) or {}
        return r.get(key)

    def cell(res, n, key, runs_key=None):
        r = res.get(n) or {}
        if "projected" in r:
            return f"(~{common.fmt_time(r['projected'])} projected)"
        if "error" in r:
            return r["error"] if key in ("total", "call") else "—"
        if key not in r:
            return "—"
        runs = f" ({r[runs_key]} runs)" if runs_key and r.get(runs_key, 5) < 5 else ""
        return common.fmt_time(r[key]) + runs

    rows = []
    for n in sizes:
        s = shax.get(n) or {}
        rows.append(
            [
                f"{n:,}",
                cell(shax, n, "total", "runs"),
                cell(shax, n, "trace"),
                cell(shax, n, "vjp"),
                cell(shax, n, "compile"),
                f"{s['traced_eqns']:,} / {s['vjp_eqns']:,}" if "vjp_eqns" in s else "—",
                cell(jaxpr, n, "total", "runs"),
                f"{jaxpr[n]['eqns']:,}" if "eqns" in (jaxpr.get(n) or {}) else "—",
                common.fmt_ratio(common.ratio(t(jaxpr, n, "total"), t(shax, n, "total"))),
            ]
        )
    sec.lines += [
        "Pipeline (trace -> vjp_program -> compile for shax; make_jaxpr of the VJP for JAX):",
        "",
    ]
    sec.lines += common.table(
        [
            "n",
            "shax total",
            "trace",
            "vjp_program",
            "compile",
            "eqns traced / VJP",
            "JAX make_jaxpr(vjp)",
            "JAX eqns",
            "JAX / shax",
        ],
        rows,
    )
    exps = []
    for a, b in zip(sizes, sizes[1:]):
        e = exponent(a, t(shax, a, "total"), b, t(shax, b, "total"))
        ej = exponent(a, t(jaxpr, a, "total"), b, t(jaxpr, b, "total"))
        low = (shax.get(b) or {}).get("exponent_at_least")
        exps.append((a, b, e if e is not None else low))
        shax_e = f"{e:.2f}" if e is not None else (f"> {low:.2f} (timed out)" if low else "—")
        sec.lines.append(f"\nScaling exponent {a:,} -> {b:,}: shax {shax_e}")
        if ej is not None:
            sec.lines[-1] += f", JAX make_jaxpr {ej:.2f}"
    rows = []
    for n in sizes:
        rows.append(
            [
                f"{n:,}",
                cell(shax, n, "call", "call_runs"),
                cell(torch, n, "call", "call_runs"),
                cell(ag, n, "call", "call_runs"),
                cell(jit, n, "call", "call_runs") if n in jit else "—",
                common.fmt_ratio(common.ratio(t(shax, n, "call"), t(torch, n, "call"))),
            ]
        )
    sec.lines += ["", "Per call (forward + gradient of a ready program / eager run):", ""]
    sec.lines += common.table(
        ["n", "shax", "PyTorch eager", "autograd", "JAX jit", "shax / PyTorch"], rows
    )
    if jit and "compile" in (jit.get(sizes[0]) or {}):
        sec.lines += [
            "",
            f"JAX jit compile at n={sizes[0]:,}: {common.fmt_time(jit[sizes[0]]['compile'])}.",
        ]

    # targets (at the full sizes; --quick reports them at its sizes for the smoke run)
    mid, big = sizes[1], sizes[2]
    r = common.ratio(t(jaxpr, mid, "total"), t(shax, mid, "total"))
    sec.targets.append(
        common.Target(
            "W4",
            f"pipeline speed-up over JAX make_jaxpr at n={mid:,}",
            common.fmt_ratio(r),
            ">= 10x",
            None if r is None else r >= 10,
        )
    )
    # issue 18: n=10k <= 1.5 s and n=100k <= 15 s (trace + vjp_program + compile)
    for n, limit in ((mid, 1.5), (big, 15.0)):
        tn = t(shax, n, "total")
        proj = (shax.get(n) or {}).get("projected")
        sec.targets.append(
            common.Target(
                "W4",
                f"pipeline at n={n:,}",
                common.fmt_time(tn)
                if tn
                else (f"~{common.fmt_time(proj)} projected" if proj else "not measured"),
                f"<= {common.fmt_time(limit)}",
                (tn <= limit) if tn else (False if proj and proj > limit else None),
            )
        )
    worst = max((e for _, _, e in exps if e is not None), default=None)
    sec.targets.append(
        common.Target(
            "W4",
            "scaling exponent (worst pair)",
            f"{worst:.2f}" if worst else "—",
            "<= 1.05",
            None if worst is None else worst <= 1.05,
        )
    )
    for n in sizes:
        rp = common.ratio(t(shax, n, "call"), t(torch, n, "call"))
        if rp is not None:
            sec.targets.append(
                common.Target(
                    "W4",
                    f"per call vs PyTorch eager at n={n:,}",
                    common.fmt_ratio(rp),
                    "< 1x (ahead)",
                    rp < 1,
                )
            )
    sec.data = {
        "sizes": sizes,
        "shax": shax,
        "jaxpr": jaxpr,
        "torch": torch,
        "autograd": ag,
        "jit": jit,
    }
    plot(sec, cfg)
    return sec


def plot(sec: common.Section, cfg: common.Config) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sec.notes.append("matplotlib not installed: no plot (`pip install -e '.[bench]'`)")
        return
    d = sec.data
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, series, title in (
        (
            ax1,
            [
                ("shax trace→vjp→compile", d["shax"], "total"),
                ("JAX make_jaxpr(vjp)", d["jaxpr"], "total"),
            ],
            "Pipeline time",
        ),
        (
            ax2,
            [
                ("shax", d["shax"], "call"),
                ("PyTorch eager", d["torch"], "call"),
                ("autograd", d["autograd"], "call"),
                ("JAX jit", d["jit"], "call"),
            ],
            "Forward+gradient per call",
        ),
    ):
        for label, res, key in series:
            pts = [(n, r[key]) for n, r in sorted(res.items()) if r.get(key)]
            proj = [
                (n, r["projected"])
                for n, r in sorted(res.items())
                if key == "total" and r.get("projected")
            ]
            if pts:
                (line,) = ax.plot(*zip(*pts), marker="o", label=label)
                if proj:
                    ax.plot(*zip(*([pts[-1]] + proj)), ls=":", color=line.get_color())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (loop iterations)")
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(
        "W4 deep-scalar"
        + (" (--quick sizes)" if cfg.quick else "")
        + "; dotted = projected, not run"
    )
    fig.tight_layout()
    path = os.path.join(cfg.out_dir, "w4_scaling.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    sec.data["plot"] = path


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(CHILDREN[sys.argv[2]](int(sys.argv[3]), float(sys.argv[4]))))
    else:
        sys.exit("usage: w4_deep.py --child KIND N MAX_S  (the suite runs this; see run.py)")
