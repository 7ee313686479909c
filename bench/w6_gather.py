"""W6 gather-heavy: an embedding lookup and its scatter-add gradient, 1e6 indices.

``table :: f32[50_000, 16]``, ``ids :: i32[1_000_000]`` (Zipf-distributed, so most rows repeat),
``loss = sum(tanh(table[ids]) * w)`` with ``w :: f32[16]``; forward and gradient w.r.t. the
table. The gradient is a scatter-add of 1e6 rows into 50k: the part where NumPy's paths differ
most. Implementations:

- shax: ``shax_core.numpy`` traced once, the zipped VJP program run by the plan (``gather`` is
  ``np.take``, ``scatter_add`` one ``np.bincount`` per column for rows of up to 32 values);
- NumPy written by hand, three ways of doing the scatter-add: ``np.add.at`` (the obvious one),
  sorting the ids and ``np.add.reduceat``, and one ``np.bincount`` per column. (One bincount
  over flat ``id·D + j`` positions was measured too: its 1e6·16 int64 index temporary made it
  the slowest, 1.2 s, under the interleaved timing.)
- JAX (jit), when installed.

``python bench/w6_gather.py`` prints the report section; ``bench/run.py --only w6`` includes it.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from common import Config, Section, Target, close, fmt_ratio, fmt_time, have, log, measure, table

V, D, N = 50_000, 16, 1_000_000


def make_data(n=N):
    rng = np.random.default_rng(0)
    table_ = rng.standard_normal((V, D)).astype(np.float32)
    ids = (rng.zipf(1.3, n) % V).astype(np.int32)
    w = rng.standard_normal(D).astype(np.float32)
    return table_, ids, w


def loss_generic(m, table_, ids, w):
    return m.sum(m.tanh(table_[ids]) * w)


def numpy_impl(scatter: str):
    def value_and_grad(table_, ids, w):
        rows = table_[ids]  # gather: np.take along axis 0
        t = np.tanh(rows)
        value = np.sum(t * w)
        d_rows = (1.0 - t * t) * w  # d loss / d rows
        if scatter == "add.at":
            grad = np.zeros_like(table_)
            np.add.at(grad, ids, d_rows)
        elif scatter == "sort+reduceat":
            order = np.argsort(ids, kind="stable")
            s = ids[order]
            starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
            grad = np.zeros_like(table_)
            grad[s[starts]] = np.add.reduceat(d_rows[order], starts, axis=0)
        else:  # one bincount per column
            grad = np.empty_like(table_)
            for j in range(D):
                grad[:, j] = np.bincount(ids, weights=d_rows[:, j], minlength=V)
        return value, grad

    return value_and_grad


def shax_impl():
    import shax_core as sx
    import shax_core.numpy as snp

    vg = sx.value_and_grad(lambda t, i, w: loss_generic(snp, t, i, w))
    return lambda table_, ids, w: vg(table_, ids, w)


def jax_impl():
    import jax
    import jax.numpy as jnp

    vg = jax.jit(jax.value_and_grad(lambda t, i, w: loss_generic(jnp, t, i, w)))

    def run(table_, ids, w):
        value, grad = vg(table_, ids, w)
        return value, np.asarray(grad.block_until_ready())

    return run


def run(cfg: Config) -> Section:
    sec = Section("w6", "W6 gather (embedding lookup + scatter-add gradient, 1e6 indices)")
    n = N if not cfg.quick else N // 10
    table_, ids, w = make_data(n)
    impls = {
        "shax": shax_impl(),
        "NumPy by hand (np.add.at)": numpy_impl("add.at"),
        "NumPy by hand (sort + reduceat)": numpy_impl("sort+reduceat"),
        "NumPy by hand (bincount)": numpy_impl("bincount"),
    }
    if have("jax", cfg):
        try:
            impls["JAX (jit, CPU)"] = jax_impl()
        except Exception as e:  # noqa: BLE001
            sec.notes.append(f"JAX setup failed: {type(e).__name__}: {e}")
    # the reference in f64 (f32 accumulations of ~1e5 repeats differ by more than 1e-3)
    t64 = np.tanh(table_.astype(np.float64)[ids])
    ref_value = np.sum(t64 * w)
    ref_grad = np.zeros((V, D))
    np.add.at(ref_grad, ids, (1.0 - t64 * t64) * w)
    scale = float(np.abs(ref_grad).max())
    errors = {}
    for name, f in impls.items():
        value, grad = f(table_, ids, w)
        errors[name] = float(np.abs(np.asarray(grad, np.float64) - ref_grad).max()) / scale
        # f32 running sums over ~1e5 repeats of a row lose digits: 1e-2 of the largest
        # gradient entry is the bar for "the same gradient"
        if not close(value, ref_value, rtol=1e-3, atol=0) or errors[name] > 1e-2:
            sec.notes.append(f"{name}: result DIFFERS from the f64 reference")
    log("W6: forward+gradient")
    timings = measure({k: (lambda f=f: f(table_, ids, w)) for k, f in impls.items()}, cfg)
    base = timings["NumPy by hand (np.add.at)"].median
    fast = timings["NumPy by hand (bincount)"].median
    rows = []
    for name, t in timings.items():
        rows.append(
            [
                name,
                fmt_time(t.median) if t.ok else f"error: {t.error}",
                fmt_ratio(t.median / base) if t.ok else "—",
                fmt_ratio(t.median / fast) if t.ok else "—",
                f"{errors[name]:.1e}",
            ]
        )
    sec.lines += table(
        [
            "implementation",
            "forward+gradient",
            "vs np.add.at",
            "vs bincount by hand",
            "max grad error / max grad (vs f64)",
        ],
        rows,
    )
    shax_t = timings["shax"].median
    sec.lines += [
        "",
        f"table f32[{V}, {D}], {n:,} Zipf(1.3) ids ({len(np.unique(ids)):,} distinct rows). "
        "np.add.at and JAX sum the repeated rows in f32 (hence their error); bincount "
        "(shax's scatter_add kernel) accumulates in f64.",
        f"Load average during the run: {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
        "(a shared 2-core machine).",
    ]
    sec.targets.append(
        Target(
            "w6",
            "shax fwd+grad vs hand NumPy with np.add.at",
            fmt_ratio(shax_t / base),
            "< 1.00x (faster than the obvious hand-written path)",
            shax_t < base,
        )
    )
    sec.data["figure"] = (shax_t, base, fast)
    return sec


def main() -> int:
    sec = run(Config(repeats=5, sample_s=0.05, deadline=float("inf")))
    print(f"## {sec.title}\n")
    print("\n".join(sec.lines))
    for note in sec.notes:
        print(f"\n- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
