"""A bounded coverage-guided run of atheris (libFuzzer for Python) over the IR text parser.

Run as a script it is the fuzz harness (``python tests/test_fuzz_atheris.py -runs=N corpus/``):
each input is decoded as UTF-8 (invalid bytes replaced) and parsed; what parses is typed and
compiled to a plan (never run) and, when small, differentiated. Anything but a ShaxError is a
crash. Under pytest, ``test_atheris_parse`` runs the harness in a subprocess for a fixed number of
runs, seeded with the fixture texts; it skips when atheris is not installed. A crash found here
becomes a regression test in ``test_fuzz_core.py``.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUNS = int(os.environ.get("SHAX_ATHERIS_RUNS", "2000"))
HERE = Path(__file__).parent


def _small(program) -> bool:
    return all(
        math.prod(v.type.shape) * v.type.np_dtype.itemsize <= 1 << 24
        for v in (*program.params, *(e.out for e in program.eqns))
    )


def one_input(data: bytes) -> None:
    """The harness body (also callable directly on one input)."""
    import shax_core as sx

    text = data.decode("utf-8", errors="replace")
    try:
        programs = sx.parse_module(text)
    except sx.ShaxError:
        return
    for p in programs:
        assert sx.parse(sx.print_program(p)) == p, "print/parse round trip"
        try:
            typed = sx.infer(p)
            if not _small(typed):
                continue
            sx.compile(typed)
            if len(typed.eqns) <= 50:
                sx.vjp_program(typed)
        except sx.ShaxError:
            pass


def main() -> None:  # pragma: no cover - runs in the subprocess
    import atheris

    with atheris.instrument_imports(include=["shax_core"]):
        import shax_core  # noqa: F401
        import shax_core.text  # noqa: F401

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


def test_atheris_parse(tmp_path):
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in (HERE / "fixtures").glob("*.shax"):
        shutil.copy(f, corpus / f.name)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        f"-runs={RUNS}",
        "-seed=1",
        "-max_len=4096",
        "-timeout=10",
        f"-artifact_prefix={tmp_path}/",
        str(corpus),
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash", "timeout")))
    assert proc.returncode == 0 and not crashes, (crashes, proc.stderr[-4000:])
    assert "Done" in proc.stderr, proc.stderr[-2000:]


if __name__ == "__main__":
    main()
