"""W4 by pipeline stage: where ``trace`` + ``vjp_program`` spend their time on the deep chain.

The chain of bench/w4_deep.py (``x, y = sin(x)*y + cos(y), x*y - y``, n steps) is traced and
taken through the stages one by one (trace, infer, cleanup, linearize, transpose, zip), then
through ``trace`` + ``vjp_program`` in one go; each figure is CPU seconds (``process_time``:
less sensitive than wall time to the other processes of this shared 2-core machine), one run
per size in a fresh subprocess, with the garbage collector off as ``vjp_program`` runs it.

    python bench/w4_stages.py [N ...]                  # default: 1000 10000
    python bench/w4_stages.py 10000 --against DIR       # DIR/shax_core (another checkout) too,
                                                        # interleaved run by run
    python bench/w4_stages.py 10000 --rounds 3

The exponent is fitted between consecutive sizes of the ``trace+vjp_program`` column.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import subprocess
import sys
import time

STAGES = ("trace", "infer", "cleanup", "linearize", "transpose", "zip", "trace+vjp_program")


def child(n: int) -> None:
    import numpy as np

    import shax_core as sx
    import shax_core.numpy as snp
    from shax_core import pipeline
    from shax_core._infer import infer
    from shax_core._linearize import linearize_typed
    from shax_core.passes import cleanup
    from shax_core.transpose import transpose_typed

    def deep(x, y):
        for _ in range(n):
            x, y = snp.sin(x) * y + snp.cos(y), x * y - y
        return x + y

    x0, y0 = np.float32(0.5), np.float32(0.3)
    clock = time.process_time
    gc.disable()
    t = {}
    start = clock()
    p = sx.trace(deep, x0, y0)
    t["trace"] = clock() - start
    start = clock()
    typed = infer(p)
    t["infer"] = clock() - start
    start = clock()
    rewritten = cleanup(typed)
    t["cleanup"] = clock() - start
    start = clock()
    lin = linearize_typed(rewritten, None, "recompute")
    t["linearize"] = clock() - start
    start = clock()
    transposed = transpose_typed(lin.linear, lin.n_tangents)
    t["transpose"] = clock() - start
    start = clock()
    staged = pipeline.zip_vjp(lin, transposed)
    t["zip"] = clock() - start
    del p, typed, rewritten, lin, transposed
    gc.enable()
    gc.collect()
    gc.disable()
    start = clock()
    vjp = sx.vjp_program(sx.trace(deep, x0, y0))
    t["trace+vjp_program"] = clock() - start
    assert len(vjp.eqns) == len(staged.eqns)
    print(" ".join(f"{t[s]:.4f}" for s in STAGES), len(vjp.eqns), flush=True)


def run_child(n: int, path: str | None) -> tuple[list[float], int]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.path.abspath(path)
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout.split()
    return [float(x) for x in out[:-1]], int(out[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 10000])
    ap.add_argument("--against", help="a directory holding another shax_core to compare")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    versions = [("this", None)] + ([("against", args.against)] if args.against else [])
    print(f"load average {os.getloadavg()[0]:.2f}; CPU seconds")
    print(f"{'version':8} {'n':>7} " + " ".join(f"{s:>17}" for s in STAGES) + "  vjp eqns")
    best: dict[tuple[str, int], list[float]] = {}
    for n in args.sizes:
        for _ in range(args.rounds):
            for label, path in versions:
                times, eqns = run_child(n, path)
                prev = best.get((label, n))
                best[(label, n)] = (
                    times if prev is None else [min(a, b) for a, b in zip(prev, times)]
                )
                cells = " ".join(f"{x:17.3f}" for x in times)
                print(f"{label:8} {n:7d} {cells}  {eqns}", flush=True)
    for label, _ in versions:
        sizes = [n for n in args.sizes if (label, n) in best]
        for a, b in zip(sizes, sizes[1:]):
            ta, tb = best[(label, a)][-1], best[(label, b)][-1]
            print(f"{label}: exponent {a} -> {b}: {math.log(tb / ta) / math.log(b / a):.3f}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
