"""The seed's demo: gradient descent on f, then every stage of medium and its numbers."""

from __future__ import annotations

import numpy as np

import shax_core.numpy as snp
from shax_core._evaluate import evaluate
from shax_core.optimize import minimize
from shax_core.pipeline import stages
from shax_core.text import format_float


def f(x, y):
    z = x + y
    return snp.sin(z) * snp.cos(z)


def medium(x0, x8):
    x1 = snp.broadcast(x0, [1], [2, 6])
    x2 = snp.sin(x1)
    x3 = snp.cos(x2)
    x4 = x2 + x3
    x5 = snp.exp(x4)
    x6 = snp.transpose(x4, [1, 0])
    x7 = snp.dot(x5, x6)
    x9 = x7 * x8
    x10 = x7 + x8
    x11 = snp.minimum(x9, x10)
    x12 = snp.maximum(x9, x10)
    x13 = x12 - x11
    return snp.reduce_sum(x13, [0])


SEED_A = np.arange(1, 7, dtype=np.float32)
SEED_B = np.array([[1, 2], [3, 4]], dtype=np.float32)
SEED_CT = np.array([5, 9], dtype=np.float32)


# the seed's rewrites canonicalize dots and lower reduce_sum (passes.rewrite and
# passes.lower_reduce_sum, both opt-in); the pipeline's are these:
REWRITES_HEADING = "After rewrites (simplification, constant folding, CSE and DCE):"


def _fmt(arrays) -> str:
    return "[" + ",\n ".join(np.array2string(np.asarray(a), precision=8) for a in arrays) + "]"


def run(out=print) -> None:
    x0 = [np.float32(0.5), np.float32(-0.75)]
    st = stages(f, *x0)
    out(st["typed"])
    result = minimize(f, x0, steps=40, lr=0.05)
    for p in result.trajectory:
        out(f"Iteration {p.step}: {format_float(float(p.value), 'f32')}")
    loc = ",".join(f"fromList [] [{format_float(float(x), 'f32')}]" for x in result.params)
    out(f"Minimum location: [{loc}]")
    out(f"Minimum value: {format_float(float(result.value), 'f32')}")

    st = stages(medium, SEED_A, SEED_B)
    out("\nAfter tracing:")
    out(st["traced"])
    out("After type inference:")
    out(st["typed"])
    out(REWRITES_HEADING)
    out(st["rewritten"])
    out("Linearized definition(s):")
    out(st["linearized"])
    out(st["linear"])
    primal = evaluate(st["linearized"], SEED_A, SEED_B)
    n = len(st["typed"].outs)
    out("f(x):")
    out(_fmt(primal[:n]))
    out("df(dx):")
    out(_fmt(evaluate(st["linear"], SEED_A, SEED_B, *primal[n:])))
    out("Transposed definition(s):")
    out(st["transposed"])
    out("dft(ct):")
    out(_fmt(evaluate(st["transposed"], SEED_CT, *primal[n:])))
    out("Zipped primal and transpose:")
    out(st["vjp"])
    out("VJP:")
    out(_fmt(evaluate(st["vjp"], SEED_A, SEED_B, SEED_CT)))
