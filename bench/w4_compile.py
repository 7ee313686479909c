"""W4 plan construction: CPU seconds of ``compile()`` of the deep chain's VJP, given as an
ordinary Program (its ``Eqn`` objects built; compile converts it to the lean form once) and as
a lean view (``from_lean(lean_of(p))``: nothing built, what the lean pipeline hands over).

The chain of bench/w4_deep.py (``x, y = sin(x)*y + cos(y), x*y - y``, n steps) is traced and
taken through ``vjp_program``; each figure is the best of ``--repeat`` compiles, one fresh
subprocess per (version, size), with the garbage collector off as ``compile`` runs it. A
checkout whose ``compile`` builds a view's equations shows it in the ``view built`` column.

    python bench/w4_compile.py [N ...]                 # default: 10000
    python bench/w4_compile.py 10000 --against DIR      # DIR/shax_core (another checkout) too,
                                                        # interleaved run by run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def child(n: int, repeat: int) -> None:
    import numpy as np

    import shax_core as sx
    import shax_core.numpy as snp
    from shax_core.ir import Program, from_lean, lean_of

    def deep(x, y):
        for _ in range(n):
            x, y = snp.sin(x) * y + snp.cos(y), x * y - y
        return x + y

    vjp = sx.vjp_program(sx.trace(deep, np.float32(0.5), np.float32(0.3)))
    eqns = len(vjp.eqns)
    lean = lean_of(Program(vjp.name, vjp.params, vjp.eqns, vjp.outs, checked=vjp.checked))

    def ordinary():
        return Program(vjp.name, vjp.params, vjp.eqns, vjp.outs, checked=vjp.checked)

    def view():
        return from_lean(lean, checked=vjp.checked)

    best, built = {}, False
    for _ in range(repeat):
        for kind, make in (("program", ordinary), ("view", view)):
            program = make()
            start = time.process_time()
            sx.compile(program)
            seconds = time.process_time() - start
            best[kind] = min(best.get(kind, seconds), seconds)
            if kind == "view":
                try:
                    object.__getattribute__(program, "eqns")
                    built = True
                except AttributeError:
                    pass
    print(f"{best['program']:.4f} {best['view']:.4f} {int(built)} {eqns}", flush=True)


def run_child(n: int, repeat: int, path: str | None) -> list[str]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.path.abspath(path)
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", str(n), "--repeat", str(repeat)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return out.stdout.split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[10000])
    ap.add_argument("--against", help="a directory holding another shax_core to compare")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.repeat)
        return
    versions = [("this", None)] + ([("against", args.against)] if args.against else [])
    print(f"load average {os.getloadavg()[0]:.2f}; CPU seconds of compile(), best of {args.repeat}")
    print(f"{'version':8} {'n':>7} {'program':>9} {'view':>9} {'view built':>11} {'vjp eqns':>9}")
    for n in args.sizes:
        for _ in range(args.rounds):
            for label, path in versions:
                program, view, built, eqns = run_child(n, args.repeat, path)
                flag = "yes" if built == "1" else "no"
                print(f"{label:8} {n:7d} {program:>9} {view:>9} {flag:>11} {eqns:>9}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
