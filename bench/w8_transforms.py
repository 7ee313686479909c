"""W8 transformations through the SDK: a closure over a big array, and a long unrolled loop.

Two cases from issue 14, timed from the user's side (trace + upload + compile + first result)
against a real ``shax serve`` on 127.0.0.1 (a subprocess, stopped at the end):

- closure: ``loss(w) = sum((X @ w)**2)`` with ``X`` a closed-over f32[65536, 8] array; time to
  the first ``client.grad(loss)(w)``, and the size of the program text the client sent.
- loop: ``x <- tanh(W @ x) + x/2`` (W a closed-over f32[8, 8]) unrolled 3000 times on f32[8];
  time to the first gradient.

``--code DIR`` runs both the server and the client from another checkout (e.g. a worktree of
an older commit, to measure "before"); by default the code of this checkout. Prints a table.

    .venv/bin/python bench/w8_transforms.py [--code DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# run the given checkout's code even when another one is installed in editable mode
ISOLATE = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
    "[sys.modules.pop(m) for m in list(sys.modules) if m.startswith('shax')]; "
)
SERVER = ISOLATE + "from shax_server.cli import serve_main; sys.exit(serve_main(sys.argv[1:]))"

CLIENT = (
    ISOLATE
    + r"""
import json, sys, time
import numpy as np
import shax_core.numpy as snp
from shax_client import Client

url = sys.argv[1]
X = np.random.default_rng(0).normal(size=(65536, 8)).astype(np.float32)
w = np.linspace(-1, 1, 8).astype(np.float32)
sent = []

def loss(w):
    y = X @ w
    return snp.sum(y * y)

W = (np.eye(8) * 0.3 + 0.01).astype(np.float32)

def loop(x):
    for _ in range(3000):
        x = snp.tanh(W @ x) + 0.5 * x
    return snp.sum(x)

out = {}
with Client(url, timeout=600) as c:
    t = time.perf_counter()
    g = c.grad(loss)(w)
    out["closure_first_s"] = time.perf_counter() - t
    t = time.perf_counter()
    g2 = c.grad(loss)(w)
    out["closure_again_s"] = time.perf_counter() - t
    ok = np.allclose(g, 2 * X.T @ (X @ w), rtol=1e-3)
    out["closure_correct"] = bool(ok)
    entry = next(iter(c._entries.values()))
    doc = entry.upload_doc()
    out["closure_text_bytes"] = len(doc.get("program", "")) or len(json.dumps(doc))
    t = time.perf_counter()
    c.grad(loop)(w)
    out["loop_first_s"] = time.perf_counter() - t
import shax_core
out["core"] = shax_core.__file__
print(json.dumps(out))
"""
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(code: Path) -> dict:
    env = dict(os.environ)
    paths = [str(code), str(code / "client"), str(code / "server")]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("SHAX_API_KEYS", None)
    env["SHAX_MAX_EQUATIONS"] = "100000"  # the loop has 15k equations (default limit: 10k)
    return env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", type=Path, default=ROOT)
    code = parser.parse_args().code.resolve()
    env = env_for(code)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    cmd = [sys.executable, "-c", SERVER, *args]
    server = subprocess.Popen(cmd, env=env, cwd=code)
    try:
        deadline = time.monotonic() + 60
        import httpx

        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        run = subprocess.run(
            [sys.executable, "-c", CLIENT, url],
            env=env,
            cwd=code,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if run.returncode != 0:
            print(run.stderr[-3000:], file=sys.stderr)
            raise SystemExit(run.returncode)
        result = json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=20)
    print(f"code: {code} (shax_core from {result['core']})")
    print("| case | figure |")
    print("|---|---|")
    first = result["closure_first_s"]
    print(f"| closure 65536x8: first grad (trace+upload+compile+eval) | {first:.2f} s |")
    print(f"| closure 65536x8: second grad (cached) | {result['closure_again_s'] * 1e3:.1f} ms |")
    print(f"| closure 65536x8: program text sent | {result['closure_text_bytes']:,} bytes |")
    print(f"| closure gradient correct | {result['closure_correct']} |")
    print(f"| unrolled 3000-step loop: first grad | {result['loop_first_s']:.2f} s |")


if __name__ == "__main__":
    main()
