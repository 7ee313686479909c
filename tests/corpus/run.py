"""Run corpus entries with shax and (when installed) JAX; compare values and gradients.

``python tests/corpus/run.py`` prints the table OK / WRONG / UNSUPPORTED / CRASH against JAX
(``pip install -e '.[bench]'`` installs it). Gradients are VJPs with respect to every float
input, with a fixed random cotangent, so array-valued functions are compared too.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import numpy as onp

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))

import shax_core as sx  # noqa: E402
import shax_core.numpy as snp  # noqa: E402
from corpus import load  # noqa: E402
from shax_core.ir import type_of  # noqa: E402

RTOL = 2e-4  # f32 agreement with JAX (the bar)


def float_positions(inputs):
    return tuple(i for i, a in enumerate(inputs) if onp.asarray(a).dtype.kind == "f")


def cotangent(out, seed=1):
    rng = onp.random.default_rng(seed)
    return rng.uniform(-1, 1, onp.shape(out)).astype(onp.asarray(out).dtype)


def shax_program(entry, inputs):
    types = [type_of(a) for a in inputs]
    return sx.trace(lambda *xs: entry.fn(snp, *xs), *types, name=entry.name)


def shax_value_and_vjp(entry, inputs, seed=1):
    """``(value, [grads of the float inputs], program)``."""
    prog = shax_program(entry, inputs)
    (out,) = sx.evaluate(prog, *inputs)
    wrt = float_positions(inputs)
    if not prog.outs[0].type.is_float or not wrt:
        return out, [], prog
    vjp = sx.vjp_program(prog, wrt)
    _, *grads = sx.evaluate(vjp, *inputs, cotangent(out, seed))
    return out, grads, prog


def jax_value_and_vjp(entry, inputs, seed=1):
    import jax
    import jax.numpy as jnp

    wrt = float_positions(inputs)

    def f(*floats):
        args = list(inputs)
        for i, v in zip(wrt, floats, strict=True):
            args[i] = v
        return entry.fn(jnp, *args)

    floats = [inputs[i] for i in wrt]
    out, pullback = jax.vjp(f, *floats)
    out = onp.asarray(out)
    if out.dtype.kind != "f" or not wrt:
        return out, []
    grads = pullback(jnp.asarray(cotangent(out, seed)))
    return out, [onp.asarray(g) for g in grads]


def close(a, b, rtol=RTOL) -> bool:
    a, b = onp.asarray(a, onp.float64), onp.asarray(b, onp.float64)
    if a.shape != b.shape:
        return False
    scale = max(1.0, float(onp.max(onp.abs(b), initial=0.0)))
    both_nan = onp.isnan(a) & onp.isnan(b)
    ok = both_nan | (onp.abs(a - b) <= rtol * (onp.abs(b) + scale * 1e-1))
    return bool(ok.all())


def classify(entry):
    """``(status, detail)`` of one entry against JAX."""
    import jax

    inputs = entry.inputs()
    ctx = jax.enable_x64(True) if entry.f64 else _null()
    try:
        with ctx:
            jout, jgrads = jax_value_and_vjp(entry, inputs)
    except Exception as e:  # noqa: BLE001  (a corpus entry JAX cannot run is a corpus bug)
        return "JAXFAIL", f"{type(e).__name__}: {str(e).splitlines()[0][:150]}"
    try:
        sout, sgrads, _ = shax_value_and_vjp(entry, inputs)
    except snp.UnsupportedError as e:
        return "UNSUPPORTED", str(e).split(". The supported")[0]
    except Exception as e:  # noqa: BLE001  (the table reports it)
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return "CRASH", f"{type(e).__name__}: {e} ({os.path.basename(tb.filename)}:{tb.lineno})"
    if onp.asarray(sout).dtype != onp.asarray(jout).dtype:
        return "WRONG", f"dtype {onp.asarray(sout).dtype}, JAX gives {onp.asarray(jout).dtype}"
    if not close(sout, jout):
        return "WRONG", f"value differs: max |diff| {onp.max(onp.abs(onp.subtract(sout, jout)))}"
    if len(sgrads) != len(jgrads):
        return "WRONG", f"{len(sgrads)} gradients, JAX has {len(jgrads)}"
    for i, (g, jg) in enumerate(zip(sgrads, jgrads, strict=True)):
        if not close(g, jg):
            diff = onp.max(onp.abs(onp.subtract(g, jg)))
            return "WRONG", f"gradient {i} differs: max |diff| {diff}"
    return "OK", ""


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None) -> int:
    entries = load()
    only = set(argv or sys.argv[1:])
    if only:
        entries = [e for e in entries if e.name in only or e.domain in only]
    counts = {"OK": 0, "WRONG": 0, "UNSUPPORTED": 0, "CRASH": 0, "JAXFAIL": 0}
    t0 = time.perf_counter()
    rows = []
    for entry in entries:
        status, detail = classify(entry)
        counts[status] += 1
        rows.append((entry.domain, entry.name, status, detail))
    width = max(len(r[1]) for r in rows)
    for domain, name, status, detail in rows:
        print(f"{domain:12} {name:{width}} {status:11} {detail}")
    total = len(rows)
    print()
    print("| OK | WRONG | UNSUPPORTED | CRASH | total | agree |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {counts['OK']} | {counts['WRONG']} | {counts['UNSUPPORTED']} | {counts['CRASH']} "
        f"| {total} | {100.0 * counts['OK'] / max(total, 1):.1f}% |"
    )
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0 if counts["WRONG"] == counts["CRASH"] == counts["JAXFAIL"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
