"""Generated variable names stay ``prefix + count`` however many a trace makes.

Builders take the names of their first variables from a table shared by every builder, and
continue on their own past it (or from the start, for a prefix of their own); the names a user
reads in a printed program must not depend on that: x0, x1, ... in order, none repeated, also
when programs are traced in several threads at once.
"""

from __future__ import annotations

import threading

import numpy as np

import shax_core as sx
import shax_core.numpy as snp
from shax_core import lax


def _chain(n: int):
    def f(x):
        for _ in range(n):
            x = snp.sin(x)
        return x

    return f


def test_a_trace_longer_than_the_shared_names_keeps_counting():
    n = (1 << 17) + 50  # past the names every builder shares
    p = sx.trace(_chain(n), np.float32(0.5))
    names = [e.out.name for e in p.eqns]
    assert names[:3] == ["x0", "x1", "x2"]
    assert names[-2:] == [f"x{n - 2}", f"x{n - 1}"]
    assert names == [f"x{i}" for i in range(n)]


def test_programs_traced_in_threads_at_once_are_named_alike():
    sizes = [3000, 5000, 4000, 6000]
    got: dict[int, list[str]] = {}

    def work(n: int) -> None:
        got[n] = [e.out.name for e in sx.trace(_chain(n), np.float32(0.5)).eqns]

    threads = [threading.Thread(target=work, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(got) == sorted(sizes)
    for n in sizes:
        assert got[n] == [f"x{i}" for i in range(n)]


def test_a_loop_body_names_its_own_variables():
    def f(x):
        return lax.fori_loop(0, 3, lambda i, c: snp.sin(c) * 2.0 + c, x)

    p = sx.trace(f, np.float32(0.5))
    (loop,) = [e for e in p.eqns if e.subprograms]
    (body,) = loop.subprograms
    names = [e.out.name for e in body.eqns]
    assert len(names) == len(set(names)) >= 3
    assert all(not n.startswith("x") for n in names)  # a prefix of the body's own
    np.testing.assert_allclose(
        sx.evaluate(p, np.float32(0.5))[0], _eager(np.float32(0.5)), rtol=1e-6
    )


def _eager(x):
    for _ in range(3):
        x = np.sin(x) * np.float32(2.0) + x
    return x
